"""What an analysis is made of: elements with offsets, sections with their fields, and
the :class:`Analysis` that holds them, with their JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..emulator.errors import LoadError
from ..emulator.sections import SectionRecord, section_key

__all__ = ["ANALYSIS_SCHEMA", "ELEMENTS_KEPT", "PARTS_KEPT", "Analysis", "Element",
           "SectionInfo", "error_dict",
           "json_value", "short"]

ANALYSIS_SCHEMA = "migmatrix/analysis/1"
_MAX_VALUE_BYTES = 32  # bytes of a buffer value shown in the analysis
ELEMENTS_KEPT = 50_000  # elements listed one by one; past that they are counted by kind
PARTS_KEPT = 1_000  # PART/END section records listed; START/FULL are bounded by the stream


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

    def __post_init__(self) -> None:
        # Only the first bytes of a buffer are ever shown: a long one is not kept whole.
        v = self.value
        if isinstance(v, (bytes, bytearray, memoryview)) and len(v) > _MAX_VALUE_BYTES:
            self.value = bytes(v[: _MAX_VALUE_BYTES + 1])

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "offset": self.offset, "size": self.size,
                             "path": self.path}
        if self.value is not None:
            d["value"] = json_value(self.value)
        if self.detail:
            d["detail"] = self.detail
        return d


def json_value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        text = b[:_MAX_VALUE_BYTES].hex()
        return text + ("..." if len(b) > _MAX_VALUE_BYTES else "")
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
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
    # What was decoded but not listed (the caps above), by kind.
    omitted_elements: dict[str, int] = field(default_factory=dict)
    omitted_sections: dict[str, int] = field(default_factory=dict)
    _parts: int = field(default=0, repr=False)

    def add(self, element: Element) -> None:
        """List ``element`` while fewer than :data:`ELEMENTS_KEPT` are listed, else count
        it: memory does not grow with the stream."""
        if len(self.elements) < ELEMENTS_KEPT:
            self.elements.append(element)
        else:
            self.omitted_elements[element.kind] = self.omitted_elements.get(element.kind,
                                                                            0) + 1

    def add_section(self, info: SectionInfo) -> None:
        """List ``info``; past :data:`PARTS_KEPT` PART/END records, count them."""
        if info.kind in ("PART", "END") and self._parts >= PARTS_KEPT:
            self.omitted_sections[info.kind] = self.omitted_sections.get(info.kind, 0) + 1
            return
        if info.kind in ("PART", "END"):
            self._parts += 1
        self.sections.append(info)

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
            "omitted": {"elements": dict(self.omitted_elements),
                        "sections": dict(self.omitted_sections)},
            "divergence": self.divergence,
        }


def error_dict(e: LoadError) -> dict[str, Any]:
    return e.to_dict()

def short(value: Any, limit: int = 24) -> str:
    v = json_value(value)
    text = json.dumps(v) if not isinstance(v, str) else v
    if isinstance(value, int) and not isinstance(value, bool):
        text = f"{value} (0x{value & ((1 << 64) - 1):x})" if value >= 0 else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
