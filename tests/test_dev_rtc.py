"""The MC146818 RTC ("mc146818rtc" v2, min 1, instance 0, alias 0x70): a flat 205-byte
section."""

from __future__ import annotations

import random
import struct

import pytest

from harness.emulator.devices import Board
from harness.emulator.devices.rtc import RTC, rtc_description
from harness.emulator.errors import LoadError, Reason
from harness.emulator.releases import Release, get_release
from harness.emulator.savevm import wire_rules_for
from harness.emulator.stream import StreamReader
from harness.emulator.vmstate import dump_state

from . import devtools
from .devtools import payload, stream

RUNS = [("0.13", 3), ("0.14", 3), ("0.15", 3), ("new", 3), ("new", 4), ("1.0", 3)]
RUN_IDS = [f"{r}-f{f}" for r, f in RUNS]
TM = ("sec", "min", "hour", "wday", "mday", "mon", "year")
V2_SIZE = 128 + 1 + 7 * 4 + 5 * 8 + 2 * 4  # 205
V1_SIZE = V2_SIZE - 8


def load(release: Release, fmt: int, data: bytes) -> RTC:
    return devtools.load(RTC, release, fmt, data)


def state(dev: RTC) -> dict:
    return dump_state(rtc_description(dev.release), dev)


def from_bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F)


def distinct(dev: RTC) -> RTC:
    dev.cmos_data = bytes(range(128))
    dev.cmos_index = 0x0B
    for n, name in enumerate(TM):
        setattr(dev.current_tm, name, 100 + n)
    dev.periodic_timer = -1
    dev.next_periodic_time = 0x0102030405060708
    dev.next_second_time = 0x1112131415161718
    dev.second_timer = 0x2122232425262728
    dev.second_timer2 = -1
    dev.irq_coalesced = 7
    dev.period = 0x20
    return dev


def distinct_golden(version: int = 2) -> bytes:
    out = bytes(range(128)) + b"\x0b" + struct.pack(">7i", *range(100, 107))
    out += struct.pack(">qqqqq", -1, 0x0102030405060708, 0x1112131415161718,
                       0x2122232425262728, -1)  # fmt: skip
    if version >= 2:
        out += struct.pack(">II", 7, 0x20)
    return out


def test_description_and_section():
    desc = rtc_description(get_release("0.14"))
    assert (desc.name, desc.version_id, desc.minimum_version_id) == ("mc146818rtc", 2, 1)
    assert [f.name for f in desc.fields][-2:] == ["irq_coalesced", "period"]
    assert all(f.version_id == 2 for f in desc.fields[-2:])
    assert desc.subsections == ()
    (section,) = RTC(get_release("0.14")).sections()
    assert (section.idstr, section.instance_id, section.version_id) == ("mc146818rtc", 0, 2)
    assert section.alias_id == 0x70  # qdev: instance 0, the I/O base a load-only alias
    assert rtc_description(get_release("0.14")) is desc


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
def test_golden_bytes(name, fmt):
    data = payload(distinct(RTC(get_release(name))), fmt)
    assert data == distinct_golden()  # no embedded struct: no 0x06 in format 4 either
    assert len(data) == V2_SIZE


def test_reset_is_a_valid_bcd_clock():
    dev = RTC(get_release("0.14"))
    cmos, tm = dev.cmos_data, dev.current_tm
    assert cmos[0x0B] & 0x04 == 0 and cmos[0x0B] & 0x02  # BCD, 24-hour
    assert cmos[0x0A] == 0x26 and cmos[0x0D] == 0x80
    regs = [from_bcd(cmos[i]) for i in (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09)]
    assert regs == [tm.sec, tm.min, tm.hour, tm.wday + 1, tm.mday, tm.mon + 1, tm.year % 100]
    assert from_bcd(cmos[0x32]) * 100 + regs[6] == tm.year + 1900
    assert cmos[0x37] == cmos[0x32]  # the PS/2 century byte too
    assert cmos[0x2E] == cmos[0x2F] == 0  # the BIOS computes the checksum, and none ran
    assert dev.periodic_timer == -1 and dev.period == 0
    assert dev.second_timer2 == dev.next_second_time


@pytest.mark.parametrize("ram, ext, above16", [(64 << 20, 0xFC00, 0x0300), (8 << 20, 0x1C00, 0),
                                               (2 << 20, 0x0400, 0)])  # fmt: skip
