"""The HTML report: turn results into plain view data and render it with jinja2 templates.

All markup lives in `templates/` (package data, autoescape on). This module only computes:
which cells go where in the grids, the annotated hex rows, the one-line explanations. Every
string that came from a stream (idstrs, field paths, error messages) reaches the template
as plain text and is escaped there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import jinja2

from .results import VERDICTS, cell_order_key, diff_against_baseline, endpoint_name, summarize

__all__ = ["VERDICT_MEANINGS", "build_view", "render_html", "cell_anchor"]

#: What each verdict means (DESIGN.md), shown in the legend and the cell detail.
VERDICT_MEANINGS: dict[str, str] = {
    "pass": "the destination loaded the whole stream and its guest-visible state equals "
            "the source's; RAM identical",
    "rejected": "the destination refused the stream with a migration error and did not "
                "start; nothing half-applied",
    "corrupted": "the destination reported success but its state differs from the "
                 "source's: silent corruption",
    "truncated": "the destination reported success after an early EOF: part of the stream "
                 "was never loaded",
    "crashed": "the destination failed with something that is not a migration error",
    "timeout": "no outcome within the cell's time limit",
    "error": "the harness itself failed to run the cell: not a verdict on the emulator",
}
_NEVER_ACCEPTABLE = ("corrupted", "truncated", "crashed")
_BYTES_PER_ROW = 16
_MAX_WINDOW = 4096  # bytes of a window shown; the rest is summarised
_MAX_VALUE = 160  # characters of a diff value shown

_env: jinja2.Environment | None = None


def _environment() -> jinja2.Environment:
    global _env
    if _env is None:
        _env = jinja2.Environment(
            loader=jinja2.PackageLoader("harness.report", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _env


def cell_anchor(cell_id: str) -> str:
    """A URL-fragment-safe, unique id for a cell's detail: readable part plus a hash."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", cell_id).strip("-")[:80]
    digest = hashlib.sha1(cell_id.encode("utf-8")).hexdigest()[:8]
    return f"cell-{slug}-{digest}"


def _column_key(cell: Mapping[str, Any]) -> str:
    """Scenario column of a cell: `scenario`, or `scenario:seed` when the id names a seed."""
    scenario, seed = cell["scenario"], cell.get("seed")
    if seed is not None and cell["id"].endswith(f"[{scenario}:{seed}]"):
        return f"{scenario}:{seed}"
    return scenario


def _safe_href(link: Any) -> str | None:
    """Only http(s) links become hrefs; anything else (javascript:, data:) stays text."""
    if isinstance(link, str) and re.match(r"^https?://", link, re.IGNORECASE):
        return link
    return None


