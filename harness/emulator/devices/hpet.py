"""The HPET (sysbus qdev "hpet", vmsd "hpet" v2, min 1; instance 0).

Fields: config, isr, the main counter, then (v2) ``num_timers`` and that many embedded
"hpet_timer" v1 elements (VMSTATE_STRUCT_VARRAY_UINT8), 42 bytes each. The PC creates
three timers, so the section is 25 + 3 x 42 = 151 bytes; format 4 ends each timer with
0x06 (154). A v1 section has no ``num_timers``: pre_load sets the minimum of three
first, so a v1 section carries three timers. post_load rebuilds the ID register's timer
count from ``num_timers``. The layout is the same in every modelled release.

The variable array is expressed as one conditional struct field per possible timer
(``timer[i]`` exists when ``i < num_timers``), which is exactly what QEMU's loop reads.
QEMU of 2011 did not bound ``num_timers`` on load: a value above 32 made it write past
its timer array (fixed in 2014). The model refuses such a stream instead; nothing
sensible can be modelled of that memory.

Time: the saved counter is the main counter at the moment of the save (pre_save reads
it from the guest clock); it advances at 100 MHz while the HPET is enabled and the guest
runs. A timer's expiry is on the guest clock. A ``-S`` guest that never ran has the
counter at 0 and no timer pending.

>>> from harness.emulator.releases import get_release
>>> hpet = HPET(get_release("0.14"))
>>> [f.name for f in hpet_description(hpet.release).fields][:5]
['config', 'isr', 'hpet_counter', 'num_timers', 'timer[0]']
"""

from __future__ import annotations

import functools
import random
from typing import Any

from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Description, Struct, Timer, u8, u64
from . import Device, State

__all__ = [
    "HPET",
    "HPET_BASE",
    "HPET_MAX_TIMERS",
    "HPET_MIN_TIMERS",
    "hpet_description",
    "hpet_timer_description",
]

HPET_BASE = 0xFED00000
HPET_MIN_TIMERS = 3  # the PC's "timers" property (default) and the v1 layout
HPET_MAX_TIMERS = 32
CLK_PERIOD_FS = 10_000_000  # 10 ns per tick
NS_PER_TICK = 10
U64 = (1 << 64) - 1

CFG_ENABLE, CFG_LEGACY = 0x001, 0x002
TN_TYPE_LEVEL, TN_ENABLE, TN_PERIODIC = 0x002, 0x004, 0x008
TN_PERIODIC_CAP, TN_SIZE_CAP, TN_SETVAL, TN_32BIT = 0x010, 0x020, 0x040, 0x100
TN_INT_ROUTE_MASK, TN_FSB_ENABLE, TN_FSB_CAP = 0x3E00, 0x4000, 0x8000
TN_CFG_WRITE_MASK = 0x7F4E
TN_INT_ROUTE_CAP = 0x00000004 << 32  # "advertise availability of ioapic inti2"
ID_NUM_TIM_SHIFT, ID_NUM_TIM_MASK = 8, 0x1F00
CAPABILITY = 0x8086A001 | (CLK_PERIOD_FS << 32)  # 64-bit counter, legacy route capable


@functools.cache
def hpet_timer_description(release: Release) -> Description:
    """ "hpet_timer" v1 (min 1): 42 bytes."""
    return Description(
        "hpet_timer", 1,
        [u8("tn"), u64("config"), u64("cmp"), u64("fsb"), u64("period"), u8("wrap_flag"),
         Timer("qemu_timer")],
        minimum_version_id=1,
    )  # fmt: skip


def _timer_present(index: int) -> Any:
    return lambda obj, version: index < obj.num_timers


def _num_timers_bound(obj: Any, value: int) -> str | None:
    if value > HPET_MAX_TIMERS:
        return (f"num_timers = {value}, the array holds {HPET_MAX_TIMERS} "
                "(QEMU of 2011 wrote past it)")  # fmt: skip
    return None


def _pre_load(s: Any) -> None:
    s.num_timers = HPET_MIN_TIMERS  # a v1 section carries no count


