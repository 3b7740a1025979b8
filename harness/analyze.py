"""The stream analyzer: what is in a stream, byte by byte, and where a destination's
reading of it stops meaning what the writer meant.

:func:`analyze` decodes a stream element by element (header, configuration, section
headers, every field with its value, embedded struct elements, subsections, sentinels,
section footers, commands, RAM summarised per block, EOF, the VMDESCRIPTION trailer), each
with its byte offset and size. Two decoders:

* a *modelled* stream (QEMU 0.13 to 1.0, or the "new" series) is decoded with a modelled
  release's own descriptions, loaded through the emulator's engine with a tracer. Without
  ``release`` the writer is inferred: the releases that accept the stream's file version
  are tried, newest first, and the first one that decodes the whole stream is reported;
* a *QEMU* stream (file version 3 with a 0x07 configuration section, section footers,
  and/or the VMDESCRIPTION JSON of QEMU >= 2.3 after EOF) is decoded through that JSON.

:func:`replay_as_destination` loads the same bytes as a destination release would and
aligns its reading with the writer's: the first element where they part (for example the
0x05 that a 0.14 ``ide_bus`` takes for parent data) and the destination's final outcome.

RAM is never held: page bytes are skipped, only counts by kind are kept. Input comes from
a file or standard input; standard input that is not seekable is spooled to a temporary
file (memory-bounded) so that a second pass (inference, replay, a description at the end)
can read it again.

Errors: a stream that cannot be decoded is not an exception here: the analysis carries an
``error`` (reason, message, offset, section, field) and everything decoded before it.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .emulator.errors import ConfigError, EmulatorError, LoadError, Reason
from .emulator.machine import Machine, jsonable, section_key
from .emulator.ram import zero_records, zero_records_prefix
from .emulator.releases import RELEASES, Release
from .emulator.savevm import FILE_MAGIC, HeaderPolicy, SectionRecord, load_stream
from .emulator.stream import StreamReader
from .emulator.vmstate import PeekPolicy, TraceMark, Tracer

__all__ = [
    "ANALYSIS_SCHEMA",
    "Analysis",
    "Element",
    "Input",
    "RamSummary",
    "analyze",
    "configure_parser",
    "render_text",
    "replay_as_destination",
]

ANALYSIS_SCHEMA = "migmatrix/analysis/1"
READ_CHUNK = 1 << 20
_BE64 = struct.Struct(">Q")
PAGE_SIZE = 4096

# Section type bytes (wire-format.md 1 and 6).
T_EOF, T_START, T_PART, T_END, T_FULL = 0x00, 0x01, 0x02, 0x03, 0x04
T_VMDESC, T_CONFIG, T_COMMAND, T_FOOTER = 0x06, 0x07, 0x08, 0x7E
_TYPE_NAMES = {T_START: "START", T_PART: "PART", T_END: "END", T_FULL: "FULL"}

# RAM record flags: wire-format.md 5, plus QEMU >= 2.x (migration/ram.c).
F_FULL, F_ZERO, F_MEM_SIZE, F_PAGE, F_EOS, F_CONTINUE = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
F_XBZRLE, F_HOOK, F_COMPRESS_PAGE, F_MULTIFD_FLUSH = 0x40, 0x80, 0x100, 0x200
_RAM_KINDS = ("zero", "fill", "page", "xbzrle", "compressed", "hook")
_MAX_VALUE_BYTES = 32  # bytes of a buffer value kept in the analysis


# ----------------------------------------------------------------------------- input


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


# -------------------------------------------------------------------------- elements


@dataclass
class Element:
    """One decoded item of the stream: ``kind`` at ``offset``, ``size`` bytes."""

    kind: str  # header configuration section field struct subsection sentinel footer
    #            command ram eof vmdescription trailing error
    offset: int
    size: int
    path: str = ""
    value: Any = None
    detail: str = ""

    @property
    def end(self) -> int:
        return self.offset + self.size

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "offset": self.offset, "size": self.size,
                             "path": self.path}
        if self.value is not None:
            d["value"] = _json_value(self.value)
        if self.detail:
            d["detail"] = self.detail
        return d


def _json_value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        text = b[:_MAX_VALUE_BYTES].hex()
        return text + ("..." if len(b) > _MAX_VALUE_BYTES else "")
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


@dataclass
class SectionInfo(SectionRecord):
    """A section as decoded, with its fields' values."""

    fields: dict[str, Any] = field(default_factory=dict)  # path -> value (full values)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "section_id": self.section_id, "idstr": self.idstr,
                "instance_id": self.instance_id, "version_id": self.version_id,
                "offset": self.offset, "size": self.end - self.offset,
                "fields": len(self.fields)}


@dataclass
class Analysis:
    """Everything one decode found; ``error`` is set when it stopped early."""

    input: str
    format: str = "unknown"  # modelled | qemu
    file_version: int | None = None
    writer: dict[str, Any] | None = None
    qemu: dict[str, Any] | None = None
    elements: list[Element] = field(default_factory=list)
    sections: list[SectionInfo] = field(default_factory=list)
    ram: dict[str, Any] | None = None
    eof_offset: int | None = None
    trailing_bytes: int = 0
    bytes_read: int = 0
    error: dict[str, Any] | None = None
    divergence: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.error is None and self.eof_offset is not None

    def state(self) -> dict[str, dict[str, Any]]:
        """Decoded device fields as ``{section key: {field path: value}}`` (full values),
        comparable with ``Machine.state()`` of the writer."""
        out: dict[str, dict[str, Any]] = {}
        for s in self.sections:
            if s.fields:
                out.setdefault(section_key(s.idstr, s.instance_id), {}).update(s.fields)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": ANALYSIS_SCHEMA,
            "input": self.input,
            "format": self.format,
            "file_version": self.file_version,
            "writer": self.writer,
            "qemu": self.qemu,
            "complete": self.complete,
            "bytes": self.bytes_read,
            "eof_offset": self.eof_offset,
            "trailing_bytes": self.trailing_bytes,
            "error": self.error,
            "notes": list(self.notes),
            "sections": [s.to_dict() for s in self.sections],
            "ram": self.ram,
            "elements": [e.to_dict() for e in self.elements],
            "divergence": self.divergence,
        }


