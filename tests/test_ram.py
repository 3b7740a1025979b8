"""The live ``ram`` section: golden bytes, live round trips, load errors, truncation."""

from __future__ import annotations

import io
import os
import random
import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.emulator.errors import LoadCrash, LoadError, Reason, TruncatedInput
from harness.emulator.ram import (
    BIOS_SIZE,
    PAGE_SIZE,
    RAM,
    GuestRam,
    GuestWorkload,
    RamLoaderQuirks,
    RamSection,
    compare_ram,
    fill_pattern,
)
from harness.emulator.savevm import HeaderPolicy, LiveStage, Saver, load_stream
from harness.emulator.stream import StreamReader, StreamWriter
from harness.emulator.vmstate import PeekPolicy

from .sources import SocketSink

Q = struct.Struct(">Q").pack
COMPRESS, MEM_SIZE, PAGE, EOS, CONTINUE = 0x02, 0x04, 0x08, 0x10, 0x20
DATA_PAGE = bytes(range(256)) * 16


def tiny() -> GuestRam:
    """Block "a" (3 pages: zero, data, zero) and block "b" (1 page of 0xff)."""
    ram = GuestRam([("a", 3 * PAGE_SIZE), ("b", PAGE_SIZE)])
    ram["a"].write(PAGE_SIZE, DATA_PAGE)
    ram["b"].fill(0, PAGE_SIZE, 0xFF)
    return ram


def name(s: bytes) -> bytes:
    return bytes((len(s),)) + s


GOLDEN_START = b"".join([
    Q(4 * PAGE_SIZE | MEM_SIZE), name(b"a"), Q(3 * PAGE_SIZE), name(b"b"), Q(PAGE_SIZE),
    Q(0 | COMPRESS), name(b"a"), b"\x00",                  # COMPRESS, named block
    Q(PAGE_SIZE | PAGE | CONTINUE), DATA_PAGE,             # PAGE, same block
    Q(2 * PAGE_SIZE | COMPRESS | CONTINUE), b"\x00",       # COMPRESS with CONTINUE
    Q(0 | COMPRESS), name(b"b"), b"\xff",                  # another block: named again
    Q(EOS),
])  # fmt: skip


def save(ram: GuestRam, *stages: LiveStage, section: RamSection | None = None) -> bytes:
    w = StreamWriter()
    sec = section or RamSection(ram)
    for stage in stages:
        sec.save_stage(w, stage)
    return w.getvalue()


def load_chunks(dst: GuestRam, data: bytes, chunks: int, version: int = 4) -> StreamReader:
    r = StreamReader(data)
    sec = RamSection(dst)
    for _ in range(chunks):
        sec.load(r, version, None)
    return r


# -- golden bytes ---------------------------------------------------------------------


def test_start_chunk_golden_bytes():
    assert save(tiny(), LiveStage.START) == GOLDEN_START


def test_part_with_nothing_dirty_is_just_eos():
    ram = tiny()
    sec = RamSection(ram)
    save(ram, LiveStage.START, section=sec)
    assert save(ram, LiveStage.PART, section=sec) == Q(EOS)


def test_continue_carries_across_chunks_as_in_qemu():
    # QEMU's last_block is reset at stage 1 only: after START ended in "b", a PART page
    # of "b" is a CONTINUE record, and one of "a" names its block.
    ram = tiny()
    sec = RamSection(ram)
    save(ram, LiveStage.START, section=sec)
    ram["b"].write(5, b"x")
    ram["a"].fill(0, PAGE_SIZE, 0x11)
    page_b = bytearray(b"\xff" * PAGE_SIZE)
    page_b[5] = ord("x")
    assert save(ram, LiveStage.PART, section=sec) == b"".join([
        Q(0 | COMPRESS), name(b"a"), b"\x11",
        Q(0 | PAGE), name(b"b"), bytes(page_b),
        Q(EOS),
    ])  # fmt: skip
    dst = tiny()
    r = StreamReader(GOLDEN_START + Q(0 | COMPRESS | CONTINUE) + b"\x07" + Q(EOS))
    d = RamSection(dst)
    d.load(r, 4, None)
    d.load(r, 4, None)
    assert dst["b"].data == b"\x07" * PAGE_SIZE


