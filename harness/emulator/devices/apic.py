"""The local APIC of CPU 0 ("apic" v3, min 3, min_old 1; instance 0).

A qdev sysbus device in every modelled release, written with the next free instance for
"apic" (0) and no alias. 181 bytes, flat: no embedded structs, no subsections. Versions 1
and 2 predate vmstate and are read by :func:`load_old` (apic_load_old): the same values
with isr, tmr and irr interleaved per word, and the timer only from v2.

Power-on (apic_reset of the BSP): enabled at 0xfee00000 as the BSP, every LVT entry
masked but LINT0, which is ExtINT so that the i8259's interrupts reach the CPU.
"""

from __future__ import annotations

import functools
import random
from typing import Any

from ..errors import LoadError, Reason
from ..releases import Release
from ..savevm import DeviceSection
from ..stream import StreamReader
from ..vmstate import Description, IntArray, Timer, i32, i64, u8, u32
from . import Device

__all__ = ["APIC", "apic_description", "load_old"]

APIC_LVT_NB = 6
LVT_TIMER, LVT_THERMAL, LVT_PERFORM, LVT_LINT0, LVT_LINT1, LVT_ERROR = range(APIC_LVT_NB)
LVT_MASKED = 1 << 16
APIC_DEFAULT_BASE = 0xFEE00000
APICBASE_BSP, APICBASE_ENABLE = 1 << 8, 1 << 11
DELIVERY_EXTINT = 0x700


def load_old(r: StreamReader, apic: Any, version: int) -> None:
    """Read a v1 or v2 "apic" section (apic_load_old)."""
    if version > 2:  # pragma: no cover - load_state sends only v1 and v2 here
        raise LoadError(Reason.VERSION_TOO_NEW, f"apic old format v{version}", offset=r.offset)
    apic.apicbase = r.read_u32()
    apic.id, apic.arb_id, apic.tpr = r.read_u8(), r.read_u8(), r.read_u8()
    apic.spurious_vec = r.read_u32()
    apic.log_dest, apic.dest_mode = r.read_u8(), r.read_u8()
    for i in range(8):
        apic.isr[i], apic.tmr[i], apic.irr[i] = r.read_u32(), r.read_u32(), r.read_u32()
    apic.lvt = [r.read_u32() for _ in range(APIC_LVT_NB)]
    apic.esr = r.read_u32()
    apic.icr = [r.read_u32(), r.read_u32()]
    apic.divide_conf = r.read_u32()
    apic.count_shift = r.read_i32()
    apic.initial_count = r.read_u32()
    apic.initial_count_load_time = r.read_i64()
    apic.next_time = r.read_i64()
    if version >= 2:
        apic.timer = r.read_i64()


@functools.cache
def apic_description(release: Release) -> Description:
    fields = [
        u32("apicbase"), u8("id"), u8("arb_id"), u8("tpr"), u32("spurious_vec"),
        u8("log_dest"), u8("dest_mode"),
        IntArray("isr", 4, 8), IntArray("tmr", 4, 8), IntArray("irr", 4, 8),
        IntArray("lvt", 4, APIC_LVT_NB),
        u32("esr"), IntArray("icr", 4, 2), u32("divide_conf"), i32("count_shift"),
        u32("initial_count"), i64("initial_count_load_time"), i64("next_time"),
        Timer("timer"),
    ]  # fmt: skip
    return Description("apic", 3, fields, minimum_version_id=3, minimum_version_id_old=1,
                       load_state_old=load_old)


class APIC(Device):
    """The BSP's local APIC after apic_reset."""

    key = "apic"

    def reset(self) -> None:
        self.apicbase = APIC_DEFAULT_BASE | APICBASE_BSP | APICBASE_ENABLE
        self.id = self.arb_id = self.tpr = 0
        self.spurious_vec = 0xFF
        self.log_dest = 0
        self.dest_mode = 0xF
        self.isr, self.tmr, self.irr = [0] * 8, [0] * 8, [0] * 8
        self.lvt = [LVT_MASKED] * APIC_LVT_NB
        self.lvt[LVT_LINT0] = DELIVERY_EXTINT
        self.esr = 0
        self.icr = [0, 0]
        self.divide_conf = 0
        self.count_shift = 0
        self.initial_count = 0
        self.initial_count_load_time = 0
        self.next_time = 0
        self.timer = -1

    def sections(self) -> list[DeviceSection]:
        return [DeviceSection("apic", 0, apic_description(self.release), self)]

    def randomize(self, rng: random.Random) -> None:
        """A Linux guest's APIC: software-enabled, a periodic timer running."""
        self.tpr = rng.choice((0, 0x10, 0x20))
        self.spurious_vec = 0x1FF if rng.randrange(4) else 0xFF
        self.log_dest = 1 << rng.randrange(8)
        self.dest_mode = rng.choice((0xF, 0x0))
        self.isr = [0] * 8
        self.irr = [rng.getrandbits(32) if rng.random() < 0.2 else 0 for _ in range(8)]
        self.tmr = [0] * 8
        self.lvt = [LVT_MASKED] * APIC_LVT_NB
        self.lvt[LVT_TIMER] = 0x20000 | 0xEF  # periodic, vector 0xef
        self.lvt[LVT_LINT0] = DELIVERY_EXTINT | LVT_MASKED * rng.randrange(2)
        self.lvt[LVT_LINT1] = 0x400  # NMI
        self.lvt[LVT_ERROR] = 0xFE
        self.divide_conf = rng.choice((0, 1, 3, 0xB))
        self.count_shift = (self.divide_conf & 3 | (self.divide_conf >> 1) & 4) + 1 & 7
        self.initial_count = rng.randrange(1, 1 << 24)
        self.initial_count_load_time = rng.randrange(1 << 40)
        self.next_time = self.initial_count_load_time + (self.initial_count << self.count_shift)
        self.timer = self.next_time
