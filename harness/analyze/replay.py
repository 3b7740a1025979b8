"""Replaying a stream as a destination release reads it, aligned with the writer's
reading: the first element where they part and the destination's outcome."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..emulator.errors import LoadError
from ..emulator.savevm import load_stream
from ..emulator.vmstate import TraceMark, Tracer
from .elements import Analysis, json_value, short
from .modelled import release_named, summary_handlers
from .source import Input

__all__ = ["describe_mark", "replay_as_destination"]


def _leaf(marks: Iterable[TraceMark]) -> list[TraceMark]:
    return [m for m in marks if m.kind != "struct"]


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


def replay_as_destination(inp: Input, writer: Analysis, endpoint: str) -> dict[str, Any]:
    """Load the bytes as ``endpoint`` ("R/M") would, with a tracer, and align its reading
    with the writer's: the first element where they part, and the destination's outcome."""
    rel_name, _, mach = endpoint.partition("/")
    release = release_named(rel_name)
    mach = mach or release.machines[0].name
    release.machine(mach)
    handlers, header, _ = summary_handlers(release, mach)
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
                   f"{describe_mark(wm) or 'nothing more'}; the destination reads "
                   f"{describe_mark(dm) if dm else outcome.get('message', outcome['status'])}",
        "side_by_side": _side_by_side(inp, w_marks, d_marks, first),
    })
    return result


def _mark_dict(m: TraceMark | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"kind": m.kind, "offset": m.offset, "size": m.end - m.offset, "path": m.path,
            "value": json_value(m.value), "text": describe_mark(m)}


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
                     "writer": describe_mark(wm), "destination": describe_mark(dm),
                     "diverged": off >= pivot})
    return rows
