"""Guest RAM blocks and the live ``ram`` section (QEMU 0.13-1.0 arch_init.c).

A :class:`GuestRam` is an ordered set of :class:`RamBlock` (``pc.ram``, ``pc.bios``,
``pc.rom``, ``vga.vram`` on a pc). Each block is anonymous memory (a writable
``memoryview``, free until written) with a dirty bitmap of
one byte per 4 KiB page; guest writes go through :meth:`RamBlock.write` so that live
migration knows what to resend. :class:`RamSection` is the live section handler ``ram``
(instance 0, version 4) that :mod:`.savevm` drives: START sends the block list and every
page, each PART the pages dirtied since the previous pass, END the rest, and every chunk
ends with an EOS record.

A record is a be64 ``offset | flags`` (flags in the low 12 bits, below the page mask)::

    COMPRESS 0x02  + u8 fill          a uniform page (all bytes equal, usually zero)
    MEM_SIZE 0x04  (START)            value = total bytes; per block u8 len, idstr, be64 len
    PAGE     0x08  + 4096 raw bytes
    EOS      0x10                     ends every START/PART/END chunk
    CONTINUE 0x20                     same block as the previous record; without it the
                                      be64 is followed by u8 len + block idstr (v4 only)

Version 3 (QEMU 0.12) has no block names: MEM_SIZE carries only the total and a page's
offset is its address in the concatenation of all blocks. Both are saved and loaded.

As in QEMU, the "previous block" of CONTINUE lives across chunks: the saver forgets it at
START only, so a PART may begin with a CONTINUE record referring to the last block of the
previous chunk, and the loader remembers its last block between calls.

The loader is QEMU's ram_load, trust included. It refuses (:class:`LoadError`; ``offset``
is where the offending item starts):

=========================================  ===========================  ===================
what                                       reason                       offset of
=========================================  ===========================  ===================
v3: total size differs from the            ``RAM_SIZE_MISMATCH``        the record
destination's
v4: a listed block's length differs        ``RAM_SIZE_MISMATCH``        the be64 length
v4: a listed block the destination lacks   ``UNKNOWN_RAM_BLOCK``        the u8 name length
a uniform page for a block not found       ``UNKNOWN_RAM_BLOCK``        the record
(unknown name, CONTINUE with none before)
section version other than 3 or 4          ``VERSION_TOO_OLD``/``_NEW`` the first record
=========================================  ===========================  ===================

It ignores what QEMU ignored: the obsolete FULL flag, unknown flag bits, a record without
flags, page records before MEM_SIZE, CONTINUE in v3, a block listed twice; in v4 the
MEM_SIZE total only bounds the block list (a destination may have more blocks). Where QEMU
died instead of refusing, it raises :class:`LoadCrash`: a raw page for a block not found
(written through NULL), a page beyond its block (written outside it), a v3 address
outside RAM (abort), and in 0.13 (no NULL check) a uniform page for a block not found.
A read past the end raises :class:`TruncatedInput`.
"""

from __future__ import annotations

import array
import bisect
import functools
import hashlib
import mmap
import os
import random
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import faults as _faults
from .errors import ConfigError, LoadCrash, LoadError, Reason
from .savevm import LiveStage
from .stream import StreamReader, StreamWriter
from .vmstate import WireRules

__all__ = [
    "BIOS_SIZE",
    "BlockImage",
    "FLAG_COMPRESS",
    "FLAG_CONTINUE",
    "FLAG_EOS",
    "FLAG_MEM_SIZE",
    "FLAG_PAGE",
    "PAGE_SIZE",
    "PC_BLOCKS",
    "RAM",
    "ROM_SIZE",
    "VRAM_SIZE",
    "GuestRam",
    "GuestWorkload",
    "RamBlock",
    "RamDiff",
    "RamLoaderQuirks",
    "RamSection",
    "SaveStats",
    "bios_image",
    "compare_ram",
    "fill_pattern",
    "option_rom_image",
    "pc_layout",
    "zero_records",
    "records_prefix",
]

PAGE_SIZE = 4096
PAGE_SHIFT = 12
FLAG_MASK = PAGE_SIZE - 1

FLAG_FULL = 0x01  # obsolete (pre-0.13); ignored by the loader, as in QEMU
FLAG_COMPRESS = 0x02
FLAG_MEM_SIZE = 0x04
FLAG_PAGE = 0x08
FLAG_EOS = 0x10
FLAG_CONTINUE = 0x20

BIOS_SIZE = 128 << 10
ROM_SIZE = 128 << 10
VRAM_SIZE = 8 << 20
PC_BLOCKS = ("pc.ram", "pc.bios", "pc.rom", "vga.vram")

_BE64 = struct.Struct(">Q")
_BE64_U8 = struct.Struct(">QB")
_ZERO_PAGE = bytes(PAGE_SIZE)
_CHUNK_PAGES = 256  # pages per joined write (1 MiB of raw pages at most)
_HUGE_PAGE = 2 << 20
_HUGE_LIMIT = 64 << 20  # largest block given huge pages (a test guest, a VGA's memory)
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)
_ZERO_CHUNK = bytes(_CHUNK_PAGES << PAGE_SHIFT)  # compared against in one memcmp
_FLAGS_CZ = FLAG_CONTINUE | FLAG_COMPRESS  # a uniform page of the previous record's block
_FLAGS_CP = FLAG_CONTINUE | FLAG_PAGE  # a raw page of the previous record's block
# Linux drops the pages of private anonymous memory on MADV_DONTNEED, and they read back
# as zeros: a run of zero pages is cleared without reading or writing it. Elsewhere (or
# with pages larger than 4 KiB) the pages are compared with zeros and written.
_DROP_PAGES = (sys.platform.startswith("linux") and mmap.PAGESIZE == PAGE_SIZE
               and hasattr(mmap, "MADV_DONTNEED"))
# Linux 5.14+: map a range's pages in one call instead of one page fault each (reading
# maps never-written pages to the shared zero page). Not in Python's mmap module.
_MADV_POPULATE = {False: 22, True: 23} if _DROP_PAGES else {}  # write -> advice
_POOL_SIZE = 1 << 20  # random bytes that the random pages of one fill are cut from
# /proc/self/pagemap has one u64 per page of our address space; in its top byte, bit 63
# "present" and bit 62 "swapped". A page of private anonymous memory that is neither was
# never written (or was dropped): it reads as zeros, and reading it would map it.
_PAGEMAP = "/proc/self/pagemap"
_PAGEMAP_TOP = 7 if sys.byteorder == "little" else 0
_ABSENT = bytes(int(not top & 0xC0) for top in range(256))  # top byte -> 1 if absent
# Opened on first use, per process: a forked child reading its parent's open pagemap
# would see the parent's pages. -1: not available.
_pagemap_fd: dict[int, int] = {}


