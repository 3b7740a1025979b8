"""Big-endian byte streams that always know their offset.

:class:`StreamWriter` appends to memory and, given a sink, flushes to it in chunks so a
large guest is never held whole. :class:`StreamReader` reads from bytes in memory, maps a
regular file a window at a time, and reads anything else with ``readinto``/``read``/
``recv_into`` (a pipe, a socket) in large chunks, buffering only what has not been
consumed yet. Whatever the source, a read past the end raises :class:`TruncatedInput`
carrying the same offset; :meth:`StreamReader.peek` never raises and may return fewer
bytes.

>>> w = StreamWriter()
>>> w.u8(1); w.u16(0x0203); w.i32(-1)
>>> w.getvalue().hex()
'010203ffffffff'
>>> r = StreamReader(w.getvalue())
>>> r.peek(2), r.read_u8(), r.offset
(b'\\x01\\x02', 1, 1)
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
import weakref

from .errors import TruncatedInput

# typing.TYPE_CHECKING without importing typing, which the analyzer's start pays for
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Sink(Protocol):
        """Where a :class:`StreamWriter` flushes to: anything with ``write``."""

        def write(self, data: Any, /) -> Any: ...


__all__ = ["MappedFile", "StreamReader", "StreamWriter"]

_KEEP_MOST = 1 << 26  # a skip cut short by the end puts back at most this much

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class StreamWriter:
    """Appends big-endian values; ``offset`` counts every byte written so far.

    Without a sink, small values collect in a buffer and large ``raw`` pieces are kept as
    they are (bytes are immutable, other buffers are copied once), so :meth:`getvalue`
    joins the stream with one copy instead of growing one buffer by reallocation.

    ``keep_views``: :meth:`raw_parts` keeps the views it is given (a guest's pages) as
    views, so that their bytes are copied once, into the stream :meth:`getvalue` joins,
    not first into a piece of it; the writer's owner calls :meth:`settle` before the
    memory they show changes (a guest running between live passes).
    """

    __slots__ = ("_buf", "_sink", "_flushed", "_threshold", "_chunks", "_keep_views",
                 "_settled")

    _KEEP = 1 << 16  # a raw piece at least this large is kept whole (no sink)

    def __init__(self, sink: Sink | None = None, *, flush_threshold: int = 1 << 20,
                 keep_views: bool = False) -> None:
        self._buf = bytearray()
        self._sink = sink
        self._flushed = 0  # bytes handed to the sink or kept in ``_chunks``
        self._threshold = flush_threshold
        self._chunks: list[bytes | bytearray | memoryview] = []
        self._keep_views = keep_views and sink is None
        self._settled = 0  # ``_chunks`` before this index hold no view

    @property
    def offset(self) -> int:
        return self._flushed + len(self._buf)

    def u8(self, value: int) -> None:
        self._buf.append(value)

    def u16(self, value: int) -> None:
        self._buf += _U16.pack(value)

    def u32(self, value: int) -> None:
        self._buf += _U32.pack(value)

    def u64(self, value: int) -> None:
        self._buf += _U64.pack(value)

    def i8(self, value: int) -> None:
        self._buf += _I8.pack(value)

    def i16(self, value: int) -> None:
        self._buf += _I16.pack(value)

    def i32(self, value: int) -> None:
        self._buf += _I32.pack(value)

    def i64(self, value: int) -> None:
        self._buf += _I64.pack(value)

    def raw(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if self._sink is None:
            if n >= self._KEEP:
                if self._buf:
                    self._chunks.append(self._buf)
                    self._flushed += len(self._buf)
                    self._buf = bytearray()
                self._chunks.append(data if type(data) is bytes else bytes(data))
                self._flushed += n
            else:
                self._buf += data
            return
        if n >= self._threshold:
            self.flush()
            self._sink.write(data)
            self._flushed += n
            return
        self._buf += data
        if len(self._buf) >= self._threshold:
            self.flush()

    def raw_parts(self, parts: list[bytes | memoryview]) -> None:
        """``raw`` of the parts in order: views are kept as they are with ``keep_views``
        (see the class), else joined into one piece."""
        if not self._keep_views:
            self.raw(b"".join(parts))
            return
        if self._buf:
            self._chunks.append(self._buf)
            self._flushed += len(self._buf)
            self._buf = bytearray()
        self._chunks.extend(parts)
        self._flushed += sum(map(len, parts))

    def settle(self) -> None:
        """Copy the views :meth:`raw_parts` kept: the memory they show may change now."""
        chunks, start = self._chunks, self._settled
        if any(type(c) is memoryview for c in chunks[start:]):
            chunks[start:] = [b"".join(chunks[start:])]
        self._settled = len(chunks)

    def flush(self) -> None:
        """Hand buffered bytes to the sink (no-op without one)."""
        if self._sink is not None and self._buf:
            self._sink.write(self._buf)
            self._flushed += len(self._buf)
            self._buf = bytearray()

    def getvalue(self) -> bytes:
        """Everything written, for a writer without a sink."""
        if self._sink is not None:
            raise ValueError("getvalue() on a writer that flushes to a sink")
        if not self._chunks:
            return bytes(self._buf)
        return b"".join((*self._chunks, self._buf))


class MappedFile:
    """A regular file read through one read-only ``mmap`` of it, a window at a time.

    :class:`StreamReader` maps every regular file it is given (from where the file
    stands) and takes views of the mapping instead of copies: skipping a page costs
    nothing, and a declared length longer than the file is seen before anything is
    allocated. Pages behind the window being read are released (``MADV_DONTNEED``), so
    resident memory stays at about one window however large the file. The analyzer also
    searches the mapping and reads it anywhere. A file that grows while it is read is
    mapped again when a read reaches the old end; it must not shrink.
    """

    def __init__(self, f: Any, *, window: int = 4 << 20, origin: int = 0) -> None:
        fileno = f.fileno() if hasattr(f, "fileno") else f
        self._fd = os.dup(fileno)  # ours: the caller may close ``f``, and growth remaps
        self._closer = weakref.finalize(self, os.close, self._fd)
        self._origin = origin  # file offset of offset 0
        self.window = window
        self.size = 0
        self._map: mmap.mmap | None = None
        self._view = memoryview(b"")
        self._released = 0  # pages below this were released since the last rewind
        self._remap()

    @classmethod
    def of(cls, source: Any, *, window: int) -> MappedFile | None:
        """A mapping of ``source`` from where it stands, if it is a regular, non-empty
        file (a file in /proc says size 0 and is read as a stream), else ``None``."""
        try:
            fd = source.fileno()
            info = os.fstat(fd)
            origin = source.tell()
        except (AttributeError, OSError, ValueError):
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return None
        try:
            return cls(fd, window=window, origin=origin)
        except (OSError, ValueError):  # not mappable (a write-only descriptor): read it
            return None

    def _remap(self) -> None:
        length = os.fstat(self._fd).st_size
        if length <= self._origin + self.size:
            return
        old = self._map
        self._map = mmap.mmap(self._fd, length, access=mmap.ACCESS_READ)
        self._view.release()
        self._view = memoryview(self._map)[self._origin :]
        self.size = length - self._origin
        if old is not None:
            _close(old)

    def view(self, offset: int, n: int) -> memoryview:
        """At least ``n`` bytes from ``offset`` (fewer at the end), and up to a window."""
        if offset + n > self.size:
            self._remap()  # the file may have grown since
        if offset >= self.size:
            return self._view[0:0]
        self.release(offset)
        return self._view[offset : min(self.size, offset + max(n, self.window))]

    def read_at(self, offset: int, n: int) -> bytes:
        return bytes(self._view[offset : offset + max(0, n)]) if offset < self.size else b""

    def rfind(self, sub: bytes, start: int, end: int) -> int:
        """The highest offset of ``sub`` in ``[start, end)``, or -1 (searched in C)."""
        if self._map is None:
            return -1
        found = self._map.rfind(sub, self._origin + start, self._origin + end)
        return found - self._origin if found >= 0 else -1

    def drop(self, start: int, end: int) -> None:
        """Let the kernel take back the resident pages of ``[start, end)`` (after a search
        that touched them, such as a backward scan for a trailer)."""
        self._advise(self._origin + start, self._origin + min(self.size, end))

    def release(self, offset: int) -> None:
        """Let the kernel take back the resident pages before ``offset`` (those released
        already are skipped, until a reader goes back to an earlier offset)."""
        end = self._origin + offset
        end -= end % mmap.PAGESIZE  # the page being read stays
        start = self._released if end >= self._released else 0
        self._advise(start, end)
        self._released = end

    def _advise(self, lo: int, hi: int) -> None:
        """``MADV_DONTNEED`` from the page holding file offset ``lo`` up to ``hi``."""
        lo -= lo % mmap.PAGESIZE
        if self._map is not None and _MADV_DONTNEED is not None and hi > lo:
            self._map.madvise(_MADV_DONTNEED, lo, hi - lo)

    def close(self) -> None:
        self._view.release()
        if self._map is not None:
            _close(self._map)
        self._closer()


def _close(m: mmap.mmap) -> None:
    try:
        m.close()
    except BufferError:  # a reader still holds a view: unmapped when it lets go
        pass


_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


class StreamReader:
    """Reads big-endian values from memory or from a stream, tracking the offset.

    Over bytes it reads in place. A regular file (or a :class:`MappedFile`) it reads in
    place through views of its mapping, a window of ``chunk_size`` bytes (or the largest
    single read) at a time. Over another stream it
    reads ahead in large chunks into one buffer that it reuses (``readinto``,
    ``recv_into``: one copy from the kernel) and keeps only the bytes not yet consumed;
    the buffer grows with the bytes that arrive, never ahead of them to a declared
    length, and :meth:`skip` discards without buffering.
    """

    __slots__ = ("_buf", "_pos", "_end", "_base", "_src", "_eof", "_chunk", "_read_into",
                 "_mapped")

    def __init__(self, source: Any, *, chunk_size: int = 1 << 20) -> None:
        self._base = 0
        self._pos = 0
        self._chunk = chunk_size
        self._read_into: Any = None
        self._mapped: MappedFile | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._buf: Any = memoryview(source).cast("B")
            self._end = len(self._buf)
            self._src = None
            self._eof = True
            return
        self._src = source
        self._eof = False
        self._mapped = (source if isinstance(source, MappedFile)
                        else MappedFile.of(source, window=chunk_size))
        if self._mapped is not None:
            self._buf = self._mapped.view(0, 0)
            self._end = len(self._buf)
            return
        self._buf = bytearray()
        self._end = 0  # ``_buf[_pos:_end]`` is unconsumed; beyond ``_end``: free space
        # At most one read of the source per call, so a pipe or socket never waits to
        # fill the whole buffer (a BufferedReader's ``readinto`` would).
        for name in ("recv_into", "readinto1", "readinto"):
            if hasattr(source, name):
                self._read_into = getattr(source, name)
                break

    # -- position -------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Bytes consumed since the start of the stream."""
        return self._base + self._pos

    def at_eof(self) -> bool:
        return not self.peek(1)

    # -- buffering ------------------------------------------------------------------

    def _fill(self, n: int) -> bool:
        """Make ``n`` unconsumed bytes available if the source has them."""
        if self._src is None:
            return self._end - self._pos >= n
        if self._mapped is not None:
            start = self._base + self._pos
            self._buf = self._mapped.view(start, n)
            self._base, self._pos, self._end = start, 0, len(self._buf)
            return self._end >= n
        buf, pos = self._buf, self._pos
        if pos:  # move the unconsumed bytes to the front
            left = self._end - pos
            if left:
                with memoryview(buf) as mv:  # one memmove (a bytearray slice copies twice)
                    mv[:left] = mv[pos : self._end]
            self._base += pos
            self._pos = 0
            self._end = left
        room = max(self._chunk, n)
        while self._end < n and not self._eof:
            if self._end == len(buf):
                # Full: grow, at most doubling, so a declared length never allocates more
                # than twice the bytes that really came (a 4 GiB read of a short pipe).
                buf.extend(bytes(min(room, max(self._chunk, 2 * len(buf))) - len(buf)))
            got = self._read_source_into(self._end)
            if not got:
                self._eof = True
                break
            self._end += got
        return self._end >= n

    def _read_source_into(self, at: int) -> int:
        """One read of the source into the free space of the buffer from ``at``."""
        if self._read_into is not None:
            with memoryview(self._buf) as mv:
                return self._read_into(mv[at:]) or 0
        chunk = self._read_source(len(self._buf) - at)
        with memoryview(self._buf) as mv:
            mv[at : at + len(chunk)] = chunk
        return len(chunk)

    def _read_source(self, n: int) -> bytes:
        src = self._src
        if hasattr(src, "recv"):
            return src.recv(n)
        if hasattr(src, "read1"):
            return src.read1(n)
        return src.read(n)

    def _need(self, n: int) -> int:
        """Return the position of ``n`` available bytes, consuming them. Call it before
        taking ``_buf``: it may replace the buffer (a file's next window)."""
        pos = self._pos
        if self._end - pos < n:
            if not self._fill(n):
                raise TruncatedInput(self.offset, n, self._end - self._pos)
            pos = self._pos
        self._pos = pos + n
        return pos

    # -- reads ----------------------------------------------------------------------

    def read_u8(self) -> int:
        pos = self._need(1)
        return self._buf[pos]

    def read_u16(self) -> int:
        pos = self._need(2)
        return _U16.unpack_from(self._buf, pos)[0]

    def read_u32(self) -> int:
        pos = self._need(4)
        return _U32.unpack_from(self._buf, pos)[0]

    def read_u64(self) -> int:
        pos = self._need(8)
        return _U64.unpack_from(self._buf, pos)[0]

    def read_i8(self) -> int:
        pos = self._need(1)
        return _I8.unpack_from(self._buf, pos)[0]

    def read_i16(self) -> int:
        pos = self._need(2)
        return _I16.unpack_from(self._buf, pos)[0]

    def read_i32(self) -> int:
        pos = self._need(4)
        return _I32.unpack_from(self._buf, pos)[0]

    def read_i64(self) -> int:
        pos = self._need(8)
        return _I64.unpack_from(self._buf, pos)[0]

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        """Read ``fmt.size`` bytes and unpack them (arrays of integers in one call)."""
        pos = self._need(fmt.size)
        return fmt.unpack_from(self._buf, pos)

    def read_bytes(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("negative length")
        pos = self._need(n)
        return bytes(self._buf[pos : pos + n])

    def read_into(self, target: memoryview) -> None:
        """Fill ``target`` completely: through the buffer when it is at most a chunk, else
        buffered bytes first and then straight from the source."""
        n = len(target)
        have = self._end - self._pos
        if have >= n or self._src is None or self._mapped is not None or n <= self._chunk:
            pos = self._need(n)
            with memoryview(self._buf) as mv:  # no intermediate copy of a bytearray slice
                target[:] = mv[pos : pos + n]
            return
        start = self.offset
        target[:have] = self._buf[self._pos : self._end]
        self._pos = self._end
        done = have
        src = self._src
        readinto = getattr(src, "recv_into", None) or getattr(src, "readinto", None)
        while done < n:
            if readinto is not None:
                got = readinto(target[done:])
            else:
                chunk = self._read_source(n - done)
                got = len(chunk)
                target[done : done + got] = chunk
            if not got:
                # As over bytes: nothing consumed, the partial bytes stay readable.
                self._eof = True
                self._buf = bytearray(target[:done])
                self._base, self._pos, self._end = start, 0, done
                raise TruncatedInput(start, n, done)
            done += got
        self._base += n - have

    def skip(self, n: int) -> None:
        """Consume ``n`` bytes without keeping them: a stream source is read and
        discarded in chunks, so skipping a declared length never allocates it. When the
        input ends first, nothing is consumed and the bytes stay readable, as over bytes
        (unless more than 64 MiB were read by then: those are consumed)."""
        if n < 0:
            raise ValueError("negative length")
        have = self._end - self._pos
        if have >= n or self._src is None or self._mapped is not None:
            self._need(n)
            return
        start = self.offset
        kept: list[bytes] = [bytes(self._buf[self._pos : self._end])]
        self._pos = self._end
        done = have
        while done < n:
            chunk = self._read_source(min(n - done, max(self._chunk, 1 << 20)))
            if not chunk:
                self._eof = True
                if kept:  # put back what was read: nothing consumed
                    self._buf = bytearray(b"".join(kept))
                    self._base, self._pos, self._end = start, 0, len(self._buf)
                else:
                    self._base = start + done - self._pos
                raise TruncatedInput(start, n, done)
            done += len(chunk)
            if kept:
                kept.append(chunk)
                if done > _KEEP_MOST:
                    kept = []
        self._base += n - have

    def buffered(self) -> tuple[Any, int, int]:
        """``(buffer, start, end)``: the bytes already read ahead and not yet consumed are
        ``buffer[start:end]``. For bulk decoders, which then :meth:`advance`; do not
        keep a view of the buffer across other reads."""
        return self._buf, self._pos, self._end

    def advance(self, n: int) -> None:
        """Consume ``n`` bytes that :meth:`buffered` showed."""
        if not 0 <= n <= self._end - self._pos:
            raise ValueError(f"advance({n}) beyond the {self._end - self._pos} buffered bytes")
        self._pos += n

    def peek_u8(self) -> int:
        """The next byte without consuming it, or -1 at the end of input."""
        if self._end == self._pos and not self._fill(1):
            return -1
        return self._buf[self._pos]

    def peek(self, n: int) -> bytes:
        """Up to ``n`` upcoming bytes without consuming them (fewer at end of input)."""
        if self._end - self._pos < n:
            self._fill(n)
        return bytes(self._buf[self._pos : min(self._pos + n, self._end)])

    def drain(self, limit: int | None = None) -> int:
        """Consume and count what is left (up to ``limit`` bytes); returns the count."""
        count = 0
        while limit is None or count < limit:
            want = self._chunk if limit is None else min(self._chunk, limit - count)
            avail = self._end - self._pos
            if avail == 0 and not self._fill(1):
                break
            take = min(want, self._end - self._pos)
            self._pos += take
            count += take
        return count
