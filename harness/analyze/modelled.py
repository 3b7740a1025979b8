"""Modelled streams (QEMU 0.13 to 1.0, or the "new" series), decoded with a modelled
release's own descriptions: loaded through the emulator's engine with a tracer, RAM
summarised."""

from __future__ import annotations

import functools
import pickle
import struct
from collections.abc import Iterable, Iterator
from typing import Any

from ..emulator.errors import ConfigError, LoadError
from ..emulator.machine import NICS, VGAS, Machine, state_key
from ..emulator.releases import RELEASES, Release
from ..emulator.savevm import HeaderPolicy, load_stream
from ..emulator.stream import StreamReader
from ..emulator.vmstate import PeekPolicy, TraceMark, Tracer
from .elements import ELEMENTS_KEPT, Analysis, Element, SectionInfo, error_dict
from .ram import PAGE_SIZE, RamSummary
from .source import Input

__all__ = ["MarkLog", "DeviceOptions", "candidates", "decode_modelled", "meaning_peek", "release_named",
           "summary_handlers"]


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


def machine_for(release: Release, file_version: int | None, machine: str | None) -> str:
    if machine:
        return machine
    for m in release.machines:
        if file_version is None or m.stream_format == file_version:
            return m.name
    return release.machines[0].name


class DeviceOptions:
    """The -net/-vga options a decode allows, as the machines they build: ``machines``
    maps each (nic, vga) pair to the (idstr, instance id) of its sections in sending
    order; pairs in the order tried (the release's defaults first)."""

    def __init__(self, machines: dict[tuple[str, str], list[tuple[str, int]]]) -> None:
        self.machines = machines

    def found(self, loaded: set[tuple[str, int]]) -> tuple[tuple[str, str], list[str]]:
        """The options whose machine has every section the stream filled (of those, the
        first with the fewest sections unsent), and the sections it never sent."""
        fits = [options for options, keys in self.machines.items() if loaded <= set(keys)]
        options = min(fits, key=lambda o: len(self.machines[o]) - len(loaded)) if fits \
            else next(iter(self.machines))  # no machine has them all: the load failed
        return options, [f"{idstr}/{instance}" for idstr, instance in self.machines[options]
                         if (idstr, instance) not in loaded]


def summary_handlers(release: Release, machine: str, nic: str | None = None,
                     vga: str | None = None
                     ) -> tuple[list[Any], HeaderPolicy, RamSummary, DeviceOptions]:
    """The writer's handlers, its RAM summarised (never loaded), and the device options.

    ``nic``/``vga`` None: the stream says which it has. The handlers are those of every
    machine the options build (one handler per section: -vga none moves the NIC to slot
    2), the RAM summary of the first; the options whose machine holds exactly the stream's
    sections are the writer's. Only the first option's machine is built here; a section
    only another option's machine has is built when the stream reaches it.
    """
    nics = [nic] if nic is not None else [release.default_nic] + [
        o for o in NICS if o != release.default_nic]
    vgas = [vga] if vga is not None else list(VGAS)
    handlers: dict[tuple[str, int], Any] = {}
    machines: dict[tuple[str, str], list[tuple[str, int]]] = {}
    first = Machine(release, machine, PAGE_SIZE * 4, nic=nics[0], vga=vgas[0])
    ram = RamSummary(first.ram.handler.version_id)
    header = first.header_policy()
    for v in vgas:
        for n in nics:
            built = (n, v) == (nics[0], vgas[0])
            sections = _option_sections(release.name, machine, n, v)
            machines[(n, v)] = [(idstr, instance) for idstr, instance, _, _ in sections]
            for h in (first.handlers() if built else sections):
                key = (h[0], h[1]) if not built else (h.idstr, h.instance_id)
                if key not in handlers:
                    handlers[key] = (ram if key[0] == "ram" else h) if built else \
                        _OptionHandler(release, machine, n, v, *h)
    return list(handlers.values()), header, ram, DeviceOptions(machines)