@functools.cache
def _uniform_page(fill: int) -> bytes:
    return bytes((fill,)) * PAGE_SIZE


def zero_records(npages: int) -> bytes:
    """The v4 records ``CONTINUE|COMPRESS`` + fill 0 for pages ``0 .. npages-1`` of a block.

    Nine bytes per page: be64 ``offset | 0x22`` then ``00``. A run of zero pages is a
    slice of this, so the saver writes it and the loader checks it in one operation.

    >>> zero_records(2).hex(" ", 9)
    '000000000000002200 000000000000102200'
    """
    return uniform_records(npages, 0)


@functools.lru_cache(maxsize=16)
def uniform_records(npages: int, fill: int, base: int = 0, flags: int = _FLAGS_CZ) -> bytes:
    """The uniform-page records (be64 ``(base + offset) | flags``, then ``fill``) of pages
    ``0 .. npages-1`` of a block: v4's ``CONTINUE|COMPRESS`` by default, v3's ``COMPRESS``
    at the block's ``base`` address. A run of such pages (zeros, a VGA's 0xff) is a slice
    of this: written at once, and compared with the stream in one memcmp.

    >>> uniform_records(2, 0xff).hex(" ", 9)
    '0000000000000022ff 0000000000001022ff'
    >>> uniform_records(1, 0, base=0x8000, flags=0x02).hex()
    '000000000000800200'
    """
    offsets = memoryview(_be64_offsets(npages, base)).cast("B")
    out = bytearray(9 * npages)
    for k in range(8):
        out[k::9] = offsets[k::8]
    out[7::9] = bytes((flags,)) * npages  # offsets are page aligned: the low byte is 0
    out[8::9] = bytes((fill,)) * npages
    return bytes(out)


@functools.cache
def _uniform_chunk(fill: int) -> bytes:
    return bytes((fill,)) * (_CHUNK_PAGES << PAGE_SHIFT)


def _fill_pages(view: memoryview, start: int, end: int, fill: int) -> None:
    """``view[start:end] = fill`` in pieces of at most 1 MiB (no buffer of the run's size)."""
    chunk = _uniform_chunk(fill)
    while start < end:
        stop = min(start + len(chunk), end)
        view[start:stop] = chunk[: stop - start]
        start = stop


def _be64_offsets(npages: int, base: int = 0) -> bytes:
    """Big-endian u64 page offsets ``base, base + 4096, ...`` (``npages`` of them) packed
    end to end."""
    a = array.array("Q", range(base, base + (npages << PAGE_SHIFT), PAGE_SIZE))
    if a.itemsize != 8:  # pragma: no cover - every supported platform has 8-byte Q
        return b"".join(_BE64.pack(base + (i << PAGE_SHIFT)) for i in range(npages))
    if sys.byteorder == "little":
        a.byteswap()
    return a.tobytes()


def records_prefix(pattern: bytes, at: int, buf: memoryview, pos: int, most: int) -> int:
    """How many of the ``most`` records at ``buf[pos:]`` equal ``pattern[at:]`` (9 bytes
    each); the caller has checked the first. One memcmp per halving step."""
    if pattern.startswith(buf[pos : pos + 9 * most], at):
        return most
    lo, hi = 1, most - 1  # lo records match; more than hi do not
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if pattern.startswith(buf[pos : pos + 9 * mid], at):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _zero_pages(view: memoryview, start: int, end: int) -> None:
    """Zero ``view[start:end]``, skipping 1 MiB pieces already zero (a fresh block's pages
    are then only read, never allocated)."""
    zero, step = _ZERO_CHUNK, len(_ZERO_CHUNK)
    while start < end:
        stop = min(start + step, end)
        piece = view[start:stop]
        if not zero.startswith(piece):
            piece[:] = zero[: stop - start]
        start = stop


def _zero_run(view: memoryview, p: int, stop: int) -> int:
    """End of the run of zero bytes starting at ``p`` (a zero page), to a page boundary,
    at most ``stop``: a binary search of memcmps against zeros."""
    zero = _ZERO_CHUNK
    end = p + PAGE_SIZE
    while end < stop:  # grow in 1 MiB steps while whole steps are zero
        nxt = min(end + len(zero), stop)
        if zero.startswith(view[end:nxt]):
            end = nxt
            continue
        lo, hi = 0, (nxt - end) >> PAGE_SHIFT  # pages beyond ``end``: lo are zero, hi not all
        while lo + 1 < hi:
            mid = (lo + hi) >> 1
            if zero.startswith(view[end : end + (mid << PAGE_SHIFT)]):
                lo = mid
            else:
                hi = mid
        return end + (lo << PAGE_SHIFT)
    return end


# -- blocks ---------------------------------------------------------------------------


