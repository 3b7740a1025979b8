"""Section framing: the file header, START/PART/END/FULL sections, EOF.

The source writes the header, one START per live handler (RAM), any number of PART
passes, one END per live handler, one FULL per device, then EOF. The destination matches
START/FULL records to its handlers by idstr + instance id, and PART/END records to an
earlier START by section id. No section carries a length: each payload must be parsed
byte-exactly, and a ``0x00`` at a type-byte position ends the load *successfully*,
whatever has not been loaded yet. :class:`LoadReport` makes that half-loaded case visible.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import LoadCrash, LoadError, Reason
from .sections import FILE_MAGIC, SectionRecord
from .stream import StreamReader, StreamWriter
from .vmstate import Description, PeekPolicy, Tracer, WireRules, load_state, save_state

__all__ = [
    "FILE_MAGIC",
    "HeaderPolicy",
    "LiveHandler",
    "LoadReport",
    "SECTIONS_KEPT",
    "SectionHandler",
    "SectionRecord",
    "SectionType",
    "Saver",
    "DeviceSection",
    "find_handler",
    "load_stream",
    "wire_rules_for",
]

UNREAD_LIMIT = 1 << 30  # bytes after the EOF byte that a load counts (and consumes) at most
SENTINEL_FORMATS = frozenset({4})  # file versions whose embedded structs end with 0x06


class SectionType(enum.IntEnum):
    EOF = 0x00
    START = 0x01
    PART = 0x02
    END = 0x03
    FULL = 0x04


class LiveStage(enum.IntEnum):
    START = 1
    PART = 2
    END = 3


def wire_rules_for(
    file_version: int, peek: PeekPolicy, tracer: Tracer | None = None
) -> WireRules:
    """The rules a stream of ``file_version`` is written or read with."""
    return WireRules(peek=peek, struct_sentinel=file_version in SENTINEL_FORMATS, tracer=tracer)


class SectionHandler(Protocol):
    idstr: str
    instance_id: int
    version_id: int
    live: bool
    alias_id: int | None
    compat: tuple[str, int] | None

    def load(self, r: StreamReader, version: int, rules: WireRules) -> None: ...


class LiveHandler(SectionHandler, Protocol):
    def save_stage(self, w: StreamWriter, stage: LiveStage) -> None: ...


@dataclass(eq=False)
class DeviceSection:
    """A description bound to a device object: one FULL section.

    ``instance_id`` is the id the section is written with. ``alias_id`` is a legacy id a
    destination also accepts (qdev_set_legacy_instance_id: never written). ``compat`` is
    the (bare name, instance) a qdev device on a bus with device paths also answers to:
    the name it had before its idstr gained the path (``"ide"`` for
    ``"0000:00:01.1/ide"``).
    """

    idstr: str
    instance_id: int
    desc: Description
    obj: Any
    live: bool = False
    alias_id: int | None = None
    compat: tuple[str, int] | None = None

    @property
    def version_id(self) -> int:
        return self.desc.version_id

    def save(self, w: StreamWriter, rules: WireRules) -> None:
        save_state(w, self.desc, self.obj, rules)

    def load(self, r: StreamReader, version: int, rules: WireRules) -> None:
        load_state(r, self.desc, self.obj, version, rules)


@dataclass(frozen=True)
class HeaderPolicy:
    """Which file versions a destination accepts (a release's row, plus its machine)."""

    accepted: frozenset[int]
    machine_format: int
    must_match_machine: bool = False  # the "new" release: stream version == machine format
    obsolete: frozenset[int] = frozenset({2})

    def check(self, version: int, offset: int) -> None:
        if version in self.obsolete:
            raise LoadError(
                Reason.OBSOLETE_VERSION, f"obsolete stream version {version}", offset=offset
            )
        if version not in self.accepted:
            raise LoadError(
                Reason.UNSUPPORTED_VERSION, f"unsupported stream version {version}",
                offset=offset,
            )
        if self.must_match_machine and version != self.machine_format:
            raise LoadError(
                Reason.FORMAT_MISMATCH,
                f"mismatching savevm format v{version} (machine uses v{self.machine_format})",
                offset=offset,
            )


def _write_section_header(
    w: StreamWriter, kind: SectionType, section_id: int, handler: SectionHandler | None
) -> None:
    w.u8(kind)
    w.u32(section_id)
    if handler is not None:
        name = handler.idstr.encode("latin-1")
        w.u8(len(name))
        w.raw(name)
        w.u32(handler.instance_id)
        w.u32(handler.version_id)


class Saver:
    """Writes one machine's stream; the caller runs the guest between live passes.

    Section ids are the handlers' positions in registration order, as in QEMU.
    """

    def __init__(
        self, w: StreamWriter, handlers: Iterable[Any], file_version: int, peek: PeekPolicy
    ) -> None:
        self.w = w
        self.handlers = list(handlers)
        self.file_version = file_version
        self.rules = wire_rules_for(file_version, peek)
        self._live = [(i, h) for i, h in enumerate(self.handlers) if h.live]

    def begin(self) -> None:
        """Header, then START of every live handler (RAM's first pass)."""
        self.w.u32(FILE_MAGIC)
        self.w.u32(self.file_version)
        for sid, h in self._live:
            _write_section_header(self.w, SectionType.START, sid, h)
            h.save_stage(self.w, LiveStage.START)

    def iterate(self) -> None:
        """One PART pass of every live handler."""
        for sid, h in self._live:
            _write_section_header(self.w, SectionType.PART, sid, None)
            h.save_stage(self.w, LiveStage.PART)

    def complete(self) -> None:
        """END of every live handler (guest stopped), FULL of every device, EOF."""
        for sid, h in self._live:
            _write_section_header(self.w, SectionType.END, sid, None)
            h.save_stage(self.w, LiveStage.END)
        for sid, h in enumerate(self.handlers):
            if h.live:
                continue
            _write_section_header(self.w, SectionType.FULL, sid, h)
            try:
                h.save(self.w, self.rules)
            except Exception as e:
                if hasattr(e, "set_section"):
                    e.set_section(h.idstr)
                raise
        self.w.u8(SectionType.EOF)
        self.w.flush()


SECTIONS_KEPT = 256  # section records a LoadReport lists one by one; the rest are counted


@dataclass
class LoadReport:
    """What a load did. ``half_loaded`` is true when an EOF byte ended it early: bytes
    were left after it. ``not_loaded`` names the destination's sections the stream did not
    fill; they keep their reset state (a section an older release does not have, or the
    sections an early EOF cut off).

    Memory does not grow with the stream: ``sections`` lists the first
    :data:`SECTIONS_KEPT` records read, ``section_count`` counts all of them and
    ``section_kinds`` counts them by kind (a hostile stream of millions of empty RAM
    PART records costs counters, not a record each).
    """

    file_version: int
    sections: list[SectionRecord] = field(default_factory=list)
    section_count: int = 0
    section_kinds: dict[str, int] = field(default_factory=dict)
    bytes_consumed: int = 0
    bytes_unread: int = 0
    not_loaded: list[str] = field(default_factory=list)

    @property
    def half_loaded(self) -> bool:
        return self.bytes_unread > 0

    def add(self, record: SectionRecord) -> None:
        """Count ``record``; keep it while fewer than :data:`SECTIONS_KEPT` are kept."""
        self.section_count += 1
        self.section_kinds[record.kind] = self.section_kinds.get(record.kind, 0) + 1
        if len(self.sections) < SECTIONS_KEPT:
            self.sections.append(record)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file_version": self.file_version,
            "sections": [s.__dict__ for s in self.sections],
            "section_count": self.section_count,
            "section_kinds": dict(self.section_kinds),
            "bytes_consumed": self.bytes_consumed,
            "bytes_unread": self.bytes_unread,
            "not_loaded": list(self.not_loaded),
            "half_loaded": self.half_loaded,
        }