def _option_sections(release: str, machine: str, nic: str, vga: str
                     ) -> tuple[tuple[str, int, int, bool], ...]:
    """(idstr, instance id, version, live) of each section of a machine with these
    options, in sending order."""
    return _option_facts(release, machine, nic, vga)[0]


def option_blocks(release: str, machine: str, nic: str, vga: str
                  ) -> frozenset[tuple[str, int]]:
    """The RAM blocks (name, length) of a machine with these options, pc.ram apart (its
    length is the guest's RAM size)."""
    return _option_facts(release, machine, nic, vga)[1]


@functools.lru_cache(maxsize=256)
def _option_facts(release: str, machine: str, nic: str, vga: str) -> tuple[Any, Any]:
    m = Machine(release, machine, PAGE_SIZE * 4, nic=nic, vga=vga)
    return (tuple((h.idstr, h.instance_id, h.version_id, h.live) for h in m.handlers()),
            frozenset((b.idstr, len(b)) for b in m.ram if b.idstr != "pc.ram"))


class _OptionHandler:
    """A section of a machine with other options than the first: its header facts at
    once, the handler itself (and its machine) when the section is loaded or asked
    about further."""

    def __init__(self, release: Release, machine: str, nic: str, vga: str, idstr: str,
                 instance_id: int, version_id: int, live: bool) -> None:
        self._options = (release, machine, nic, vga)
        self.idstr, self.instance_id = idstr, instance_id
        self.version_id, self.live = version_id, live
        self._inner: Any = None

    def _handler(self) -> Any:
        if self._inner is None:
            release, machine, nic, vga = self._options
            m = Machine(release, machine, PAGE_SIZE * 4, nic=nic, vga=vga)
            self._inner = next(h for h in m.handlers()
                               if (h.idstr, h.instance_id) == (self.idstr, self.instance_id))
        return self._inner

    def load(self, r: StreamReader, version: int, rules: Any) -> None:
        self._handler().load(r, version, rules)

    def __getattr__(self, name: str) -> Any:  # alias_id, compat, desc, device ...
        if name.startswith("__") or name in ("_inner", "_options"):
            raise AttributeError(name)
        return getattr(self._handler(), name)


def marks_to_elements(marks: Iterable[TraceMark]) -> list[Element]:
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
    """How the analyzer reads subsections to recover what the *writer* meant (not how the
    writer's own loader reads them: that is ``release.peek``, shown as the writer's peek).

    The save side never peeks: a subsection after a description is always one of that
    description's own. The writer's own loader may misread its own stream (always-peek:
    sibling subsections in both formats, the cpu's ymmh_regs in format 3; peek-if-defined:
    a 0x05 of parent data after a struct that defines subsections), so the analyzer reads
    with 1.0's prefix match over the writer's descriptions: a 0x05 is a subsection only
    when the name that follows belongs to that description. In format 4 the sentinels are
    still checked.
    """
    return PeekPolicy.PREFIX_MATCH


