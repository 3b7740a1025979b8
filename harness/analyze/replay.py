"""Replaying a stream as a destination release reads it, aligned with the writer's
reading: the first element where they part and the destination's outcome."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from ..emulator.errors import LoadCrash, LoadError
from ..emulator.machine import DEFAULT_RAM_SIZE, Machine
from ..emulator.ram import PAGE_SIZE, pc_layout
from ..emulator.savevm import load_stream
from ..emulator.stream import StreamReader
from ..emulator.vmstate import TraceMark, Tracer
from .elements import Analysis, json_value, short
from .modelled import release_named
from .source import Input

__all__ = ["describe_mark", "destination_ram_size", "replay_as_destination"]


def describe_mark(m: TraceMark | None) -> str:
    if m is None:
        return ""
    if m.kind == "field":
        return f"field {m.path} = {short(m.value)}"
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


MAX_DESTINATION_RAM = 16 << 30  # a larger declared pc.ram is not given to the replay


class _Aligner(Tracer):
    """The destination's tracer: each element it reads is compared, as it is read, with
    the writer's next one, so neither reading is held whole. Kept: the ``before`` elements
    before the first difference and ``after`` from it on, of both sides, and up to 20
    elements read at the same bytes under another name."""

    def __init__(self, writer: Iterator[TraceMark], before: int = 6, after: int = 10,
                 *, writer_kept: int | None = None) -> None:
        super().__init__()
        self.writer = writer
        # The writer's reading was cut after this many elements (analysed without a
        # replay in view): past them there is nothing to compare, not a divergence.
        self.writer_kept = writer_kept
        self.cut = False
        self.after = after
        self.index = 0  # destination elements read
        self.first: int | None = None
        self.w_recent: deque[TraceMark] = deque(maxlen=before)
        self.d_recent: deque[TraceMark] = deque(maxlen=before)
        self.w_window: list[TraceMark] = []
        self.d_window: list[TraceMark] = []
        self.w_at_first: TraceMark | None = None
        self.d_at_first: TraceMark | None = None
        self.renamed: list[dict[str, Any]] = []

    def mark(self, kind: str, offset: int, end: int, component: str = "",
             value: Any = None) -> None:
        if kind == "struct":
            return
        dm = TraceMark(kind, offset, end, self.path(component), value)
        if self.cut:
            return
        if self.first is None:
            wm = next(self.writer, None)
            if wm is None and self.writer_kept is not None:
                self.cut = True
                return
            if wm is None or (wm.kind, wm.offset, wm.end) != (dm.kind, dm.offset, dm.end):
                self._diverged(wm, dm)
            else:
                if wm.path != dm.path and len(self.renamed) < 20:
                    self.renamed.append({"offset": wm.offset, "writer": wm.path,
                                         "destination": dm.path})
                self.w_recent.append(wm)
                self.d_recent.append(dm)
        elif len(self.d_window) - len(self.d_recent) < self.after:
            self.d_window.append(dm)
        self.index += 1

    def _diverged(self, wm: TraceMark | None, dm: TraceMark | None) -> None:
        self.first = self.index
        self.w_at_first, self.d_at_first = wm, dm
        self.w_window = list(self.w_recent)
        if wm is not None:
            self.w_window.append(wm)
            for _, more in zip(range(self.after - 1), self.writer, strict=False):
                self.w_window.append(more)
        self.d_window = list(self.d_recent) + ([dm] if dm is not None else [])

    def finish(self) -> None:
        """After the destination stopped: the writer read more than it did?"""
        if self.first is None and not self.cut:
            wm = next(self.writer, None)
            if wm is not None:
                self._diverged(wm, None)


class _MarkedRam:
    """The destination's own RAM section handler (its checks, its refusals), marking each
    chunk it loads as the writer's summary marks it, so that both readings align."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.idstr, self.instance_id = inner.idstr, inner.instance_id
        self.version_id, self.live = inner.version_id, inner.live

    def load(self, r: StreamReader, version: int, rules: Any) -> None:
        start = r.offset
        self.inner.load(r, version, rules)
        if rules.tracer is not None:
            rules.tracer.mark("ram", start, r.offset, "", "loaded")


def destination_ram_size(writer: Analysis) -> int:
    """The RAM size to give the destination: its ``pc.ram`` as the stream declares it
    (a matrix cell's destination has the source's RAM size), else the default."""
    ram = writer.ram or {}
    for b in ram.get("blocks", []):
        if b.get("name") == "pc.ram":
            size = int(b.get("length") or -1)
            break
    else:
        total = ram.get("total")
        size = total - sum(n for _, n in pc_layout(PAGE_SIZE)[1:]) if isinstance(
            total, int) else -1
    if 0 < size <= MAX_DESTINATION_RAM and size % PAGE_SIZE == 0:
        return size
    return DEFAULT_RAM_SIZE