def find_handler(handlers: Iterable[Any], idstr: str, instance_id: int) -> Any | None:
    """The destination entry a START/FULL header names (QEMU's find_se): the first, in
    registration order, whose idstr is ``idstr`` and whose instance or alias id is
    ``instance_id``; or whose idstr contains ``idstr`` and whose ``compat`` name is it,
    with the compat instance or the alias id."""
    return _find(handlers, idstr, instance_id)


def _by_name(handlers: list[Any]) -> dict[str, list[Any]]:
    """The handlers a header naming each idstr may mean (:func:`find_handler`'s
    candidates: its own idstr, or its ``compat`` name), in registration order."""
    index: dict[str, list[Any]] = {}
    for h in handlers:
        index.setdefault(h.idstr, []).append(h)
        compat = getattr(h, "compat", None)
        if compat is not None and compat[0] != h.idstr:
            index.setdefault(compat[0], []).append(h)
    return index


def _find(handlers: Iterable[Any], idstr: str, instance_id: int) -> Any | None:
    for h in handlers:
        alias = getattr(h, "alias_id", None)
        if h.idstr == idstr and instance_id in (h.instance_id, alias):
            return h
        compat = getattr(h, "compat", None)
        if compat is not None and idstr in h.idstr and compat[0] == idstr and (
            instance_id in (compat[1], alias)
        ):
            return h
    return None