def test_version_3_golden_and_round_trip():
    ram = tiny()
    data = save(ram, LiveStage.START, section=RamSection(ram, version_id=3))
    assert data == b"".join([
        Q(4 * PAGE_SIZE | MEM_SIZE),
        Q(0 | COMPRESS), b"\x00",
        Q(PAGE_SIZE | PAGE), DATA_PAGE,
        Q(2 * PAGE_SIZE | COMPRESS), b"\x00",
        Q(3 * PAGE_SIZE | COMPRESS), b"\xff",                # global address in "b"
        Q(EOS),
    ])  # fmt: skip
    dst = GuestRam([("a", 3 * PAGE_SIZE), ("b", PAGE_SIZE)])
    load_chunks(dst, data, 1, version=3)
    assert compare_ram(ram, dst) == []


def test_pc_layout_and_firmware():
    ram = GuestRam.pc(1 << 20)
    assert ram.layout() == [
        ("pc.ram", 1 << 20), ("pc.bios", 128 << 10), ("pc.rom", 128 << 10),
        ("vga.vram", 8 << 20),
    ]  # fmt: skip
    bios = bytes(ram["pc.bios"].data)
    assert len(bios) == BIOS_SIZE and bios.count(0) < len(bios) // 2
    assert bios[-16:-11] == b"\xea\x5b\xe0\x00\xf0"
    rom = bytes(ram["pc.rom"].data)
    assert rom[:2] == b"\x55\xaa" and sum(rom[: 32 << 10]) % 256 == 0 and not any(rom[-4096:])
    assert not any(ram["vga.vram"].data) and not any(ram["pc.ram"].data)
    assert GuestRam.pc(1 << 20).digests() == ram.digests()
    facade = RAM(1 << 20)
    assert facade.handler.ram is facade and facade.digest() == ram.digests()
    assert (facade.handler.idstr, facade.handler.instance_id, facade.handler.version_id,
            facade.handler.live) == ("ram", 0, 4, True)


# -- live migration -------------------------------------------------------------------


def test_live_round_trip_with_workload():
    src, dst = GuestRam.pc(2 << 20), GuestRam.pc(2 << 20)
    fill_pattern(src, random.Random(1), 0.5)
    for b in dst:  # the destination's own contents must all be overwritten
        b.data[:] = b"\xaa" * len(b.data)
    sec, guest, w = RamSection(src), GuestWorkload(42), StreamWriter()
    sec.save_stage(w, LiveStage.START)
    assert sec.stats.last_pages == src.total_size // PAGE_SIZE
    for _ in range(2):
        written = guest.step(src)
        assert {k for _, _, k in written} == set(GuestWorkload.KINDS)
        sec.save_stage(w, LiveStage.PART)
        assert 0 < sec.stats.last_pages <= len(written)
    guest.step(src)
    sec.save_stage(w, LiveStage.END)
    assert src.dirty_pages() == 0
    r = load_chunks(dst, w.getvalue(), 4)
    assert r.at_eof()
    assert compare_ram(src, dst) == []


def test_workload_is_deterministic():
    a, b = GuestRam.pc(1 << 20), GuestRam.pc(1 << 20)
    assert GuestWorkload(5).step(a) == GuestWorkload(5).step(b)
    assert compare_ram(a, b) == []


def pages_of(block) -> list[bytes]:
    return [block.page(i) for i in range(block.npages)]


def test_fill_pattern_is_deterministic_with_runs_of_distinct_random_pages():
    a, b, c = (GuestRam.pc(16 << 20) for _ in range(3))
    n = fill_pattern(a, random.Random("live-ram:0"), 0.5)
    assert fill_pattern(b, random.Random("live-ram:0"), 0.5) == n
    fill_pattern(c, random.Random("live-ram:1"), 0.5)
    assert compare_ram(a, b) == [] and compare_ram(a, c) != []
    pages = pages_of(a["pc.ram"])
    data = [p for p in pages if p != bytes(PAGE_SIZE)]
    assert len(data) == n and 0.3 < n / len(pages) < 0.7
    assert len(set(data)) == n  # no two random pages alike, nor any page uniform
    assert all(len(set(p)) > 1 for p in data)
    assert a["pc.ram"].dirty_count() == a["pc.ram"].npages


