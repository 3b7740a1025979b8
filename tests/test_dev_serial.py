"""isa-serial: qdev "serial" v3 whose only field is the embedded inner "serial" v3."""

from __future__ import annotations

import random
import struct

import pytest

from harness.emulator.devices.serial import Serial, isa_serial_description, serial_description
from harness.emulator.errors import LoadError, Reason
from harness.emulator.releases import Release, get_release
from harness.emulator.savevm import wire_rules_for
from harness.emulator.stream import StreamReader
from harness.emulator.vmstate import dump_state, load_state

from . import devtools
from .devtools import payload, stream

RUNS = [("0.13", 3), ("0.14", 3), ("0.15", 3), ("new", 3), ("new", 4), ("1.0", 3)]
RUN_IDS = [f"{r}-f{f}" for r, f in RUNS]
REGS = ("rbr", "ier", "iir", "lcr", "mcr", "lsr", "msr", "scr")
HEADER = 8 + 1 + 4 + 1 + len(b"serial") + 4  # up to the section version


def load(release: Release, fmt: int, data: bytes) -> Serial:
    return devtools.load(Serial, release, fmt, data)


def state(dev: Serial) -> dict:
    return dump_state(isa_serial_description(dev.release), dev)


def distinct(dev: Serial) -> Serial:
    s = dev.state
    s.divider = 0x0102
    for n, name in enumerate(REGS):
        setattr(s, name, 0x10 + n)
    s.iir = 0xC1  # FIFOs enabled
    s.fcr = 0x81
    return dev


DISTINCT = struct.pack(">H8BB", 0x0102, 0x10, 0x11, 0xC1, 0x13, 0x14, 0x15, 0x16, 0x17, 0x81)


def test_descriptions():
    r = get_release("0.14")
    outer, inner = isa_serial_description(r), serial_description(r)
    assert (outer.name, outer.version_id, outer.minimum_version_id) == ("serial", 3, 2)
    assert [f.name for f in outer.fields] == ["state"] and outer.fields[0].desc is inner
    assert (inner.name, inner.version_id, inner.minimum_version_id) == ("serial", 3, 2)
    assert (inner.fields[0].version_id, inner.fields[-1].version_id) == (2, 3)
    (section,) = Serial(r).sections()
    assert (section.idstr, section.instance_id, section.version_id) == ("serial", 0, 3)
    assert section.alias_id == 0x3F8


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
def test_golden_bytes(name, fmt):
    """11 bytes; format 4 adds one 0x06 after the embedded UART and nothing else."""
    data = payload(distinct(Serial(get_release(name))), fmt)
    assert data == DISTINCT + (b"\x06" if fmt == 4 else b"")


def test_pre_save_copies_fcr():
    dev = distinct(Serial(get_release("0.14")))
    dev.state.fcr_vmstate = 0
    assert payload(dev, 3)[-1] == 0x81 and dev.state.fcr_vmstate == 0x81


def test_post_load_applies_fcr():
    r = get_release("0.14")
    dst = load(r, 3, stream(distinct(Serial(r)), 3))
    assert dst.state.fcr == 0x81 and dst.state.iir & 0xC0 == 0xC0


def test_outer_v2_still_reads_fcr_vmstate():
    """The inner struct loads at its own v3, so the v3 field is read whatever the section
    version, and the post_load "version < 3" branch is dead."""
    r = get_release("0.14")
    dst = Serial(r)
    (section,) = dst.sections()
    reader = StreamReader(DISTINCT)
    section.load(reader, 2, wire_rules_for(3, r.peek))
    assert reader.offset == 11 and dst.state.fcr == 0x81


def test_inner_loaded_at_v2_zeroes_fcr():
    """serial_init registers the inner description directly: a v2 section has no
    fcr_vmstate, and post_load writes 0 to the FCR."""
    r = get_release("0.14")
    s = Serial(r).state
    s.fcr, s.fcr_vmstate = 0x01, 0x55
    reader = StreamReader(DISTINCT[:-1])
    load_state(reader, serial_description(r), s, 2, wire_rules_for(3, r.peek))
    assert reader.offset == 10
    assert s.fcr_vmstate == 0 and s.fcr == 0 and s.iir & 0xC0 == 0


def test_version_1_is_too_old():
    r = get_release("0.14")
    data = bytearray(stream(Serial(r), 3))
    data[HEADER : HEADER + 4] = struct.pack(">I", 1)
    with pytest.raises(LoadError) as info:
        load(r, 3, bytes(data))
    assert info.value.reason is Reason.VERSION_TOO_OLD


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("seed", [None, *range(8)])
def test_round_trip(name, fmt, seed):
    r = get_release(name)
    src = Serial(r)
    if seed is not None:
        src.randomize(random.Random(seed))
    dst = load(r, fmt, stream(src, fmt))
    assert state(dst) == state(src)
    assert (dst.state.fcr, dst.state.iir) == (src.state.fcr, src.state.iir)


def test_receive_sets_data_ready():
    dev = Serial(get_release("1.0"))
    dev.state.ier = 0x01
    dev.receive(0x41)
    assert (dev.state.rbr, dev.state.lsr & 1, dev.state.iir & 0x0F) == (0x41, 1, 0x04)


def test_format4_sentinel_required():
    r = get_release("new")
    data = stream(Serial(r), 4)
    broken = data[:-2] + b"\x07" + data[-1:]  # the 0x06 before EOF
    with pytest.raises(LoadError) as info:
        load(r, 4, broken)
    assert info.value.reason is Reason.BAD_SENTINEL
    assert info.value.field == "state"
