"""Where the analyzer reads a stream from: a file, standard input, bytes.

A regular file is mapped (:class:`~harness.emulator.stream.MappedFile`): decoders take
views of it, page data is skipped without being copied, declared lengths are checked
against the file's size before anything is allocated, and resident memory stays at about
one window of the mapping whatever the file's size. Anything else (a pipe, a socket, a
file object without a descriptor) is copied once into an anonymous temporary file on
disk, which is then mapped the same way, so every later pass (inference, replay, the
description at the end) reads it again for free.
"""

from __future__ import annotations

import os
import stat
import sys

from ..emulator.stream import MappedFile, StreamReader

# typing.TYPE_CHECKING without importing typing, which the analyzer's start pays for
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO

__all__ = ["READ_CHUNK", "Input"]

READ_CHUNK = 1 << 20


class Input:
    """A stream to analyze: a path, ``-`` (standard input), bytes, or a binary file.

    :meth:`reader` gives a fresh :class:`StreamReader` from offset 0 each time,
    :meth:`read_at` reads a few bytes anywhere, :meth:`rfind` searches backwards (in C).
    ``seekable`` says whether the source itself could be read in place (a pipe could not:
    it was spooled to disk first).
    """

    def __init__(self, source: str | bytes | BinaryIO) -> None:
        self._data: bytes | None = None
        self._mapped: MappedFile | None = None
        self._spool: Any = None
        self.seekable = True
        self.cache: dict[Any, Any] = {}  # what decoders found once (the trailer)
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.name = "<bytes>"
            self._data = bytes(source)
            return
        owned = False
        if isinstance(source, str):
            self.name = source
            if source == "-":
                f: Any = sys.stdin.buffer
                self.name = "<stdin>"
            else:
                f = open(source, "rb")  # noqa: SIM115 (closed below, once mapped)
                owned = True
        else:
            f = source
            self.name = str(getattr(source, "name", "<stream>"))
        try:
            if _regular_file(f):
                self._mapped = MappedFile(f)
            else:
                import shutil  # here: only a pipe needs them, and they cost a start
                import tempfile

                self.seekable = False
                self._spool = tempfile.TemporaryFile(prefix="migmatrix-analyze-")
                shutil.copyfileobj(f, self._spool, READ_CHUNK)
                self._spool.flush()
                self._mapped = MappedFile(self._spool)
        finally:
            if owned:
                f.close()  # the mapping keeps the file's pages reachable

    # -- access -----------------------------------------------------------------------

    def reader(self) -> StreamReader:
        if self._data is not None:
            return StreamReader(self._data)
        assert self._mapped is not None
        return StreamReader(self._mapped)

    def size(self) -> int:
        if self._data is not None:
            return len(self._data)
        assert self._mapped is not None
        return self._mapped.size

    def read_at(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` (fewer at the end)."""
        if self._data is not None:
            return self._data[offset : offset + max(0, n)]
        assert self._mapped is not None
        return self._mapped.read_at(offset, n)

    def rfind(self, sub: bytes, start: int, end: int) -> int:
        """The highest offset of ``sub`` in ``[start, end)``, or -1. The pages the search
        touched are let go again (it may scan tens of megabytes)."""
        if self._data is not None:
            return self._data.rfind(sub, start, end)
        assert self._mapped is not None
        found = self._mapped.rfind(sub, start, end)
        self._mapped.drop(start if found < 0 else found, end)
        return found

    def release(self, offset: int) -> None:
        """Bytes before ``offset`` will not be read again soon (their pages may go)."""
        if self._mapped is not None:
            self._mapped.release(offset)

    def close(self) -> None:
        if self._mapped is not None:
            self._mapped.close()
        if self._spool is not None:
            self._spool.close()


def _regular_file(f: Any) -> bool:
    try:
        return stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False
