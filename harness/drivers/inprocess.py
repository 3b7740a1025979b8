"""Both endpoints as objects in this process: the fastest driver and the reference.

The time limit is enforced with ``SIGALRM`` when the driver runs on the main thread of
a Unix process (pytest and ``migmatrix run`` do); elsewhere it is only measured.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..emulator.errors import EmulatorError, LoadCrash, LoadError, SaveCrash
from ..emulator.machine import Machine, compare_machines, jsonable, same_device_state
from ..emulator.vmstate import Tracer
from ..matrix import Cell, Endpoint
from ..scenarios import get_scenario, media_of, saved_scenario
from ..verdict import Outcome
from . import Driver, diff_entry

__all__ = ["InProcessDriver", "stream_window", "cell_cause", "one_sided_fields", "DIFF_LIMIT",
           "CellTimeout", "time_limit"]

DIFF_LIMIT = 50  # diff entries kept per cell; the total is kept too
ONE_SIDED_LIMIT = 20  # fields defined on one side only kept per cell
WINDOW = 48  # bytes kept on each side of the offset of interest


class CellTimeout(Exception):
    """Raised inside the limited block when its time is up."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CellTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def build_source(cell: Cell, *, host_time_ns: int | None = None) -> tuple[Machine, bytes]:
    """The source machine in the cell's scenario state, and the stream it writes
    (``host_time_ns``: the host clock its RTC runs on, default the model's fixed one).
    The machine may serve the next cell of the same source and scenario: only read it."""
    src = cell.source
    return saved_scenario(src.release, src.machine, src.ram_size, cell.scenario, cell.seed,
                          nic=src.nic, vga=src.vga, host_time_ns=host_time_ns)


def stream_window(cell: Cell, stream: bytes, offset: int, label: str) -> dict[str, Any]:
    """The bytes around ``offset`` with the writer's section and field boundaries marked.

    The marks come from decoding the stream as the *source* release wrote it, so they show
    what the bytes mean; the ``error`` mark shows where the destination stopped.
    """
    start = max(0, offset - WINDOW)
    end = min(len(stream), offset + WINDOW)
    found = _writer_marks(cell, stream, end)
    if found is None:
        tracer = _WindowTracer(end)
        try:
            src = cell.source
            Machine.load(src.release, src.machine, stream, ram_size=src.ram_size, nic=src.nic,
                         vga=src.vga,
                         media=media_of(cell.scenario, historic=src.historic), tracer=tracer)
        except (EmulatorError, _PastWindow):
            pass  # the marks gathered so far are still right
        found = tracer.marks
    marks = [
        {"offset": m.offset, "end": m.end, "label": _mark_label(m), "kind": _mark_kind(m.kind)}
        for m in found
        if m.end > start and m.offset < end and m.kind not in ("struct", "ram")
    ]
    marks.append({"offset": offset, "end": offset + 1, "label": label, "kind": "error"})
    return {"start": start, "hex": stream[start:end].hex(), "marks": marks}


def _writer_marks(cell: Cell, stream: bytes, end: int) -> list[Any] | None:
    """The marks of the writer's decode up to ``end`` at least: those of the whole
    decode (:func:`writer_analysis`) when the cell's cause or an earlier cell kept it, and
    it read a model source's whole stream, found the source's NIC and VGA, and kept every
    mark; else a decode of the same kind with the source's NIC and VGA that stops at the
    first section, or section payload, past ``end`` (a refusal in the header reads the
    header, not the whole stream). None where neither reads it (the caller decodes with the source's own
    machine). The decode reads a drive's state from the stream whatever drives its own
    machine has, so the source's media need not be given (the windows of the default and
    history matrices are the same either way)."""
    src = cell.source
    if src.kind != "emulator" or src.historic:
        return None
    from ..analyze import Input, decode_modelled, kept_writer_analysis
    from ..analyze.modelled import release_named

    try:
        writer = kept_writer_analysis(stream, src.release, src.machine)
        if writer is None:
            writer = decode_modelled(Input(stream), release_named(src.release), src.machine,
                                     nic=src.nic, vga=src.vga, until=end)
    except Exception:  # the window must never cost a cell its verdict
        return None
    found = writer.writer or {}
    if (found.get("nic"), found.get("vga")) != (src.nic, src.vga) or writer.omitted_elements \
            or writer.error is not None:
        return None
    return getattr(writer, "tracer_marks", None)


HEADER_BYTES = 8  # magic and file version: a refusal there read nothing it could misread