def test_cmos_configuration_is_pc_cmos_init_for_the_ram_size(ram, ext, above16):
    cmos = RTC(get_release("0.14"), Board(ram_size=ram)).cmos_data
    assert cmos[0x15:0x19] == bytes((0x80, 0x02, ext & 0xFF, ext >> 8))  # 640 K, then above 1 M
    assert cmos[0x30:0x32] == cmos[0x17:0x19]
    assert cmos[0x34:0x36] == bytes((above16 & 0xFF, above16 >> 8))  # 64 K units above 16 M
    assert (cmos[0x3D], cmos[0x38]) == (0x12, 0x30)  # boot order "cad"
    assert (cmos[0x10], cmos[0x14]) == (0x00, 0x06)  # no floppy medium; FPU, PS/2 mouse


@pytest.mark.parametrize("seed", range(20))
def test_randomize_is_valid(seed):
    dev = RTC(get_release("0.15"))
    dev.randomize(random.Random(seed))
    cmos, tm = dev.cmos_data, dev.current_tm
    dec = (lambda v: v) if cmos[0x0B] & 0x04 else from_bcd
    assert [dec(cmos[i]) for i in (0x00, 0x02, 0x04, 0x07, 0x08)] == [
        tm.sec, tm.min, tm.hour, tm.mday, tm.mon + 1,
    ]  # fmt: skip
    assert 0 <= tm.wday < 7 and 90 <= tm.year < 140 and 0 <= dev.cmos_index < 128
    if dev.period:
        assert cmos[0x0B] & 0x40 and dev.periodic_timer == dev.next_periodic_time
    else:
        assert dev.periodic_timer == -1 and dev.irq_coalesced == 0


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("seed", [None, *range(6)])
def test_round_trip(name, fmt, seed):
    r = get_release(name)
    src = RTC(r)
    if seed is not None:
        src.randomize(random.Random(seed))
    dst = load(r, fmt, stream(src, fmt))
    assert state(dst) == state(src)


def test_v1_section_has_no_coalescing_fields():
    r = get_release("0.14")
    dst = RTC(r)
    dst.irq_coalesced, dst.period = 3, 9  # the destination's own values survive
    (section,) = dst.sections()
    reader = StreamReader(distinct_golden(version=1) + b"\x00")
    section.load(reader, 1, wire_rules_for(3, r.peek))
    assert reader.offset == V1_SIZE
    assert dst.cmos_data == bytes(range(128)) and dst.second_timer2 == -1
    assert (dst.irq_coalesced, dst.period) == (3, 9)


def test_version_bounds():
    r = get_release("0.14")
    (section,) = RTC(r).sections()
    with pytest.raises(LoadError) as info:
        section.load(StreamReader(distinct_golden()), 0, wire_rules_for(3, r.peek))
    assert info.value.reason is Reason.VERSION_TOO_OLD
    data = bytearray(stream(RTC(r), 3))
    data[8 + 1 + 4 + 1 + 11 + 4 : 8 + 1 + 4 + 1 + 11 + 8] = struct.pack(">I", 3)
    with pytest.raises(LoadError) as info:
        load(r, 3, bytes(data))
    assert info.value.reason is Reason.VERSION_TOO_NEW


def test_the_clock_is_the_hosts_it_runs_on():
    """By default a fixed host clock (2011-08-12 10:00 UTC), so streams are the same on
    every run; given the host's, the CMOS date, the century and the update cycle follow it
    (a real destination catches its RTC up from the source's clock, second by second)."""
    fixed = RTC(get_release("0.15"), Board())
    assert (fixed.current_tm.year, fixed.current_tm.mon, fixed.current_tm.mday) == (111, 7, 12)
    now = 1_795_952_190_229_694_000  # 2026-11-29 11:36:30 UTC
    rtc = RTC(get_release("0.15"), Board(host_time_ns=now))
    tm = rtc.current_tm
    assert (tm.year + 1900, tm.mon + 1, tm.mday, tm.hour, tm.min, tm.sec) == (
        2026, 11, 29, 11, 36, 30)
    assert rtc.cmos_data[0x09] == 0x26 and rtc.cmos_data[0x32] == 0x20  # BCD year, century
    assert rtc.next_second_time == rtc.second_timer2 == now + 990_000_000
