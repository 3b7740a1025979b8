"""Specification of harness.emulator.stream: big-endian readers and writers with offsets.

All integers on the wire are big-endian (wire-format.md section 1). A reader knows its
offset after every operation, peeks without consuming, raises ``TruncatedInput`` (a
``LoadError`` carrying the offset) when a read runs past the end, and reads a file, a
pipe or a socket exactly as it reads bytes in memory, without loading the whole stream.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.emulator.errors import LoadError, Reason, TruncatedInput
from harness.emulator.stream import MappedFile, StreamReader, StreamWriter

from .sources import file_source, pipe_source, socket_source

# -- sources ------------------------------------------------------------------------------


class Trickle:
    """A file-like object that hands out at most ``step`` bytes per ``read`` call.

    It has no ``readinto``, so the reader must fall back to ``read``; ``handed_out``
    counts what the reader has pulled so far (how far it has read ahead).
    """

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._inner = io.BytesIO(data)
        self.step = step
        self.handed_out = 0

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.step:
            n = self.step
        chunk = self._inner.read(n)
        self.handed_out += len(chunk)
        return chunk


class TrickleInto(Trickle):
    """Like :class:`Trickle`, plus a ``readinto`` that also fills at most ``step`` bytes."""

    def readinto(self, target: Any) -> int:
        chunk = self.read(min(len(target), self.step))
        target[: len(chunk)] = chunk
        return len(chunk)


@contextmanager
def bytes_source(data: bytes) -> Iterator[Any]:
    yield data


@contextmanager
def trickle_source(data: bytes) -> Iterator[Any]:
    yield Trickle(data)


@contextmanager
def trickle_into_source(data: bytes) -> Iterator[Any]:
    yield TrickleInto(data, step=5)


@contextmanager
def bytesio_source(data: bytes) -> Iterator[Any]:
    yield io.BytesIO(data)


SOURCES = {
    "bytes": bytes_source,
    "bytesio": bytesio_source,
    "file": file_source,
    "trickle-read": trickle_source,
    "trickle-readinto": trickle_into_source,
    "pipe": pipe_source,
    "socketpair": socket_source,
}
STREAM_SOURCES = {k: v for k, v in SOURCES.items() if k != "bytes"}


def run_ops(reader: StreamReader, ops: list[tuple[str, Any]]) -> list[tuple[Any, int]]:
    """Apply reader operations; return (result, offset after the op) for each."""
    out: list[tuple[Any, int]] = []
    for op, arg in ops:
        try:
            if op == "read_into":
                buf = bytearray(arg)
                reader.read_into(memoryview(buf))
                result: Any = bytes(buf)
            elif arg is None:
                result = getattr(reader, op)()
            else:
                result = getattr(reader, op)(arg)
        except TruncatedInput as e:
            result = ("truncated", e.offset, e.wanted, e.available)
            out.append((result, reader.offset))
            break
        out.append((result, reader.offset))
    return out


# -- writer -------------------------------------------------------------------------------


def test_writer_emits_every_width_big_endian_and_counts_offsets() -> None:
    w = StreamWriter()
    steps = [
        (w.u8, 0xAB, "ab"),
        (w.u16, 0x1234, "1234"),
        (w.u32, 0xDEADBEEF, "deadbeef"),
        (w.u64, 0x0102030405060708, "0102030405060708"),
        (w.i8, -1, "ff"),
        (w.i16, -2, "fffe"),
        (w.i32, -0x12345678, "edcba988"),
        (w.i64, -1, "ffffffffffffffff"),
        (w.raw, b"QEVM", "5145564d"),
    ]
    expected = ""
    for method, value, hex_ in steps:
        method(value)
        expected += hex_
        assert w.offset == len(expected) // 2
    assert w.getvalue().hex() == expected


def test_writer_signed_extremes() -> None:
    w = StreamWriter()
    w.i8(-128)
    w.i16(-32768)
    w.i32(-(2**31))
    w.i64(-(2**63))
    w.i8(127)
    w.i64(2**63 - 1)
    assert w.getvalue() == bytes.fromhex("80 8000 80000000 8000000000000000 7f 7fffffffffffffff")


def test_writer_refuses_values_outside_the_width() -> None:
    w = StreamWriter()
    with pytest.raises((ValueError, struct.error)):
        w.u8(256)
    with pytest.raises(struct.error):
        w.u16(-1)
    with pytest.raises(struct.error):
        w.i32(2**31)


def test_writer_with_a_sink_flushes_in_chunks_and_keeps_counting() -> None:
    sink = io.BytesIO()
    w = StreamWriter(sink, flush_threshold=8)
    w.u32(1)
    assert sink.getvalue() == b""  # below the threshold: still buffered
    w.u32(2)
    w.u8(3)
    w.raw(b"x" * 20)  # a large write goes straight to the sink
    w.u16(4)
    assert w.offset == 4 + 4 + 1 + 20 + 2
    w.flush()
    assert sink.getvalue() == bytes.fromhex("00000001 00000002 03") + b"x" * 20 + b"\x00\x04"
    assert w.offset == len(sink.getvalue())
    with pytest.raises(ValueError):
        w.getvalue()


# -- reader over bytes: widths, offsets, peeks, ends ---------------------------------------

GOLDEN = bytes.fromhex("ab 1234 deadbeef 0102030405060708 ff fffe edcba988 ffffffffffffffff 80")


def test_reader_reads_every_width_and_advances_the_offset() -> None:
    r = StreamReader(GOLDEN)
    assert r.offset == 0
    expected = [
        ("read_u8", 0xAB, 1),
        ("read_u16", 0x1234, 3),
        ("read_u32", 0xDEADBEEF, 7),
        ("read_u64", 0x0102030405060708, 15),
        ("read_i8", -1, 16),
        ("read_i16", -2, 18),
        ("read_i32", -0x12345678, 22),
        ("read_i64", -1, 30),
        ("read_i8", -128, 31),
    ]
    for method, value, offset in expected:
        assert getattr(r, method)() == value
        assert r.offset == offset
    assert r.at_eof()


def test_unsigned_readers_do_not_sign_extend() -> None:
    r = StreamReader(bytes.fromhex("ff ffff ffffffff ffffffffffffffff"))
    assert (r.read_u8(), r.read_u16(), r.read_u32(), r.read_u64()) == (
        0xFF,
        0xFFFF,
        0xFFFFFFFF,
        0xFFFFFFFFFFFFFFFF,
    )


def test_read_bytes_skip_and_unpack_advance_the_offset() -> None:
    r = StreamReader(b"abcdef" + bytes.fromhex("0001 0002 0003"))
    assert r.read_bytes(2) == b"ab" and r.offset == 2
    r.skip(3)
    assert r.offset == 5
    assert r.read_bytes(1) == b"f"
    assert r.unpack(struct.Struct(">3H")) == (1, 2, 3)
    assert r.offset == 12
    assert r.read_bytes(0) == b"" and r.offset == 12


def test_read_bytes_refuses_a_negative_length() -> None:
    with pytest.raises(ValueError):
        StreamReader(b"abc").read_bytes(-1)


def test_peek_does_not_consume() -> None:
    r = StreamReader(b"\x05\x09rest")
    assert r.peek(2) == b"\x05\x09"
    assert r.peek(1) == b"\x05"
    assert r.offset == 0
    assert r.read_u8() == 0x05
    assert r.peek(3) == b"\x09re"
    assert r.offset == 1


def test_peek_at_the_end_returns_fewer_bytes_and_never_raises() -> None:
    r = StreamReader(b"\x01\x02\x03")
    r.read_u16()
    assert r.peek(4) == b"\x03"
    r.read_u8()
    assert r.peek(1) == b""
    assert r.at_eof()
    assert r.offset == 3


@pytest.mark.parametrize(
    "method, width",
    [
        ("read_u8", 1),
        ("read_u16", 2),
        ("read_u32", 4),
        ("read_u64", 8),
        ("read_i8", 1),
        ("read_i16", 2),
        ("read_i32", 4),
        ("read_i64", 8),
    ],
)
def test_reading_past_the_end_raises_truncated_input_with_the_offset(
    method: str, width: int
) -> None:
    data = b"\x00\x00\x00" + b"\x11" * (width - 1)
    r = StreamReader(data)
    r.skip(3)
    with pytest.raises(TruncatedInput) as info:
        getattr(r, method)()
    e = info.value
    assert isinstance(e, LoadError)
    assert e.reason is Reason.TRUNCATED
    assert e.offset == 3
    assert (e.wanted, e.available) == (width, width - 1)
    assert r.offset == 3  # nothing consumed by the failed read


def test_read_bytes_and_skip_past_the_end_raise_truncated_input() -> None:
    r = StreamReader(b"abcde")
    r.read_u8()
    with pytest.raises(TruncatedInput) as info:
        r.read_bytes(10)
    assert (info.value.offset, info.value.wanted, info.value.available) == (1, 10, 4)
    with pytest.raises(TruncatedInput) as info:
        r.skip(5)
    assert info.value.offset == 1


def test_read_into_fills_the_target_from_bytes() -> None:
    r = StreamReader(b"xyabcdefgh")
    r.read_u16()
    target = bytearray(5)
    r.read_into(memoryview(target))
    assert target == b"abcde"
    assert r.offset == 7
    assert r.read_bytes(3) == b"fgh"


def test_read_into_past_the_end_of_bytes_raises_truncated_input() -> None:
    r = StreamReader(b"xyabc")
    r.read_u16()
    with pytest.raises(TruncatedInput) as info:
        r.read_into(memoryview(bytearray(5)))
    assert (info.value.offset, info.value.wanted, info.value.available) == (2, 5, 3)


def test_drain_consumes_and_counts_what_is_left() -> None:
    r = StreamReader(bytes(100))
    r.skip(10)
    assert r.drain(limit=30) == 30
    assert r.offset == 40
    assert r.drain() == 60
    assert r.offset == 100
    assert r.drain() == 0


# -- reader over file-like objects ---------------------------------------------------------

MIXED_OPS: list[tuple[str, Any]] = [
    ("peek", 3),
    ("read_u8", None),
    ("read_u16", None),
    ("peek", 20),
    ("read_u32", None),
    ("read_u64", None),
    ("read_i8", None),
    ("read_i16", None),
    ("read_i32", None),
    ("read_i64", None),
    ("read_bytes", 13),
    ("read_into", 40),
    ("skip", 9),
    ("at_eof", None),
    ("read_into", 3),
    ("peek", 1000),
    ("drain", 17),
    ("read_u32", None),
    ("drain", None),
    ("peek", 4),
    ("at_eof", None),
]
MIXED_DATA = bytes((i * 37 + 11) % 256 for i in range(300))


@pytest.mark.parametrize("source", STREAM_SOURCES)
def test_a_stream_source_gives_the_same_values_and_offsets_as_bytes(source: str) -> None:
    expected = run_ops(StreamReader(MIXED_DATA), MIXED_OPS)
    with SOURCES[source](MIXED_DATA) as src:
        got = run_ops(StreamReader(src, chunk_size=16), MIXED_OPS)
    assert got == expected
    assert expected[-1] == (True, len(MIXED_DATA))


@pytest.mark.parametrize("source", STREAM_SOURCES)
def test_reading_past_the_end_of_a_stream_source_matches_bytes(source: str) -> None:
    data = bytes(range(10))
    ops: list[tuple[str, Any]] = [("read_u64", None), ("read_u32", None)]
    expected = run_ops(StreamReader(data), ops)
    assert expected[-1] == (("truncated", 8, 4, 2), 8)
    with SOURCES[source](data) as src:
        assert run_ops(StreamReader(src, chunk_size=4), ops) == expected


@pytest.mark.parametrize("source", ["trickle-read", "trickle-readinto", "bytesio", "file"])
def test_read_into_past_the_end_of_a_stream_source_matches_bytes(source: str) -> None:
    data = bytes(range(10))
    ops: list[tuple[str, Any]] = [("read_u8", None), ("read_into", 20)]
    expected = run_ops(StreamReader(data), ops)
    assert expected[-1] == (("truncated", 1, 20, 9), 1)
    with SOURCES[source](data) as src:
        assert run_ops(StreamReader(src, chunk_size=4), ops) == expected


def test_read_into_truncation_always_points_at_the_end_of_input() -> None:
    """Whatever the source, offset + available is where the input ended."""
    data = bytes(range(10))
    for make in (lambda: data, lambda: Trickle(data), lambda: TrickleInto(data, 3)):
        r = StreamReader(make(), chunk_size=4)
        r.read_u8()
        with pytest.raises(TruncatedInput) as info:
            r.read_into(memoryview(bytearray(20)))
        assert info.value.offset + info.value.available == len(data)


@given(
    data=st.binary(max_size=200),
    ops=st.lists(
        st.one_of(
            st.sampled_from(
                [
                    ("read_u8", None),
                    ("read_u16", None),
                    ("read_u32", None),
                    ("read_u64", None),
                    ("read_i8", None),
                    ("read_i16", None),
                    ("read_i32", None),
                    ("read_i64", None),
                    ("at_eof", None),
                    ("drain", None),
                ]
            ),
            st.tuples(st.sampled_from(["peek", "read_bytes", "skip", "drain"]), st.integers(0, 40)),
            # read_into only within the data: its truncation differs by source (xfail above)
        ),
        max_size=30,
    ),
    step=st.integers(1, 9),
    chunk=st.integers(1, 32),
)
def test_any_operation_sequence_reads_the_same_over_a_trickling_source(
    data: bytes, ops: list[tuple[str, Any]], step: int, chunk: int
) -> None:
    expected = run_ops(StreamReader(data), ops)
    got = run_ops(StreamReader(Trickle(data, step), chunk_size=chunk), ops)
    assert got == expected


@given(
    data=st.binary(max_size=200),
    ops=st.lists(
        st.one_of(
            st.sampled_from([("read_u8", None), ("read_u16", None), ("read_u32", None),
                             ("read_u64", None), ("read_i64", None), ("at_eof", None),
                             ("drain", None)]),
            st.tuples(st.sampled_from(["peek", "read_bytes", "skip", "drain", "read_into"]),
                      st.integers(0, 40)),
        ),
        max_size=30,
    ),
    window=st.integers(1, 16),
)
def test_any_operation_sequence_reads_the_same_over_a_mapped_file(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, ops: list[tuple[str, Any]],
    window: int
) -> None:
    """A mapped file is read through windows of a few bytes here: every value, offset and
    truncation is the same as over bytes, across window boundaries."""
    path = tmp_path_factory.mktemp("mapped") / "stream.bin"
    path.write_bytes(data)
    expected = run_ops(StreamReader(data), ops)
    with open(path, "rb") as f:
        mapped = MappedFile(f, window=window)
        got = run_ops(StreamReader(mapped), ops)
    assert got == expected


def test_a_mapped_file_is_read_through_windows_of_its_pages(tmp_path: Path) -> None:
    data = bytes(range(256)) * 64
    path = tmp_path / "s.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        m = MappedFile(f, window=1000)
    r = StreamReader(m)
    r.skip(999)
    assert r.read_u16() == int.from_bytes(data[999:1001], "big")  # across a window edge
    buf, start, end = r.buffered()
    assert end - start <= 1000  # a window, not the file
    r.skip(len(data) - r.offset - 2)
    assert r.read_bytes(2) == data[-2:] and r.at_eof()
    with pytest.raises(TruncatedInput):
        r.skip(1 << 40)  # a declared length far past the end: refused, nothing allocated
    assert m.read_at(10, 3) == data[10:13] and m.rfind(b"\x06", 0, len(data)) == len(data) - 250


@given(
    data=st.binary(min_size=1, max_size=200),
    sizes=st.lists(st.integers(0, 50), max_size=8),
    step=st.integers(1, 9),
    chunk=st.integers(1, 32),
)
def test_read_into_within_the_data_reads_the_same_over_a_trickling_source(
    data: bytes, sizes: list[int], step: int, chunk: int
) -> None:
    ops: list[tuple[str, Any]] = [("peek", 2)]
    left = len(data)
    for n in sizes:
        if n > left:
            break
        ops += [("read_into", n), ("peek", 3)]
        left -= n
    ops.append(("drain", None))
    for make in (Trickle, TrickleInto):
        expected = run_ops(StreamReader(data), ops)
        assert run_ops(StreamReader(make(data, step), chunk_size=chunk), ops) == expected


def test_read_into_takes_buffered_bytes_then_reads_the_rest_from_the_source() -> None:
    data = bytes(range(256)) * 4
    src = TrickleInto(data, step=10)
    r = StreamReader(src, chunk_size=8)
    assert r.peek(3) == data[:3]  # something is now buffered
    target = bytearray(600)
    r.read_into(memoryview(target))
    assert target == data[:600]
    assert r.offset == 600
    assert r.read_u16() == int.from_bytes(data[600:602], "big")
    assert r.offset == 602


def _large_stream(records: int) -> bytes:
    out = bytearray()
    for i in range(records):
        out += struct.pack(">I", i) + bytes([i % 256]) * 4092
    return bytes(out)


def test_a_large_stream_is_read_incrementally_with_a_small_buffer() -> None:
    records = 1024  # 4 MiB
    data = _large_stream(records)
    chunk = 1 << 12
    src = Trickle(data, step=1 << 20)
    r = StreamReader(src, chunk_size=chunk)
    largest_buffer = 0
    largest_read_ahead = 0
    for i in range(records):
        assert r.read_u32() == i
        page = r.read_bytes(4092)
        assert page[0] == page[-1] == i % 256
        largest_read_ahead = max(largest_read_ahead, src.handed_out - r.offset)
        largest_buffer = max(largest_buffer, len(r._buf))  # noqa: SLF001 - the buffer itself
    assert r.offset == len(data) and r.at_eof()
    # never more than one chunk plus the largest single read ahead of the consumer
    assert largest_read_ahead <= chunk + 4092
    assert largest_buffer <= 2 * (chunk + 4092)


def test_draining_a_large_stream_keeps_the_buffer_small() -> None:
    data = bytes(4 << 20)
    chunk = 1 << 12
    src = Trickle(data, step=1 << 20)
    r = StreamReader(src, chunk_size=chunk)
    r.read_u8()
    assert src.handed_out < len(data)  # not loaded whole by the first read
    largest = 0
    while True:
        n = r.drain(limit=50_000)
        largest = max(largest, len(r._buf))  # noqa: SLF001
        if n == 0:
            break
    assert r.offset == len(data)
    assert largest <= 2 * chunk


@pytest.mark.parametrize("source", ["pipe", "socketpair"])
def test_a_large_stream_over_a_pipe_or_socket_reads_the_same(source: str) -> None:
    data = _large_stream(256)  # 1 MiB, larger than any pipe or socket buffer
    with SOURCES[source](data) as src:
        r = StreamReader(src, chunk_size=1 << 12)
        for i in range(0, 256, 2):
            assert r.read_u32() == i
            target = bytearray(4092)
            r.read_into(memoryview(target))
            assert target == bytes([i % 256]) * 4092
            assert r.read_u32() == i + 1
            assert r.read_bytes(4092) == bytes([(i + 1) % 256]) * 4092
        assert r.offset == len(data)
        assert r.peek(1) == b""
        assert r.drain() == 0


class CountingRaw(io.RawIOBase):
    """An unbuffered file that counts the reads made of it."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        self.reads += 1
        return self._inner.readinto(target)


