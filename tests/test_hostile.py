"""A catalogue of hand-made hostile streams: each must be refused with its reason, or end
where the modelled QEMU dies.

QEMU shipped a whole class of CVEs where the destination trusted a length, a count or an
index from the stream. Each builder below makes one such stream (from a valid stream of
0.14/pc, or from scratch) and names what the core must do: refuse it with a
:class:`Reason` (a :class:`LoadError`), or stop where the modelled QEMU dies
(:data:`CRASH`: a :class:`LoadCrash`; 0.14 writes RAM pages through a NULL pointer or
outside their block). Anything else is a bug in the core, and so is a load that decodes
more elements than the whole valid stream holds (a hostile count that loops). The tests
bound the work done, not the time: load times of hostile streams against their size are
bench/hostile_memory.py's. Streams QEMU loads without complaint (unknown RAM flags, pages
before the block list) are at the end, as loads.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Callable

import pytest

from harness.emulator import savevm
from harness.emulator.devices import MEDIA
from harness.emulator.errors import LoadCrash, LoadError, Reason
from harness.emulator.machine import Machine
from harness.emulator.ram import FLAG_COMPRESS, FLAG_CONTINUE, FLAG_EOS, FLAG_MEM_SIZE, FLAG_PAGE
from harness.emulator.vmstate import Tracer
from harness.fuzz import frame
from harness.scenarios import apply_scenario, get_scenario

RAM = 64 << 10
REL, MACH = "0.14", "pc"
BLOCKS = (("pc.ram", RAM), ("pc.bios", 128 << 10), ("pc.rom", 128 << 10), ("vga.vram", 8 << 20))
TOTAL = sum(n for _, n in BLOCKS)
FULL, START, PART, END = 4, 1, 2, 3


@functools.cache
def valid(scenario: str = "idle", release: str = REL, machine: str = MACH) -> bytes:
    m = Machine(release, machine, RAM, media=get_scenario(scenario).media)
    apply_scenario(m, scenario)
    data = m.save()
    assert data is not None
    return data


def load(release: str, machine: str, data: bytes, **kw) -> tuple:
    """A destination with every medium (it needs them only to compare, never to load)."""
    return Machine.load(release, machine, data, ram_size=RAM, media=MEDIA, **kw)


@functools.cache
def marks(scenario: str = "idle", release: str = REL, machine: str = MACH) -> list:
    tracer = Tracer()
    load(release, machine, valid(scenario, release, machine), tracer=tracer)
    return tracer.marks


def at(path_end: str, scenario: str = "idle", kind: str = "field", **ep: str) -> int:
    """Offset of the first traced element whose path ends with ``path_end``."""
    for m in marks(scenario, **ep):
        if m.kind == kind and (m.path.endswith(path_end) or m.value == path_end):
            return m.offset
    raise LookupError(path_end)


def patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


def mem_size(blocks=BLOCKS, total: int = TOTAL) -> bytes:
    out = struct.pack(">Q", total | FLAG_MEM_SIZE)
    for name, length in blocks:
        out += bytes((len(name),)) + name.encode() + struct.pack(">Q", length)
    return out


def ram_start(payload: bytes, sid: int = 0) -> tuple:
    return (START, sid, b"ram", 0, 4, payload)


EOS = struct.pack(">Q", FLAG_EOS)

# -- the catalogue: name -> (builder, expected reason) ---------------------------------

Builder = Callable[[], bytes]
CRASH = "crash"  # the modelled release dies (LoadCrash) instead of refusing
CATALOGUE: dict[str, tuple[Builder, Reason | str]] = {}


def hostile(reason: Reason | str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        CATALOGUE[fn.__name__] = (fn, reason)
        return fn

    return register


@hostile(Reason.TRUNCATED)
def idstr_length_255_in_a_short_stream() -> bytes:
    return frame(3, [], eof=False) + struct.pack(">BIB", FULL, 0, 255) + b"cpu_common"


@hostile(Reason.TRUNCATED)
def ram_total_2_pow_63() -> bytes:
    # v4 takes the total as the bound of the block list only: it reads entries until the
    # input ends (QEMU checks no total).
    return frame(3, [ram_start(struct.pack(">Q", (1 << 63) | FLAG_MEM_SIZE))])


@hostile(Reason.RAM_SIZE_MISMATCH)
def ram_block_length_2_pow_63() -> bytes:
    blocks = (("pc.ram", 1 << 63), *BLOCKS[1:])
    return frame(3, [ram_start(mem_size(blocks))])


@hostile(Reason.UNKNOWN_RAM_BLOCK)
def ram_block_name_255_bytes() -> bytes:
    return frame(3, [ram_start(mem_size(((("x" * 255), RAM),)))])


@hostile(Reason.TRUNCATED)
def ram_block_listed_twice() -> bytes:
    # The total is a bound: a block listed twice overshoots it, the ram_addr_t wraps, and
    # the list runs on into the input's end.
    return frame(3, [ram_start(mem_size((BLOCKS[0], BLOCKS[0], *BLOCKS[1:])))])


@hostile(CRASH)
def page_offset_past_the_block() -> bytes:
    page = struct.pack(">Q", RAM | FLAG_COMPRESS) + b"\x06pc.ram" + b"\xaa"
    return frame(3, [ram_start(mem_size() + page + EOS)])


@hostile(CRASH)
def page_offset_2_pow_63() -> bytes:
    page = struct.pack(">Q", (1 << 63) | FLAG_PAGE) + b"\x06pc.ram" + bytes(4096)
    return frame(3, [ram_start(mem_size() + page + EOS)])


@hostile(CRASH)
def raw_page_for_an_unknown_block() -> bytes:
    page = struct.pack(">Q", FLAG_PAGE) + b"\x04nope" + bytes(4096)
    return frame(3, [ram_start(mem_size() + page + EOS)])


@hostile(Reason.UNKNOWN_RAM_BLOCK)
def continue_without_a_previous_block() -> bytes:
    page = struct.pack(">Q", FLAG_COMPRESS | FLAG_CONTINUE) + b"\x00"
    return frame(3, [ram_start(mem_size() + page + EOS)])


@hostile(Reason.UNKNOWN_RAM_BLOCK)
def ram_record_with_every_flag() -> bytes:
    # Each flag acts by itself: MEM_SIZE with a total of 0 lists nothing; COMPRESS (PAGE
    # is ignored beside it) with CONTINUE names the previous record's block, and there is
    # none: 0.14 refuses the uniform page (0.13 would memset through NULL).
    return frame(3, [ram_start(struct.pack(">Q", 0xFFF))])


@hostile(Reason.UNKNOWN_SECTION_ID)
def part_before_start() -> bytes:
    return frame(3, [(PART, 0, None, 0, 0, EOS)])


@hostile(Reason.UNKNOWN_SECTION_ID)
def end_of_a_section_never_started() -> bytes:
    return frame(3, [ram_start(mem_size() + EOS), (END, 7, None, 0, 0, EOS)])


@hostile(Reason.DUPLICATE_SECTION)
def a_second_start_for_the_same_section() -> bytes:
    return frame(3, [ram_start(mem_size() + EOS), ram_start(mem_size() + EOS, sid=1)])


@hostile(Reason.DUPLICATE_SECTION)
def a_start_reusing_a_section_id() -> bytes:
    d = valid()
    cpu = at("FULL cpu_common", kind="section")
    return patch(d, cpu + 1, struct.pack(">I", 0))  # cpu_common claims ram's id 0


@hostile(Reason.DUPLICATE_SECTION)
def repeated_full_sections() -> bytes:
    d = valid()
    a, b = at("FULL i8259", kind="section"), at("FULL mc146818rtc", kind="section")
    pic0 = d[a:b]  # both i8259 sections
    return d[:b] + pic0 * 1000 + d[b:]


@hostile(Reason.INVALID_VALUE)
def pio_state_end_transfer_fn_idx_out_of_range() -> bytes:
    d = valid("ide-pio")
    return patch(d, at("ifs[0]/end_transfer_fn_idx", "ide-pio"), b"\x07")


@hostile(Reason.INVALID_VALUE)
def pio_state_end_transfer_fn_idx_255() -> bytes:
    d = valid("ide-pio")
    return patch(d, at("ifs[0]/end_transfer_fn_idx", "ide-pio"), b"\xff")


@hostile(Reason.INVALID_VALUE)
def pci_irq_state_7() -> bytes:
    d = valid()
    return patch(d, at("e1000/dev/irq_state"), struct.pack(">i", 7))


@hostile(Reason.EQUAL_MISMATCH)
def num_floppies_3() -> bytes:
    d = valid()
    return patch(d, at("fdc/state/num_floppies"), b"\x03")


@hostile(Reason.VERSION_TOO_NEW)
def subsection_version_300() -> bytes:
    d = valid("ide-pio")
    sub = at("ide_drive/pio_state", "ide-pio", kind="subsection")
    n = d[sub + 1]
    return patch(d, sub + 2 + n, struct.pack(">I", 300))  # kept in a u8: 44 > 1


@hostile(Reason.TRUNCATED)
def subsection_name_length_255_at_the_end() -> bytes:
    d = valid("ide-pio")
    sub = at("ide_drive/pio_state", "ide-pio", kind="subsection")
    return d[:sub] + b"\x05\xff" + b"ide_drive/pio"


@hostile(Reason.VERSION_TOO_NEW)
def section_version_0xffffffff() -> bytes:
    d = valid()
    rtc = at("FULL mc146818rtc", kind="section")
    return patch(d, rtc + 1 + 4 + 1 + len("mc146818rtc") + 4, b"\xff" * 4)


@hostile(Reason.UNKNOWN_SECTION)
def unknown_instance_of_a_known_section() -> bytes:
    d = valid()
    rtc = at("FULL mc146818rtc", kind="section")
    return patch(d, rtc + 1 + 4 + 1 + len("mc146818rtc"), struct.pack(">I", 0xFFFFFFFF))


@hostile(Reason.UNKNOWN_SECTION_TYPE)
def ten_megabytes_of_garbage_after_a_valid_prefix() -> bytes:
    d = valid()
    rng = random.Random(8)
    garbage = bytearray(rng.randbytes(10 << 20))
    garbage[0] = 0xA5
    return d[:-1] + bytes(garbage)  # the garbage replaces the EOF byte


@hostile(Reason.UNKNOWN_SECTION_TYPE)
def a_valid_prefix_repeated() -> bytes:
    d = valid()[:-1]
    return d * 3 + b"\x00"  # the second copy's magic "Q" (0x51) lands on a type byte


@hostile(Reason.BAD_MAGIC)
def a_valid_stream_shifted_by_one() -> bytes:
    return b"\x00" + valid()


@hostile(Reason.OBSOLETE_VERSION)
def stream_version_2() -> bytes:
    return frame(2, [])


@hostile(Reason.UNSUPPORTED_VERSION)
def stream_version_0xffffffff() -> bytes:
    return frame(0xFFFFFFFF, [])


@hostile(Reason.TRUNCATED)
def empty_input() -> bytes:
    return b""


@hostile(Reason.TRUNCATED)
def cut_inside_a_ram_page() -> bytes:
    d = valid()
    return d[: at("START ram", kind="section") + 200]


@hostile(Reason.BAD_SENTINEL)
def format_4_without_its_sentinel() -> bytes:
    d = valid(release="new", machine="pc")
    first = next(m.offset for m in marks(release="new", machine="pc") if m.kind == "sentinel")
    return patch(d, first, b"\x05")


def _endpoint(name: str) -> tuple[str, str]:
    return ("new", "pc") if name == "format_4_without_its_sentinel" else (REL, MACH)


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_a_hostile_stream_is_refused_with_its_reason_after_bounded_work(name: str) -> None:
    build, reason = CATALOGUE[name]
    data = build()
    release, machine = _endpoint(name)
    with pytest.raises((LoadError, LoadCrash)) as info:
        load(release, machine, data)
    if reason == CRASH:
        assert type(info.value) is LoadCrash, str(info.value)
    else:
        assert isinstance(info.value, LoadError) and info.value.reason is reason, str(info.value)
    assert info.value.offset is not None and 0 <= info.value.offset <= len(data)
    # The same refusal, traced: every element decoded took bytes of the stream, and there
    # were no more of them than in the whole valid stream of this endpoint.
    tracer = Tracer()
    with pytest.raises((LoadError, LoadCrash)) as traced:
        load(release, machine, data, tracer=tracer)
    assert (type(traced.value), traced.value.offset) == (type(info.value), info.value.offset)
    assert getattr(traced.value, "reason", CRASH) == getattr(info.value, "reason", CRASH)
    assert all(m.end > m.offset for m in tracer.marks)
    assert len(tracer.marks) <= len(marks(release=release, machine=machine))


@pytest.mark.parametrize("records", [
    mem_size() + struct.pack(">Q", 0x40 | FLAG_COMPRESS) + b"\x06pc.ram\x00",  # unknown bit
    mem_size() + struct.pack(">Q", 0x01) + struct.pack(">Q", 0),  # FULL, then no flag at all
    struct.pack(">Q", FLAG_COMPRESS) + b"\x06pc.ram" + b"\x00",  # a page before MEM_SIZE
])  # fmt: skip
def test_ram_records_qemu_ignores_load(records: bytes) -> None:
    load(REL, MACH, frame(3, [ram_start(records + EOS)]))


def test_garbage_after_a_valid_eof_is_counted_not_parsed() -> None:
    data = valid() + random.Random(1).randbytes(10 << 20)
    tracer = Tracer()
    _, report = load(REL, MACH, data, tracer=tracer)
    assert report.bytes_unread == 10 << 20 and report.half_loaded
    assert report.bytes_consumed == len(valid())
    assert [(m.kind, m.offset, m.end) for m in tracer.marks] == \
        [(m.kind, m.offset, m.end) for m in marks()]  # nothing decoded past the EOF


def test_end_transfer_fn_idx_one_past_the_table_loads_as_in_2011() -> None:
    # The releases check "idx > 6", not ">= 6": 6 passes and names no callback (faithful).
    d = valid("ide-pio")
    machine, _ = load(REL, MACH, patch(d, at("ifs[0]/end_transfer_fn_idx", "ide-pio"), b"\x06"))
    assert machine["ide"].drive(0, 0).end_transfer_func is None


def test_subsection_version_257_is_truncated_to_1_and_loads() -> None:
    d = valid("ide-pio")
    sub = at("ide_drive/pio_state", "ide-pio", kind="subsection")
    load(REL, MACH, patch(d, sub + 2 + d[sub + 1], struct.pack(">I", 257)))


def test_many_empty_ram_parts_are_counted_not_kept() -> None:
    """(Their load time against the stream's size: bench/hostile_memory.py.)"""
    records = [ram_start(mem_size() + EOS)] + [(PART, 0, None, 0, 0, EOS)] * 20000
    data = frame(3, records)
    _, report = load(REL, MACH, data)
    assert report.bytes_consumed == len(data) and report.bytes_unread == 0
    assert report.section_count == 20001
    assert report.section_kinds == {"START": 1, "PART": 20000}
    # Counted, not kept one by one: the report does not grow with the stream.
    assert len(report.sections) == savevm.SECTIONS_KEPT
    assert [s.kind for s in report.sections[:2]] == ["START", "PART"]


def test_a_reading_source_that_never_ends_is_bounded_after_eof() -> None:
    from harness.emulator import savevm

    class Endless:
        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

        def read(self, n: int) -> bytes:
            if self.pos < len(self.data):
                chunk = self.data[self.pos : self.pos + n]
                self.pos += len(chunk)
                return chunk
            return b"\xee" * n

    old = savevm.UNREAD_LIMIT
    savevm.UNREAD_LIMIT = 1 << 20
    try:
        _, report = load(REL, MACH, Endless(valid()))
    finally:
        savevm.UNREAD_LIMIT = old
    assert report.bytes_unread == 1 << 20
