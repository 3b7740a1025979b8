"""The i8254 PIT: three embedded 32-byte "pit channel" elements, channel 0's timer, and the
v1 layout read by pit_load_old."""

from __future__ import annotations

import random
import struct

import pytest

from harness.emulator.devices.pit import PIT, pit_channel_description, pit_description
from harness.emulator.errors import LoadError, Reason
from harness.emulator.releases import Release, get_release
from harness.emulator.savevm import wire_rules_for
from harness.emulator.stream import StreamReader
from harness.emulator.vmstate import dump_state

from . import devtools
from .devtools import payload, stream

RUNS = [("0.13", 3), ("0.14", 3), ("0.15", 3), ("new", 3), ("new", 4), ("1.0", 3)]
RUN_IDS = [f"{r}-f{f}" for r, f in RUNS]
BYTES = ("count_latched", "status_latched", "status", "read_state", "write_state",
         "write_latch", "rw_mode", "mode", "bcd", "gate")  # fmt: skip
CHANNEL = struct.Struct(">iH10Bqq")  # 32 bytes
CHANNEL_V1 = struct.Struct(">iH10Bq")  # 24 bytes: up to count_load_time
HEADER = 8 + 1 + 4 + 1 + len(b"i8254") + 4  # up to the section version
TIMER = 0x0A0B0C0D0E0F1011


def load(release: Release, fmt: int, data: bytes) -> PIT:
    return devtools.load(PIT, release, fmt, data)


def state(dev: PIT) -> dict:
    return dump_state(pit_description(dev.release), dev)


def channel_values(i: int) -> tuple:
    """Distinct values for channel ``i``: count, latched_count, ten bytes, two times."""
    base = 0x10 * (i + 1)
    return (0x1000 + i, 0x2000 + i, *range(base, base + 10), 1000 + i, 2000 + i)


def distinct(dev: PIT) -> PIT:
    for i, ch in enumerate(dev.channels):
        v = channel_values(i)
        ch.count, ch.latched_count = v[0], v[1]
        for name, value in zip(BYTES, v[2:12], strict=True):
            setattr(ch, name, value)
        ch.count_load_time, ch.next_transition_time = v[12], v[13]
    dev.channels[0].irq_timer = TIMER
    return dev


def test_descriptions():
    r = get_release("0.15")
    desc = pit_description(r)
    assert (desc.name, desc.version_id, desc.minimum_version_id) == ("i8254", 2, 2)
    assert desc.minimum_version_id_old == 1 and desc.load_state_old is not None
    channels, timer = desc.fields
    assert (channels.name, channels.count, channels.version_id) == ("channels", 3, 2)
    assert channels.desc is pit_channel_description(r)
    assert (channels.desc.name, channels.desc.version_id) == ("pit channel", 2)
    assert sum(f.size for f in channels.desc.fields) == 32
    assert timer.kind == "timer" and timer.attr == "channels[0].irq_timer"
    (section,) = PIT(r).sections()
    assert (section.idstr, section.instance_id, section.version_id) == ("i8254", 0, 2)
    assert section.alias_id == 0x40


@pytest.mark.parametrize("name, instance, alias", [
    ("0.13", 0x40, None), ("0.14", 0x40, None), ("0.15", 0, 0x40), ("new", 0, 0x40),
    ("1.0", 0, 0x40),
])  # fmt: skip
def test_instance_ids_by_release(name, instance, alias):
    """0.13/0.14 register the PIT with its I/O base; 0.15 made it qdev "isa-pit" (instance
    0, the I/O base a load-only alias)."""
    (section,) = PIT(get_release(name)).sections()
    assert (section.instance_id, section.alias_id) == (instance, alias)


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
def test_golden_bytes(name, fmt):
    """Format 4: one 0x06 after each channel element, none after the top-level timer."""
    end = b"\x06" if fmt == 4 else b""
    want = b"".join(CHANNEL.pack(*channel_values(i)) + end for i in range(3))
    want += struct.pack(">q", TIMER)
    data = payload(distinct(PIT(get_release(name))), fmt)
    assert data == want
    assert len(data) == (104 if fmt == 3 else 107)


