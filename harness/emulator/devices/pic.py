"""The two i8259 interrupt controllers (vmsd "i8259" v1, instances 0x20 and 0xa0).

Identical in every modelled release: sixteen u8 registers, no subsections.
"""

from __future__ import annotations

import functools
import random

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
        # After the BIOS programs them: vectors 0x08 and 0x70, all lines masked but the cascade.
        self.chips[0].irq_base, self.chips[0].imr = 0x08, 0xFB
        self.chips[1].irq_base, self.chips[1].imr = 0x70, 0xFF

    def sections(self) -> list[DeviceSection]:
        desc = pic_description(self.release)
        return [
            DeviceSection("i8259", base, desc, chip)
            for base, chip in zip(IO_BASES, self.chips, strict=True)
        ]

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
