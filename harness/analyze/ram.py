"""RAM sections summarised, never held: records counted by kind per block, page bytes
skipped. Lenient: blocks and sizes are reported, not checked against a machine."""

from __future__ import annotations

import struct

from ..emulator.errors import LoadError, Reason
from ..emulator.stream import StreamReader

# typing.TYPE_CHECKING without importing typing, which the analyzer's start pays for
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "F_COMPRESS_PAGE", "F_CONTINUE", "F_EOS", "F_FULL", "F_HOOK", "F_MEM_SIZE",
    "F_MULTIFD_FLUSH", "F_PAGE", "F_XBZRLE", "F_ZERO", "PAGE_SIZE", "RAM_KINDS",
    "RamSummary", "ram_chunk_text",
]

_BE64 = struct.Struct(">Q")
PAGE_SIZE = 4096

# RAM record flags: wire-format.md 5, plus QEMU >= 2.x (migration/ram.c).
F_FULL, F_ZERO, F_MEM_SIZE, F_PAGE, F_EOS, F_CONTINUE = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
F_XBZRLE, F_HOOK, F_COMPRESS_PAGE, F_MULTIFD_FLUSH = 0x40, 0x80, 0x100, 0x200
RAM_KINDS = ("zero", "fill", "page", "xbzrle", "compressed", "hook")
MAX_BLOCKS = 256  # distinct block names a summary tracks (QEMU has about ten)
CHUNKS_KEPT = 4096  # RAM chunks listed one by one; past that they are counted
_FLAG_NIBBLE = bytes(b & 0x0F for b in range(256))  # the flag bits in byte 6 of a record


