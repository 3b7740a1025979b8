"""The floppy controller: isa "fdc" -> inner "fdc" -> fdrive[2], and fdrive/media_changed.

Golden bytes are written out with struct.pack from devices.md section 2, not produced by
the engine.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.emulator.devices import Board
from harness.emulator.devices.fdc import (
    FDC,
    fdc_description,
    fdrive_description,
    isa_fdc_description,
)
from harness.emulator.errors import LoadError, Reason
from harness.emulator.releases import Release, get_release
from harness.emulator.savevm import wire_rules_for
from harness.emulator.stream import StreamReader
from harness.emulator.vmstate import dump_state

from . import devtools
from .devtools import payload, stream

# Every release with each stream format it writes.
RUNS = [("0.13", 3), ("0.14", 3), ("0.15", 3), ("new", 3), ("new", 4), ("1.0", 3)]
RUN_IDS = [f"{r}-f{f}" for r, f in RUNS]

SUB_NAME = b"fdrive/media_changed"
HEADER = 8 + 1 + 4 + 1 + len(b"fdc") + 4 + 4  # file header + FULL section header
DRIVES_AT = 9 + 512 + 4 + 4 + 9 + 1  # payload offset of drives[0] (after num_floppies)
PAYLOAD_F3 = DRIVES_AT + 2 * 3  # 545 bytes


# -- helpers ---------------------------------------------------------------------------


# A machine started with -fda: its floppy's media-changed flag was set as it was opened.
FLOPPY = Board(media=frozenset({"fda"}))


def load(release: Release, fmt: int, data: bytes, board: Board | None = None) -> FDC:
    return devtools.load(FDC, release, fmt, data, board)


def state(dev: FDC) -> dict:
    return dump_state(isa_fdc_description(dev.release), dev)


def subsection(flag: int) -> bytes:
    return bytes([0x05, len(SUB_NAME)]) + SUB_NAME + struct.pack(">IB", 1, flag)


def golden(regs, fifo, pos_len, tail, num, drives, *, sentinel=False, subs=None) -> bytes:
    """The inner fdc as devices.md lays it out; ``subs`` maps drive index -> flag sent."""
    subs = subs or {}
    out = struct.pack(">9B", *regs) + fifo + struct.pack(">II", *pos_len)
    out += struct.pack(">9B", *tail) + struct.pack(">B", num)
    for i, geometry in enumerate(drives):
        out += struct.pack(">3B", *geometry)
        if i in subs:
            out += subsection(subs[i])
        if sentinel:
            out += b"\x06"  # after the fdrive element (and its subsection)
    if sentinel:
        out += b"\x06"  # after the inner fdc element
    return out


def distinct(dev: FDC) -> FDC:
    """Give every field a recognisable value."""
    s = dev.state
    for n, name in enumerate(("sra", "srb", "tdr", "dsr", "msr", "status0", "status1",
                              "status2")):  # fmt: skip
        setattr(s, name, 0x10 + n)
    s.dor, s.cur_drv = 0x1C, 1
    s.fifo = bytes(range(256)) * 2
    s.data_pos, s.data_len = 0x11223344, 0x200
    for n, name in enumerate(("data_state", "data_dir", "eot", "timer0", "timer1",
                              "precomp_trk", "config", "lock", "pwrd")):  # fmt: skip
        setattr(s, name, 0x30 + n)
    s.drives[0].head, s.drives[0].track, s.drives[0].sect = 1, 40, 9
    s.drives[1].head, s.drives[1].track, s.drives[1].sect = 0, 2, 3
    dev.change_media(0)  # a floppy inserted: the flag is 1, no subsection is needed
    return dev


DISTINCT_REGS = (0x10, 0x11, 0x1D, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17)  # dor | cur_drv third
DISTINCT_TAIL = tuple(range(0x30, 0x39))
DISTINCT_DRIVES = ((1, 40, 9), (0, 2, 3))


def distinct_golden(**kw) -> bytes:
    return golden(DISTINCT_REGS, bytes(range(256)) * 2, (0x11223344, 0x200), DISTINCT_TAIL,
                  2, DISTINCT_DRIVES, **kw)  # fmt: skip


# -- descriptions ----------------------------------------------------------------------


def test_descriptions_follow_devices_md():
    r = get_release("0.14")
    outer = isa_fdc_description(r)
    assert (outer.name, outer.version_id, outer.minimum_version_id) == ("fdc", 2, 2)
    assert [f.name for f in outer.fields] == ["state"] and outer.fields[0].version_id == 0
    inner = fdc_description(r)
    assert (inner.name, inner.version_id, inner.minimum_version_id) == ("fdc", 2, 2)
    names = [f.name for f in inner.fields]
    assert names[:9] == ["sra", "srb", "dor_vmstate", "tdr", "dsr", "msr", "status0",
                         "status1", "status2"]  # fmt: skip
    assert names[9:] == ["fifo", "data_pos", "data_len", "data_state", "data_dir", "eot",
                         "timer0", "timer1", "precomp_trk", "config", "lock", "pwrd",
                         "num_floppies", "drives"]  # fmt: skip
    drives = inner.fields[-1]
    assert (drives.count, drives.version_id, drives.desc.name) == (2, 1, "fdrive")
    assert fdc_description(r) is inner  # cached per release


@pytest.mark.parametrize("name", ["0.13", "0.14", "0.15"])
def test_fdrive_has_no_subsections_before_new(name):
    assert fdrive_description(get_release(name)).subsections == ()


def test_media_changed_hooks_by_variant():
    bs = fdrive_description(get_release("new")).subsections[0].desc
    own = fdrive_description(get_release("1.0")).subsections[0].desc
    assert bs.name == own.name == "fdrive/media_changed" and bs.version_id == 1
    assert bs.pre_save is not None and bs.post_load is not None
    assert own.pre_save is None and own.post_load is None


def test_section_identity():
    (section,) = FDC(get_release("0.14")).sections()
    assert (section.idstr, section.instance_id, section.version_id) == ("fdc", 0, 2)
    assert section.alias_id == 0x3F0


# -- golden bytes ----------------------------------------------------------------------


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
def test_golden_bytes_without_subsection(name, fmt):
    dev = distinct(FDC(get_release(name)))
    data = payload(dev, fmt)
    assert data == distinct_golden(sentinel=fmt == 4)
    assert len(data) == (PAYLOAD_F3 if fmt == 3 else PAYLOAD_F3 + 3)


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
def test_power_on_golden_bytes(name, fmt):
    """The genstats series sends fdrive/media_changed from power-on: the default floppy
    drive has a block device that was never opened, so its flag is 0 (not 1)."""
    regs = (0x40, 0xC0, 0x0C, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00)
    tail = (0, 0, 0, 0, 0, 0, 0x60, 0, 0)
    subs = {0: 0} if name == "new" else None
    want = golden(regs, bytes(512), (0, 0), tail, 2, ((0, 0, 1), (0, 0, 1)),
                  sentinel=fmt == 4, subs=subs)
    assert payload(FDC(get_release(name)), fmt) == want
    assert len(want) == {3: 545, 4: 548}[fmt] + (27 if subs else 0)


@pytest.mark.parametrize("name,fmt", [("new", 3), ("new", 4), ("1.0", 3)])
def test_media_changed_subsection_two_levels_deep(name, fmt):
    dev = distinct(FDC(get_release(name)))
    dev.clear_media_changed(0)
    dev.state.cur_drv = 1  # keep the golden register values
    data = payload(dev, fmt)
    assert data == distinct_golden(sentinel=fmt == 4, subs={0: 0})
    # Right after drive 0's three bytes, inside the inner fdc, not at the section's end.
    assert data[DRIVES_AT + 3 : DRIVES_AT + 5] == bytes([0x05, 20])
    assert len(data) == PAYLOAD_F3 + 27 + (3 if fmt == 4 else 0)


@pytest.mark.parametrize("name", ["0.13", "0.14", "0.15"])
def test_no_subsection_before_new(name):
    dev = distinct(FDC(get_release(name)))
    dev.clear_media_changed(0)
    dev.state.cur_drv = 1
    assert payload(dev, 3) == distinct_golden()


@pytest.mark.parametrize("name", ["new", "1.0"])
def test_subsection_needs_a_block_device(name):
    dev = distinct(FDC(get_release(name)))
    dev.state.drives[1].media_changed = 0  # drive 1 has no block device
    assert dev.state.drives[1].bs is None
    assert payload(dev, 3) == distinct_golden()


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("seed", range(6))
def test_format4_sentinels_exactly_after_each_element(name, fmt, seed):
    """Format 4 = format 3 plus one 0x06 after each fdrive (after its subsection) and one
    after the inner fdc; nothing else changes."""
    dev = FDC(get_release(name))
    dev.randomize(random.Random(seed))
    if seed % 2:
        dev.clear_media_changed(0)
    p3, p4 = payload(dev, 3), payload(dev, 4)
    sub = len(subsection(0)) if p3[DRIVES_AT + 3 : DRIVES_AT + 4] == b"\x05" else 0
    if dev.release.has("fdrive/media_changed"):
        assert bool(sub) == (dev.media_changed(0) != 1)
    end0 = DRIVES_AT + 3 + sub
    assert len(p3) == end0 + 3
    assert p4 == p3[:end0] + b"\x06" + p3[end0:] + b"\x06\x06"


# -- loading ---------------------------------------------------------------------------


def test_num_floppies_must_be_two():
    dev = FDC(get_release("0.14"))
    dev.state.num_floppies = 3
    with pytest.raises(LoadError) as info:
        load(get_release("0.14"), 3, stream(dev, 3))
    err = info.value
    assert err.reason is Reason.EQUAL_MISMATCH
    assert err.field == "state/num_floppies"
    assert err.section == "fdc"
    assert err.offset == HEADER + DRIVES_AT - 1


def test_dor_select_bits_split_on_load():
    r = get_release("0.14")
    dev = FDC(r)
    dev.state.dor, dev.state.cur_drv = 0x1C, 1
    dst = load(r, 3, stream(dev, 3))
    assert (dst.state.dor, dst.state.cur_drv, dst.state.dor_vmstate) == (0x1C, 1, 0x1D)


def test_fifo_size_is_bounded():
    r = get_release("0.14")
    dst = FDC(r)
    dst.state.fifo_size = 4096  # a hostile destination-side size never reads past 512
    (section,) = dst.sections()
    with pytest.raises(LoadError) as info:
        section.load(StreamReader(payload(FDC(r), 3)), 2, wire_rules_for(3, r.peek))
    assert info.value.reason is Reason.LIMIT_EXCEEDED
    assert info.value.field == "state/fifo"


def _scenarios():
    yield "reset", lambda d: None
    yield "clear_media_changed", lambda d: d.clear_media_changed(0)
    yield "change_media", lambda d: (d.clear_media_changed(0), d.change_media(0))
    for seed in range(8):
        yield f"random{seed}", lambda d, s=seed: d.randomize(random.Random(s))


SCENARIOS = list(_scenarios())


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("scenario", [s[1] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
def test_round_trip(name, fmt, scenario):
    r = get_release(name)
    src = FDC(r, FLOPPY)
    scenario(src)
    dst = load(r, fmt, stream(src, fmt), FLOPPY)
    assert state(dst) == state(src)
    if r.has("fdrive/media_changed"):
        assert dst.media_changed(0) == src.media_changed(0)


@settings(max_examples=60, deadline=None)
@given(run=st.sampled_from(RUNS), seed=st.integers(0, 2**32 - 1), clear=st.booleans())
def test_round_trip_any_random_state(run, seed, clear):
    r = get_release(run[0])
    src = FDC(r, FLOPPY)
    src.randomize(random.Random(seed))
    if clear:
        src.clear_media_changed(0)
    assert state(load(r, run[1], stream(src, run[1]), FLOPPY)) == state(src)


def test_flag_is_lost_before_new():
    """Before 7d905f716 the DIR flag is not migrated: the destination shows a new disk."""
    r = get_release("0.14")
    src = FDC(r)
    src.clear_media_changed(0)
    dst = load(r, 3, stream(src, 3))
    assert src.media_changed(0) == 0 and dst.media_changed(0) == 1


def test_bs_flag_written_back_to_block_device():
    r = get_release("new")
    src = FDC(r)
    src.clear_media_changed(0)
    assert src.state.drives[0].bs.media_changed == 0
    dst = load(r, 4, stream(src, 4))
    assert dst.state.drives[0].bs.media_changed == 0


def test_change_media_sets_flag_and_needs_a_drive():
    dev = FDC(get_release("1.0"))
    dev.clear_media_changed(0)
    assert dev.media_changed(0) == 0 and dev.state.drives[0].media_changed == 0
    dev.change_media(0)
    assert dev.media_changed(0) == 1
    with pytest.raises(ValueError):
        dev.change_media(1)
    dev.clear_media_changed(1)  # no medium: nothing to clear
    assert dev.state.drives[1].media_changed == 1


# -- across releases: the ambiguity ----------------------------------------------------


@pytest.mark.parametrize("dest", ["0.14", "0.15"])
def test_peek_if_defined_destination_silently_misreads(dest):
    """fdrive defines no subsections in 0.14/0.15: the 0x05 header is read as drive 1."""
    src = FDC(get_release("new"))
    src.clear_media_changed(0)
    data = stream(src, 3)  # new/pc-0.14
    try:
        dst = load(get_release(dest), 3, data)
    except LoadError as e:
        assert e.reason is not Reason.UNKNOWN_SUBSECTION
        # drive 1 swallowed 0x05, 0x14, 'f'; the name's 'd' lands on a type-byte position.
        assert e.reason is Reason.UNKNOWN_SECTION_TYPE
    else:
        assert state(dst) != state(src)


def test_always_peek_destination_rejects_cleanly():
    src = FDC(get_release("new"))
    src.clear_media_changed(0)
    with pytest.raises(LoadError) as info:
        load(get_release("0.13"), 3, stream(src, 3))
    assert info.value.reason is Reason.UNKNOWN_SUBSECTION
    assert info.value.field == "state/drives[0]"  # two struct levels below the section


def test_prefix_match_destination_reads_new_stream():
    src = FDC(get_release("new"))
    src.clear_media_changed(0)
    dst = load(get_release("1.0"), 3, stream(src, 3))
    assert state(dst) == state(src) and dst.media_changed(0) == 0


def test_format4_refused_by_peek_if_defined_release():
    with pytest.raises(LoadError) as info:
        load(get_release("0.14"), 3, stream(FDC(get_release("new")), 4))
    assert info.value.reason is Reason.UNSUPPORTED_VERSION
