"""QEMU >= 2.x streams (file version 3 with a 0x07 configuration section, section
footers, the VMDESCRIPTION JSON of QEMU >= 2.3 after EOF): device sections decoded
through that JSON."""

from __future__ import annotations

import struct
from collections import deque

from ..emulator.errors import LoadError, Reason
from ..emulator.sections import FILE_MAGIC
from .elements import Analysis, Element, SectionInfo, error_dict
from .ram import PAGE_SIZE, RamSummary, ram_chunk_text
from .source import Input
from .vmdesc import DescriptionError, Device, Trailer, Vmsd, find_trailer, parse_devices

# typing.TYPE_CHECKING without importing typing, which the analyzer's start pays for
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["T_CONFIG", "decode_qemu", "find_vmdescription"]

# Section type bytes (wire-format.md 1 and 6).
T_EOF, T_START, T_PART, T_END, T_FULL = 0x00, 0x01, 0x02, 0x03, 0x04
T_VMDESC, T_CONFIG, T_COMMAND, T_FOOTER = 0x06, 0x07, 0x08, 0x7E
_TYPE_NAMES = {T_START: "START", T_PART: "PART", T_END: "END", T_FULL: "FULL"}


def find_vmdescription(inp: Input) -> tuple[int, dict[str, Any]] | None:
    """The VMDESCRIPTION trailer as ``(offset of its 0x06, parsed JSON)``, when the stream
    ends with one whose JSON parses to an object (see :func:`.vmdesc.find_trailer`)."""
    trailer = find_trailer(inp)
    if trailer is None or not isinstance(trailer.doc, dict):
        return None
    return trailer.offset, trailer.doc


MAX_NAME_BYTES = 4096  # a machine type name longer than this is refused
MAX_CAPABILITIES = 256