class RamSummary:
    """A ``ram`` section handler that counts records by kind per block and skips page
    bytes. Lenient: blocks and sizes are reported, not checked against a machine. Bounded:
    at most :data:`MAX_BLOCKS` block names, :data:`CHUNKS_KEPT` chunks listed (the rest
    counted), whatever the stream declares.

    ``qemu``: accept the flags of QEMU >= 2.x (ZERO = 0x02, XBZRLE, HOOK, COMPRESS_PAGE,
    MULTIFD_FLUSH) and report them.
    """

    live = True
    idstr = "ram"
    instance_id = 0

    def __init__(self, version_id: int = 4, *, qemu: bool = False, page_size: int = PAGE_SIZE):
        self.version_id = version_id
        self.qemu = qemu
        self.page_size = page_size
        self.total: int | None = None
        self.blocks: dict[str, dict[str, int]] = {}
        self.order: list[str] = []
        self.chunks: list[dict[str, Any]] = []
        self.chunk_count = 0
        self.last_chunk: dict[str, Any] | None = None
        self.unlisted: set[str] = set()
        self._last: str | None = None
        self.on_chunk: Any = None  # callback(offset, end, summary)

    def _block(self, name: str, at: int | None = None) -> dict[str, int]:
        b = self.blocks.get(name)
        if b is None:
            if len(self.blocks) >= MAX_BLOCKS:
                raise LoadError(Reason.LIMIT_EXCEEDED, f"RAM block {name!r}: more than "
                                f"{MAX_BLOCKS} distinct blocks", offset=at, field="ram")
            b = self.blocks[name] = {"length": -1, **dict.fromkeys(RAM_KINDS, 0)}
            self.order.append(name)
            self.unlisted.add(name)
        return b

    def load(self, r: StreamReader, version: int, rules: Any = None) -> None:
        if version not in (3, 4):
            raise LoadError(Reason.VERSION_TOO_NEW if version > 4 else Reason.VERSION_TOO_OLD,
                            f"ram version {version} (3 or 4 known)", offset=r.offset)
        start = r.offset
        qemu = self.qemu
        known = F_ZERO | F_MEM_SIZE | F_PAGE | F_EOS | F_CONTINUE
        if qemu:
            known |= F_XBZRLE | F_HOOK | F_COMPRESS_PAGE | F_MULTIFD_FLUSH
        mask = self.page_size - 1
        read_u64, read_u8, read_bytes, skip = r.read_u64, r.read_u8, r.read_bytes, r.skip
        page = self.page_size
        counts: dict[tuple[str, str], int] = {}
        records = 0
        last = self._last
        block = self.blocks.get(last) if last else None
        mem_size = None
        while True:
            if block is not None:
                records += self._skip_continued(r, block, last, counts)
            at = r.offset
            word = read_u64()
            records += 1
            flags = word & mask
            addr = word ^ flags
            if flags & ~known or flags & F_FULL:
                raise LoadError(Reason.BAD_RAM_FLAGS, f"flags 0x{flags:03x}: unknown bits "
                                f"0x{flags & ~known:03x}", offset=at, field="ram")
            if flags & F_MEM_SIZE:
                mem_size = self._mem_size(r, addr, version)
            elif flags & (F_ZERO | F_PAGE | F_XBZRLE | F_COMPRESS_PAGE):
                if version == 4 and not flags & F_CONTINUE:
                    last = read_bytes(read_u8()).decode("latin-1")
                    block = self._block(last, at)
                elif version == 3:
                    last = "(v3 address space)"
                    block = self._block(last, at)
                if block is None:
                    raise LoadError(Reason.INVALID_VALUE, "CONTINUE with no previous block",
                                    offset=at, field="ram")
                if flags & F_ZERO:
                    kind = "fill" if read_u8() else "zero"
                elif flags & F_PAGE:
                    skip(page)
                    kind = "page"
                elif flags & F_XBZRLE:
                    read_u8()
                    skip(r.read_u16())
                    kind = "xbzrle"
                else:
                    skip(r.read_u32())
                    kind = "compressed"
                block[kind] += 1
                key = (last, kind)  # type: ignore[assignment]
                counts[key] = counts.get(key, 0) + 1
            elif flags & F_HOOK:
                counts[("", "hook")] = counts.get(("", "hook"), 0) + 1
            if flags & F_EOS:
                break
        self._last = last
        per_block: dict[str, dict[str, int]] = {}
        for (name, kind), n in counts.items():
            per_block.setdefault(name or "(hook)", {})[kind] = n
        chunk = {"offset": start, "size": r.offset - start, "records": records,
                 "blocks": per_block}
        if mem_size is not None:
            chunk["mem_size"] = mem_size
        self.chunk_count += 1
        self.last_chunk = chunk
        if len(self.chunks) < CHUNKS_KEPT:
            self.chunks.append(chunk)
        if self.on_chunk is not None:
            self.on_chunk(start, r.offset, chunk)
        tracer = getattr(rules, "tracer", None)
        if tracer is not None:
            tracer.mark("ram", start, r.offset, "", ram_chunk_text(chunk))

    def _skip_continued(self, r: StreamReader, block: dict[str, int], name: str | None,
                        counts: dict[tuple[str, str], int]) -> int:
        """Count and skip the buffered ``CONTINUE|ZERO`` and ``CONTINUE|PAGE`` records of
        the current block (the bulk of any stream) without a per-record trip through the
        general loop, which reads whatever else comes; returns the number of records.
        Runs of zero-page and page records are counted from strided slices of their flag
        bytes (:func:`_record_run`): a few C calls a run, not a Python step a record."""
        buf, pos, end = r.buffered()
        start = pos
        page = self.page_size
        unpack, mask = _BE64.unpack_from, page - 1
        f_zero, f_page = F_CONTINUE | F_ZERO, F_CONTINUE | F_PAGE
        vector = page == PAGE_SIZE
        zero = fill = pages = 0
        with memoryview(buf) as mv:
            while end - pos >= 9:
                word = unpack(mv, pos)[0]
                flags = word & mask
                if flags == f_zero:
                    if mv[pos + 8]:
                        if not fill:  # keep the general loop's first-seen order of kinds
                            counts.setdefault((name, "fill"), 0)  # type: ignore[arg-type]
                        fill += 1
                        pos += 9
                        continue
                    if not zero:
                        counts.setdefault((name, "zero"), 0)  # type: ignore[arg-type]
                    n = _record_run(mv, pos, end, 9, 0x22, 0) if vector else 1
                    zero += n
                    pos += 9 * n
                elif flags == f_page:
                    if end - pos < 8 + page:
                        break
                    if not pages:
                        counts.setdefault((name, "page"), 0)  # type: ignore[arg-type]
                    n = _record_run(mv, pos, end, 8 + PAGE_SIZE, 0x28) if vector else 1
                    pages += n
                    pos += n * (8 + page)
                else:
                    break
        if pos == start:
            return 0
        r.advance(pos - start)
        for kind, n in (("zero", zero), ("fill", fill), ("page", pages)):
            if n:
                block[kind] += n
                key = (name, kind)
                counts[key] = counts.get(key, 0) + n  # type: ignore[index]
        return zero + fill + pages

    def _mem_size(self, r: StreamReader, total: int, version: int) -> dict[str, Any]:
        self.total = total
        listed: list[dict[str, Any]] = []
        if version == 4:
            left = total
            names: set[str] = set()
            while left > 0:
                at = r.offset
                name = r.read_bytes(r.read_u8()).decode("latin-1")
                length = r.read_u64()
                if name in names:
                    raise LoadError(Reason.INVALID_VALUE, f"RAM block {name!r} listed twice",
                                    offset=at, field="ram")
                if length == 0 or length > left:
                    raise LoadError(Reason.RAM_SIZE_MISMATCH, f"RAM block {name!r}: length "
                                    f"{length} (0, or beyond the {left} bytes left of the "
                                    f"total {total})", offset=at + 1 + len(name), field="ram")
                names.add(name)
                b = self._block(name, at)
                self.unlisted.discard(name)
                b["length"] = length
                listed.append({"name": name, "length": length})
                left -= length
        return {"total": total, "blocks": listed}

    def summary(self) -> dict[str, Any]:
        """Per block counts by kind, and the chunks (the first :data:`CHUNKS_KEPT`)."""
        blocks = []
        for name in self.order:
            b = self.blocks[name]
            blocks.append({"name": name, "length": b["length"], "listed": name not in
                           self.unlisted, **{k: b[k] for k in RAM_KINDS if b[k] or k in
                                             ("zero", "fill", "page")}})
        return {"version": self.version_id, "total": self.total, "blocks": blocks,
                "chunks": self.chunks, "chunk_count": self.chunk_count,
                "chunks_omitted": self.chunk_count - len(self.chunks)}


