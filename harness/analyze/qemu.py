"""QEMU >= 2.x streams (file version 3 with a 0x07 configuration section, section
footers, the VMDESCRIPTION JSON of QEMU >= 2.3 after EOF): device sections decoded
through that JSON."""

from __future__ import annotations

import json
import struct
from typing import Any

from ..emulator.errors import LoadError, Reason
from ..emulator.savevm import FILE_MAGIC
from .elements import Analysis, Element, SectionInfo, error_dict
from .ram import PAGE_SIZE, RamSummary, ram_chunk_text
from .source import Input

__all__ = ["T_CONFIG", "decode_qemu", "find_vmdescription"]

# Section type bytes (wire-format.md 1 and 6).
T_EOF, T_START, T_PART, T_END, T_FULL = 0x00, 0x01, 0x02, 0x03, 0x04
T_VMDESC, T_CONFIG, T_COMMAND, T_FOOTER = 0x06, 0x07, 0x08, 0x7E
_TYPE_NAMES = {T_START: "START", T_PART: "PART", T_END: "END", T_FULL: "FULL"}


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
            a.error = error_dict(e)
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
            self.el("ram", chunk["offset"], r.offset, "ram", None, ram_chunk_text(chunk))
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