def test_power_on_state_is_pit_reset_at_virtual_time_0():
    ch0, ch1, ch2 = PIT(get_release("0.14")).channels
    for ch in (ch0, ch1, ch2):
        assert (ch.mode, ch.count, ch.rw_mode, ch.count_load_time) == (3, 0x10000, 0, 0)
    # Mode 3 changes its output after (count + 1) >> 1 ticks: 32768 / 1193182 Hz.
    assert ch0.irq_timer == ch0.next_transition_time == 32768 * 10**9 // 1193182 == 27462700
    assert (ch1.next_transition_time, ch2.next_transition_time) == (0, 0)
    assert (ch0.gate, ch1.gate, ch2.gate) == (1, 1, 0)


@pytest.mark.parametrize("seed", range(20))
def test_randomize_is_valid(seed):
    dev = PIT(get_release("0.14"))
    dev.randomize(random.Random(seed))
    for ch in dev.channels:
        assert 1 <= ch.count <= 0x10000 and 0 <= ch.mode <= 5 and 1 <= ch.rw_mode <= 3
        assert (ch.status >> 1) & 7 == ch.mode and (ch.status >> 4) & 3 == ch.rw_mode
    assert dev.channels[0].irq_timer in (-1, dev.channels[0].next_transition_time)


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("seed", [None, *range(8)])
def test_round_trip(name, fmt, seed):
    r = get_release(name)
    src = PIT(r)
    if seed is not None:
        src.randomize(random.Random(seed))
    dst = load(r, fmt, stream(src, fmt))
    assert state(dst) == state(src)
    assert dst.channels[0].irq_timer == src.channels[0].irq_timer


# -- the v1 (pre-vmstate) layout -------------------------------------------------------


def v1_payload() -> bytes:
    """Per channel 24 bytes; channel 0 (the one with an IRQ timer) adds
    next_transition_time and the timer right after them."""
    out = b""
    for i in range(3):
        v = channel_values(i)
        out += CHANNEL_V1.pack(*v[:13])
        if i == 0:
            out += struct.pack(">qq", v[13], TIMER)
    return out


def test_v1_payload_size():
    assert len(v1_payload()) == 40 + 24 + 24


@pytest.mark.parametrize("name", ["0.13", "0.14", "0.15", "new", "1.0"])
def test_v1_section_loads_through_the_old_loader(name):
    r = get_release(name)
    data = bytearray(stream(PIT(r), 3))
    data[HEADER : HEADER + 4] = struct.pack(">I", 1)  # section version 1
    body = HEADER + 4
    data[body:] = v1_payload() + b"\x00"
    dst = load(r, 3, bytes(data))
    for i, ch in enumerate(dst.channels):
        v = channel_values(i)
        got = (ch.count, ch.latched_count, *(getattr(ch, n) for n in BYTES), ch.count_load_time)
        assert got == v[:13]
    assert dst.channels[0].next_transition_time == 2000
    assert dst.channels[0].irq_timer == TIMER
    # Channels without a timer keep the destination's own next_transition_time.
    fresh = PIT(r)
    assert [ch.next_transition_time for ch in dst.channels[1:]] == [
        ch.next_transition_time for ch in fresh.channels[1:]
    ]


def test_v1_truncated_names_the_channel():
    r = get_release("0.14")
    (section,) = PIT(r).sections()
    with pytest.raises(LoadError) as info:
        section.load(StreamReader(v1_payload()[:50]), 1, wire_rules_for(3, r.peek))
    assert info.value.reason is Reason.TRUNCATED
    assert info.value.field == "channels[1]"


def test_v0_is_too_old():
    r = get_release("0.14")
    (section,) = PIT(r).sections()
    with pytest.raises(LoadError) as info:
        section.load(StreamReader(v1_payload()), 0, wire_rules_for(3, r.peek))
    assert info.value.reason is Reason.VERSION_TOO_OLD