def _record_run(mv: memoryview, pos: int, end: int, stride: int, flags: int,
                fill: int | None = None) -> int:
    """How many records of ``stride`` bytes follow each other from ``pos`` with the low
    flag byte ``flags`` (``CONTINUE|PAGE`` 0x28, ``CONTINUE|ZERO`` 0x22), no flag bits in
    byte 6, and (zero pages) the fill byte ``fill``; the caller has checked the first.
    Strided slices of those bytes are compared, a few C calls per probe; probes of
    :data:`_RUN_PROBE` records, doubling while the run lasts, keep the cost of a run in
    proportion to its length, not to the buffer's (pages and zero pages interleaved in
    short runs each sliced the rest of the window: 0.1 s for a 7 MB stream)."""
    limit = (end - pos) // stride
    done, probe = 0, _RUN_PROBE
    while done < limit:
        k = min(probe, limit - done)
        n = _matching_records(mv, pos + done * stride, stride, k, flags, fill)
        done += n
        if n < k:
            break
        probe *= 2
    return max(done, 1)


_RUN_PROBE = 64  # records a run is first probed for


def _matching_records(mv: memoryview, pos: int, stride: int, k: int, flags: int,
                      fill: int | None) -> int:
    """How many of the ``k`` records from ``pos`` match in a row (see :func:`_record_run`)."""
    low = bytes(mv[pos + 7 : pos + 7 + stride * k : stride])
    k -= len(low.lstrip(bytes((flags,))))
    if fill is not None and k:
        fills = bytes(mv[pos + 8 : pos + 8 + stride * k : stride])
        k -= len(fills.lstrip(bytes((fill,))))
    if k:
        high = bytes(mv[pos + 6 : pos + 6 + stride * k : stride])
        k -= len(high.translate(_FLAG_NIBBLE).lstrip(b"\x00"))
    return k


def ram_chunk_text(chunk: dict[str, Any]) -> str:
    parts = []
    for name, kinds in chunk["blocks"].items():
        parts.append(f"{name}: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    text = f"{chunk['records']} record(s)"
    if "mem_size" in chunk:
        m = chunk["mem_size"]
        text += f"; MEM_SIZE {m['total']}" + (
            " [" + ", ".join(f"{b['name']} {b['length']}" for b in m["blocks"]) + "]"
            if m["blocks"] else "")
    return text + ("; " + "; ".join(parts) if parts else "")