def test_a_file_is_read_in_large_chunks_not_record_by_record() -> None:
    data = _large_stream(1024)  # 4 MiB of 4-byte headers and 4092-byte pages
    raw = CountingRaw(data)
    r = StreamReader(io.BufferedReader(raw))  # as open(path, "rb") gives it
    page = bytearray(4092)
    for i in range(1024):
        assert r.read_u32() == i
        r.read_into(memoryview(page))
    assert r.at_eof() and r.offset == len(data)
    assert raw.reads <= 8  # a few 1 MiB chunks, and the read that finds the end


def test_a_pipe_is_read_as_soon_as_the_bytes_asked_for_are_there() -> None:
    """One read per call: the reader does not wait for the pipe to fill its buffer."""
    rfd, wfd = os.pipe()
    done = threading.Event()
    got: list[int] = []

    def read() -> None:
        with os.fdopen(rfd, "rb") as f:
            got.append(StreamReader(f, chunk_size=1 << 20).read_u64())
        done.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    os.write(wfd, struct.pack(">Q", 42))
    try:
        assert done.wait(10), "the reader waited for more than the 8 bytes it needed"
        assert got == [42]
    finally:
        os.close(wfd)
        t.join(10)


def test_a_file_is_read_from_where_it_stands_with_offsets_from_there() -> None:
    data = _large_stream(64)
    prefix = b"x" * 5000  # not a multiple of the page size
    with file_source(data, prefix) as f:
        r = StreamReader(f, chunk_size=8192)
        assert r._mapped is not None  # noqa: SLF001 - the file is mapped, not read
        for i in range(64):
            assert (r.offset, r.read_u32()) == (4096 * i, i)
            assert r.read_bytes(4092) == bytes([i % 256]) * 4092
        with pytest.raises(TruncatedInput) as info:
            r.read_u8()
        assert (info.value.offset, info.value.available) == (len(data), 0)