def cell_cause(cell: Cell, stream: bytes, diff_paths: frozenset[str] = frozenset(),
               *, stopped_at: int | None = None) -> dict[str, Any] | None:
    """Where the destination's reading of ``stream`` first parts from what the writer meant
    (``migmatrix analyze --as-destination``): the offset, one sentence, the two readings
    side by side, and the bytes around it. When both read every element alike, the cause
    is a field that both read at the same bytes under another name (a ``diff_paths``
    field): the writer's ``bmdma[0]/status`` read as ``migration_compat_status``.
    None when neither applies, when the destination refused the header (``stopped_at``
    within it), or for real QEMU endpoints (no model of their loader)."""
    if cell.source.kind != "emulator" or cell.destination.kind != "emulator":
        return None
    if stopped_at is not None and stopped_at < HEADER_BYTES:
        return None
    from ..analyze import Input, replay_as_destination, writer_analysis

    dst = cell.destination
    try:
        writer = writer_analysis(stream, cell.source.release, cell.source.machine)
        replay = replay_as_destination(Input(stream), writer, f"{dst.release}/{dst.machine}")
    except Exception:  # the explanation must never cost a cell its verdict
        return None
    reading = replay.get("destination_reading") or {}
    if replay.get("diverges") and "size" not in reading:
        return None  # the destination read nothing otherwise: it stopped, and said why
    if replay.get("diverges"):
        offset = int(replay["offset"])
        rows = _around_divergence(replay["side_by_side"])
        label = f"read by {dst.name} as {reading.get('text') or reading.get('kind')}"
        summary = str(replay["summary"])
    else:
        renamed = next((r for r in replay.get("renamed", []) if r["writer"] in diff_paths), None)
        if renamed is None:
            return None
        offset = int(renamed["offset"])
        element = next((e for e in writer.elements
                        if e.offset == offset and e.kind == "field"), None)
        size = element.size if element is not None else 1
        raw = stream[offset:offset + size]
        value = f" = {int.from_bytes(raw, 'big')} (0x{raw.hex()})" if size <= 8 else ""
        label = f"read by {dst.name} as {renamed['destination']}"
        summary = (f"at offset {offset} (0x{offset:x}) the writer's field {renamed['writer']}"
                   f"{value} is read by the destination as {renamed['destination']}")
        rows = [{"offset": offset, "bytes": raw[:12].hex() + ("..." if size > 12 else ""),
                 "writer": f"field {renamed['writer']}{value}",
                 "destination": f"field {renamed['destination']}{value}", "diverged": True}]
    return {"offset": offset, "summary": summary, "rows": rows,
            "window": stream_window(cell, stream, offset, label)}


def _around_divergence(rows: list[dict[str, Any]], before: int = 3, after: int = 8
                       ) -> list[dict[str, Any]]:
    """The side-by-side rows a reader needs: a few agreeing ones, then the first parted."""
    agreed = [r for r in rows if not r["diverged"]]
    parted = [r for r in rows if r["diverged"]]
    return agreed[-before:] + parted[:after]


@functools.lru_cache(maxsize=32)
def _reset_devices(endpoint: Endpoint) -> dict[str, dict[str, Any]]:
    machine = Machine(endpoint.release, endpoint.machine, endpoint.ram_size)
    return {k: {p: jsonable(v) for p, v in f.items()} for k, f in machine.state().items()}