def _error_dict(e: LoadError) -> dict[str, Any]:
    return e.to_dict()


# ------------------------------------------------------------------------ RAM summary


class RamSummary:
    """A ``ram`` section handler that counts records by kind per block and skips page
    bytes. Lenient: blocks and sizes are reported, not checked against a machine.

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
        self.unlisted: set[str] = set()
        self._last: str | None = None
        self.on_chunk: Any = None  # callback(offset, end, summary)

    def _block(self, name: str) -> dict[str, int]:
        b = self.blocks.get(name)
        if b is None:
            b = self.blocks[name] = {"length": -1, **dict.fromkeys(_RAM_KINDS, 0)}
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
                    block = self._block(last)
                elif version == 3:
                    last = "(v3 address space)"
                    block = self._block(last)
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
        self.chunks.append(chunk)
        if self.on_chunk is not None:
            self.on_chunk(start, r.offset, chunk)
        tracer = getattr(rules, "tracer", None)
        if tracer is not None:
            tracer.mark("ram", start, r.offset, "", _ram_chunk_text(chunk))

    def _skip_continued(self, r: StreamReader, block: dict[str, int], name: str | None,
                        counts: dict[tuple[str, str], int]) -> int:
        """Count and skip the buffered ``CONTINUE|ZERO`` and ``CONTINUE|PAGE`` records of
        the current block (the bulk of any stream) without a per-record trip through the
        general loop, which reads whatever else comes; returns the number of records.
        A run of zero pages is matched against :func:`zero_records` in one memcmp."""
        buf, pos, end = r.buffered()
        start = pos
        page = self.page_size
        unpack, mask = _BE64.unpack_from, page - 1
        f_zero, f_page = F_CONTINUE | F_ZERO, F_CONTINUE | F_PAGE
        pattern = b""
        npages = block["length"] // PAGE_SIZE if page == PAGE_SIZE else 0
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
                    n = 1
                    index = word >> 12
                    if index + 1 < npages:
                        if not pattern:
                            pattern = zero_records(npages)
                        n = zero_records_prefix(pattern, 9 * index, mv, pos,
                                                min((end - pos) // 9, npages - index))
                    zero += n
                    pos += 9 * n
                elif flags == f_page:
                    if end - pos < 8 + page:
                        break
                    if not pages:
                        counts.setdefault((name, "page"), 0)  # type: ignore[arg-type]
                    pages += 1
                    pos += 8 + page
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
        listed = []
        if version == 4:
            left = total
            while left > 0:
                name = r.read_bytes(r.read_u8()).decode("latin-1")
                length = r.read_u64()
                b = self._block(name)
                self.unlisted.discard(name)
                b["length"] = length
                listed.append({"name": name, "length": length})
                left -= length
        return {"total": total, "blocks": listed}

    def summary(self) -> dict[str, Any]:
        blocks = []
        for name in self.order:
            b = self.blocks[name]
            blocks.append({"name": name, "length": b["length"], "listed": name not in
                           self.unlisted, **{k: b[k] for k in _RAM_KINDS if b[k] or k in
                                             ("zero", "fill", "page")}})
        return {"version": self.version_id, "total": self.total, "blocks": blocks,
                "chunks": self.chunks}


def _ram_chunk_text(chunk: dict[str, Any]) -> str:
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


# ---------------------------------------------------------------- modelled decoding


class _Probe:
    """Wraps a section handler so that the analyzer learns which section is loading."""

    def __init__(self, inner: Any, on_load: Any) -> None:
        self.inner = inner
        self.idstr = inner.idstr
        self.instance_id = inner.instance_id
        self.version_id = inner.version_id
        self.live = inner.live
        self._on_load = on_load

    def load(self, r: StreamReader, version: int, rules: Any) -> None:
        self._on_load(self.inner, r.offset)
        self.inner.load(r, version, rules)


def _machine_for(release: Release, file_version: int | None, machine: str | None) -> str:
    if machine:
        return machine
    for m in release.machines:
        if file_version is None or m.stream_format == file_version:
            return m.name
    return release.machines[0].name


def _handlers(release: Release, machine: str) -> tuple[list[Any], HeaderPolicy, RamSummary]:
    m = Machine(release, machine, PAGE_SIZE * 4)  # RAM is summarised, never loaded
    ram = RamSummary(m.ram.handler.version_id)
    handlers = [ram, *m.handlers()[1:]]
    return handlers, m.header_policy(), ram


def _marks_to_elements(marks: Iterable[TraceMark]) -> list[Element]:
    out = []
    for m in marks:
        size = m.end - m.offset
        if m.kind == "header":
            out.append(Element("header", m.offset, size, "", m.value,
                               f"magic QEVM, file version {m.value}"))
        elif m.kind == "section":
            out.append(Element("section", m.offset, size, "", m.value))
        elif m.kind == "subsection":
            out.append(Element("subsection", m.offset, size, m.path, m.value))
        elif m.kind == "sentinel":
            out.append(Element("sentinel", m.offset, size, m.path, m.value))
        elif m.kind == "eof":
            out.append(Element("eof", m.offset, size))
        elif m.kind == "ram":
            out.append(Element("ram", m.offset, size, "ram", None, m.value))
        else:
            out.append(Element(m.kind, m.offset, size, m.path, m.value))
    # Stream order: by start, enclosing (struct) elements before what they contain.
    order = {id(e): i for i, e in enumerate(out)}
    out.sort(key=lambda e: (e.offset, -e.size, order[id(e)]))
    return out


def meaning_peek(release: Release, file_version: int | None) -> PeekPolicy:
    """How the analyzer reads subsections to recover what the *writer* meant.

    The save side never peeks: a subsection after a description is always one of that
    description's own. The writer's own loader may misread its own stream (always-peek:
    sibling subsections in both formats, the cpu's ymmh_regs in format 3; peek-if-defined:
    a 0x05 of parent data after a struct that defines subsections), so the analyzer reads
    with 1.0's prefix match over the writer's descriptions: a 0x05 is a subsection only
    when the name that follows belongs to that description. In format 4 the sentinels are
    still checked.
    """
    return PeekPolicy.PREFIX_MATCH


def decode_modelled(inp: Input, release: Release, machine: str | None = None,
                    *, analysis: Analysis | None = None) -> Analysis:
    """Decode with ``release``'s descriptions (the writer's reading of the bytes)."""
    a = analysis or Analysis(inp.name)
    a.format = "modelled"
    r = inp.reader()
    head = r.peek(8)
    file_version = struct.unpack(">I", head[4:8])[0] if len(head) == 8 else None
    machine = _machine_for(release, file_version, machine)
    handlers, header, ram = _handlers(release, machine)
    peek = meaning_peek(release, file_version)
    a.writer = {"release": release.name, "machine": machine,
                "endpoint": f"{release.name}/{machine}", "peek": peek.value}
    tracer = Tracer()
    current: dict[str, Any] = {}

    def on_load(handler: Any, offset: int) -> None:
        sec_mark = tracer.marks[-1]  # the "section" mark load_stream just made
        close_section(sec_mark.offset)
        current["section"] = (handler, sec_mark, len(tracer.marks))

    sections: list[SectionInfo] = []

    def close_section(end: int) -> None:
        if "section" not in current:
            return
        handler, sec_mark, first = current.pop("section")
        kind, _, idstr = str(sec_mark.value).partition(" ")
        info = SectionInfo(kind, -1, handler.idstr, handler.instance_id, -1,
                           sec_mark.offset, end)
        prefix = handler.idstr + "/"
        for m in tracer.marks[first:]:
            if m.kind == "field" and m.path.startswith(prefix) and m.value is not None:
                info.fields[m.path[len(prefix):]] = m.value
        sections.append(info)

    probes = [_Probe(h, on_load) for h in handlers]
    try:
        report = load_stream(r, probes, header, peek, tracer=tracer)
        close_section(report.bytes_consumed - 1)
        a.eof_offset = report.bytes_consumed - 1
        a.trailing_bytes = report.bytes_unread
        a.bytes_read = report.bytes_consumed + report.bytes_unread
        if report.not_loaded:
            a.notes.append("never sent: " + ", ".join(report.not_loaded))
    except LoadError as e:
        close_section(e.offset or r.offset)
        a.error = _error_dict(e)
        a.bytes_read = r.offset
    except Exception as e:  # a hook failed in a way that is not a LoadError
        close_section(r.offset)
        a.error = {"reason": "crashed", "errno": None,
                   "message": f"{type(e).__name__}: {e}", "offset": r.offset,
                   "section": None, "field": None}
        a.bytes_read = r.offset
    a.file_version = file_version
    a.elements = _marks_to_elements(tracer.marks)
    _fill_section_headers(a, sections, tracer.marks, inp)
    a.sections = sections
    a.ram = ram.summary()
    if a.trailing_bytes:
        a.elements.append(Element("trailing", a.eof_offset + 1, a.trailing_bytes, "",
                                  None, "bytes after EOF, never read by this loader"))
    if a.error:
        a.elements.append(Element("error", a.error["offset"] or 0, 0, a.error.get("field")
                                  or "", None, a.error["message"]))
    a.tracer_marks = tracer.marks  # type: ignore[attr-defined]
    return a


def _fill_section_headers(a: Analysis, sections: list[SectionInfo],
                          marks: list[TraceMark], inp: Input) -> None:
    """Section ids and versions from the header bytes (small random reads)."""
    for s in sections:
        head = inp.read_at(s.offset, 5)
        if len(head) == 5:
            s.section_id = struct.unpack(">I", head[1:5])[0]
        if s.kind in ("START", "FULL"):
            n = len(s.idstr.encode("latin-1"))
            tail = inp.read_at(s.offset + 6 + n, 8)
            if len(tail) == 8:
                s.instance_id, s.version_id = struct.unpack(">II", tail)
    by_offset = {s.offset: s for s in sections}
    for e in a.elements:
        if e.kind == "section" and e.offset in by_offset:
            s = by_offset[e.offset]
            e.path = s.idstr
            e.detail = (f"{s.kind} {s.idstr} id {s.section_id}"
                        + (f" instance {s.instance_id} version {s.version_id}"
                           if s.kind in ("START", "FULL") else ""))


def _candidates(file_version: int | None) -> list[tuple[Release, str]]:
    """Releases accepting ``file_version``, newest first, with a matching machine."""
    out = []
    for release in reversed(list(RELEASES.values())):
        if file_version is not None and file_version not in release.accepted_versions:
            continue
        machines = [m.name for m in release.machines if m.stream_format == file_version]
        if not machines:
            if release.format_per_machine:
                continue
            machines = [release.machines[0].name]
        out.append((release, machines[0]))
    return out


# ------------------------------------------------------------------- QEMU decoding


def find_vmdescription(inp: Input, *, max_tail: int = 64 << 20) -> tuple[int, dict[str, Any]] | None:
    """The VMDESCRIPTION trailer (offset of its 0x06, parsed JSON), scanning from the end."""
    size = inp.size()
    if not size:
        return None
    window = 1 << 16
    while True:
        window = min(window, size)
        tail = inp.read_at(size - window, window)
        pos = len(tail)
        while True:
            pos = tail.rfind(b"\x06", 0, pos)
            if pos < 0 or pos + 5 > len(tail):
                break
            (length,) = struct.unpack(">I", tail[pos + 1 : pos + 5])
            if length == len(tail) - pos - 5 and tail[pos + 5 : pos + 6] == b"{":
                try:
                    return size - window + pos, json.loads(tail[pos + 5 :])
                except ValueError:
                    return None
        if window >= size or window >= max_tail:
            return None
        window *= 4


class _QemuDecoder:
    """A QEMU >= 2.x stream, device sections decoded through its VMDESCRIPTION."""

    def __init__(self, inp: Input, a: Analysis, desc: dict[str, Any] | None,
                 desc_offset: int | None) -> None:
        self.inp, self.a, self.desc, self.desc_offset = inp, a, desc, desc_offset
        self.devices: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for d in (desc or {}).get("devices", []):
            self.devices.setdefault((d.get("name"), d.get("instance_id", 0)), []).append(d)
        page = int((desc or {}).get("page_size") or PAGE_SIZE)
        self.ram = RamSummary(4, qemu=True, page_size=page)
        self.footers: bool | None = None
        self.section: SectionInfo | None = None

    def el(self, kind: str, offset: int, end: int, path: str = "", value: Any = None,
           detail: str = "") -> None:
        self.a.elements.append(Element(kind, offset, end - offset, path, value, detail))

    def run(self) -> None:
        a, r = self.a, self.inp.reader()
        self.r = r
        try:
            magic = r.read_u32()
            if magic != FILE_MAGIC:
                raise LoadError(Reason.BAD_MAGIC, f"0x{magic:08x}", offset=0)
            a.file_version = r.read_u32()
            self.el("header", 0, 8, "", a.file_version, f"magic QEVM, file version "
                    f"{a.file_version}")
            started: dict[int, SectionInfo] = {}
            while True:
                at = r.offset
                kind = r.read_u8()
                if kind == T_EOF:
                    self.el("eof", at, r.offset)
                    a.eof_offset = at
                    self._after_eof()
                    break
                if kind == T_CONFIG:
                    self._configuration(at)
                elif kind == T_COMMAND:
                    cmd, length = r.read_u16(), r.read_u16()
                    r.skip(length)
                    self.el("command", at, r.offset, "", cmd, f"command {cmd} ({length} "
                            "byte(s) of data)")
                elif kind in (T_START, T_FULL):
                    sid = r.read_u32()
                    idstr = r.read_bytes(r.read_u8()).decode("latin-1")
                    instance, version = r.read_u32(), r.read_u32()
                    info = SectionInfo(_TYPE_NAMES[kind], sid, idstr, instance, version, at)
                    started[sid] = info
                    self.el("section", at, r.offset, idstr, f"{info.kind} {idstr}",
                            f"{info.kind} {idstr} id {sid} instance {instance} "
                            f"version {version}")
                    self._payload(info)
                elif kind in (T_PART, T_END):
                    sid = r.read_u32()
                    first = started.get(sid)
                    if first is None:
                        raise LoadError(Reason.UNKNOWN_SECTION_ID, f"unknown section id {sid}",
                                        offset=at)
                    info = SectionInfo(_TYPE_NAMES[kind], sid, first.idstr, first.instance_id,
                                       first.version_id, at)
                    self.el("section", at, r.offset, first.idstr, f"{info.kind} {first.idstr}",
                            f"{info.kind} {first.idstr} id {sid}")
                    self._payload(info)
                else:
                    raise LoadError(Reason.UNKNOWN_SECTION_TYPE,
                                    f"unknown section type 0x{kind:02x}", offset=at)
        except LoadError as e:
            if self.section is not None and e.section is None:
                e.set_section(self.section.idstr)
            a.error = _error_dict(e)
            self.el("error", e.offset or 0, e.offset or 0, e.field or "", None, str(e))
        a.bytes_read = r.offset
        a.ram = self.ram.summary()
        order = {id(e): i for i, e in enumerate(a.elements)}
        a.elements.sort(key=lambda e: (e.offset, -e.size, order[id(e)]))

    def _configuration(self, at: int) -> None:
        r = self.r
        length = r.read_u32()
        name = r.read_bytes(length).decode("latin-1")
        self.el("configuration", at, r.offset, "configuration", name,
                f"machine type {name!r}")
        self.a.qemu = {**(self.a.qemu or {}), "machine_type": name}
        while r.peek(1) == b"\x05":
            sat = r.offset
            r.read_u8()
            sname = r.read_bytes(r.read_u8()).decode("latin-1")
            sver = r.read_u32()
            self.el("subsection", sat, r.offset, "configuration", sname, f"version {sver}")
            fat = r.offset
            if sname == "configuration/target-page-bits":
                v: Any = r.read_u32()
            elif sname == "configuration/capabilities":
                v = [r.read_bytes(r.read_u8()).decode("latin-1") for _ in range(r.read_u32())]
            else:
                raise LoadError(Reason.UNKNOWN_SUBSECTION, f"{sname!r} in configuration",
                                offset=sat, section="configuration")
            self.el("field", fat, r.offset, f"configuration/{sname.split('/', 1)[1]}", v)

    def _payload(self, info: SectionInfo) -> None:
        r = self.r
        self.section = info
        start_fields = len(self.a.elements)
        if info.idstr == "ram":
            self.ram.load(r, info.version_id, None)
            chunk = self.ram.chunks[-1]
            self.el("ram", chunk["offset"], r.offset, "ram", None, _ram_chunk_text(chunk))
        elif info.kind == "FULL":
            queue = self.devices.get((info.idstr, info.instance_id))
            if not queue:
                raise LoadError(Reason.UNKNOWN_SECTION,
                                f"{info.idstr!r} instance {info.instance_id} is not in the "
                                "stream's VMDESCRIPTION", offset=info.offset,
                                section=info.idstr)
            dev = queue.pop(0)
            self._vmsd(dev, info.idstr)
        else:
            raise LoadError(Reason.UNKNOWN_SECTION,
                            f"iterable section {info.idstr!r}: its format is not known to "
                            "the analyzer", offset=info.offset, section=info.idstr)
        info.end = r.offset
        for e in self.a.elements[start_fields:]:
            if e.kind == "field" and e.path.startswith(info.idstr + "/"):
                info.fields[e.path[len(info.idstr) + 1:]] = e.value
        self.a.sections.append(info)
        self._footer(info)
        self.section = None

    def _footer(self, info: SectionInfo) -> None:
        r = self.r
        if self.footers is None:
            self.footers = r.peek(1) == bytes([T_FOOTER])
            self.a.qemu = {**(self.a.qemu or {}), "section_footers": self.footers}
        if not self.footers:
            return
        at = r.offset
        byte = r.read_u8()
        if byte != T_FOOTER:
            raise LoadError(Reason.INVALID_VALUE, f"missing section footer for {info.idstr} "
                            f"(found 0x{byte:02x})", offset=at, section=info.idstr)
        sid = r.read_u32()
        if sid != info.section_id:
            raise LoadError(Reason.INVALID_VALUE, f"section footer id {sid} != "
                            f"{info.section_id} of {info.idstr}", offset=at,
                            section=info.idstr)
        self.el("footer", at, r.offset, info.idstr, sid, f"footer of section id {sid}")

    def _vmsd(self, desc: dict[str, Any], path: str) -> None:
        r = self.r
        for f in desc.get("fields", []):
            name = str(f.get("name"))
            size = int(f.get("size") or 0)
            n = f.get("array_len")
            index = f.get("index")
            comp = f"{name}[{index}]" if index is not None else name
            if "struct" in f:
                for i in range(int(n or 1)):
                    sub_path = f"{path}/{name}[{i}]" if n else f"{path}/{comp}"
                    start = r.offset
                    self._vmsd(f["struct"], sub_path)
                    used = r.offset - start
                    if size and used != size:
                        self.a.notes.append(f"{sub_path}: decoded {used} byte(s), the "
                                            f"description says {size}; resynchronised")
                        if used < size:
                            r.skip(size - used)
                    self.el("struct", start, r.offset, sub_path, None,
                            str(f["struct"].get("vmsd_name", "")))
                continue
            total = size * int(n or 1)
            start = r.offset
            if total <= 4096:
                raw = r.read_bytes(total)
                value = _typed_value(str(f.get("type", "")), raw, size, n)
            else:
                r.skip(total)
                value = f"<{total} bytes>"
            self.el("field", start, r.offset, f"{path}/{comp}", value, str(f.get("type", "")))
        for s in desc.get("subsections", []):
            at = r.offset
            marker = r.read_u8()
            if marker != 0x05:
                raise LoadError(Reason.INVALID_VALUE, f"expected subsection "
                                f"{s.get('vmsd_name')!r}, found 0x{marker:02x}", offset=at,
                                field=path)
            sname = r.read_bytes(r.read_u8()).decode("latin-1")
            sver = r.read_u32()
            if sname != s.get("vmsd_name"):
                raise LoadError(Reason.UNKNOWN_SUBSECTION, f"stream has {sname!r}, "
                                f"description {s.get('vmsd_name')!r}", offset=at, field=path)
            self.el("subsection", at, r.offset, path, sname, f"version {sver}")
            self._vmsd(s, path)

    def _after_eof(self) -> None:
        r = self.r
        at = r.offset
        head = r.peek(5)
        if len(head) == 5 and head[0] == T_VMDESC:
            r.skip(1)
            length = r.read_u32()
            r.skip(length)
            self.el("vmdescription", at, r.offset, "", None,
                    f"VMDESCRIPTION JSON, {length} bytes, "
                    f"{len((self.desc or {}).get('devices', []))} device(s)")
            self.a.qemu = {**(self.a.qemu or {}), "vmdescription": {
                "offset": at, "size": r.offset - at,
                "devices": len((self.desc or {}).get("devices", []))}}
        self.a.trailing_bytes = r.drain()
        if self.a.trailing_bytes:
            self.el("trailing", r.offset - self.a.trailing_bytes, r.offset, "", None,
                    "bytes after the end of the stream")


_INT_TYPES = {"int8": (1, True), "int16": (2, True), "int32": (4, True), "int64": (8, True),
              "uint8": (1, False), "uint16": (2, False), "uint32": (4, False),
              "uint64": (8, False), "timer": (8, True), "int32 equal": (4, True),
              "int32 le": (4, True), "uint8 equal": (1, False), "uint16 equal": (2, False),
              "uint32 equal": (4, False), "uint64 equal": (8, False), "bool": (1, False)}


def _typed_value(kind: str, raw: bytes, size: int, n: Any) -> Any:
    spec = _INT_TYPES.get(kind)
    if spec and spec[0] == size and len(raw) % size == 0:
        vals = [int.from_bytes(raw[i : i + size], "big", signed=spec[1])
                for i in range(0, len(raw), size)]
        if kind == "bool":
            vals = [bool(v) for v in vals]  # type: ignore[misc]
        return vals if n else vals[0]
    return raw


def decode_qemu(inp: Input, analysis: Analysis | None = None) -> Analysis:
    a = analysis or Analysis(inp.name)
    a.format = "qemu"
    found = find_vmdescription(inp)
    desc, off = (found[1], found[0]) if found else (None, None)
    a.qemu = {"vmdescription": None if found else "absent"}
    if found is None:
        a.notes.append("no VMDESCRIPTION: device sections cannot be decoded")
    _QemuDecoder(inp, a, desc, off).run()
    return a


def _looks_like_qemu(inp: Input) -> bool:
    head = inp.reader().peek(9)
    if len(head) >= 9 and head[8] == T_CONFIG:
        return True
    return False


# -------------------------------------------------------------------------- analyze


def analyze(source: str | bytes | BinaryIO | Input, *, release: str | None = None,
            machine: str | None = None, as_destination: str | None = None) -> Analysis:
    """Decode ``source``; with ``as_destination`` ("R/M") also replay it there."""
    inp = source if isinstance(source, Input) else Input(source)
    a = Analysis(inp.name)
    head = inp.reader().peek(9)
    if len(head) >= 4 and struct.unpack(">I", head[:4])[0] != FILE_MAGIC:
        # Not a savevm stream at all: say so, rather than what no release would decode.
        a.error = LoadError(Reason.BAD_MAGIC, f"0x{head[:4].hex()}, not a savevm stream "
                            "(which starts with QEVM)", offset=0).to_dict()
        return a
    file_version = struct.unpack(">I", head[4:8])[0] if len(head) >= 8 else None
    a.file_version = file_version
    qemu = release is None and (
        (len(head) >= 9 and head[8] == T_CONFIG)
        or (file_version == 3 and inp.seekable and find_vmdescription(inp) is not None))
    if qemu:
        decode_qemu(inp, a)
    elif release is not None:
        decode_modelled(inp, _release(release), machine, analysis=a)
        a.writer["inferred"] = False  # type: ignore[index]
    else:
        tried = []
        best: Analysis | None = None
        for rel, mach in _candidates(file_version):
            attempt = decode_modelled(inp, rel, mach, analysis=Analysis(inp.name))
            ok = attempt.complete and not attempt.trailing_bytes
            tried.append({"endpoint": f"{rel.name}/{mach}", "decodes": ok,
                          "error": None if ok else (attempt.error or {}).get("message")
                          or f"{attempt.trailing_bytes} byte(s) after EOF"})
            if ok or best is None or attempt.bytes_read > best.bytes_read:
                best = attempt
            if ok:
                break
        if (best is None or not tried[-1]["decodes"]) and file_version == 3 and \
                find_vmdescription(inp) is not None:
            return decode_qemu(inp, Analysis(inp.name))
        if best is None:
            a.error = {"reason": "unsupported_version", "errno": None,
                       "message": f"no modelled release accepts file version {file_version}",
                       "offset": 4, "section": None, "field": None}
            a.writer = {"inferred": True, "tried": tried}
            return a
        assert best.writer is not None
        best.writer["inferred"] = True
        best.writer["tried"] = tried
        if not tried[-1]["decodes"]:
            best.notes.append("no modelled release decodes the whole stream; shown as "
                              f"{best.writer['endpoint']} reads it (it reads furthest)")
        a = best
    if as_destination:
        if a.format != "modelled":
            a.divergence = {"error": "--as-destination replays modelled releases only"}
        else:
            a.divergence = replay_as_destination(inp, a, as_destination)
    return a


def _release(name: str) -> Release:
    try:
        return RELEASES[name]
    except KeyError:
        raise ConfigError(f"unknown release {name!r} (known: {', '.join(RELEASES)})") from None


# ---------------------------------------------------------------- divergence replay


def _leaf(marks: Iterable[TraceMark]) -> list[TraceMark]:
    return [m for m in marks if m.kind != "struct"]


def _describe_mark(m: TraceMark | None) -> str:
    if m is None:
        return ""
    if m.kind == "field":
        return f"field {m.path} = {_short(m.value)}"
    if m.kind == "subsection":
        return f"subsection {m.value!r} after {m.path}"
    if m.kind == "sentinel":
        return f"sentinel 0x{m.value:02x} after {m.path}"
    if m.kind == "section":
        return f"section {m.value}"
    if m.kind == "header":
        return f"header, file version {m.value}"
    if m.kind == "eof":
        return "EOF (0x00): end of stream"
    if m.kind == "ram":
        return f"ram chunk: {m.value}"
    return f"{m.kind} {m.path}"


def _short(value: Any, limit: int = 24) -> str:
    v = _json_value(value)
    text = json.dumps(v) if not isinstance(v, str) else v
    if isinstance(value, int) and not isinstance(value, bool):
        text = f"{value} (0x{value & ((1 << 64) - 1):x})" if value >= 0 else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def replay_as_destination(inp: Input, writer: Analysis, endpoint: str) -> dict[str, Any]:
    """Load the bytes as ``endpoint`` ("R/M") would, with a tracer, and align its reading
    with the writer's: the first element where they part, and the destination's outcome."""
    rel_name, _, mach = endpoint.partition("/")
    release = _release(rel_name)
    mach = mach or release.machines[0].name
    release.machine(mach)
    handlers, header, _ = _handlers(release, mach)
    tracer = Tracer()
    r = inp.reader()
    outcome: dict[str, Any]
    try:
        report = load_stream(r, handlers, header, release.peek, tracer=tracer)
        if report.half_loaded:
            outcome = {"status": "half-loaded", "eof_offset": report.bytes_consumed - 1,
                       "bytes_unread": report.bytes_unread, "not_loaded": report.not_loaded,
                       "message": f"an EOF byte at offset {report.bytes_consumed - 1} ended "
                                  f"the load with {report.bytes_unread} byte(s) unread"}
        else:
            outcome = {"status": "loaded", "message": "the destination reached EOF"}
    except LoadError as e:
        outcome = {"status": "rejected", **e.to_dict()}
    except Exception as e:  # not a migration error: the destination would crash
        outcome = {"status": "crashed", "message": f"{type(e).__name__}: {e}",
                   "offset": r.offset}
    w_marks = _leaf(getattr(writer, "tracer_marks", []))
    d_marks = _leaf(tracer.marks)
    first = None
    renamed = []
    for i, (wm, dm) in enumerate(zip(w_marks, d_marks, strict=False)):
        if (wm.kind, wm.offset, wm.end) != (dm.kind, dm.offset, dm.end):
            first = i
            break
        if wm.path != dm.path and len(renamed) < 20:
            renamed.append({"offset": wm.offset, "writer": wm.path, "destination": dm.path})
    if first is None and len(w_marks) != len(d_marks):
        first = min(len(w_marks), len(d_marks))
    result: dict[str, Any] = {"destination": endpoint, "outcome": outcome,
                              "renamed": renamed}
    if first is None:
        result["diverges"] = False
        result["summary"] = ("the destination reads every element as the writer meant it"
                             if outcome["status"] == "loaded" else
                             "the readings agree up to where the destination stopped")
        return result
    wm = w_marks[first] if first < len(w_marks) else None
    dm = d_marks[first] if first < len(d_marks) else None
    offset = min(m.offset for m in (wm, dm) if m is not None)
    result.update({
        "diverges": True,
        "offset": offset,
        "writer": _mark_dict(wm),
        "destination_reading": _mark_dict(dm) if dm is not None else {
            "kind": outcome["status"], "offset": outcome.get("offset"),
            "text": outcome.get("message", "")},
        "summary": f"at offset {offset} (0x{offset:x}) the writer meant "
                   f"{_describe_mark(wm) or 'nothing more'}; the destination reads "
                   f"{_describe_mark(dm) if dm else outcome.get('message', outcome['status'])}",
        "side_by_side": _side_by_side(inp, w_marks, d_marks, first),
    })
    return result


def _mark_dict(m: TraceMark | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"kind": m.kind, "offset": m.offset, "size": m.end - m.offset, "path": m.path,
            "value": _json_value(m.value), "text": _describe_mark(m)}


def _side_by_side(inp: Input, w: list[TraceMark], d: list[TraceMark], first: int,
                  before: int = 6, after: int = 10) -> list[dict[str, Any]]:
    """Rows keyed by offset around the divergence: what each side reads starting there."""
    lo = max(0, first - before)
    w_win = w[lo : first + after]
    d_win = d[lo : first + after]
    offsets = sorted({m.offset for m in w_win} | {m.offset for m in d_win})
    w_at = {m.offset: m for m in w_win}
    d_at = {m.offset: m for m in d_win}
    pivot = min([m.offset for m in (w[first:first + 1] + d[first:first + 1])] or [0])
    rows = []
    for off in offsets:
        wm, dm = w_at.get(off), d_at.get(off)
        size = max((m.end - m.offset for m in (wm, dm) if m is not None), default=0)
        raw = inp.read_at(off, min(size, 12))
        rows.append({"offset": off, "bytes": raw.hex() + ("..." if size > 12 else ""),
                     "writer": _describe_mark(wm), "destination": _describe_mark(dm),
                     "diverged": off >= pivot})
    return rows


# ---------------------------------------------------------------------- rendering


def render_text(a: Analysis, *, max_elements: int | None = None) -> str:
    """The analysis for people: one line per element, then the divergence if any."""
    lines = [f"stream {a.input}: {a.bytes_read} bytes, file version {a.file_version}, "
             f"{a.format}"]
    if a.writer:
        w = a.writer
        if "endpoint" in w:
            how = "inferred: " if w.get("inferred") else ""
            lines.append(f"decoded as {w['endpoint']} ({how}peek {w.get('peek')})")
            for t in w.get("tried", []):
                lines.append(f"  tried {t['endpoint']}: "
                             + ("decodes the whole stream" if t["decodes"] else t["error"]))
    if a.qemu:
        q = a.qemu
        lines.append("QEMU stream: " + ", ".join(f"{k} {v}" for k, v in q.items()
                                                   if not isinstance(v, dict))
                     + (f", VMDESCRIPTION of {q['vmdescription']['devices']} device(s) at "
                        f"{q['vmdescription']['offset']}" if isinstance(
                            q.get("vmdescription"), dict) else ""))
    lines.append(f"{'offset':>10} {'size':>8}  {'kind':<13} element")
    shown = a.elements if max_elements is None else a.elements[:max_elements]
    for e in shown:
        depth = e.path.count("/") if e.kind in ("field", "struct", "subsection",
                                                 "sentinel") else 0
        text = _element_text(e)
        lines.append(f"{e.offset:>10} {e.size:>8}  {e.kind:<13} {'  ' * depth}{text}")
    if max_elements is not None and len(a.elements) > max_elements:
        lines.append(f"... {len(a.elements) - max_elements} more element(s)")
    if a.ram and a.ram.get("blocks"):
        lines.append("RAM by block:")
        for b in a.ram["blocks"]:
            kinds = ", ".join(f"{b[k]} {k}" for k in _RAM_KINDS if k in b)
            lines.append(f"  {b['name']:<28} {b['length']:>12} bytes  {kinds}"
                         + ("" if b["listed"] else "  (not in the MEM_SIZE list)"))
    for n in a.notes:
        lines.append(f"note: {n}")
    if a.error:
        lines.append(f"stopped: {a.error['message']}")
    elif a.eof_offset is not None:
        lines.append(f"EOF at offset {a.eof_offset}"
                     + (f"; {a.trailing_bytes} byte(s) after it" if a.trailing_bytes else ""))
    if a.divergence:
        lines += _divergence_text(a.divergence)
    return "\n".join(lines) + "\n"


def _element_text(e: Element) -> str:
    if e.kind == "field":
        return f"{e.path} = {_short(e.value, 48)}"
    if e.kind == "struct":
        return f"{e.path} {{{e.value or ''}}}".rstrip(" {}") + (" (struct)" if True else "")
    if e.kind == "subsection":
        return f"subsection {e.value!r} in {e.path}" + (f" ({e.detail})" if e.detail else "")
    if e.kind == "sentinel":
        return f"sentinel 0x{e.value:02x} after {e.path}"
    if e.kind in ("section", "header", "configuration", "ram", "footer", "command",
                  "vmdescription", "trailing", "error"):
        return e.detail or str(e.value or "")
    if e.kind == "eof":
        return "EOF"
    return f"{e.path} {e.value if e.value is not None else ''}".strip()


def _divergence_text(d: dict[str, Any]) -> list[str]:
    if "error" in d:
        return [f"as destination: {d['error']}"]
    out = ["", f"as destination {d['destination']}: {d['outcome']['status']}: "
               f"{d['outcome'].get('message', '')}"]
    if not d.get("diverges"):
        out.append(f"  {d['summary']}")
        return out
    out.append(f"  first divergence: {d['summary']}")
    rows = d.get("side_by_side") or []
    if rows:
        out.append(f"  {'offset':>10}  {'bytes':<26} {'writer meant':<46} destination reads")
        for row in rows:
            mark = ">" if row["diverged"] else " "
            out.append(f"{mark} {row['offset']:>10}  {row['bytes']:<26} "
                       f"{row['writer'][:46]:<46} {row['destination']}")
    for rn in d.get("renamed", [])[:5]:
        out.append(f"  note: same bytes, other name at {rn['offset']}: {rn['writer']} -> "
                   f"{rn['destination']}")
    return out


# ---------------------------------------------------------------------------- CLI


def _cmd_analyze(args: argparse.Namespace) -> int:
    inp = Input(args.file)
    try:
        a = analyze(inp, release=args.release, machine=args.machine,
                    as_destination=args.as_destination)
    except (ConfigError, EmulatorError) as e:
        print(f"migmatrix analyze: {e}", file=sys.stderr)
        return 2
    finally:
        inp.close()
    out = sys.stdout
    if args.json:
        json.dump(a.to_dict(), out, indent=1 if args.pretty else None,
                  default=lambda v: jsonable(v))
        out.write("\n")
    else:
        out.write(render_text(a, max_elements=args.limit))
    return 0 if a.complete and not a.trailing_bytes else 1


def configure_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``analyze`` to the ``migmatrix`` subcommands."""
    s = subparsers.add_parser(
        "analyze", help="decode a stream element by element, with offsets",
        description="Decode a migration stream: header, sections, fields with values, "
                    "subsections, sentinels, RAM per block; exit 1 if it does not decode "
                    "to its end.")
    s.add_argument("file", help="stream file, or - for standard input")
    s.add_argument("--release", help="decode with this release (default: infer)")
    s.add_argument("--machine", help="machine type (default: one matching the stream format)")
    s.add_argument("--as-destination", metavar="R/M",
                   help="replay how this destination reads the bytes; show the divergence")
    s.add_argument("--json", action="store_true", help="JSON for tools")
    s.add_argument("--pretty", action="store_true", help="indent the JSON")
    s.add_argument("--limit", type=int, default=None, help="text: at most N elements")
    s.set_defaults(func=_cmd_analyze)
    return s


__all__ += ["decode_modelled", "decode_qemu", "find_vmdescription"]