@pytest.mark.parametrize("source", ["trickle-read", "trickle-readinto", "pipe"])
def test_a_length_declared_past_the_end_of_a_stream_allocates_only_what_came(
    source: str,
) -> None:
    """A stream cannot say how much is left, so the buffer grows with the bytes that
    arrive (at most doubling), never to a declared length first."""
    data = bytes(range(256)) * 40  # 10 KiB
    with STREAM_SOURCES[source](data) as src:
        r = StreamReader(src, chunk_size=1 << 12)
        r.read_u8()
        with pytest.raises(TruncatedInput) as info:
            r.read_bytes(4 << 30)
        assert (info.value.offset, info.value.available) == (1, len(data) - 1)
        assert r.peek(1 << 40) == data[1:]
        assert len(r._buf) <= 2 * len(data)  # noqa: SLF001 - the buffer itself
        assert r.read_bytes(len(data) - 1) == data[1:] and r.at_eof()


def test_a_file_that_grows_while_it_is_read_is_read_to_its_new_end(tmp_path: Path) -> None:
    path = tmp_path / "growing.bin"
    path.write_bytes(b"\x01" * 5000)
    with open(path, "rb") as f, open(path, "ab") as more:
        r = StreamReader(f, chunk_size=4096)
        assert r.read_bytes(5000) == b"\x01" * 5000 and r.at_eof()
        more.write(b"\x02" * 9000)
        more.flush()
        assert r.read_bytes(9000) == b"\x02" * 9000 and r.at_eof()
        assert r.offset == 14000