class MarkLog:
    """The trace marks of one decode, in stream order: the first ``keep`` in memory
    (``marks``), the rest counted by kind (``omitted``) and, with ``spill``, written to a
    temporary file, so that a replay can walk the writer's whole reading while memory
    stays bounded. Buffer values are cut to what is shown (:class:`Element`)."""

    def __init__(self, keep: int | None = None, *, spill: bool = False) -> None:
        self.keep = ELEMENTS_KEPT if keep is None else keep
        self.marks: list[TraceMark] = []
        self.count = 0
        self.omitted: dict[str, int] = {}
        self._spill = spill
        self._file: Any = None
        self._batch: list[tuple[Any, ...]] = []

    def append(self, m: TraceMark) -> None:
        self.count += 1
        v = m.value
        if isinstance(v, (bytes, bytearray, memoryview)) and len(v) > _VALUE_KEPT:
            m = TraceMark(m.kind, m.offset, m.end, m.path, bytes(v[:_VALUE_KEPT]))
        if len(self.marks) < self.keep:
            self.marks.append(m)
            return
        self.omitted[m.kind] = self.omitted.get(m.kind, 0) + 1
        if self._spill:
            self._batch.append((m.kind, m.offset, m.end, m.path, m.value))
            if len(self._batch) >= 4096:
                self._flush()

    @property
    def spilled(self) -> bool:
        """Every mark can be read back (kept, or written to the temporary file)."""
        return self._spill

    def _flush(self) -> None:
        if self._file is None:
            import tempfile

            self._file = tempfile.TemporaryFile(prefix="migmatrix-marks-")
        pickle.dump(self._batch, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._batch = []

    def __iter__(self) -> Iterator[TraceMark]:
        """Every mark (those past ``keep`` only when spilled)."""
        yield from self.marks
        if not self._spill:
            return
        if self._file is not None:
            if self._batch:
                self._flush()
            self._file.seek(0)
            while True:
                try:
                    batch = pickle.load(self._file)
                except EOFError:
                    break
                for item in batch:
                    yield TraceMark(*item)
            self._file.seek(0, 2)
        else:
            for item in self._batch:
                yield TraceMark(*item)


_VALUE_KEPT = 33  # bytes of a buffer value a mark keeps (one more than shown: "...")


class _WriterTrace(Tracer):
    """The writer's tracer: marks go to a :class:`MarkLog`, and the fields of the section
    being loaded are collected as they are read (whatever the log keeps)."""

    def __init__(self, log: MarkLog, until: int | None = None) -> None:
        super().__init__()
        self.log = log
        self.last: TraceMark | None = None
        self.section: SectionInfo | None = None
        self.until = until
        self._prefix_of: SectionInfo | None = None
        self._prefix = ""

    def mark(self, kind: str, offset: int, end: int, component: str = "",
             value: Any = None) -> None:
        if kind == "section" and self.until is not None and offset >= self.until:
            raise _PastEnd(offset)
        path = self.path(component)
        m = TraceMark(kind, offset, end, path, value)
        self.last = m
        section = self.section
        if kind == "field" and section is not None and value is not None:
            if section is not self._prefix_of:  # the section's fields are keyed after it
                self._prefix_of, self._prefix = section, section.idstr + "/"
            if path.startswith(self._prefix):
                section.fields[path[len(self._prefix):]] = value
        self.log.append(m)


class _PastEnd(Exception):
    """The decode reached a section that starts at or after its ``until``."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def decode_modelled(inp: Input, release: Release, machine: str | None = None,
                    *, nic: str | None = None, vga: str | None = None,
                    analysis: Analysis | None = None,
                    spill: bool = False, until: int | None = None) -> Analysis:
    """Decode with ``release``'s descriptions (the writer's reading of the bytes), with
    the NIC ``nic`` and display ``vga`` (None: those whose sections the stream holds).
    ``spill``: keep every trace mark (on disk past the cap) for a replay. ``until``: stop
    at the first section, or section payload, that starts at or after that offset (every
    element before it is read as the whole decode reads it; the analysis is not
    complete, ``bytes_read`` is where it stopped)."""
    a = analysis or Analysis(inp.name)
    a.format = "modelled"
    r = inp.reader()
    head = r.peek(8)
    file_version = struct.unpack(">I", head[4:8])[0] if len(head) == 8 else None
    machine = machine_for(release, file_version, machine)
    handlers, header, ram, options = summary_handlers(release, machine, nic, vga)
    peek = meaning_peek(release, file_version)
    a.writer = {"release": release.name, "machine": machine,
                "endpoint": f"{release.name}/{machine}", "nic": nic, "vga": vga,
                "peek": release.peek.value, "read_with": peek.value}
    log = MarkLog(spill=spill)
    tracer = _WriterTrace(log, until)
    loaded: set[tuple[str, int]] = set()

    def on_load(handler: Any, offset: int) -> None:
        sec_mark = tracer.last  # the "section" mark load_stream just made
        assert sec_mark is not None
        close_section(sec_mark.offset)
        kind = str(sec_mark.value).partition(" ")[0]
        loaded.add((handler.idstr, handler.instance_id))
        tracer.section = SectionInfo(kind, -1, handler.idstr, handler.instance_id, -1,
                                     sec_mark.offset)
        if handler.idstr != "ram":
            tracer.section.key = state_key(handler)
        if until is not None and offset >= until:
            raise _PastEnd(offset)  # nothing of the payload is wanted

    def close_section(end: int) -> None:
        info = tracer.section
        if info is None:
            return
        tracer.section = None
        info.end = end
        a.add_section(info)

    probes = [_Probe(h, on_load) for h in handlers]
    try:
        report = load_stream(r, probes, header, peek, tracer=tracer)
        close_section(report.bytes_consumed - 1)
        a.eof_offset = report.bytes_consumed - 1
        a.trailing_bytes = report.bytes_unread
        a.bytes_read = report.bytes_consumed + report.bytes_unread
        (a.writer["nic"], a.writer["vga"]), missing = options.found(loaded)
        if missing:
            a.notes.append("never sent: " + ", ".join(missing))
    except _PastEnd as e:
        close_section(e.offset)
        a.bytes_read = e.offset
        a.notes.append(f"decoded up to offset {e.offset} only (asked to stop at {until})")
    except LoadError as e:
        close_section(e.offset or r.offset)
        a.error = error_dict(e)
        a.bytes_read = r.offset
    except Exception as e:  # a hook failed in a way that is not a LoadError
        close_section(r.offset)
        a.error = {"reason": "crashed", "errno": None,
                   "message": f"{type(e).__name__}: {e}", "offset": r.offset,
                   "section": None, "field": None}
        a.bytes_read = r.offset
    a.file_version = file_version
    a.omitted_elements.update(log.omitted)
    _fill_section_headers(a.sections, inp)
    a.ram = ram.summary()
    more = []
    if a.trailing_bytes:
        more.append(Element("trailing", a.eof_offset + 1, a.trailing_bytes, "", None,  # type: ignore[operator]
                            "bytes after EOF, never read by this loader"))
    if a.error:
        more.append(Element("error", a.error["offset"] or 0, 0, a.error.get("field") or "",
                            None, a.error["message"]))
    marks, sections = log.marks, list(a.sections)
    a.defer_elements(lambda: _label_sections(marks_to_elements(marks), sections),
                     len(marks), more)
    a.tracer_marks = log.marks  # type: ignore[attr-defined]
    a.mark_log = log  # type: ignore[attr-defined]
    return a


def _fill_section_headers(sections: list[SectionInfo], inp: Input) -> None:
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


def _label_sections(elements: list[Element], sections: list[SectionInfo]) -> list[Element]:
    """Each section element named and described by its header."""
    by_offset = {s.offset: s for s in sections}
    for e in elements:
        if e.kind == "section" and e.offset in by_offset:
            s = by_offset[e.offset]
            e.path = s.idstr
            e.detail = (f"{s.kind} {s.idstr} id {s.section_id}"
                        + (f" instance {s.instance_id} version {s.version_id}"
                           if s.kind in ("START", "FULL") else ""))
    return elements


def candidates(file_version: int | None, *, every_machine: bool = False
               ) -> list[tuple[Release, str]]:
    """Releases accepting ``file_version``, newest first, with a matching machine (the
    first; ``every_machine``: each of them)."""
    out = []
    for release in reversed(list(RELEASES.values())):
        if file_version is not None and file_version not in release.accepted_versions:
            continue
        machines = [m.name for m in release.machines if m.stream_format == file_version]
        if not machines:
            if release.format_per_machine:
                continue
            machines = [release.machines[0].name]
        out.extend((release, m) for m in (machines if every_machine else machines[:1]))
    return out

def release_named(name: str) -> Release:
    try:
        return RELEASES[name]
    except KeyError:
        raise ConfigError(f"unknown release {name!r} (known: {', '.join(RELEASES)})") from None
