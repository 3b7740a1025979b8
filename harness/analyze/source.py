"""Where the analyzer reads a stream from: a file, standard input, bytes.

A seekable source is read in place; a pipe is spooled once into a temporary file
(memory-bounded) so that later passes (inference, replay, the description at the end)
can read it again.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any, BinaryIO

from ..emulator.stream import StreamReader

__all__ = ["READ_CHUNK", "Input"]

READ_CHUNK = 1 << 20


class Input:
    """A stream to analyze: a path, ``-`` (standard input), bytes, or a binary file.

    :meth:`reader` gives a fresh :class:`StreamReader` from offset 0 each time, and
    :meth:`read_at` reads a few bytes anywhere. A non-seekable source (a pipe) is read
    once, incrementally, and copied into a spooled temporary file (in memory up to
    ``spool_memory`` bytes, then on disk) that later passes read: the first pass streams,
    nothing holds the whole stream in memory.
    """

    def __init__(self, source: str | bytes | BinaryIO, *, spool_memory: int = 32 << 20) -> None:
        self._data: bytes | None = None
        self._file: Any = None
        self._src: Any = None
        self._owned = False
        self._spooled = 0
        self._done = False
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.name = "<bytes>"
            self._data = bytes(source)
            return
        if isinstance(source, str):
            self.name = source
            if source == "-":
                f: Any = sys.stdin.buffer
                self.name = "<stdin>"
            else:
                f = open(source, "rb")  # noqa: SIM115 (closed by close())
                self._owned = True
        else:
            f = source
            self.name = str(getattr(source, "name", "<stream>"))
        seekable = False
        try:
            seekable = bool(f.seekable())
        except (AttributeError, OSError, ValueError):
            pass
        if seekable:
            self._file = f
        else:
            self._src = f
            self._file = tempfile.SpooledTemporaryFile(max_size=spool_memory)
            self._owned_spool = True

    @property
    def seekable(self) -> bool:
        return self._src is None

    # -- the spool of a non-seekable source ------------------------------------------

    def _pull(self, n: int) -> bytes:
        read = getattr(self._src, "read1", None) or self._src.read
        data = read(max(n, 1 << 16))
        if not data:
            self._done = True
            return b""
        self._file.seek(self._spooled)
        self._file.write(data)
        self._spooled += len(data)
        return data

    def _spool_read(self, pos: int, n: int) -> bytes:
        self._file.seek(pos)
        return self._file.read(n)

    # -- access -----------------------------------------------------------------------

    def reader(self) -> StreamReader:
        if self._data is not None:
            return StreamReader(self._data)
        if self._src is None:
            self._file.seek(0)
            return StreamReader(_Reader(self._file), chunk_size=READ_CHUNK)
        return StreamReader(_SpoolReader(self), chunk_size=READ_CHUNK)

    def size(self) -> int | None:
        if self._data is not None:
            return len(self._data)
        if self._src is not None:
            while not self._done:
                self._pull(READ_CHUNK)
            return self._spooled
        pos = self._file.tell()
        end = self._file.seek(0, os.SEEK_END)
        self._file.seek(pos)
        return end

    def read_at(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` (fewer at the end)."""
        if self._data is not None:
            return self._data[offset : offset + n]
        if self._src is not None:
            while not self._done and self._spooled < offset + n:
                self._pull(READ_CHUNK)
            return self._spool_read(offset, min(n, max(0, self._spooled - offset)))
        self._file.seek(offset)
        return self._file.read(n)

    def close(self) -> None:
        if self._src is not None or self._owned:
            if self._file is not None:
                self._file.close()


class _Reader:
    """A file object as a plain ``read`` source (StreamReader prefers ``read1``)."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def read(self, n: int) -> bytes:
        return self.f.read(n)


class _SpoolReader:
    """Reads a non-seekable input: what is spooled first, then more from the source."""

    def __init__(self, inp: Input) -> None:
        self.inp = inp
        self.pos = 0

    def read(self, n: int) -> bytes:
        inp = self.inp
        if self.pos < inp._spooled:
            data = inp._spool_read(self.pos, min(n, inp._spooled - self.pos))
        elif inp._done:
            return b""
        else:
            data = inp._pull(n)
        self.pos += len(data)
        return data
