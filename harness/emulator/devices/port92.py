"""System control port A at 0x92 ("port92" v1; instance 0), 0.14 and later.

A qdev ISA device new in 0.14 (pc.c), one byte: ``outport`` (bit 1 is the fast A20
gate, bit 0 a CPU reset request). 0.13 has none; a 0.13 stream simply leaves a newer
destination's port92 at its reset state, and a newer stream is refused by 0.13 ("Unknown
savevm section or instance 'port92' 0").
"""

from __future__ import annotations

import functools
import random

from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Description, u8
from . import Device

__all__ = ["Port92", "port92_description"]

A20_ENABLE = 0x02


@functools.cache
def port92_description(release: Release) -> Description:
    return Description("port92", 1, [u8("outport")], minimum_version_id=1)


class Port92(Device):
    key = "port92"

    def reset(self) -> None:
        self.outport = 0

    def sections(self) -> list[DeviceSection]:
        return [DeviceSection("port92", 0, port92_description(self.release), self)]

    def randomize(self, rng: random.Random) -> None:
        self.outport = rng.choice((0, A20_ENABLE))