def test_fill_pattern_zeroes_what_the_block_held_before():
    ram = GuestRam.pc(1 << 20)
    block = ram["pc.ram"]
    block.fill(0, len(block), 0xAA)
    n = fill_pattern(ram, random.Random(3), 0.4)
    pages = pages_of(block)
    assert pages.count(bytes(PAGE_SIZE)) == block.npages - n
    assert not any(p.startswith(b"\xaa" * 16) for p in pages)


def test_zeroing_pages_reads_back_zeros_and_leaves_the_dirty_bits():
    ram = GuestRam([("m", 8 * PAGE_SIZE)])
    m = ram["m"]
    m.write(0, DATA_PAGE * 8)
    m.clear_dirty()
    m.zero(2 * PAGE_SIZE, 5 * PAGE_SIZE)
    assert [p == bytes(PAGE_SIZE) for p in pages_of(m)] == [False] * 2 + [True] * 3 + [False] * 3
    assert m.page(1) == m.page(5) == DATA_PAGE
    assert m.dirty_count() == 0


def test_never_written_and_dropped_pages_are_absent_written_ones_not():
    m = GuestRam([("m", 8 * PAGE_SIZE)])["m"]
    m.write(PAGE_SIZE, DATA_PAGE)
    m.fill(2 * PAGE_SIZE, 2 * PAGE_SIZE, 0)  # written zeros: memory the kernel holds
    m.write(5 * PAGE_SIZE, DATA_PAGE)
    m.zero(5 * PAGE_SIZE, 6 * PAGE_SIZE)  # dropped
    absent = m.absent_pages(0, len(m))
    if absent is None:
        pytest.skip("the kernel does not say which pages it holds (not Linux)")
    assert list(absent) == [1, 0, 0, 0, 1, 1, 1, 1]
    assert m.absent_pages(PAGE_SIZE, 3 * PAGE_SIZE) == b"\x00\x00"


def test_a_forked_child_sees_its_own_absent_pages():
    """A child must not read the page map its parent opened (``--jobs 2`` forks)."""
    parent = GuestRam([("m", 4 * PAGE_SIZE)])["m"]
    if parent.absent_pages(0, len(parent)) is None:
        pytest.skip("the kernel does not say which pages it holds (not Linux)")
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes a page the parent never wrote, then asks
        try:
            child = GuestRam([("c", 4 * PAGE_SIZE)])["c"]
            child.write(0, DATA_PAGE)
            os.write(wfd, child.absent_pages(0, len(child)) or b"?")
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        seen = r.read()
    os.waitpid(pid, 0)
    assert list(seen) == [0, 1, 1, 1]


@pytest.mark.parametrize("version", [3, 4])
def test_absent_pages_are_saved_as_the_zero_pages_they_read_as(version, monkeypatch):
    """Skipping pages the kernel holds nothing for changes no byte of the stream."""
    def stream() -> bytes:
        ram = GuestRam([("a", 300 * PAGE_SIZE), ("b", 40 * PAGE_SIZE)])
        a = ram["a"]
        fill_pattern(a, random.Random(6), 0.3, max_run=9)
        a.fill(7 * PAGE_SIZE, 3 * PAGE_SIZE, 0)  # zeros written over the pattern
        a.fill(290 * PAGE_SIZE, PAGE_SIZE, 0x5A)
        ram["b"].write(39 * PAGE_SIZE, DATA_PAGE)
        return save(ram, LiveStage.START, section=RamSection(ram, version_id=version))

    with_pagemap = stream()
    monkeypatch.setattr("harness.emulator.ram._pagemap_fd", {os.getpid(): -1})
    assert stream() == with_pagemap