class RamBlock:
    """One RAM block: its bytes, and a dirty bitmap of one byte (0 or 1) per page.

    The bytes live in private anonymous memory (``mmap``): a new block costs no time and
    no memory until its pages are written, however large. ``data`` and ``view`` are the
    same writable ``memoryview`` of them. An image given to :meth:`load_image` is written
    when the bytes are first used: a machine that never touches its RAM (the analyzer's,
    which only decodes) never pays for its firmware or its VGA's 4 MiB of 0xff. Until
    then the block knows which pages still hold the image and what a uniform image holds
    there: a save sends those pages, a load of the same byte leaves them, and two blocks
    holding one image compare equal, without a byte written or read.
    """

    __slots__ = ("idstr", "name", "dirty", "npages", "_view", "_mem", "_address", "_image",
                 "_covered", "_image_pages")

    def __init__(self, idstr: str, length: int) -> None:
        if length <= 0 or length % PAGE_SIZE:
            raise ConfigError(f"RAM block {idstr!r}: length {length} is not a positive "
                              f"multiple of {PAGE_SIZE}")
        name = idstr.encode("latin-1")
        if not 0 < len(name) < 256:
            raise ConfigError(f"RAM block name {idstr!r} must be 1..255 bytes")
        self.idstr = idstr
        self.name = name
        mem = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if _HUGE_PAGE <= length <= _HUGE_LIMIT and _MADV_HUGEPAGE is not None:
            # Pages never written then read as the kernel's one huge zero page: scanning a
            # fresh block for zero pages costs a memcmp per 2 MiB, not a fault per 4 KiB.
            # Not for large blocks: a load that reads a region (zero check) and then writes
            # pages in it is slower there than with small pages (6x, bench/README.md).
            mem.madvise(_MADV_HUGEPAGE)
        self._mem = mem
        self._address: int | None = None  # where the mapping starts (for the pagemap)
        self._view = memoryview(mem)
        # (offset, bytes, fill byte or None) runs not yet written
        self._image: list[tuple[int, bytes, int | None]] | None = None
        # While an image is pending: a byte per page, 1 where a loaded page replaced the
        # page's initial contents (the image skips it; see :meth:`load_target`).
        self._covered: bytearray | None = None
        self._image_pages: tuple[bytearray, bytearray] | None = None  # see _image_map
        self.npages = length >> PAGE_SHIFT
        self.dirty = bytearray(self.npages)

    @property
    def view(self) -> memoryview:
        if self._image is not None:
            self._write_image()
        return self._view

    data = view

    def load_image(self, runs: Iterable[tuple[int, bytes] | tuple[int, bytes, int | None]]
                   ) -> None:
        """Give the block its initial contents, ``(offset, bytes)`` runs over zeros, or
        ``(offset, bytes, fill)`` for a run of whole pages that are all the byte ``fill``;
        written before the bytes are first read or written."""
        if self._image is None:
            self._image = []
        for run in runs:
            self._image.append(run if len(run) == 3 else (*run, None))  # type: ignore[arg-type]
        self._image_pages = None

    def _image_map(self) -> tuple[bytearray, bytearray]:
        """Per page of the pending image: the byte it is filled with, and 1 where it is not
        known to be uniform (code, a run that covers part of the page)."""
        if self._image_pages is None:
            fills, raw = bytearray(self.npages), bytearray(self.npages)
            for start, data, fill in self._image or ():
                if not data:
                    continue
                first = start >> PAGE_SHIFT
                end = (start + len(data) + PAGE_SIZE - 1) >> PAGE_SHIFT
                if fill is not None and not (start | len(data)) & (PAGE_SIZE - 1):
                    fills[first:end] = bytes((fill,)) * (end - first)
                    raw[first:end] = bytes(end - first)
                else:
                    raw[first:end] = b"\x01" * (end - first)
            self._image_pages = (fills, raw)
        return self._image_pages

    def image_fills(self, first: int, end: int) -> list[tuple[int, int, int]] | None:
        """``(first, end, fill)`` runs of pages covering ``[first, end)``, when each page
        still holds the pending image and the image fills it with one byte; else None (the
        bytes must be read). Pages outside the image's runs hold zeros."""
        if self._image is None or first >= end:
            return None
        covered = self._covered
        if covered is not None and covered.find(1, first, end) >= 0:
            return None
        fills, raw = self._image_map()
        if raw.find(1, first, end) >= 0:
            return None
        out = []
        while first < end:
            fill = fills[first]
            rest = fills[first:end]
            stop = first + len(rest) - len(rest.lstrip(bytes((fill,))))
            out.append((first, stop, fill))
            first = stop
        return out

    def image_fill(self, first: int, end: int) -> int | None:
        """The one byte :meth:`image_fills` finds over ``[first, end)``, or None."""
        runs = self.image_fills(first, end)
        return runs[0][2] if runs is not None and len(runs) == 1 else None

    def load_uniform(self, first: int, end: int, fill: int) -> None:
        """Pages ``[first, end)`` loaded as uniform pages of ``fill``: not written where
        they still hold an image of that byte (a VGA's 0xff sent to a VGA of 0xff)."""
        if self.image_fill(first, end) == fill:
            return
        start, stop = first << PAGE_SHIFT, end << PAGE_SHIFT
        if not fill:
            self.zero(start, stop)
            return
        view, covered = self.load_target()
        if end - first > 1:
            self.populate(start, stop, write=True)
        _fill_pages(view, start, stop, fill)
        if covered is not None:
            covered[first:end] = b"\x01" * (end - first)

    def same_image(self, other: RamBlock) -> bool:
        """Both blocks hold nothing but the same pending image: equal, unread."""
        return (self._image is not None and other._image is not None
                and (self._covered is None or self._covered.find(1) < 0)
                and (other._covered is None or other._covered.find(1) < 0)
                and len(self) == len(other) and self._image == other._image)

    def load_target(self) -> tuple[memoryview, bytearray | None]:
        """The bytes a stream's pages are loaded into, without writing a pending image
        first, and while one is pending the page map the loader sets (to 1) for each whole
        page it writes: the image then skips those pages, and a load that sends every page
        (as a migration's first pass does) never writes it. ``None``: nothing pending."""
        if self._image is None:
            return self._view, None
        if self._covered is None:
            self._covered = bytearray(self.npages)
        return self._view, self._covered

    def _write_image(self) -> None:
        runs, self._image = self._image, None
        covered, self._covered = self._covered, None
        self._image_pages = None
        view = self._view
        for start, data, _ in runs or ():
            end = start + len(data)
            if covered is None or end <= start:
                view[start:end] = data
                continue
            src = memoryview(data)
            p, last = start >> PAGE_SHIFT, ((end - 1) >> PAGE_SHIFT) + 1
            while p < last:  # the runs of pages no load has written
                q = covered.find(0, p, last)
                if q < 0:
                    break
                p = covered.find(1, q, last)
                if p < 0:
                    p = last
                a, b = max(start, q << PAGE_SHIFT), min(end, p << PAGE_SHIFT)
                view[a:b] = src[a - start : b - start]

    def __len__(self) -> int:
        return self.npages << PAGE_SHIFT

    def __repr__(self) -> str:
        return f"RamBlock({self.idstr!r}, {len(self)})"

    # Guest access: every write marks the pages it touches.

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Guest write of ``data`` at ``offset``; marks the touched pages dirty."""
        n = len(data)
        self._check(offset, n)
        self.view[offset : offset + n] = data
        if n < PAGE_SIZE and not _faults.ram_marks_partial_writes():
            return  # seeded bug "ram-not-resent"
        self.mark_dirty(offset, n)

    def fill(self, offset: int, length: int, value: int) -> None:
        """Guest memset; marks the touched pages dirty."""
        self._check(offset, length)
        if offset % PAGE_SIZE == 0 and length % PAGE_SIZE == 0:
            page = _uniform_page(value & 0xFF)
            view = self.view
            for o in range(offset, offset + length, PAGE_SIZE):
                view[o : o + PAGE_SIZE] = page
        else:
            self.view[offset : offset + length] = bytes((value & 0xFF,)) * length
        self.mark_dirty(offset, length)

    def zero(self, start: int, end: int) -> None:
        """Zero the pages ``[start, end)`` (page aligned) without marking them dirty: the
        kernel drops them where it can (no page is read, written or kept), else pages
        not already zero are written."""
        if start >= end:
            return
        if self._image is not None:  # these pages are zeros now, whatever the image says
            self.load_target()[1][start >> PAGE_SHIFT : end >> PAGE_SHIFT] = (
                b"\x01" * ((end - start) >> PAGE_SHIFT))
        if _DROP_PAGES:
            self._mem.madvise(mmap.MADV_DONTNEED, start, end - start)
        else:
            _zero_pages(self._view, start, end)

    def populate(self, start: int, end: int, *, write: bool = False) -> None:
        """Map the pages ``[start, end)`` (page aligned) at once, for reading (never-written
        pages become the zero page) or for writing; only an optimisation."""
        advice = _MADV_POPULATE.get(write)
        if self._image is not None and not write:
            self._write_image()  # the pages read are the image's
        if advice is not None and start < end:
            try:
                self._mem.madvise(advice, start, end - start)
            except OSError:  # a kernel before 5.14
                _MADV_POPULATE.clear()

    def absent_pages(self, start: int, end: int) -> bytes | None:
        """One byte per page of ``[start, end)`` (page aligned): 1 where the kernel holds no
        memory for the page, which therefore reads as zeros; ``None`` where the kernel
        does not say (not Linux, no /proc). Lets the saver skip pages never written."""
        if not _DROP_PAGES or start >= end:
            return None
        if self._image is not None:
            self._write_image()  # pages of a pending image are not zeros
        fd = _pagemap_fd.get(os.getpid())
        if fd is None:
            for inherited in _pagemap_fd.values():  # a parent's, after a fork
                if inherited >= 0:
                    os.close(inherited)
            _pagemap_fd.clear()
            try:
                fd = os.open(_PAGEMAP, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                fd = -1
            _pagemap_fd[os.getpid()] = fd
        if fd < 0:
            return None
        if self._address is None:
            import ctypes  # only here: the address of the mapping, which mmap does not give

            anchor = ctypes.c_char.from_buffer(self._mem)
            self._address = ctypes.addressof(anchor)
            del anchor  # releases its export of the mapping
        n = (end - start) >> PAGE_SHIFT
        try:
            entries = os.pread(fd, 8 * n, ((self._address + start) >> PAGE_SHIFT) * 8)
        except OSError:
            return None
        if len(entries) != 8 * n:
            return None
        return entries[_PAGEMAP_TOP::8].translate(_ABSENT)

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return bytes(self.view[offset : offset + length])

    def page(self, index: int) -> bytes:
        return self.read(index * PAGE_SIZE, PAGE_SIZE)

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > len(self):
            raise ValueError(f"{self.idstr}: access [{offset}, +{length}) outside the block")

    # Dirty bitmap, handled in bulk.

    def mark_dirty(self, offset: int = 0, length: int | None = None) -> None:
        """Mark the pages overlapping ``[offset, offset + length)`` (default: all)."""
        if length is None:
            length = len(self) - offset
        if length <= 0:
            return
        first = offset >> PAGE_SHIFT
        last = (offset + length - 1) >> PAGE_SHIFT
        self.dirty[first : last + 1] = b"\x01" * (last + 1 - first)

    def clear_dirty(self) -> None:
        self.dirty[:] = bytes(self.npages)

    def dirty_count(self) -> int:
        return self.dirty.count(1)

    def dirty_runs(self) -> Iterator[tuple[int, int]]:
        """``(first, end)`` page index ranges of dirty pages, found with ``bytes.find``."""
        dirty, n = self.dirty, self.npages
        s = dirty.find(1)
        while s >= 0:
            e = dirty.find(0, s)
            if e < 0:
                e = n
            yield s, e
            s = dirty.find(1, e)


class GuestRam:
    """The RAM blocks of one machine.

    ``layout`` lists the blocks in registration order, which gives each its ``ram_addr``
    (``offsets``: where it sits in QEMU's single RAM address space, what a v3 stream
    addresses). ``order``, when given, is the order of QEMU's block list, which is the
    order the saver walks and the MEM_SIZE record lists (0.14 and later sort the list by
    offset, i.e. registration order; 0.13 keeps it in move-to-front order).
    """

    def __init__(self, layout: Iterable[tuple[str, int]], order: Iterable[str] | None = None
                 ) -> None:
        blocks: dict[str, RamBlock] = {}
        self.offsets: dict[str, int] = {}
        pos = 0
        for idstr, length in layout:
            if idstr in blocks:
                raise ConfigError(f"duplicate RAM block {idstr!r}")
            blocks[idstr] = RamBlock(idstr, length)
            self.offsets[idstr] = pos
            pos += length
        if not blocks:
            raise ConfigError("a machine needs at least one RAM block")
        if order is not None:
            order = list(order)
            if sorted(order) != sorted(blocks):
                raise ConfigError(f"RAM block order {order} does not name the blocks "
                                  f"{list(blocks)} once each")
            blocks = {name: blocks[name] for name in order}
        self.blocks = blocks

    @classmethod
    def pc(cls, ram_size: int) -> GuestRam:
        """A pc machine: pc.ram, pc.bios, pc.rom, vga.vram, with firmware loaded."""
        ram = cls(pc_layout(ram_size))
        ram.blocks["pc.bios"].data[:] = bios_image()
        ram.blocks["pc.rom"].data[:] = option_rom_image()
        return ram

    def reorder(self, order: Iterable[str]) -> None:
        """Change the block list's order (the save order); offsets stay."""
        order = list(order)
        if sorted(order) != sorted(self.blocks):
            raise ConfigError(f"RAM block order {order} does not name the blocks "
                              f"{list(self.blocks)} once each")
        self.blocks = {name: self.blocks[name] for name in order}

    def load_images(self, images: Iterable[BlockImage], seed: str = "") -> None:
        """Fill blocks with the contents an image describes (firmware, a VGA's memory).
        Only the non-zero runs are written (a fresh block is zero), and only when the
        block is first used (:meth:`RamBlock.load_image`)."""
        for image in images:
            block = self.blocks[image.idstr]
            block.load_image(_image_runs(image, len(block), seed))

    def __getitem__(self, idstr: str) -> RamBlock:
        return self.blocks[idstr]

    def __iter__(self) -> Iterator[RamBlock]:
        return iter(self.blocks.values())

    @property
    def total_size(self) -> int:
        return sum(len(b) for b in self.blocks.values())

    def layout(self) -> list[tuple[str, int]]:
        return [(b.idstr, len(b)) for b in self.blocks.values()]

    def mark_all_dirty(self) -> None:
        for b in self.blocks.values():
            b.mark_dirty()

    def clear_dirty(self) -> None:
        for b in self.blocks.values():
            b.clear_dirty()

    def dirty_pages(self) -> int:
        return sum(b.dirty_count() for b in self.blocks.values())

    def digests(self) -> dict[str, str]:
        """sha256 per block: a compact guest-visible fingerprint for state dumps."""
        return {b.idstr: hashlib.sha256(b.data).hexdigest() for b in self.blocks.values()}