def one_sided_fields(cell: Cell, source: dict[str, dict[str, Any]],
                     destination: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Fields of a device section that only one side's release defines, where that side
    holds something other than its power-on value: state the destination cannot take
    (source side), or state the stream put where the writer meant none (destination
    side). Not part of the verdict, which compares the fields both define."""
    out: list[dict[str, Any]] = []
    if cell.source.kind != "emulator" or cell.destination.kind != "emulator":
        return out
    for side, mine, other, endpoint in (("source", source, destination, cell.source),
                                        ("destination", destination, source,
                                         cell.destination)):
        reset = _reset_devices(endpoint)
        for section, fields in mine.items():
            theirs = other.get(section)
            if theirs is None:
                continue
            power_on = reset.get(section, {})
            for path, value in fields.items():
                if path in theirs:
                    continue
                value = jsonable(value)
                if value == power_on.get(path, value):
                    continue
                out.append({**diff_entry(f"{section}/{path}", value if side == "source"
                                         else None, value if side == "destination" else None),
                            "only_in": side})
    out.sort(key=lambda d: d["path"])
    return out[:ONE_SIDED_LIMIT]


class _PastWindow(Exception):
    """Raised by :class:`_WindowTracer` to stop decoding past the window."""


class _WindowTracer(Tracer):
    """Stops the decode at the first section that starts at or after ``end``: every mark
    that could overlap the window was made before it (a section's marks all follow its
    own, and sections come in stream order)."""

    def __init__(self, end: int) -> None:
        super().__init__()
        self.end = end

    def mark(self, kind: str, offset: int, end: int, component: str = "", value: Any = None):
        super().mark(kind, offset, end, component, value)
        if kind == "section" and offset >= self.end:
            raise _PastWindow()


def _mark_kind(kind: str) -> str:
    return kind if kind in ("section", "field", "subsection", "sentinel") else "section"


def _mark_label(mark: Any) -> str:
    if mark.kind == "field":
        value = jsonable(mark.value)
        if isinstance(value, str) and len(value) > 16:
            value = value[:16] + "..."
        return f"{mark.path} = {value}"
    if mark.kind == "subsection":
        return f"subsection {mark.value!r} in {mark.path}"
    if mark.kind == "sentinel":
        return f"sentinel 0x{mark.value:02x} after {mark.path}"
    if mark.kind == "section":
        return f"section {mark.value}"
    return f"{mark.kind} {mark.path}".strip()


_SOURCE_STATE: list[Any] = []  # [weak reference to a source machine, its state]


def _source_state(source: Machine) -> dict[str, dict[str, Any]]:
    """``source.state()``, kept for the next cell: a kept save's machine serves each
    destination of its source and scenario (:func:`build_source`), and is only read."""
    if _SOURCE_STATE and _SOURCE_STATE[0]() is source:
        return _SOURCE_STATE[1]
    state = source.state()
    _SOURCE_STATE[:] = [weakref.ref(source), state]
    return state


def _cut_off(source: Machine, report: Any) -> list[str]:
    """The sections the source sent that an early EOF kept the destination from loading."""
    loaded = {(s.idstr, s.instance_id) for s in report.sections}
    return [f"{h.idstr}/{h.instance_id}" for h in source.handlers()
            if (h.idstr, h.instance_id) not in loaded]


class InProcessDriver(Driver):
    name = "inprocess"

    def run_cell(self, cell: Cell) -> Outcome:
        started = time.perf_counter()
        outcome = Outcome()
        try:
            with time_limit(cell.time_limit):
                self._run(cell, outcome)
        except CellTimeout:
            outcome.timed_out = True
            outcome.message = f"no outcome within {cell.time_limit:g} s"
        outcome.duration_s = time.perf_counter() - started
        return outcome

    def _run(self, cell: Cell, outcome: Outcome) -> None:
        get_scenario(cell.scenario)
        try:
            source, stream = build_source(cell)
        except CellTimeout:
            raise
        except SaveCrash as e:  # where the release's save dies (RHEL 6.1's gesn_state)
            outcome.crash = f"{type(e).__name__}: {e}"
            outcome.message = f"source crashed: {e}"
            return
        except Exception as e:  # the cell could not be set up: not a verdict
            outcome.harness_error = f"source: {type(e).__name__}: {e}"
            outcome.message = outcome.harness_error
            outcome.extra["traceback"] = traceback.format_exc()
            return
        outcome.stream_bytes = len(stream)
        dst = cell.destination
        try:
            dest, report = Machine.load(dst.release, dst.machine, stream, ram_size=dst.ram_size,
                                        nic=dst.nic, media=source.media, vga=dst.vga)
        except CellTimeout:
            raise
        except LoadCrash as e:  # where the release's loader dies instead of refusing
            outcome.crash = f"{type(e).__name__}: {e}"
            outcome.message = f"destination crashed: {e}"
            if e.offset is not None:
                outcome.window = stream_window(cell, stream, e.offset, "the loader dies here")
            return
        except LoadError as e:
            outcome.load_error = e.to_dict()
            outcome.message = str(e)
            # The cause first: its decode of the whole stream, kept, serves the window.
            outcome.extra["cause"] = cell_cause(cell, stream, stopped_at=e.offset)
            if e.offset is not None:
                outcome.window = stream_window(cell, stream, e.offset, e.reason.text)
            return
        except Exception as e:  # not a migration error: the destination crashed
            outcome.crash = f"{type(e).__name__}: {e}"
            outcome.message = f"destination crashed: {outcome.crash}"
            outcome.extra["traceback"] = traceback.format_exc()
            return
        outcome.bytes_unread = report.bytes_unread
        outcome.not_loaded = _cut_off(source, report) if report.half_loaded else []
        outcome.extra["sections_loaded"] = report.section_count
        outcome.extra["bytes_consumed"] = report.bytes_consumed
        # Alike machines with equal device state (most passes) have nothing to list but RAM.
        alike = same_device_state(source, dest)
        states = ({}, {}) if alike else (_source_state(source), dest.state())
        diffs = compare_machines(source, dest, states=states)
        outcome.diff_total = len(diffs)
        outcome.diff = [diff_entry(d.path, d.source, d.destination) for d in diffs[:DIFF_LIMIT]]
        outcome.extra["one_sided"] = [] if alike else one_sided_fields(cell, *states)
        if diffs or report.half_loaded:
            outcome.extra["cause"] = cell_cause(cell, stream, frozenset(d.path for d in diffs))
        if report.half_loaded:
            eof_at = report.bytes_consumed - 1
            outcome.extra["offset"] = eof_at
            outcome.message = (
                f"an EOF byte at offset {eof_at} ended the load with {report.bytes_unread} "
                f"byte(s) unread; never loaded: {', '.join(outcome.not_loaded) or 'none'}"
            )
            outcome.window = stream_window(cell, stream, eof_at, "0x00 read as EOF")
        elif diffs:
            outcome.message = (
                f"loaded without error but {len(diffs)} field(s) differ, first {diffs[0].path}"
            )