def test_dirty_tracking_in_bulk():
    ram = GuestRam([("m", 16 * PAGE_SIZE)])
    m = ram["m"]
    m.write(PAGE_SIZE - 1, b"xy")  # straddles pages 0 and 1
    m.fill(5 * PAGE_SIZE, 3 * PAGE_SIZE, 7)
    assert list(m.dirty_runs()) == [(0, 2), (5, 8)]
    assert ram.dirty_pages() == 5
    with pytest.raises(ValueError):
        m.write(16 * PAGE_SIZE - 1, b"ab")


def test_compare_ram_reports_pages_and_counts():
    a, b = tiny(), tiny()
    assert compare_ram(a, b) == []
    big_a = GuestRam([("m", 400 * PAGE_SIZE)])
    big_b = GuestRam([("m", 400 * PAGE_SIZE)])
    for p in range(0, 400, 10):
        big_b["m"].write(p * PAGE_SIZE + 3, b"!")
    (d,) = compare_ram(big_a, big_b, limit=4)
    assert (d.block, d.count, d.pages) == ("m", 40, [0, 10, 20, 30])
    other = GuestRam([("a", 3 * PAGE_SIZE), ("c", PAGE_SIZE)])
    details = {x.block: x.detail for x in compare_ram(a, other)}
    assert set(details) == {"a", "b", "c"} and "missing" in details["b"]


def test_compare_ram_without_memcmp_agrees(monkeypatch):
    from harness.emulator import ram as ram_module

    a, b = GuestRam([("m", 300 * PAGE_SIZE)]), GuestRam([("m", 300 * PAGE_SIZE)])
    b["m"].write(299 * PAGE_SIZE + 7, b"!")
    with_memcmp = compare_ram(a, b)
    monkeypatch.setattr(ram_module, "_libc_memcmp", lambda: None)
    assert compare_ram(a, b) == with_memcmp and with_memcmp[0].pages == [299]
    assert compare_ram(a, a) == []


PAGE_KINDS = st.sampled_from(["unsent", "data", "zero", "ff", "11"])


@settings(max_examples=60, deadline=None)
@given(pages=st.lists(PAGE_KINDS, min_size=1, max_size=24),
       image=st.lists(st.tuples(st.integers(0, 24 * PAGE_SIZE), st.binary(min_size=1,
                                                                          max_size=9000),
                                st.integers(0, 255)), max_size=4))
def test_loading_over_a_pending_image_is_loading_over_the_written_image(pages, image):
    """A block's image waits until its bytes are used, and a page the stream sends
    replaces the image's page whole: loading with the image pending, then reading, gives
    the bytes of writing the image first and loading over it."""
    n = len(pages)
    runs = []
    for start, data, fill in image:
        start %= n * PAGE_SIZE
        runs.append((start, (bytes((fill,)) + data)[: n * PAGE_SIZE - start]))
    records = [Q(n * PAGE_SIZE | MEM_SIZE), name(b"v"), Q(n * PAGE_SIZE)]
    named = False
    for i, kind in enumerate(pages):
        if kind == "unsent":
            continue
        head = Q(i * PAGE_SIZE | (PAGE if kind == "data" else COMPRESS)
                 | (CONTINUE if named else 0)) + (b"" if named else name(b"v"))
        named = True
        body = {"data": DATA_PAGE, "zero": b"\x00", "ff": b"\xff", "11": b"\x11"}[kind]
        records.append(head + body)
    stream = b"".join(records)
    pending, written = GuestRam([("v", n * PAGE_SIZE)]), GuestRam([("v", n * PAGE_SIZE)])
    for ram in (pending, written):
        ram["v"].load_image(runs)
    assert len(written["v"].view) == n * PAGE_SIZE  # the image written before the load
    load_chunk(stream, dst=pending)
    load_chunk(stream, dst=written)
    assert bytes(pending["v"].view) == bytes(written["v"].view)
    assert compare_ram(pending, written) == []


IMAGE_RUNS = st.lists(st.tuples(st.integers(1, 5), st.sampled_from(["z", "r", "xff", "x11",
                                                                      "x00"])),
                      min_size=1, max_size=6)