def pc_layout(ram_size: int) -> list[tuple[str, int]]:
    """The pc machine's four fixed blocks in registration order (no VGA or NIC ROM)."""
    if ram_size <= 0 or ram_size % PAGE_SIZE:
        raise ConfigError(f"RAM size {ram_size} is not a positive multiple of {PAGE_SIZE}")
    return list(zip(PC_BLOCKS, (ram_size, BIOS_SIZE, ROM_SIZE, VRAM_SIZE), strict=True))


@dataclass(frozen=True)
class BlockImage:
    """What a block holds at power-on, as runs of pages: ``"8z 24r"`` is 8 zero pages then
    24 pages of code-like bytes; ``"1024xff"`` is 1024 pages filled with 0xff. Pages the
    runs do not cover are zero. The bytes are deterministic for (seed, idstr): a model of
    a firmware image with the shape of the real one (which pages a saver sends raw, which
    as uniform), not its code.

    >>> BlockImage("rom", "2r 1xff").contents(4 * PAGE_SIZE)[2 * PAGE_SIZE :].count(0xFF)
    4096
    """

    idstr: str
    runs: str = ""

    def pages(self) -> list[tuple[int, str]]:
        out = []
        for run in self.runs.split():
            count, kind = (run.split("x", 1)[0], "x" + run.split("x", 1)[1]) if "x" in run \
                else (run[:-1], run[-1])
            if not count.isdigit() or not (kind in ("z", "r") or (
                    kind.startswith("x") and len(kind) == 3)):
                raise ConfigError(f"RAM image {self.idstr!r}: bad run {run!r}")
            out.append((int(count), kind))
        return out

    def contents(self, length: int, seed: str = "") -> bytes:
        out = bytearray(length)
        for start, data, _ in _image_runs(self, length, seed):
            out[start : start + len(data)] = data
        return bytes(out)