def load_stream(
    r: StreamReader,
    handlers: Iterable[Any],
    header: HeaderPolicy,
    peek: PeekPolicy,
    *,
    count_unread: bool = True,
    tracer: Tracer | None = None,
) -> LoadReport:
    """Load a whole stream into ``handlers`` (QEMU's qemu_loadvm_state).

    Raises :class:`LoadError` on refusal. The caller loads into fresh objects and keeps
    them only when this returns, so a refused stream leaves nothing half-applied.
    """
    handlers = list(handlers)
    by_name = _by_name(handlers)
    offset = r.offset
    magic = r.read_u32()
    if magic != FILE_MAGIC:
        raise LoadError(Reason.BAD_MAGIC, f"0x{magic:08x}", offset=offset)
    offset = r.offset
    version = r.read_u32()
    header.check(version, offset)
    rules = wire_rules_for(version, peek, tracer)
    if tracer is not None:
        tracer.mark("header", 0, r.offset, "", version)
    report = LoadReport(file_version=version)
    started: dict[int, tuple[Any, SectionRecord]] = {}
    seen: set[tuple[str, int]] = set()
    filled: set[int] = set()  # id() of every handler a section was loaded into

    while True:
        offset = r.offset
        kind = r.read_u8()
        if kind == SectionType.EOF:
            if tracer is not None:
                tracer.mark("eof", offset, r.offset)
            break
        if kind in (SectionType.START, SectionType.FULL):
            section_id = r.read_u32()
            idstr = r.read_bytes(r.read_u8()).decode("latin-1")
            instance_id = r.read_u32()
            version_id = r.read_u32()
            handler = _find(by_name.get(idstr, ()), idstr, instance_id)
            if (idstr, instance_id) in seen or section_id in started:
                # No writer sends a section twice or reuses an id; a stream that does is
                # hostile (it could make one handler load over and over).
                raise LoadError(
                    Reason.DUPLICATE_SECTION,
                    f"{idstr!r} {instance_id} (section id {section_id}) started before",
                    offset=offset, section=idstr,
                )
            if handler is None:
                raise LoadError(
                    Reason.UNKNOWN_SECTION,
                    f"unknown section or instance {idstr!r} {instance_id}",
                    offset=offset, section=idstr,
                )
            if version_id > handler.version_id:
                raise LoadError(
                    Reason.VERSION_TOO_NEW,
                    f"section version {version_id} > {handler.version_id}",
                    offset=offset, section=idstr,
                )
            record = SectionRecord(
                SectionType(kind).name, section_id, idstr, instance_id, version_id, offset
            )
            started[section_id] = (handler, record)
            seen.add((idstr, instance_id))
            filled.add(id(handler))
        elif kind in (SectionType.PART, SectionType.END):
            section_id = r.read_u32()
            if section_id not in started:
                raise LoadError(
                    Reason.UNKNOWN_SECTION_ID, f"unknown section id {section_id}", offset=offset
                )
            handler, first = started[section_id]
            record = SectionRecord(
                SectionType(kind).name, section_id, first.idstr, first.instance_id,
                first.version_id, offset,
            )
        else:
            raise LoadError(
                Reason.UNKNOWN_SECTION_TYPE, f"unknown section type 0x{kind:02x}", offset=offset
            )
        if tracer is not None:
            tracer.mark("section", offset, r.offset, "", f"{record.kind} {record.idstr}")
            tracer.enter(record.idstr)
        try:
            handler.load(r, record.version_id, rules)
        except (LoadError, LoadCrash) as e:
            e.set_section(record.idstr)
            raise
        finally:
            if tracer is not None:
                tracer.leave()
        record.end = r.offset
        report.add(record)

    report.bytes_consumed = r.offset
    if count_unread:
        report.bytes_unread = r.drain(UNREAD_LIMIT)
    report.not_loaded = [f"{h.idstr}/{h.instance_id}" for h in handlers if id(h) not in filled]
    return report