def imaged(runs: list[tuple[int, str]], extra: int, loaded: bytes = b"",
           materialized: bool = False) -> GuestRam:
    """A two-block RAM: "v" with the image ``runs`` (and ``extra`` pages past it), "w" a
    plain block; ``loaded`` (v4 records) is loaded into it; ``materialized``: its image
    is written before anything else happens."""
    from harness.emulator.ram import BlockImage

    pages = sum(n for n, _ in runs) + extra
    ram = GuestRam([("v", pages * PAGE_SIZE), ("w", 2 * PAGE_SIZE)])
    ram.load_images([BlockImage("v", " ".join(f"{n}{k}" for n, k in runs))], "seed")
    if materialized:
        assert len(ram["v"].view) == pages * PAGE_SIZE
    if loaded:
        load_chunk(loaded, dst=ram)
    return ram


@settings(max_examples=80, deadline=None)
@given(runs=IMAGE_RUNS, extra=st.integers(0, 3), version=st.sampled_from([3, 4]),
       overwrite=st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["data", "zero",
                                                                            "ff"])),
                          max_size=3))
def test_a_block_still_holding_its_image_saves_loads_and_compares_as_its_bytes(
        runs, extra, version, overwrite):
    """Pages that still hold a uniform image are saved from what the block knows of
    them, a load of the same byte leaves them unwritten, and two blocks holding one image
    compare equal unread: every stream, every loaded byte and every comparison is the one
    of the block whose image was written first."""
    pages = sum(n for n, _ in runs) + extra
    loaded = b"".join(
        Q((p % pages) * PAGE_SIZE | (PAGE if kind == "data" else COMPRESS)) + name(b"v")
        + {"data": DATA_PAGE, "zero": b"\x00", "ff": b"\xff"}[kind]
        for p, kind in overwrite)
    lazy, eager = imaged(runs, extra, loaded), imaged(runs, extra, loaded, materialized=True)
    lazy_stream = save(lazy, LiveStage.START, section=RamSection(lazy, version_id=version))
    eager_stream = save(eager, LiveStage.START, section=RamSection(eager, version_id=version))
    assert lazy_stream == eager_stream
    # Loaded into machines with the image, pending or written, and compared both ways.
    into_lazy, into_eager = imaged(runs, extra), imaged(runs, extra, materialized=True)
    for dst in (into_lazy, into_eager):
        r = StreamReader(lazy_stream)
        RamSection(dst, version_id=version).load(r, version, None)
        assert r.offset == len(lazy_stream)
    assert compare_ram(lazy, into_lazy) == [] and compare_ram(into_lazy, into_eager) == []
    assert bytes(into_lazy["v"].view) == bytes(into_eager["v"].view) == bytes(eager["v"].view)


def test_blocks_holding_different_images_compare_unequal():
    from harness.emulator.ram import BlockImage

    a, b = GuestRam([("v", 4 * PAGE_SIZE)]), GuestRam([("v", 4 * PAGE_SIZE)])
    a.load_images([BlockImage("v", "2xff 2z")])
    b.load_images([BlockImage("v", "2xff 1z 1x11")])
    assert a["v"].image_fills(0, 4) == [(0, 2, 0xFF), (2, 4, 0)]
    assert b["v"].image_fills(1, 4) == [(1, 2, 0xFF), (2, 3, 0), (3, 4, 0x11)]
    assert not a["v"].same_image(b["v"])
    (d,) = compare_ram(a, b)
    assert (d.block, d.pages) == ("v", [3])


# -- what the loader refuses, ignores and dies on (QEMU's ram_load) ------------------

SIZES = Q(4 * PAGE_SIZE | MEM_SIZE) + name(b"a") + Q(3 * PAGE_SIZE) + name(b"b") + Q(PAGE_SIZE)


def load_chunk(data: bytes, version: int = 4, quirks: RamLoaderQuirks | None = None,
               dst: GuestRam | None = None) -> GuestRam:
    dst = dst or tiny()
    r = StreamReader(data + Q(EOS))
    RamSection(dst, quirks=quirks).load(r, version, None)
    assert r.offset == len(data) + 8
    return dst