def _post_load(s: Any, version: int) -> None:
    s.capability = _capability(s.capability, s.num_timers)
    s.msi = bool(s.timer[0].config & TN_FSB_CAP)


def _capability(old: int, num_timers: int) -> int:
    """The ID register with the timer count in bits 8-12 (``num_timers - 1`` in C
    integer arithmetic: a count of 0 sets every bit above 7)."""
    return ((old & ~ID_NUM_TIM_MASK) | ((num_timers - 1) << ID_NUM_TIM_SHIFT)) & U64


@functools.cache
def hpet_description(release: Release) -> Description:
    """ "hpet" v2 (min 1): 151 bytes with the PC's three timers."""
    timer = hpet_timer_description(release)
    return Description(
        "hpet", 2,
        [u64("config"), u64("isr"), u64("hpet_counter"),
         u8("num_timers", version_id=2, check=_num_timers_bound),
         *(Struct(f"timer[{i}]", timer, exists=_timer_present(i))
           for i in range(HPET_MAX_TIMERS))],
        minimum_version_id=1, pre_load=_pre_load, post_load=_post_load,
    )  # fmt: skip


def _timer(tn: int) -> State:
    return State(tn=tn, config=0, cmp=0, fsb=0, period=0, wrap_flag=0, qemu_timer=-1)


class HPET(Device):
    """The HPET after hpet_init and its first reset (no BIOS): halted, counter 0, the
    three timers with their capabilities, comparators all ones, nothing pending."""

    key = "hpet"

    def reset(self) -> None:
        self.num_timers = HPET_MIN_TIMERS
        self.msi = False  # the "msi" property (off on the PC)
        self.capability = _capability(CAPABILITY, self.num_timers)
        self.timer = [_timer(i) for i in range(HPET_MAX_TIMERS)]
        for t in self.timer[: self.num_timers]:
            t.cmp = U64
            t.config = TN_PERIODIC_CAP | TN_SIZE_CAP | TN_INT_ROUTE_CAP
        self.config = 0
        self.isr = 0
        self.hpet_counter = 0

    def sections(self) -> list[DeviceSection]:
        return [DeviceSection("hpet", 0, hpet_description(self.release), self)]

    def randomize(self, rng: random.Random) -> None:
        """Register writes of a guest driver: the main enable and legacy-route bits,
        each timer's writable configuration bits (level/edge, enable, periodic, 32-bit
        mode, IRQ route; FSB delivery needs the MSI capability the PC does not offer),
        comparators and periods as the 32-bit mode truncates them, and a timer pending
        only while the HPET is enabled. The counter is wherever the guest's clock has
        taken it.
        """
        self.reset()
        self.config = rng.randrange(4)
        enabled = self.config & CFG_ENABLE
        self.hpet_counter = rng.randrange(1 << 48)
        for t in self.timer[: self.num_timers]:
            bits = rng.randrange(1 << 16) & TN_CFG_WRITE_MASK & ~TN_FSB_ENABLE & ~TN_SETVAL
            if not t.config & TN_PERIODIC_CAP:
                bits &= ~TN_PERIODIC
            t.config = (t.config & ~TN_CFG_WRITE_MASK) | bits
            width = 32 if bits & TN_32BIT else 64
            t.cmp = rng.choice((U64 >> (64 - width), rng.randrange(1 << width)))
            t.period = rng.randrange(1 << (width - 1)) if bits & TN_PERIODIC else 0
            t.wrap_flag = rng.randrange(2) if width == 32 and not bits & TN_PERIODIC else 0
            t.fsb = rng.choice((0, rng.randrange(1 << 64)))
            armed = enabled and bits & TN_ENABLE
            t.qemu_timer = self.hpet_counter * NS_PER_TICK + rng.randrange(1 << 30) if armed else -1
        level = sum(1 << i for i, t in enumerate(self.timer[: self.num_timers])
                    if t.config & TN_TYPE_LEVEL)  # fmt: skip
        self.isr = rng.randrange(level + 1) & level if enabled else 0