def replay_as_destination(inp: Input, writer: Analysis, endpoint: str,
                          nic: str | None = None, vga: str | None = None) -> dict[str, Any]:
    """Load the bytes as ``endpoint`` ("R/M") would, and align its reading with the
    writer's: the first element where they part, and the destination's outcome.

    The destination is the real one: a machine of that release with the RAM size the
    stream declares, the NIC ``nic`` and the display ``vga`` (default: the writer's), loading
    through its own RAM section (so a page beyond a block is refused here as ``migmatrix load`` refuses
    it, and a page QEMU would write through a NULL pointer ends it as ``crashed``).
    Memory: the destination's RAM, and windows of both readings; the writer's marks are
    read back from its log.
    """
    rel_name, _, mach = endpoint.partition("/")
    release = release_named(rel_name)
    mach = mach or release.machines[0].name
    release.machine(mach)
    nic = nic or (writer.writer or {}).get("nic") or release.default_nic
    vga = vga or (writer.writer or {}).get("vga") or "cirrus"
    dest = Machine(release, mach, destination_ram_size(writer), nic=nic, vga=vga)
    handlers = [_MarkedRam(h) if h.idstr == "ram" else h for h in dest.handlers()]
    log = getattr(writer, "mark_log", None)
    marks: Iterable[TraceMark] = log if log is not None else getattr(writer, "tracer_marks",
                                                                       [])
    cut = log is not None and log.omitted and not log.spilled
    tracer = _Aligner((m for m in marks if m.kind != "struct"),
                      writer_kept=len(log.marks) if cut else None)
    r = inp.reader()
    outcome: dict[str, Any]
    try:
        report = load_stream(r, handlers, dest.header_policy(), release.peek, tracer=tracer)
        if report.half_loaded:
            outcome = {"status": "half-loaded", "eof_offset": report.bytes_consumed - 1,
                       "bytes_unread": report.bytes_unread, "not_loaded": report.not_loaded,
                       "message": f"an EOF byte at offset {report.bytes_consumed - 1} ended "
                                  f"the load with {report.bytes_unread} byte(s) unread"}
        else:
            outcome = {"status": "loaded", "message": "the destination reached EOF"}
    except LoadError as e:
        outcome = {"status": "rejected", **e.to_dict()}
    except LoadCrash as e:  # where the modelled QEMU dies
        outcome = {"status": "crashed", "message": str(e), "offset": e.offset,
                   "section": e.section}
    except Exception as e:  # not a migration error: the destination would crash
        outcome = {"status": "crashed", "message": f"{type(e).__name__}: {e}",
                   "offset": r.offset}
    tracer.finish()
    result: dict[str, Any] = {"destination": endpoint, "nic": nic, "vga": vga,
                              "outcome": outcome,
                              "renamed": tracer.renamed}
    if tracer.cut:
        result["note"] = (f"compared up to the writer's first {tracer.writer_kept} elements "
                          "(the rest were counted, not kept: analyze with as_destination to "
                          "compare them all)")
    if tracer.first is None:
        result["diverges"] = False
        result["summary"] = ("the destination reads every element as the writer meant it"
                             if outcome["status"] == "loaded" else
                             "the readings agree up to where the destination stopped")
        return result
    wm, dm = tracer.w_at_first, tracer.d_at_first
    offset = min(m.offset for m in (wm, dm) if m is not None)
    result.update({
        "diverges": True,
        "offset": offset,
        "writer": _mark_dict(wm),
        "destination_reading": _mark_dict(dm) if dm is not None else {
            "kind": outcome["status"], "offset": outcome.get("offset"),
            "text": outcome.get("message", "")},
        "summary": f"at offset {offset} (0x{offset:x}) the writer meant "
                   f"{describe_mark(wm) or 'nothing more'}; the destination reads "
                   f"{describe_mark(dm) if dm else outcome.get('message', outcome['status'])}",
        "side_by_side": _side_by_side(inp, tracer.w_window, tracer.d_window, wm, dm),
    })
    return result


def _mark_dict(m: TraceMark | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"kind": m.kind, "offset": m.offset, "size": m.end - m.offset, "path": m.path,
            "value": json_value(m.value), "text": describe_mark(m)}


def _side_by_side(inp: Input, w_win: list[TraceMark], d_win: list[TraceMark],
                  w_first: TraceMark | None, d_first: TraceMark | None
                  ) -> list[dict[str, Any]]:
    """Rows keyed by offset around the divergence: what each side reads starting there."""
    offsets = sorted({m.offset for m in w_win} | {m.offset for m in d_win})
    w_at = {m.offset: m for m in w_win}
    d_at = {m.offset: m for m in d_win}
    pivot = min([m.offset for m in (w_first, d_first) if m is not None] or [0])
    rows = []
    for off in offsets:
        wm, dm = w_at.get(off), d_at.get(off)
        size = max((m.end - m.offset for m in (wm, dm) if m is not None), default=0)
        raw = inp.read_at(off, min(size, 12))
        rows.append({"offset": off, "bytes": raw.hex() + ("..." if size > 12 else ""),
                     "writer": describe_mark(wm), "destination": describe_mark(dm),
                     "diverged": off >= pivot})
    return rows