def refuse(data: bytes, version: int = 4, quirks: RamLoaderQuirks | None = None) -> LoadError:
    with pytest.raises(LoadError) as info:
        load_chunk(data, version, quirks)
    assert type(info.value) is LoadError
    return info.value


def crash(data: bytes, version: int = 4, quirks: RamLoaderQuirks | None = None) -> LoadCrash:
    with pytest.raises(LoadCrash) as info:
        load_chunk(data, version, quirks)
    return info.value


@pytest.mark.parametrize(
    "data, reason, offset",
    [
        (Q(4 * PAGE_SIZE | MEM_SIZE) + name(b"zz") + Q(PAGE_SIZE), Reason.UNKNOWN_RAM_BLOCK, 8),
        (Q(4 * PAGE_SIZE | MEM_SIZE) + name(b"a") + Q(2 * PAGE_SIZE), Reason.RAM_SIZE_MISMATCH,
         10),
        (SIZES + Q(0 | COMPRESS) + name(b"nope") + b"\0", Reason.UNKNOWN_RAM_BLOCK, 28),
        (SIZES + Q(0 | COMPRESS | CONTINUE) + b"\0", Reason.UNKNOWN_RAM_BLOCK, 28),
    ],
    ids=["unknown-block-in-list", "block-length", "uniform-page-unknown-block",
         "uniform-page-continue-without-block"],
)
def test_refusals(data, reason, offset):
    e = refuse(data)
    assert (e.reason, e.offset) == (reason, offset)


@pytest.mark.parametrize(
    "data, page_a1",
    [
        (SIZES + Q(PAGE_SIZE | 0x40 | COMPRESS) + name(b"a") + b"\7", 7),
        (SIZES + Q(PAGE_SIZE | 0x800 | COMPRESS) + name(b"a") + b"\7", 7),
        (SIZES + Q(0x01) + Q(PAGE_SIZE | COMPRESS) + name(b"a") + b"\7", 7),
        (SIZES + Q(0) + Q(PAGE_SIZE | COMPRESS) + name(b"a") + b"\7", 7),
        (SIZES + Q(PAGE_SIZE | COMPRESS | PAGE) + name(b"a") + b"\7", 7),
        (Q(PAGE_SIZE | COMPRESS) + name(b"a") + b"\7", 7),
        (Q(4 * PAGE_SIZE | MEM_SIZE | CONTINUE) + name(b"a") + Q(3 * PAGE_SIZE)
         + name(b"b") + Q(PAGE_SIZE), None),
    ],
    ids=["unknown-flag-bit", "unknown-high-flag", "obsolete-full-flag", "no-flags",
         "compress-and-page-is-compress", "page-before-mem-size", "continue-on-mem-size"],
)
def test_what_qemu_ignores_loads(data, page_a1):
    dst = load_chunk(data)
    if page_a1 is not None:
        assert dst["a"].page(1) == bytes((page_a1,)) * PAGE_SIZE


def test_v4_total_only_bounds_the_block_list():
    # A destination with a block the source lacks (a NIC's option ROM) loads the stream:
    # v4 checks the listed blocks, and the total only says when the list ends.
    dst = GuestRam([("a", 3 * PAGE_SIZE), ("b", PAGE_SIZE), ("c.rom", PAGE_SIZE)])
    load_chunk(SIZES, dst=dst)
    # ... while v3 compares the totals.
    assert refuse(Q(8 * PAGE_SIZE | MEM_SIZE), version=3).reason is Reason.RAM_SIZE_MISMATCH