@functools.lru_cache(maxsize=64)
def _image_runs(image: BlockImage, length: int, seed: str
                ) -> tuple[tuple[int, bytes, int | None], ...]:
    """(offset, bytes, fill) of the image's non-zero runs in a block of ``length``: fill
    is the byte of a run of uniform pages, None for code."""
    out = []
    page = 0
    code = hashlib.shake_128(f"migmatrix {seed} {image.idstr}".encode())
    for count, kind in image.pages():
        start, end = page << PAGE_SHIFT, (page + count) << PAGE_SHIFT
        if end > length:
            raise ConfigError(f"RAM image {image.idstr!r} ({image.runs}) is larger than "
                              f"its block ({length} bytes)")
        if kind == "r":
            out.append((start, code.digest(end)[start:end], None))
        elif kind != "z":
            fill = int(kind[1:], 16)
            out.append((start, bytes((fill,)) * (end - start), fill))
        page += count
    return tuple(out)


class RAM(GuestRam):
    """A machine's RAM plus its live section handler: what a machine holds.

    ``RAM(size)`` is ``GuestRam.pc(size)`` with ``handler`` (a :class:`RamSection`);
    ``RAM(layout=..., order=..., images=...)`` is any machine's.
    """

    def __init__(
        self,
        ram_size: int | None = None,
        *,
        layout: Iterable[tuple[str, int]] | None = None,
        order: Iterable[str] | None = None,
        images: Iterable[BlockImage] = (),
        seed: str = "",
        quirks: RamLoaderQuirks | None = None,
    ) -> None:
        if layout is None:
            if ram_size is None:
                raise ConfigError("RAM needs a size or a layout")
            super().__init__(pc_layout(ram_size), order)
            self.blocks["pc.bios"].data[:] = bios_image()
            self.blocks["pc.rom"].data[:] = option_rom_image()
        else:
            super().__init__(layout, order)
            self.load_images(images, seed)
        self.handler = RamSection(self, quirks=quirks)

    def digest(self) -> dict[str, str]:
        return self.digests()


@functools.cache
def bios_image() -> bytes:
    """128 KiB of deterministic BIOS-like content.

    Code-like bytes (a SHAKE-128 stream), a signature string, runs of 0xff padding (sent
    as non-zero COMPRESS pages) and the reset vector ``jmp f000:e05b`` at 0xffff0.
    """
    img = bytearray(b"\xff" * BIOS_SIZE)
    code = hashlib.shake_128(b"migmatrix pc.bios").digest(96 << 10)
    img[0 : len(code)] = code
    sig = b"migmatrix BIOS (SeaBIOS-like) 0.13-1.0\x00"
    img[0x1E000 : 0x1E000 + len(sig)] = sig
    img[0x1FFF0:0x1FFF5] = b"\xea\x5b\xe0\x00\xf0"  # jmp far f000:e05b
    img[0x1FFF5:0x1FFFD] = b"06/23/99"
    return bytes(img)


@functools.cache
def option_rom_image() -> bytes:
    """128 KiB option ROM area: a VGA ROM (55 aa, 32 KiB, checksum 0) then zeros."""
    img = bytearray(ROM_SIZE)
    rom = bytearray(hashlib.shake_128(b"migmatrix vgabios").digest(32 << 10))
    rom[0:3] = b"\x55\xaa\x40"  # signature, length in 512-byte units
    rom[-1] = 0
    rom[-1] = (-sum(rom)) & 0xFF
    img[0 : len(rom)] = rom
    return bytes(img)


# -- the live section -----------------------------------------------------------------


@dataclass(frozen=True)
class RamLoaderQuirks:
    """Where the releases' ram_load differ.

    ``checks_fill_target``: a COMPRESS record whose block is not found is refused
    (-EINVAL, 0.14 and later); 0.13 has no such check and memsets through NULL.
    """

    checks_fill_target: bool = True


@dataclass
class SaveStats:
    """What the saver sent, cumulatively and in the last chunk."""

    pages: int = 0
    uniform_pages: int = 0
    bytes: int = 0
    passes: int = 0
    last_pages: int = 0


