"""The HPET: "hpet" v2 with a variable number of embedded 42-byte timers, held against the
real builds' payloads."""

from __future__ import annotations

import doctest
import random
import struct

import pytest

from harness.emulator.devices import hpet as hpet_module
from harness.emulator.devices.hpet import (
    HPET,
    HPET_MAX_TIMERS,
    hpet_description,
    hpet_timer_description,
)
from harness.emulator.errors import LoadError, Reason
from harness.emulator.releases import Release, get_release
from harness.emulator.vmstate import dump_state

from . import devtools
from .devtools import RUN_IDS, RUNS, payload, stream
from .realqemu import (
    RealBuilds,
    historic,  # noqa: F401 - the fixture
    model_payloads,
    resave,
)

TIMER = struct.Struct(">BQQQQBq")  # 42 bytes
HEAD = struct.Struct(">QQQ")  # config, isr, counter
KEY = ("hpet", 0)
POWER_ON_TIMER_CONFIG = 0x0000000400000030  # periodic and 64-bit capable, IRQ 2 routable


def load(release: Release, fmt: int, data: bytes) -> HPET:
    return devtools.load(HPET, release, fmt, data)


def state(dev: HPET) -> dict:
    return dump_state(hpet_description(dev.release), dev)


def distinct(dev: HPET) -> HPET:
    dev.config, dev.isr, dev.hpet_counter = 3, 5, 0x0102030405
    for i, t in enumerate(dev.timer[:3]):
        t.config, t.cmp, t.fsb, t.period, t.wrap_flag = 0x10 + i, 0x20 + i, 0x30 + i, 0x40 + i, i
        t.qemu_timer = -1 if i == 1 else 1000 + i
    return dev


def distinct_bytes(end: bytes) -> bytes:
    out = HEAD.pack(3, 5, 0x0102030405) + bytes([3])
    for i in range(3):
        out += TIMER.pack(i, 0x10 + i, 0x20 + i, 0x30 + i, 0x40 + i, i,
                          -1 if i == 1 else 1000 + i) + end  # fmt: skip
    return out


def test_descriptions():
    r = get_release("0.15")
    desc = hpet_description(r)
    assert (desc.name, desc.version_id, desc.minimum_version_id) == ("hpet", 2, 1)
    assert desc.load_state_old is None and desc.subsections == ()
    names = [f.name for f in desc.fields]
    assert names[:4] == ["config", "isr", "hpet_counter", "num_timers"]
    assert names[4:] == [f"timer[{i}]" for i in range(HPET_MAX_TIMERS)]
    assert desc.fields[3].version_id == 2
    timer = hpet_timer_description(r)
    assert (timer.name, timer.version_id) == ("hpet_timer", 1)
    assert sum(f.size for f in timer.fields) == TIMER.size == 42
    (section,) = HPET(r).sections()
    assert (section.idstr, section.instance_id, section.version_id) == ("hpet", 0, 2)


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
def test_golden_bytes(name, fmt):
    """Three timers; format 4 adds one 0x06 after each."""
    data = payload(distinct(HPET(get_release(name))), fmt)
    assert data == distinct_bytes(b"\x06" if fmt == 4 else b"")
    assert len(data) == (151 if fmt == 3 else 154)


def test_power_on_state():
    dev = HPET(get_release("1.0"))
    assert (dev.config, dev.isr, dev.hpet_counter, dev.num_timers) == (0, 0, 0, 3)
    for i, t in enumerate(dev.timer[:3]):
        assert (t.tn, t.config, t.cmp, t.period, t.qemu_timer) == (
            i, POWER_ON_TIMER_CONFIG, (1 << 64) - 1, 0, -1)  # fmt: skip
    assert dev.capability == 0x009896808086A201  # 10 ns period, 3 timers, legacy capable


@pytest.mark.parametrize("seed", range(20))
def test_randomize_stays_within_what_a_driver_reaches(seed):
    dev = HPET(get_release("0.14"))
    dev.randomize(random.Random(seed))
    assert dev.config in range(4) and dev.num_timers == 3
    for i, t in enumerate(dev.timer[:3]):
        assert t.tn == i and t.config >> 32 == 4 and t.config & 0x30 == 0x30
        assert not t.config & 0x4000  # no FSB delivery without the MSI capability
        assert t.qemu_timer == -1 or (dev.config & 1 and t.config & 0x4)
        if t.config & 0x100:
            assert t.cmp < 1 << 32 and t.period < 1 << 32


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("seed", [None, *range(6)])
def test_round_trip(name, fmt, seed):
    r = get_release(name)
    src = HPET(r)
    if seed is not None:
        src.randomize(random.Random(seed))
    dst = load(r, fmt, stream(src, fmt))
    assert state(dst) == state(src)
    assert dst.capability == src.capability


def test_the_count_of_timers_comes_from_the_stream():
    """A fourth timer (``-global hpet.timers=4``) travels and reaches the ID register."""
    r = get_release("0.15")
    src = HPET(r)
    src.num_timers = 4
    data = model_payloads(src, 3)[KEY]
    assert len(data) == 151 + 42
    dst = HPET(r)
    assert resave(dst, 3, KEY, data) == data
    assert dst.num_timers == 4 and (dst.capability >> 8) & 0x1F == 3


def test_a_v1_section_carries_three_timers():
    r = get_release("0.14")
    v2 = model_payloads(distinct(HPET(r)), 3)[KEY]
    v1 = v2[:24] + v2[25:]  # no num_timers
    dst = HPET(r)
    dst.num_timers = 7  # pre_load resets it
    assert resave(dst, 3, KEY, v1, version=1) == v2
    assert dst.num_timers == 3


def test_more_timers_than_the_array_holds_is_refused():
    r = get_release("0.14")
    data = bytearray(model_payloads(HPET(r), 3)[KEY])
    data[24] = HPET_MAX_TIMERS + 1
    with pytest.raises(LoadError) as info:
        resave(HPET(r), 3, KEY, bytes(data))
    assert info.value.reason is Reason.INVALID_VALUE
    assert (info.value.field, info.value.offset) == ("num_timers", 24)


def test_module_doctests():
    assert doctest.testmod(hpet_module).failed == 0


# -- against the real builds -----------------------------------------------------------


class TestRealBuilds(RealBuilds):
    device = HPET

    seed = 11

    def wanted(self, dev: HPET) -> bool:
        return bool(dev.config & 1)  # enabled, with timers pending
