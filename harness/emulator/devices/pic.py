"""The two i8259 interrupt controllers (vmsd "i8259" v1): sixteen u8 registers each.

The layout is the same in every modelled release; the instance ids are not (variant
``pic.ids``): up to the genstats series each chip registers with its I/O base as the
instance (0x20, 0xa0) and accepts nothing else; 1.0 made them qdev ISA devices ("isa-i8259",
created after the PIIX3), written as instances 0 and 1 with the I/O bases as load-only
aliases. So 1.0 reads every older stream's PICs, and no older release reads 1.0's
("Unknown savevm section or instance 'i8259' 0").

Power-on: every register 0. Up to the genstats series the PIT's channel 0 raises IRQ0
when it is reset, after the PICs were, so the master has it in ``irr`` (and
``last_irr``); 1.0 resets its qdev PICs after the PIT and they start clear (variant
``pic.power_on_irq0``).
"""

from __future__ import annotations

import functools
import random

from ..errors import ConfigError
from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Description, u8
from . import Device, State

__all__ = ["PIC", "pic_description"]

REGISTERS = (
    "last_irr", "irr", "imr", "isr", "priority_add", "irq_base", "read_reg_select", "poll",
    "special_mask", "init_state", "auto_eoi", "rotate_on_auto_eoi",
    "special_fully_nested_mode", "init4", "single_mode", "elcr",
)  # fmt: skip
IO_BASES = (0x20, 0xA0)
# Variant "pic.ids" -> (written instance, load-only alias) per chip.
INSTANCE_IDS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "iobase": ((0x20, None), (0xA0, None)),
    "qdev": ((0, 0x20), (1, 0xA0)),
}
# Flags that are booleans in the chip; the rest are full registers.
_FLAGS = {"read_reg_select", "poll", "special_mask", "auto_eoi", "rotate_on_auto_eoi",
          "special_fully_nested_mode", "init4", "single_mode"}  # fmt: skip


@functools.cache
def pic_description(release: Release) -> Description:
    return Description("i8259", 1, [u8(name) for name in REGISTERS], minimum_version_id=1)


class PIC(Device):
    """Master and slave PIC; ``chips[0]`` at 0x20, ``chips[1]`` at 0xa0."""

    key = "pic"

    def reset(self) -> None:
        self.chips = [State(**{name: 0 for name in REGISTERS}) for _ in IO_BASES]
        if self.release.variant("pic.power_on_irq0") == "pending":
            self.raise_irq(0)  # the PIT's output went high after the PICs' reset

    def sections(self) -> list[DeviceSection]:
        desc = pic_description(self.release)
        ids = self.instance_ids(self.release)
        return [
            DeviceSection("i8259", instance, desc, chip, alias_id=alias)
            for (instance, alias), chip in zip(ids, self.chips, strict=True)
        ]

    @staticmethod
    def instance_ids(release: Release) -> tuple[tuple[int, int | None], ...]:
        variant = release.variant("pic.ids")
        try:
            return INSTANCE_IDS[variant]
        except KeyError:
            raise ConfigError(f"pic.ids variant {variant!r} is not modelled") from None

    def raise_irq(self, line: int) -> None:
        chip = self.chips[line // 8]
        chip.irr |= 1 << (line % 8)
        chip.last_irr = chip.irr

    def randomize(self, rng: random.Random) -> None:
        for chip in self.chips:
            for name in REGISTERS:
                setattr(chip, name, rng.randint(0, 1) if name in _FLAGS else rng.randrange(256))
            chip.init_state = rng.randrange(4)
            chip.priority_add = rng.randrange(8)
            chip.irq_base &= 0xF8