def _json_text(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        text += f" (0x{value:x})"
    if len(text) > _MAX_VALUE:
        text = text[: _MAX_VALUE - 1] + "…"
    return text


def _why(cell: Mapping[str, Any]) -> str:
    verdict, expected = cell["verdict"], list(cell["expected"])
    ki = cell.get("known_issue")
    rule = cell.get("expected_rule")
    exp = " or ".join(expected) or "nothing"
    if cell.get("unexpected_pass"):
        return (f"Known issue passed: got {verdict}, although the cell is marked as a known "
                f"issue; the note may be stale.")
    if not cell["ok"]:
        text = f"Unexpected: got {verdict}, expected {exp}."
        if verdict in _NEVER_ACCEPTABLE:
            text += f" {verdict.capitalize()} is never acceptable."
        return text
    if ki and verdict not in expected:
        return f"Known issue: still {verdict} (expected {exp}); kept visible, not failed."
    return f"As expected: {verdict}" + (f" ({rule})." if rule else ".")


_KINDS = ("section", "subsection", "field", "sentinel", "error")


def _kind_order(kind: str) -> tuple[int, str]:
    """Outer marks first, so that CSS can paint the innermost last."""
    return (_KINDS.index(kind) if kind in _KINDS else len(_KINDS), kind)


def _hex_view(window: Mapping[str, Any], error_offset: int | None) -> dict[str, Any]:
    """Rows of 16 bytes with offsets, each byte tagged with the marks that cover it."""
    data = bytes.fromhex(window["hex"])
    start = int(window["start"])
    shown = data[:_MAX_WINDOW]
    marks = []
    for n, m in enumerate(
        sorted(window.get("marks") or [], key=lambda m: (m["offset"], -m["end"])), start=1
    ):
        end = max(int(m["end"]), int(m["offset"]) + 1)
        marks.append({
            "n": n,
            "kind": m.get("kind") if m.get("kind") in _KINDS else "other",
            "kind_text": str(m.get("kind") or ""),
            "label": str(m.get("label") or ""),
            "offset": int(m["offset"]),
            "end": end,
            "offset_hex": f"0x{int(m['offset']):x}",
            "length": end - int(m["offset"]),
            "has_error": error_offset is not None and m["offset"] <= error_offset < end,
        })
    rows = []
    base = start - start % _BYTES_PER_ROW
    stop = start + len(shown)
    for row_start in range(base, stop, _BYTES_PER_ROW):
        cells = []
        for off in range(row_start, row_start + _BYTES_PER_ROW):
            if not start <= off < stop:
                cells.append(None)
                continue
            b = shown[off - start]
            covering = [m for m in marks if m["offset"] <= off < m["end"]]
            kinds = sorted({m["kind"] for m in covering}, key=_kind_order)
            title = f"0x{off:x} ({off})"
            if covering:
                title += ": " + "; ".join(f"[{m['n']}] {m['kind']} {m['label']}" for m in covering)
            if off == error_offset:
                title += " <- error offset"
            cells.append({
                "offset": off,
                "hex": f"{b:02x}",
                "char": chr(b) if 0x20 <= b < 0x7F else ".",
                "kinds": kinds,
                "starts": [m["n"] for m in marks if m["offset"] == off],
                "error": off == error_offset,
                "title": title,
            })
        notes = [m for m in marks if row_start <= m["offset"] < row_start + _BYTES_PER_ROW]
        rows.append({"offset": row_start, "offset_hex": f"{row_start:08x}", "bytes": cells,
                     "notes": notes})
    return {
        "start": start,
        "end": start + len(data),
        "start_hex": f"0x{start:x}",
        "end_hex": f"0x{start + len(data):x}",
        "length": len(data),
        "clipped": len(data) - len(shown),
        "rows": rows,
        "marks": marks,
        "kinds": sorted({m["kind"] for m in marks}),
        "error_in_window": error_offset is not None and start <= error_offset < stop,
    }


def _prediction_view(cell: Mapping[str, Any]) -> dict[str, Any] | None:
    """The static prediction (harness.schema.predict_cell) and whether the verdict is in it."""
    p = cell.get("prediction")
    if not isinstance(p, Mapping):
        return None
    verdicts = [str(v) for v in p.get("verdicts") or []]
    if not verdicts:
        return {"verdicts": [], "reason": str(p.get("reason") or ""), "agrees": True,
                "known": False}
    return {"verdicts": verdicts, "reason": str(p.get("reason") or ""),
            "agrees": cell["verdict"] in verdicts, "known": True}


def _cell_view(cell: Mapping[str, Any]) -> dict[str, Any]:
    d = cell.get("detail") or {}
    ki = cell.get("known_issue")
    offset = d.get("offset")
    diff = [
        {"path": str(row.get("path")), "source": _json_text(row.get("source")),
         "destination": _json_text(row.get("destination"))}
        for row in d.get("diff") or []
    ]
    diff_total = d.get("diff_total") or len(diff)
    window = d.get("window")
    return {
        "id": cell["id"],
        "anchor": cell_anchor(cell["id"]),
        "scenario": cell["scenario"],
        "column": _column_key(cell),
        "seed": cell.get("seed"),
        "source": endpoint_name(cell["source"]),
        "destination": endpoint_name(cell["destination"]),
        "verdict": cell["verdict"],
        "meaning": VERDICT_MEANINGS.get(cell["verdict"], ""),
        "expected": list(cell["expected"]),
        "expected_rule": cell.get("expected_rule"),
        "ok": bool(cell["ok"]),
        "known_issue": None if not ki else {
            "text": str(ki.get("text") or ""),
            "link": ki.get("link"),
            "href": _safe_href(ki.get("link")),
        },
        "known_failing": bool(ki) and cell["ok"] and cell["verdict"] not in cell["expected"],
        "unexpected_pass": bool(cell.get("unexpected_pass")),
        "why": _why(cell),
        "message": d.get("message") or "",
        "reason": d.get("reason"),
        "errno": d.get("errno"),
        "offset": offset,
        "offset_hex": f"0x{offset:x}" if isinstance(offset, int) else None,
        "section": d.get("section"),
        "field": d.get("field"),
        "bytes_unread": d.get("bytes_unread"),
        "not_loaded": [str(x) for x in d.get("not_loaded") or []],
        "diff": diff,
        "diff_total": diff_total,
        "diff_more": max(0, diff_total - len(diff)),
        "hex": _hex_view(window, offset) if window else None,
        "stream_bytes": cell.get("stream_bytes"),
        "duration_s": cell.get("duration_s"),
        "commands": [{"name": str(k), "command": str(v)}
                     for k, v in (cell.get("commands") or {}).items()],
        "prediction": _prediction_view(cell),
    }


def _ordered(preferred: list[str], seen: list[str]) -> list[str]:
    out = [x for x in preferred if x in seen]
    return out + [x for x in seen if x not in out]


def _duration_text(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "unknown"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {sec} s"


def build_view(
    results: Mapping[str, Any], baseline: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The plain data the template renders: run facts, counts, lists, grids, details."""
    raw_cells = sorted(results["cells"], key=cell_order_key(results))
    cells = [_cell_view(c) for c in raw_cells]
    summary = summarize(raw_cells)

    endpoints = _ordered(
        [str(e) for e in results.get("endpoints") or []],
        list(dict.fromkeys([c["source"] for c in cells] + [c["destination"] for c in cells])),
    )
    scen_pref: list[str] = []
    for s in results.get("scenarios") or []:
        scen_pref += [str(s), str(s).split(":", 1)[0]]
    pref_index = {name: i for i, name in reversed(list(enumerate(scen_pref)))}
    seen_columns = list(dict.fromkeys(c["column"] for c in cells))
    columns = sorted(seen_columns, key=lambda col: (
        pref_index.get(col, pref_index.get(col.split(":", 1)[0], len(scen_pref))),
        seen_columns.index(col)))
    scenario_names = list(dict.fromkeys(
        [s for s in dict.fromkeys(scen_pref) if any(c["scenario"] == s for c in cells)]
        + [c["scenario"] for c in cells]
    ))

    by_key = {(c["source"], c["destination"], c["column"]): c for c in cells}
    pairs = []
    for src in endpoints:
        for dst in endpoints:
            row = [by_key.get((src, dst, col)) for col in columns]
            if any(row):
                pairs.append({"source": src, "destination": dst, "cells": row})
    grids = []
    for col in columns:
        col_cells = [c for c in cells if c["column"] == col]
        sources = [e for e in endpoints if any(c["source"] == e for c in col_cells)]
        dests = [e for e in endpoints if any(c["destination"] == e for c in col_cells)]
        grids.append({
            "key": col,
            "anchor": "grid-" + cell_anchor(col)[len("cell-"):],
            "scenario": col_cells[0]["scenario"],
            "destinations": dests,
            "rows": [{"source": s, "cells": [by_key.get((s, d, col)) for d in dests]}
                     for s in sources],
            "unexpected": sum(not c["ok"] for c in col_cells),
            "total": len(col_cells),
        })

    shard = results.get("shard")
    total_cells = results.get("total_cells")
    run = {
        "matrix": results["matrix"],
        "matrix_file": results.get("matrix_file"),
        "driver": results["driver"],
        "endpoints": endpoints,
        "releases": list(dict.fromkeys(
            [str(c["source"]["release"]) for c in raw_cells if "release" in c["source"]]
            + [str(c["destination"]["release"]) for c in raw_cells
               if "release" in c["destination"]]
        )),
        "host": results.get("host"),
        "python": results.get("python"),
        "version": results.get("migmatrix_version"),
        "started": results["started"],
        "finished": results.get("finished"),
        "interrupted": results.get("finished") is None,
        "duration": _duration_text(results.get("duration_s")),
        "shard": f"{shard['index']}/{shard['count']}" if shard else None,
        "total_cells": total_cells,
        "present": len(cells),
    }
    by_anchor = {c["id"]: c["anchor"] for c in cells}
    diff = None
    if baseline is not None:
        diff = diff_against_baseline(results, baseline)
        for key in ("changed", "new_unexpected", "fixed", "added", "removed"):
            for entry in diff[key]:
                entry["anchor"] = by_anchor.get(entry["id"])
    merge = results.get("merge") or {}
    return {
        "run": run,
        "summary": summary,
        "verdict_counts": [{"verdict": v, "count": summary["by_verdict"].get(v, 0),
                            "meaning": VERDICT_MEANINGS[v]} for v in VERDICTS],
        "verdicts": list(VERDICTS),
        "unexpected": [c for c in cells if not c["ok"]],
        "mispredicted": [c for c in cells if c["prediction"] and not c["prediction"]["agrees"]],
        "predicted": sum(1 for c in cells if c["prediction"] and c["prediction"]["known"]),
        "known": [c for c in cells if c["known_issue"]],
        "baseline": diff,
        "merge_problems": [dict(p) for p in merge.get("problems") or []],
        "merge_sources": [str(s) for s in merge.get("sources") or []],
        "columns": columns,
        "scenario_names": scenario_names,
        "pairs": pairs,
        "grids": grids,
        "cells": cells,
    }


def _script_hash(env: jinja2.Environment) -> str:
    """CSP hash of the inline script, so that only that script may run in the report."""
    script = env.get_template("report.js").render()
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def render_html(
    results: Mapping[str, Any], baseline: Mapping[str, Any] | None = None
) -> str:
    """The self-contained report page (inline CSS and JS, no external assets) as a string."""
    env = _environment()
    view = build_view(results, baseline)
    return env.get_template("index.html.j2").render(
        view=view, script_hash=_script_hash(env)
    )