class RamSection:
    """The live ``ram`` section (instance 0) for one :class:`GuestRam`.

    ``version_id`` is 4 (block names) or 3 (global offsets, QEMU 0.12); the loader
    accepts both whatever it saves. The object keeps no reference to any stream.
    """

    live = True
    idstr = "ram"
    instance_id = 0

    def __init__(self, ram: GuestRam, *, version_id: int = 4,
                 quirks: RamLoaderQuirks | None = None) -> None:
        if version_id not in (3, 4):
            raise ConfigError(f"ram section version {version_id}: only 3 and 4 exist")
        self.ram = ram
        self.version_id = version_id
        self.quirks = quirks or RamLoaderQuirks()
        self.stats = SaveStats()
        self._save_last: RamBlock | None = None  # previous record's block (saver)
        self._load_last: RamBlock | None = None  # previous record's block (loader)
        self._by_name = {b.name: b for b in ram}
        # v3 addresses a block by its ram_addr (registration order), whatever the list order.
        by_offset = sorted(ram, key=lambda b: ram.offsets[b.idstr])
        self._starts = [ram.offsets[b.idstr] for b in by_offset]
        self._blocks = by_offset

    # -- save ---------------------------------------------------------------------

    def save_stage(self, w: StreamWriter, stage: LiveStage) -> None:
        """Write one chunk: START (sizes + every page), PART or END (dirty pages)."""
        start = w.offset
        stats = self.stats
        pages_before = stats.pages
        if stage == LiveStage.START:
            self._save_last = None
            self.ram.mark_all_dirty()
            w.u64(self.ram.total_size | FLAG_MEM_SIZE)
            if self.version_id >= 4:
                for b in self.ram:
                    w.u8(len(b.name))
                    w.raw(b.name)
                    w.u64(len(b))
        for b in self.ram:
            for s, e in b.dirty_runs():
                self._save_run(w, b, s, e)
        w.u64(FLAG_EOS)
        stats.passes += 1
        stats.last_pages = stats.pages - pages_before
        stats.bytes += w.offset - start

    def _save_run(self, w: StreamWriter, block: RamBlock, first: int, end: int) -> None:
        """Send pages ``[first, end)`` of ``block`` and clear their dirty bits.

        The hot loop: one index pair screens out random pages, a memcmp against zeros
        confirms zero pages, records are packed with one struct call and joined per 1 MiB.
        In v4 a run of zero pages is found with a few memcmps and sent as one slice of
        :func:`zero_records` (the same bytes the record loop would pack). Pages that
        still hold an image of uniform pages (a VGA's 0xff, then zeros) are sent from what
        the block knows of them, unread (:meth:`_save_image_fill`).
        """
        runs = block.image_fills(first, end)
        if runs is not None:
            for run in runs:
                self._save_image_fill(w, block, *run)
            return
        block.dirty[first:end] = bytes(end - first)
        v4 = self.version_id >= 4
        base = 0 if v4 else self.ram.offsets[block.idstr]
        cont = FLAG_CONTINUE if v4 else 0
        view = block.view
        pack, pack_u8 = _BE64.pack, _BE64_U8.pack
        zero, last, size = _ZERO_PAGE, PAGE_SIZE - 1, PAGE_SIZE
        uniform_page = _uniform_page
        fcomp, fpage = FLAG_COMPRESS | cont, FLAG_PAGE | cont
        records = zero_records(block.npages) if v4 else b""
        o = first << PAGE_SHIFT
        stop = end << PAGE_SHIFT
        uniform = 0
        if v4 and self._save_last is not block:
            # First record of this block since another block's: it carries the name.
            b = view[o]
            name = (bytes((len(block.name),)), block.name)
            if b == view[o + last] and uniform_page(b).startswith(view[o : o + size]):
                w.raw(b"".join((pack(o | FLAG_COMPRESS), *name, bytes((b,)))))
                uniform += 1
            else:
                w.raw(b"".join((pack(o | FLAG_PAGE), *name, view[o : o + size])))
            o += size
        self._save_last = block
        chunk = _CHUNK_PAGES << PAGE_SHIFT
        while o < stop:
            parts: list[bytes | memoryview] = []
            ap = parts.append
            p = o
            o = min(o + chunk, stop)
            absent = block.absent_pages(p, o)
            if absent is None:
                block.populate(p, o)  # one call, not a fault per never-written page read
            elif 1 not in absent:
                absent = None
            base_page = p >> PAGE_SHIFT  # of the chunk, for indexing ``absent``
            while p < o:
                if absent is not None and absent[(p >> PAGE_SHIFT) - base_page]:
                    # Pages the kernel holds nothing for: zeros, sent without reading them.
                    e = absent.find(0, (p >> PAGE_SHIFT) - base_page)
                    e = o if e < 0 else (base_page + e) << PAGE_SHIFT
                    if v4:
                        ap(records[9 * (p >> PAGE_SHIFT) : 9 * (e >> PAGE_SHIFT)])
                    else:
                        ap(b"".join([pack_u8((q + base) | fcomp, 0) for q in range(p, e, size)]))
                    uniform += (e - p) >> PAGE_SHIFT
                    p = e
                    continue
                b = view[p]
                if b == view[p + last]:
                    if b == 0:
                        if zero.startswith(view[p : p + size]):
                            if v4:
                                e = _zero_run(view, p, o)
                                ap(records[9 * (p >> PAGE_SHIFT) : 9 * (e >> PAGE_SHIFT)])
                                uniform += (e - p) >> PAGE_SHIFT
                                p = e
                                continue
                            ap(pack_u8((p + base) | fcomp, 0))
                            uniform += 1
                            p += size
                            continue
                    elif uniform_page(b).startswith(view[p : p + size]):
                        ap(pack_u8((p + base) | fcomp, b))
                        uniform += 1
                        p += size
                        continue
                ap(pack((p + base) | fpage))
                ap(view[p : p + size])
                p += size
            w.raw_parts(parts)
        self.stats.pages += end - first
        self.stats.uniform_pages += uniform

    def _save_image_fill(self, w: StreamWriter, block: RamBlock, first: int, end: int,
                         fill: int) -> None:
        """Pages ``[first, end)`` that all hold ``fill``: the records :meth:`_save_run`'s
        loop would pack for them, as slices of :func:`uniform_records`."""
        block.dirty[first:end] = bytes(end - first)
        if self.version_id >= 4:
            if self._save_last is not block:  # the block's first record carries its name
                w.raw(b"".join((_BE64.pack((first << PAGE_SHIFT) | FLAG_COMPRESS),
                                bytes((len(block.name),)), block.name, bytes((fill,)))))
                first += 1
                self.stats.pages += 1
                self.stats.uniform_pages += 1
            records = uniform_records(block.npages, fill)
        else:
            records = uniform_records(block.npages, fill, self.ram.offsets[block.idstr],
                                      FLAG_COMPRESS)
        self._save_last = block
        w.raw(records[9 * first : 9 * end])
        self.stats.pages += end - first
        self.stats.uniform_pages += end - first

    # -- load ---------------------------------------------------------------------

    def load(self, r: StreamReader, version: int, rules: WireRules | None = None) -> None:
        """Read one chunk, up to and including its EOS record, into the blocks.

        As QEMU's ram_load: each flag is acted on by itself (MEM_SIZE, then COMPRESS or
        else PAGE, then EOS); FULL and unknown bits are ignored, and so is a record with
        no flag at all.
        """
        if version < 3:
            raise LoadError(Reason.VERSION_TOO_OLD, f"ram version {version} < 3",
                            offset=r.offset)
        if version > 4:
            raise LoadError(Reason.VERSION_TOO_NEW, f"ram version {version} > 4",
                            offset=r.offset)
        v4 = version == 4
        read_u64, read_u8, read_into = r.read_u64, r.read_u8, r.read_into
        size = PAGE_SIZE
        while True:
            if v4 and self._load_last is not None:
                self._load_continued(r, self._load_last)
            at = r.offset
            word = read_u64()
            flags = word & FLAG_MASK
            addr = word ^ flags
            if flags & FLAG_MEM_SIZE:
                self._load_mem_size(r, addr, at, v4)
            if flags & (FLAG_COMPRESS | FLAG_PAGE):
                if v4:
                    block = self._load_block(r, flags, at)
                else:
                    block, addr = self._v3_locate(addr, at)
                if flags & FLAG_COMPRESS:
                    if block is None:
                        self._fill_unknown(at)
                    fill = read_u8()
                    self._check_inside(block, addr, at)
                    page = addr >> PAGE_SHIFT
                    block.load_uniform(page, page + 1, fill)
                else:
                    if block is None:
                        raise LoadCrash("a PAGE record for a RAM block the destination "
                                        "cannot find: QEMU reads the page through a NULL "
                                        "pointer (segmentation fault)", offset=at)
                    self._check_inside(block, addr, at)
                    view, covered = block.load_target()
                    read_into(view[addr : addr + size])
                    if covered is not None:
                        covered[addr >> PAGE_SHIFT] = 1
            if flags & FLAG_EOS:
                return

    def _load_continued(self, r: StreamReader, block: RamBlock) -> None:
        """Load the buffered v4 records that need no decision: ``CONTINUE|PAGE`` and
        ``CONTINUE|COMPRESS`` of ``block`` inside the block, complete in the buffer.

        It stops before the first other record (a named block, EOS, MEM_SIZE, bad flags,
        an offset beyond the block, a record cut by the buffer's end), which the general
        loop then reads, so errors and their offsets are the general loop's. A run of
        uniform pages is compared with :func:`uniform_records` in one memcmp.
        """
        buf, pos, end = r.buffered()
        if end - pos < 9:
            return
        start = pos
        view, covered = block.load_target()
        limit, npages = len(view), block.npages
        unpack, size, mask = _BE64.unpack_from, PAGE_SIZE, FLAG_MASK
        mapped_from = mapped = 0  # pages mapped for writing by this call
        with memoryview(buf) as mv:
            while end - pos >= 9:
                word = unpack(mv, pos)[0]
                flags = word & mask
                addr = word ^ flags
                if addr + size > limit:
                    break
                if flags == _FLAGS_CZ:
                    fill = mv[pos + 8]
                    # A run of pages of this fill, compared in one memcmp.
                    page = addr >> PAGE_SHIFT
                    n = records_prefix(uniform_records(npages, fill), 9 * page, mv, pos,
                                            min((end - pos) // 9, npages - page))
                    block.load_uniform(page, page + n, fill)
                    pos += 9 * n
                elif flags == _FLAGS_CP:
                    if end - pos < 8 + size:
                        break
                    if not mapped_from <= addr < mapped:
                        # Map this run of consecutive pages in one call, not a fault each.
                        q, mapped_from, mapped = pos + 8 + size, addr, addr + size
                        while (end - q >= 8 + size and mapped < limit
                               and unpack(mv, q)[0] == mapped | _FLAGS_CP):
                            q, mapped = q + 8 + size, mapped + size
                        block.populate(addr, mapped, write=True)
                    view[addr : addr + size] = mv[pos + 8 : pos + 8 + size]
                    if covered is not None:
                        covered[addr >> PAGE_SHIFT] = 1
                    pos += 8 + size
                else:
                    break
        if pos != start:
            r.advance(pos - start)

    def _fill_unknown(self, at: int) -> None:
        """A COMPRESS record whose block was not found (unknown name, or CONTINUE first)."""
        if self.quirks.checks_fill_target:
            raise LoadError(Reason.UNKNOWN_RAM_BLOCK, "a uniform page for a RAM block the "
                            "destination cannot find", offset=at)
        raise LoadCrash("a uniform page for a RAM block the destination cannot find: this "
                        "release memsets it through a NULL pointer (segmentation fault)",
                        offset=at)

    @staticmethod
    def _check_inside(block: RamBlock, addr: int, at: int) -> None:
        if addr + PAGE_SIZE > len(block):
            raise LoadCrash(f"page offset 0x{addr:x} is beyond RAM block {block.idstr!r} "
                            f"({len(block)} bytes): QEMU writes outside the block's "
                            "memory unchecked (undefined behaviour)", offset=at)

    def _load_block(self, r: StreamReader, flags: int, at: int) -> RamBlock | None:
        """The block of a v4 page record: the previous one (CONTINUE) or a named one;
        ``None`` where QEMU's lookup gives NULL ("Ack, bad migration stream!", "Can't find
        block")."""
        if flags & FLAG_CONTINUE:
            return self._load_last
        name = r.read_bytes(r.read_u8())  # u8 length: at most 255 bytes
        block = self._by_name.get(name)
        self._load_last = block  # QEMU's static cursor is left at the end of its search
        return block

    def _v3_locate(self, addr: int, at: int) -> tuple[RamBlock, int]:
        """v3: map a ram_addr to (block, offset); QEMU aborts on an address outside RAM."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            block = self._blocks[i]
            off = addr - self._starts[i]
            if off < len(block):
                if off + PAGE_SIZE > len(block):  # pragma: no cover - page aligned
                    self._check_inside(block, off, at)
                return block, off
        raise LoadCrash(f"page address 0x{addr:x} outside RAM ({self.ram.total_size} bytes): "
                        "QEMU prints \"Bad ram offset\" and aborts", offset=at)

    def _load_mem_size(self, r: StreamReader, total: int, at: int, v4: bool) -> None:
        """v3 compares the total; v4 checks each listed block's name and length, and the
        total is only the bound of the list (a destination may have more blocks)."""
        if not v4:
            mine = self.ram.total_size
            if total != mine:
                raise LoadError(Reason.RAM_SIZE_MISMATCH,
                                f"stream RAM {total} bytes, destination {mine}", offset=at)
            return
        left = total
        while left:
            name_at = r.offset
            name = r.read_bytes(r.read_u8())
            len_at = r.offset
            length = r.read_u64()
            block = self._by_name.get(name)
            text = name.decode("latin-1")
            if block is None:
                raise LoadError(Reason.UNKNOWN_RAM_BLOCK,
                                f"unknown RAM block {text!r}", offset=name_at)
            if length != len(block):
                raise LoadError(Reason.RAM_SIZE_MISMATCH,
                                f"block {text!r}: stream {length} bytes, destination "
                                f"{len(block)}", offset=len_at, field=text)
            left = (left - length) & 0xFFFF_FFFF_FFFF_FFFF  # ram_addr_t wraps, as in QEMU


# -- guest workload and fill patterns -------------------------------------------------


def fill_pattern(
    ram: GuestRam | RamBlock | mmap.mmap,
    rng: random.Random,
    fraction_random: float = 0.5,
    *,
    block: str = "pc.ram",
    max_run: int = 64,
) -> int:
    """Fill a block page by page: random bytes with probability ``fraction_random``, else
    zeros. Random pages come in runs (as in a real guest) of at most ``max_run`` pages.
    Returns the number of random pages. Marks the whole block dirty. ``ram`` may also be
    a writable buffer of whole pages holding zeros (a new file's ``mmap``).

    Deterministic for ``rng`` and as fast as memory: one pool of random bytes is drawn,
    each run of random pages is a window of the pool at a random byte offset, and each
    page then carries its own offset XOR a key drawn per fill as its first 8 bytes, so no
    two pages are equal (a page loaded into the wrong place shows). Drawing every byte
    from the generator instead ran at 0.1 GB/s (bench/README.md); the pages a seed gives
    changed with it.
    """
    if isinstance(ram, (GuestRam, RamBlock)):
        b: RamBlock | None = ram if isinstance(ram, RamBlock) else ram[block]
        view = b.view
        b.zero(0, len(view))
    else:
        b, view = None, ram
    npages = len(view) >> PAGE_SHIFT
    pool = memoryview(rng.randbytes(max(_POOL_SIZE, 2 * max_run << PAGE_SHIFT)))
    key = rng.getrandbits(64)
    stamp = _BE64.pack_into
    random_pages = 0
    i = 0
    while i < npages:
        run = min(rng.randint(1, max_run), npages - i)
        if rng.random() < fraction_random:
            o, size = i << PAGE_SHIFT, run << PAGE_SHIFT
            at = rng.randrange(len(pool) - size + 1)
            if b is not None:
                b.populate(o, o + size, write=True)
            view[o : o + size] = pool[at : at + size]
            for p in range(o, o + size, PAGE_SIZE):
                stamp(view, p, key ^ p)
            random_pages += run
        i += run
    if b is not None:
        b.mark_dirty()
    return random_pages


class GuestWorkload:
    """A deterministic guest that dirties pages between live passes.

    Each :meth:`step` writes ``pages`` pages chosen in ``blocks``: some get random bytes,
    some a uniform non-zero fill, some are zeroed again, some get a small write inside the
    page (a partly dirtied page). The same seed gives the same writes.
    """

    KINDS = ("random", "uniform", "zero", "poke")

    def __init__(
        self, seed: int, *, pages: int = 64, blocks: tuple[str, ...] = ("pc.ram", "vga.vram")
    ) -> None:
        self.rng = random.Random(seed)
        self.pages = pages
        self.blocks = blocks
        self.history: list[tuple[str, int, str]] = []

    def step(self, ram: GuestRam) -> list[tuple[str, int, str]]:
        """Dirty one batch of pages; returns ``(block, page index, kind)`` per write."""
        rng = self.rng
        names = [n for n in self.blocks if n in ram.blocks] or [next(iter(ram.blocks))]
        done = []
        for _ in range(self.pages):
            b = ram[rng.choice(names)]
            page = rng.randrange(b.npages)
            o = page << PAGE_SHIFT
            kind = rng.choices(self.KINDS, weights=(4, 2, 2, 2))[0]
            if kind == "random":
                b.write(o, rng.randbytes(PAGE_SIZE))
            elif kind == "uniform":
                b.fill(o, PAGE_SIZE, rng.randrange(1, 256))
            elif kind == "zero":
                b.fill(o, PAGE_SIZE, 0)
            else:
                n = rng.randint(1, 64)
                b.write(o + rng.randrange(PAGE_SIZE - n + 1), rng.randbytes(n))
            done.append((b.idstr, page, kind))
        self.history.extend(done)
        return done

    def __call__(self, ram: GuestRam) -> list[tuple[str, int, str]]:
        return self.step(ram)


# -- comparison -----------------------------------------------------------------------


@dataclass
class RamDiff:
    """The differences of one block: how many pages differ and the first few of them."""

    block: str
    count: int = 0
    pages: list[int] = field(default_factory=list)
    detail: str = ""

    @property
    def path(self) -> str:
        return f"ram/{self.block}"

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "block": self.block, "count": self.count,
                "pages": list(self.pages), "detail": self.detail}


def _same(a: memoryview, b: memoryview) -> bool:
    """``a == b`` for equal-length byte views: the C library's memcmp on the two buffers
    where it can be called, else one memcmp per 1 MiB of a copy (a memoryview's own ``==``
    compares item by item)."""
    memcmp = _libc_memcmp()
    if memcmp is not None and not (a.readonly or b.readonly) and len(a) == len(b):
        import ctypes

        ca, cb = ctypes.c_char.from_buffer(a), ctypes.c_char.from_buffer(b)
        try:
            return memcmp(ctypes.addressof(ca), ctypes.addressof(cb), len(a)) == 0
        finally:
            del ca, cb  # their exports of the views
    step = len(_ZERO_CHUNK)
    for o in range(0, len(a), step):
        if not bytes(a[o : o + step]).startswith(b[o : o + step]):
            return False
    return True


@functools.cache
def _libc_memcmp() -> Any:
    """The C library's memcmp, or None where ctypes cannot find it."""
    try:
        import ctypes

        f = ctypes.CDLL(None).memcmp
    except (ImportError, OSError, AttributeError):  # pragma: no cover - not Linux/glibc
        return None
    f.restype = ctypes.c_int
    f.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    return f


def compare_ram(a: GuestRam, b: GuestRam, *, limit: int = 16) -> list[RamDiff]:
    """Compare two machines' RAM block by block; ``[]`` when identical.

    Whole blocks are compared first (one memcmp), then 1 MiB slices, then the pages of
    differing slices; at most ``limit`` page indices are listed per block.
    """
    diffs: list[RamDiff] = []
    for name, ba in a.blocks.items():
        bb = b.blocks.get(name)
        if bb is None:
            diffs.append(RamDiff(name, ba.npages, [], "missing on the second machine"))
            continue
        if len(ba) != len(bb):
            diffs.append(RamDiff(name, max(ba.npages, bb.npages), [],
                                 f"length {len(ba)} != {len(bb)}"))
            continue
        if ba.same_image(bb):
            continue
        da, db = ba.view, bb.view
        if _same(da, db):
            continue
        d = RamDiff(name)
        step = _CHUNK_PAGES << PAGE_SHIFT
        for c in range(0, len(da), step):
            ce = min(c + step, len(da))
            if _same(da[c:ce], db[c:ce]):
                continue
            for o in range(c, ce, PAGE_SIZE):
                if not _same(da[o : o + PAGE_SIZE], db[o : o + PAGE_SIZE]):
                    d.count += 1
                    if len(d.pages) < limit:
                        d.pages.append(o >> PAGE_SHIFT)
        diffs.append(d)
    for name, bb in b.blocks.items():
        if name not in a.blocks:
            diffs.append(RamDiff(name, bb.npages, [], "missing on the first machine"))
    return diffs