@pytest.mark.parametrize(
    "data, version",
    [
        (SIZES + Q(0 | PAGE) + name(b"nope") + DATA_PAGE, 4),
        (SIZES + Q(0 | PAGE | CONTINUE) + DATA_PAGE, 4),
        (SIZES + Q(3 * PAGE_SIZE | COMPRESS) + name(b"a") + b"\0", 4),
        (SIZES + Q(1 << 40 | PAGE) + name(b"b") + DATA_PAGE, 4),
        (Q(4 * PAGE_SIZE | MEM_SIZE) + Q(4 * PAGE_SIZE | COMPRESS) + b"\0", 3),
    ],
    ids=["page-unknown-block", "page-continue-without-block", "offset-beyond-block",
         "offset-far-beyond", "v3-address-beyond-ram"],
)
def test_where_qemu_dies_the_model_reports_a_crash(data, version):
    assert crash(data, version).offset == (8 if version == 3 else 28)


def test_013_has_no_null_check_for_uniform_pages():
    quirks = RamLoaderQuirks(checks_fill_target=False)
    assert crash(SIZES + Q(0 | COMPRESS) + name(b"nope") + b"\0", quirks=quirks).offset == 28


def test_version_3_ignores_continue():
    dst = load_chunk(Q(4 * PAGE_SIZE | MEM_SIZE) + Q(3 * PAGE_SIZE | COMPRESS | CONTINUE)
                     + b"\5", version=3)
    assert dst["b"].page(0) == b"\5" * PAGE_SIZE


@pytest.mark.parametrize("version, reason", [(2, Reason.VERSION_TOO_OLD),
                                             (5, Reason.VERSION_TOO_NEW)])
def test_other_versions_refused(version, reason):
    assert refuse(b"", version=version).reason is reason


def test_error_reaches_load_stream_with_section():
    handler = RamSection(tiny())
    stream = struct.pack(">IIBIB", 0x5145564D, 3, 1, 0, 3) + b"ram" + struct.pack(">II", 0, 4)
    stream += Q(4 * PAGE_SIZE | MEM_SIZE) + name(b"a") + Q(2 * PAGE_SIZE)
    with pytest.raises(LoadError) as info:
        load_stream(StreamReader(stream), [handler], HeaderPolicy(frozenset({3}), 3),
                    PeekPolicy.PREFIX_MATCH)
    assert (info.value.reason, info.value.section, info.value.offset) == (
        Reason.RAM_SIZE_MISMATCH, "ram", len(stream) - 8)  # at the block's length


# -- truncation -----------------------------------------------------------------------


@pytest.mark.parametrize("source", ["bytes", "file"])
def test_truncation_at_every_offset(source):
    for cut in range(len(GOLDEN_START)):
        data = GOLDEN_START[:cut]
        r = StreamReader(data if source == "bytes" else io.BufferedReader(io.BytesIO(data)),
                         chunk_size=64)
        with pytest.raises(TruncatedInput) as info:
            RamSection(tiny()).load(r, 4, None)
        assert info.value.reason is Reason.TRUNCATED
        assert info.value.offset <= cut


# -- streaming ------------------------------------------------------------------------


def test_streaming_round_trip_over_a_socket_pair():
    src, dst = GuestRam.pc(4 << 20), GuestRam.pc(4 << 20)
    fill_pattern(src, random.Random(3), 0.6)
    guest = GuestWorkload(9, pages=32)
    a, b = socket.socketpair()
    errors: list[BaseException] = []

    def send() -> None:
        try:
            w = StreamWriter(SocketSink(a), flush_threshold=64 << 10)
            saver = Saver(w, [RamSection(src)], 3, PeekPolicy.PREFIX_MATCH)
            saver.begin()
            for _ in range(3):
                guest.step(src)
                saver.iterate()
            guest.step(src)
            saver.complete()
        except BaseException as e:  # reported by the main thread
            errors.append(e)
        finally:
            a.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=send)
    t.start()
    try:
        report = load_stream(StreamReader(b, chunk_size=8192), [RamSection(dst)],
                             HeaderPolicy(frozenset({3}), 3), PeekPolicy.PREFIX_MATCH)
    finally:
        t.join()
        a.close()
        b.close()
    assert not errors
    assert [s.kind for s in report.sections] == ["START", "PART", "PART", "PART", "END"]
    assert not report.half_loaded
    assert compare_ram(src, dst) == []