class _QemuDecoder:
    """A QEMU >= 2.x stream, device sections decoded through its VMDESCRIPTION.

    Everything the stream declares is checked before it is used: lengths against the
    bytes left, counts against their bounds, the description by :mod:`.vmdesc`.
    """

    def __init__(self, inp: Input, a: Analysis, devices: list[Device],
                 page_size: int | None) -> None:
        self.inp, self.a = inp, a
        self.size = inp.size()
        self.devices: dict[tuple[str, int], deque[Device]] = {}
        for d in devices:
            self.devices.setdefault((d.name, d.instance_id), deque()).append(d)
        self.device_count = len(devices)
        self.unusable: str | None = None  # why there is no description to decode with
        self.ram = RamSummary(4, qemu=True, page_size=page_size or PAGE_SIZE)
        self.footers: bool | None = None
        self.section: SectionInfo | None = None

    def el(self, kind: str, offset: int, end: int, path: str = "", value: Any = None,
           detail: str = "") -> None:
        self.a.add(Element(kind, offset, end - offset, path, value, detail))
        section = self.section
        if kind == "field" and section is not None and path.startswith(section.idstr + "/"):
            section.fields[path[len(section.idstr) + 1:]] = value

    def need(self, n: int, what: str, **where: Any) -> None:
        """Refuse a declared length ``n`` that runs past the end of the stream, before
        anything is read or allocated for it."""
        left = self.size - self.r.offset
        if n > left:
            raise LoadError(Reason.TRUNCATED, f"{what} declares {n} byte(s), {left} left",
                            offset=self.r.offset, **where)

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
            seen: set[tuple[str, int]] = set()
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
                    if sid in started or (idstr, instance) in seen:
                        raise LoadError(Reason.DUPLICATE_SECTION, f"{idstr!r} {instance} "
                                        f"(section id {sid}) started before", offset=at,
                                        section=idstr)
                    seen.add((idstr, instance))
                    info = SectionInfo(_TYPE_NAMES[kind], sid, idstr, instance, version, at)
                    if kind == T_START:
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
            a.error = error_dict(e)
            self.el("error", e.offset or 0, e.offset or 0, e.field or "", None, str(e))
        a.bytes_read = r.offset
        a.ram = self.ram.summary()
        order = {id(e): i for i, e in enumerate(a.elements)}
        a.elements.sort(key=lambda e: (e.offset, -e.size, order[id(e)]))

    def _configuration(self, at: int) -> None:
        r = self.r
        length = r.read_u32()
        if length > MAX_NAME_BYTES:
            raise LoadError(Reason.LIMIT_EXCEEDED, f"machine type name of {length} bytes "
                            f"(at most {MAX_NAME_BYTES})", offset=at + 1,
                            section="configuration")
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
                count = r.read_u32()
                if count > MAX_CAPABILITIES:
                    raise LoadError(Reason.LIMIT_EXCEEDED, f"{count} capabilities (at most "
                                    f"{MAX_CAPABILITIES})", offset=fat, section="configuration")
                v = [r.read_bytes(r.read_u8()).decode("latin-1") for _ in range(count)]
            else:
                raise LoadError(Reason.UNKNOWN_SUBSECTION, f"{sname!r} in configuration",
                                offset=sat, section="configuration")
            self.el("field", fat, r.offset, f"configuration/{sname.split('/', 1)[1]}", v)

    def _payload(self, info: SectionInfo) -> None:
        r = self.r
        self.section = info
        if info.idstr == "ram":
            self.ram.load(r, info.version_id, None)
            chunk = self.ram.last_chunk
            assert chunk is not None
            self.el("ram", chunk["offset"], r.offset, "ram", None, ram_chunk_text(chunk))
            self.inp.release(r.offset)
        elif info.kind == "FULL":
            queue = self.devices.get((info.idstr, info.instance_id))
            if not queue and self.unusable is not None:
                raise LoadError(Reason.UNKNOWN_SECTION,
                                f"{info.idstr!r} instance {info.instance_id} cannot be "
                                f"decoded: the stream's VMDESCRIPTION is unusable "
                                f"({self.unusable})", offset=info.offset, section=info.idstr)
            if not queue:
                raise LoadError(Reason.UNKNOWN_SECTION,
                                f"{info.idstr!r} instance {info.instance_id} is not in the "
                                "stream's VMDESCRIPTION", offset=info.offset,
                                section=info.idstr)
            dev = queue.popleft()
            if dev.vmsd is None:
                raise LoadError(Reason.INVALID_VALUE, f"its VMDESCRIPTION entry is malformed: "
                                f"{dev.error}", offset=info.offset, section=info.idstr)
            self._vmsd(dev.vmsd, info.idstr)
        else:
            raise LoadError(Reason.UNKNOWN_SECTION,
                            f"iterable section {info.idstr!r}: its format is not known to "
                            "the analyzer", offset=info.offset, section=info.idstr)
        info.end = r.offset
        self.a.add_section(info)
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

    def _vmsd(self, desc: Vmsd, path: str) -> None:
        r = self.r
        for f in desc.fields:
            name, size, n = f.name, f.size, f.array_len
            comp = f"{name}[{f.index}]" if f.index is not None else name
            if f.struct is not None:
                count = n or 1
                if size:
                    self.need(size * count, f"{path}/{comp}: {count} x {size}-byte struct",
                              field=f"{path}/{comp}")
                for i in range(count):
                    sub_path = f"{path}/{name}[{i}]" if n else f"{path}/{comp}"
                    start = r.offset
                    self._vmsd(f.struct, sub_path)
                    used = r.offset - start
                    if size and used != size:
                        if len(self.a.notes) < 100:
                            self.a.notes.append(f"{sub_path}: decoded {used} byte(s), the "
                                                f"description says {size}; resynchronised")
                        if used < size:
                            r.skip(size - used)
                    self.el("struct", start, r.offset, sub_path, None, f.struct.name)
                    if r.offset == start and count - i > 1:
                        # An element that takes no bytes: the others take none either.
                        self.a.notes.append(f"{path}/{name}: {count - i - 1} more empty "
                                            "element(s) of this struct array")
                        break
                continue
            total = size * (n or 1)
            field = f"{path}/{comp}"
            start = r.offset
            if total > self.size - start:
                self.need(total, field, field=field)
            if total <= 4096:
                raw = r.read_bytes(total)
                value = _typed_value(f.type, raw, size, n)
            else:
                r.skip(total)
                value = f"<{total} bytes>"
            self.el("field", start, start + total, field, value, f.type)
        for s in desc.subsections:
            at = r.offset
            marker = r.read_u8()
            if marker != 0x05:
                raise LoadError(Reason.INVALID_VALUE, f"expected subsection "
                                f"{s.name!r}, found 0x{marker:02x}", offset=at, field=path)
            sname = r.read_bytes(r.read_u8()).decode("latin-1")
            sver = r.read_u32()
            if sname != s.name:
                raise LoadError(Reason.UNKNOWN_SUBSECTION, f"stream has {sname!r}, "
                                f"description {s.name!r}", offset=at, field=path)
            self.el("subsection", at, r.offset, path, sname, f"version {sver}")
            self._vmsd(s, path)

    def _after_eof(self) -> None:
        r = self.r
        at = r.offset
        head = r.peek(5)
        if len(head) == 5 and head[0] == T_VMDESC:
            r.skip(1)
            length = r.read_u32()
            self.need(length, "VMDESCRIPTION")
            r.skip(length)
            self.el("vmdescription", at, r.offset, "", None,
                    f"VMDESCRIPTION JSON, {length} bytes, {self.device_count} device(s)")
            self.a.qemu = {**(self.a.qemu or {}), "vmdescription": {
                "offset": at, "size": r.offset - at, "devices": self.device_count}}
        self.a.trailing_bytes = r.drain()
        if self.a.trailing_bytes:
            self.el("trailing", r.offset - self.a.trailing_bytes, r.offset, "", None,
                    "bytes after the end of the stream")


