"""What an analysis is made of: elements with offsets, sections with their fields, and
the :class:`Analysis` that holds them, with their JSON form."""

from __future__ import annotations

import json

from ..emulator.errors import LoadError
from ..emulator.sections import SectionRecord, section_key

# typing.TYPE_CHECKING without importing typing, which the analyzer's start pays for
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

__all__ = ["ANALYSIS_SCHEMA", "ELEMENTS_KEPT", "PARTS_KEPT", "Analysis", "Element",
           "SectionInfo", "error_dict",
           "json_value", "short"]

ANALYSIS_SCHEMA = "migmatrix/analysis/1"
_MAX_VALUE_BYTES = 32  # bytes of a buffer value shown in the analysis
ELEMENTS_KEPT = 50_000  # elements listed one by one; past that they are counted by kind
PARTS_KEPT = 1_000  # PART/END section records listed; START/FULL are bounded by the stream


# The classes here are plain classes, not dataclasses: importing dataclasses (and with it
# inspect) costs a QEMU stream's analysis more than decoding its device sections.


class Element:
    """One decoded item of the stream: ``kind`` at ``offset``, ``size`` bytes.

    ``kind``: header configuration section field struct subsection sentinel footer
    command ram eof vmdescription trailing error.
    """

    __slots__ = ("kind", "offset", "size", "path", "value", "detail")

    def __init__(self, kind: str, offset: int, size: int, path: str = "", value: Any = None,
                 detail: str = "") -> None:
        self.kind, self.offset, self.size = kind, offset, size
        self.path, self.detail = path, detail
        # Only the first bytes of a buffer are ever shown: a long one is not kept whole.
        if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > _MAX_VALUE_BYTES:
            value = bytes(value[: _MAX_VALUE_BYTES + 1])
        self.value = value

    @property
    def end(self) -> int:
        return self.offset + self.size

    def __repr__(self) -> str:
        return (f"Element({self.kind!r}, {self.offset}, {self.size}, {self.path!r}, "
                f"{self.value!r}, {self.detail!r})")

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Element) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

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


class SectionInfo(SectionRecord):
    """A section as decoded, with its fields' values (``fields``: path -> full value)."""

    def __init__(self, kind: str, section_id: int, idstr: str, instance_id: int,
                 version_id: int, offset: int, end: int = 0) -> None:
        super().__init__(kind, section_id, idstr, instance_id, version_id, offset, end)
        self.fields: dict[str, Any] = {}
        self.key: str | None = None  # the writer's state key (a legacy id: the alias)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "section_id": self.section_id, "idstr": self.idstr,
                "instance_id": self.instance_id, "version_id": self.version_id,
                "offset": self.offset, "size": self.end - self.offset,
                "fields": len(self.fields)}


class Analysis:
    """Everything one decode found; ``error`` is set when it stopped early."""

    def __init__(self, input: str) -> None:
        self.input = input
        self.format = "unknown"  # modelled | qemu
        self.file_version: int | None = None
        self.writer: dict[str, Any] | None = None
        self.qemu: dict[str, Any] | None = None
        self._elements: list[Element] = []
        self._pending: tuple[Callable[[], list[Element]], list[Element]] | None = None
        self.sections: list[SectionInfo] = []
        self.ram: dict[str, Any] | None = None
        self.eof_offset: int | None = None
        self.trailing_bytes = 0
        self.bytes_read = 0
        self.error: dict[str, Any] | None = None
        self.divergence: dict[str, Any] | None = None
        self.notes: list[str] = []
        # What was decoded but not listed (the caps above), by kind.
        self.omitted_elements: dict[str, int] = {}
        self.omitted_sections: dict[str, int] = {}
        self._parts = 0

    def __repr__(self) -> str:
        return (f"Analysis({self.input!r}, format={self.format!r}, "
                f"complete={self.complete}, elements={len(self.elements)})")

    @property
    def elements(self) -> list[Element]:
        """What was decoded, in stream order (at most :data:`ELEMENTS_KEPT`)."""
        if self._pending is not None:
            build, more = self._pending
            self._pending = None
            self._elements = build()
            self._elements.extend(more)
        return self._elements

    @elements.setter
    def elements(self, value: list[Element]) -> None:
        self._pending = None
        self._elements = value

    def defer_elements(self, build: Callable[[], list[Element]], count: int,
                       more: Iterable[Element] = ()) -> None:
        """The elements are ``build()`` (``count`` of them) and then ``more``, made when
        first asked for: a matrix cell reads a decode's marks, never its elements. What
        ``more`` has past :data:`ELEMENTS_KEPT` is counted now, as :meth:`add` counts."""
        kept = []
        for element in more:
            if count < ELEMENTS_KEPT:
                kept.append(element)
                count += 1
            else:
                self._omit(element)
        self._pending = (build, kept)

    def add(self, element: Element) -> None:
        """List ``element`` while fewer than :data:`ELEMENTS_KEPT` are listed, else count
        it: memory does not grow with the stream."""
        elements = self.elements
        if len(elements) < ELEMENTS_KEPT:
            elements.append(element)
        else:
            self._omit(element)

    def _omit(self, element: Element) -> None:
        self.omitted_elements[element.kind] = self.omitted_elements.get(element.kind, 0) + 1

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
                key = s.key or section_key(s.idstr, s.instance_id)
                out.setdefault(key, {}).update(s.fields)
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
    if isinstance(value, int) and not isinstance(value, bool):
        text = f"{value} (0x{value & ((1 << 64) - 1):x})" if value >= 0 else str(value)
    else:
        if isinstance(value, (list, tuple)) and len(value) > limit >= 3:
            # Each element shows as one character or more, and a separator follows it:
            # the first ``limit`` elements already give the text up to the cut.
            value = value[:limit]
        v = json_value(value)
        text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= limit else text[: limit - 3] + "..."
