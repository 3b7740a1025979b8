"""The I/O APIC ("ioapic"; instance 0): v1 in 0.13, v3 from 0.14 on.

A qdev sysbus device. 0.13's vmsd is v1 (194 bytes): id, ioregsel and the 24
redirection entries. 0.14 made it v3 (206 bytes): 8 unused bytes (v2, where qemu-kvm's v2
kept its state) and the interrupt request register ``irr`` (v2) come between them, and a
post_load clears ``irr`` when a v1 section arrives. A 0.13 destination refuses any 0.14+
stream here: its ioapic is v1 ("savevm: unsupported version 3 for 'ioapic' v1").

qemu-kvm (RHEL 6, layout "v2-kvm") has its own v2: the same 206 bytes, but the eight bytes
are the 64-bit base address (0xfec00000), which its pre_load resets before any load; it
refuses upstream's v3 and upstream 0.14+ reads its base address as unused bytes.

The release row's variant ``ioapic.layout`` ("v1", "v3" or "v2-kvm") picks the description.
Reset masks every redirection entry.
"""

from __future__ import annotations

import functools
import random
from typing import Any

from ..errors import ConfigError
from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Description, IntArray, Unused, u8, u32, u64
from . import Device

__all__ = ["IOAPIC", "IOAPIC_NUM_PINS", "ioapic_description"]

IOAPIC_NUM_PINS = 24
REDIR_MASKED = 1 << 16


IOAPIC_DEFAULT_BASE_ADDRESS = 0xFEC00000
POWER_ON_IRR = {"v2-kvm": 1 << 2}


def _kvm_pre_load(s: Any) -> None:
    s.base_address = IOAPIC_DEFAULT_BASE_ADDRESS  # "in case we are doing version 1"
    s.irr = 0


def _post_load(s: Any, version: int) -> None:
    if version == 1:
        s.irr = 0  # a v1 section has no irr: "set sane value"


@functools.cache
def ioapic_description(release: Release) -> Description:
    layout = release.variant("ioapic.layout")
    redir = IntArray("ioredtbl", 8, IOAPIC_NUM_PINS)
    if layout == "v1":
        return Description("ioapic", 1, [u8("id"), u8("ioregsel"), redir], minimum_version_id=1)
    if layout == "v3":
        return Description(
            "ioapic", 3,
            [u8("id"), u8("ioregsel"), Unused(8, version_id=2), u32("irr", version_id=2), redir],
            minimum_version_id=1, post_load=_post_load,
        )  # fmt: skip
    if layout == "v2-kvm":
        return Description(
            "ioapic", 2,
            [u8("id"), u8("ioregsel"), u64("base_address", version_id=2),
             u32("irr", version_id=2), redir],
            minimum_version_id=1, pre_load=_kvm_pre_load,
        )  # fmt: skip
    raise ConfigError(f"ioapic.layout variant {layout!r} is not modelled")


class IOAPIC(Device):
    key = "ioapic"

    def reset(self) -> None:
        self.id = 0
        self.ioregsel = 0
        # qemu-kvm's I/O APIC latches the PIT's first IRQ0 (routed to pin 2) even while the
        # pin is masked; upstream's does not.
        self.irr = POWER_ON_IRR.get(self.release.variant("ioapic.layout"), 0)
        self.base_address = IOAPIC_DEFAULT_BASE_ADDRESS
        self.ioredtbl = [REDIR_MASKED] * IOAPIC_NUM_PINS

    def sections(self) -> list[DeviceSection]:
        return [DeviceSection("ioapic", 0, ioapic_description(self.release), self)]

    def randomize(self, rng: random.Random) -> None:
        """Linux's routing: ISA IRQs 1-15 to vectors 0x31.., edge; PCI pins level, active low."""
        self.id = 1 if rng.randrange(2) else 0
        self.ioregsel = rng.randrange(0x10, 0x40)
        for pin in range(IOAPIC_NUM_PINS):
            masked = REDIR_MASKED if rng.random() < 0.3 else 0
            level = (1 << 15 | 1 << 13) if pin >= 16 else 0
            self.ioredtbl[pin] = masked | level | (0x30 + pin)
        self.irr = rng.getrandbits(IOAPIC_NUM_PINS) & ~0xFFFF  # live state only in v1