# Integer field types: their size and their struct code (signed, unsigned).
_INT_TYPES = {"int8": (1, "b"), "int16": (2, "h"), "int32": (4, "i"), "int64": (8, "q"),
              "uint8": (1, "B"), "uint16": (2, "H"), "uint32": (4, "I"),
              "uint64": (8, "Q"), "timer": (8, "q"), "int32 equal": (4, "i"),
              "int32 le": (4, "i"), "uint8 equal": (1, "B"), "uint16 equal": (2, "H"),
              "uint32 equal": (4, "I"), "uint64 equal": (8, "Q"), "bool": (1, "B")}


def _typed_value(kind: str, raw: bytes, size: int, n: Any) -> Any:
    spec = _INT_TYPES.get(kind)
    if spec and spec[0] == size and len(raw) % size == 0:
        if not n:
            value = struct.unpack(f">{spec[1]}", raw)[0]
            return bool(value) if kind == "bool" else value
        vals = list(struct.unpack(f">{len(raw) // size}{spec[1]}", raw))
        return [bool(v) for v in vals] if kind == "bool" else vals
    return raw


def decode_qemu(inp: Input, analysis: Analysis | None = None) -> Analysis:
    """Decode a QEMU stream through its VMDESCRIPTION (see the module docstring)."""
    a = analysis or Analysis(inp.name)
    a.format = "qemu"
    trailer = find_trailer(inp)
    a.qemu = {"vmdescription": None if trailer else "absent"}
    devices: list[Device] = []
    page_size = None
    unusable: str | None = "there is none"
    if trailer is None:
        a.notes.append("no VMDESCRIPTION: device sections cannot be decoded")
    else:
        page_size, devices, unusable = _devices(trailer, a)
    decoder = _QemuDecoder(inp, a, devices, page_size)
    decoder.unusable = unusable
    decoder.run()
    return a


def _devices(trailer: Trailer, a: Analysis) -> tuple[int | None, list[Device], str | None]:
    """The trailer's devices, its page size, and why it gave none (a note says more)."""
    where = f"VMDESCRIPTION at offset {trailer.offset}"
    if trailer.error is not None:
        a.notes.append(f"{where}: {trailer.error}; device sections cannot be decoded")
        return None, [], trailer.error
    try:
        page_size, devices, problems = parse_devices(trailer.doc)
    except DescriptionError as e:
        a.notes.append(f"{where}: {e}; device sections cannot be decoded")
        return None, [], str(e)
    if problems:
        a.notes.append(f"{where}: {len(problems)} malformed member(s), first {problems[0]}")
    return page_size, devices, None
