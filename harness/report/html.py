"""The HTML report: turn results into plain view data and render it with jinja2 templates.

All markup lives in `templates/` (package data, autoescape on). This module only computes:
which cells go where in the grid, the known issues grouped by note, the one-line
explanations, and the data of the byte views. Every string that came from a stream
(idstrs, field paths, error messages) reaches the template as plain text and is escaped
there.

The page is laid out for a maintainer's first minute: the headline, the pair x scenario
grid, the unexpected cells, the known issues grouped by their note; then one detail per
cell, which leads with the cause (where the destination's reading first parts from the
writer's) before the symptom. The heavy parts, the annotated byte windows, travel once
each (many cells share one) as JSON inside the page and are drawn by the page's script
when a detail opens; everything else reads without JavaScript.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import jinja2

from .results import (
    VERDICTS,
    cell_order_key,
    diff_against_baseline,
    endpoint_name,
    model_counterpart,
    summarize,
)

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
_MAX_WINDOW = 4096  # bytes of a window kept for the byte view; the rest is counted
_MAX_MARKS = 64  # marks of a window kept; the rest is counted
_MAX_LABEL = 200  # characters of a mark's label kept
_MAX_VALUE = 160  # characters of a diff value shown
_MAX_ROWS = 24  # rows of the side-by-side cause table shown

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
            bytecode_cache=_bytecode_cache(),
        )
        _env.filters["path_breaks"] = _path_breaks
    return _env


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """The compiled templates kept in the user's cache directory (compiling them is a
    tenth of a default run); none where that directory cannot be made."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(root, "migmatrix", "jinja2")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None
    return _TolerantBytecodeCache(directory)


class _TolerantBytecodeCache(jinja2.FileSystemBytecodeCache):
    """A cache that is only ever an optimisation: a directory that cannot be read or
    written (a read-only mount, a file of another user) compiles the templates anew."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except OSError:
            pass

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def _path_breaks(path: str) -> list[str]:
    """A field path cut after each ``/``, where a line may break (the template puts a
    ``<wbr>`` between the parts): never in the middle of a name such as ``bus[0]``."""
    return [p for p in re.split(r"(?<=/)", path) if p]


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


_KINDS = ("section", "subsection", "field", "sentinel", "error", "cause")


class _Windows:
    """The byte windows of the page, each stored once (cells share many: every stream of
    one source starts alike), as compact JSON the page's script draws from."""

    def __init__(self) -> None:
        self.table: dict[str, dict[str, Any]] = {}

    def add(self, window: Mapping[str, Any] | None, focus: int | None,
            extra: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """Keep ``window`` (with ``extra`` marks); return a reference to it, or None."""
        if not window:
            return None
        start = int(window["start"])
        hexstr = str(window["hex"])[: 2 * _MAX_WINDOW]
        length = len(window["hex"]) // 2
        marks = list(window.get("marks") or []) + list(extra or [])
        kept = []
        for m in sorted(marks[:_MAX_MARKS], key=lambda m: (m["offset"], -m["end"])):
            kind = m.get("kind") if m.get("kind") in _KINDS else "other"
            kept.append([int(m["offset"]), max(int(m["end"]), int(m["offset"]) + 1), kind,
                         str(m.get("label") or "")[:_MAX_LABEL]])
        data = {"s": start, "h": hexstr, "m": kept, "more": max(0, len(marks) - _MAX_MARKS),
                "clip": max(0, length - _MAX_WINDOW)}
        key = hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
        self.table.setdefault(key, data)
        end = start + length
        return {"key": key, "start": start, "end": end, "start_hex": f"0x{start:x}",
                "end_hex": f"0x{end:x}",
                "focus": focus if focus is not None and start <= focus < end else None}


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


def _diff_rows(d: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = [{"path": str(row.get("path")), "source": _json_text(row.get("source")),
             "destination": _json_text(row.get("destination")), "only_in": None}
            for row in d.get("diff") or []]
    for row in d.get("one_sided") or []:
        if not isinstance(row, Mapping):
            continue
        side = row.get("only_in")
        rows.append({
            "path": str(row.get("path")),
            "source": _json_text(row.get("source")) if side == "source" else None,
            "destination": _json_text(row.get("destination")) if side == "destination"
            else None,
            "only_in": side if side in ("source", "destination") else None,
        })
    return rows


def _cause_view(d: Mapping[str, Any], windows: _Windows, symptom: int | None
                ) -> dict[str, Any] | None:
    cause = d.get("cause")
    if not isinstance(cause, Mapping):
        return None
    offset = cause.get("offset")
    rows = [{"offset": r.get("offset"), "offset_hex": f"0x{int(r.get('offset') or 0):x}",
             "bytes": str(r.get("bytes") or ""), "writer": str(r.get("writer") or ""),
             "destination": str(r.get("destination") or ""),
             "diverged": bool(r.get("diverged")),
             "first": r.get("offset") == offset}
            for r in (cause.get("rows") or [])[:_MAX_ROWS] if isinstance(r, Mapping)]
    window = cause.get("window")
    extra = []
    if isinstance(window, Mapping) and symptom is not None and symptom != offset:
        extra.append({"offset": symptom, "end": symptom + 1, "kind": "error",
                      "label": f"where the load stopped: {d.get('message') or ''}"})
    view = windows.add(_with_cause_mark(window, offset), offset, extra)
    return {"offset": offset, "offset_hex": f"0x{offset:x}" if isinstance(offset, int) else None,
            "summary": str(cause.get("summary") or ""), "rows": rows, "hex": view,
            "covers_symptom": view is not None and symptom is not None
            and view["start"] <= symptom < view["end"]}


def _with_cause_mark(window: Mapping[str, Any] | None, offset: Any) -> Mapping[str, Any] | None:
    """The cause window with its focus byte marked as the cause (the driver marks it as the
    byte of interest, kind ``error``)."""
    if not isinstance(window, Mapping):
        return None
    marks = [dict(m, kind="cause") if m.get("kind") == "error" and m.get("offset") == offset
             else m for m in window.get("marks") or []]
    return {**window, "marks": marks}


def _cell_view(cell: Mapping[str, Any], windows: _Windows) -> dict[str, Any]:
    d = cell.get("detail") or {}
    ki = cell.get("known_issue")
    offset = d.get("offset")
    diff = _diff_rows(d)
    diff_total = d.get("diff_total") or len(d.get("diff") or [])
    cause = _cause_view(d, windows, offset)
    prediction = _prediction_view(cell)
    symptom = None
    if not (cause and cause["covers_symptom"]):
        symptom = windows.add(d.get("window"), offset)
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
        "why_has_rule": bool(cell["ok"]) and not (ki and cell["verdict"] not in cell["expected"])
        and not cell.get("unexpected_pass"),
        "plain_pass": cell["verdict"] == "pass" and bool(cell["ok"]) and not ki,
        # As expected, no known issue, nothing unexpectedly passing: in a large report its
        # detail is kept compressed until opened (LAZY_FROM).
        "routine": bool(cell["ok"]) and not ki and not cell.get("unexpected_pass")
        and (prediction is None or prediction["agrees"]),
        "lazy": False,
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
        "diff_more": max(0, diff_total - len(d.get("diff") or [])),
        "one_sided": sum(1 for r in diff if r["only_in"]),
        "cause": cause,
        "hex": symptom,
        "stream_bytes": cell.get("stream_bytes"),
        "duration_s": cell.get("duration_s"),
        "commands": [{"name": str(k), "command": str(v)}
                     for k, v in (cell.get("commands") or {}).items()],
        "prediction": prediction,
        "real": [],  # filled by _model_vs_real for a model cell with real counterparts
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


def _known_groups(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells with a known issue, one group per note (first seen first)."""
    groups: dict[str, dict[str, Any]] = {}
    for c in cells:
        ki = c["known_issue"]
        if not ki:
            continue
        g = groups.setdefault(ki["text"], {
            "text": ki["text"], "link": ki["link"], "href": ki["href"], "cells": [],
            "anchor": "known-" + hashlib.sha1(ki["text"].encode()).hexdigest()[:10],
        })
        g["cells"].append(c)
    out = []
    for g in groups.values():
        counts: dict[str, int] = {}
        for c in g["cells"]:
            counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
        g["verdicts"] = [{"verdict": v, "count": counts[v]} for v in VERDICTS if v in counts]
        g["passed"] = sum(c["unexpected_pass"] for c in g["cells"])
        g["pairs"] = list(dict.fromkeys(f"{c['source']} → {c['destination']}"
                                        for c in g["cells"]))
        out.append(g)
    return out


def build_view(
    results: Mapping[str, Any], baseline: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The plain data the template renders: run facts, counts, lists, the grid, details."""
    raw_cells = sorted(results["cells"], key=cell_order_key(results))
    windows = _Windows()
    cells = [_cell_view(c, windows) for c in raw_cells]
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
                pairs.append({"source": src, "destination": dst, "cells": row,
                              "unexpected": sum(1 for c in row if c and not c["ok"])})

    shard = results.get("shard")
    total_cells = results.get("total_cells")
    run = {
        "matrix": results["matrix"],
        "matrix_file": results.get("matrix_file"),
        "description": results.get("description"),
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
        "selection": [str(s) for s in results.get("selection") or []],
        "total_cells": total_cells,
        "present": len(cells),
    }
    by_anchor = {c["id"]: c["anchor"] for c in cells}
    model_vs_real = _model_vs_real(raw_cells, cells)
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
        "known_groups": _known_groups(cells),
        "baseline": diff,
        "merge_problems": [dict(p) for p in merge.get("problems") or []],
        "merge_sources": [str(s) for s in merge.get("sources") or []],
        "columns": columns,
        "scenario_names": scenario_names,
        "pairs": pairs,
        "cells": cells,
        "windows": windows.table,
        "model_vs_real": model_vs_real,
    }


def _model_vs_real(raw_cells: list[Mapping[str, Any]], cells: list[dict[str, Any]]
                   ) -> dict[str, Any] | None:
    """Each cell with a real side beside the model cell it lines up with. The model cell
    gets ``real`` (the real cells of the same pair: the real -> real one and the mirror
    ones), each with ``agrees``, so that its grid cell shows them next to its own."""
    view_of = {c["id"]: c for c in cells}
    rows = []
    for raw in raw_cells:
        model_id = model_counterpart(raw)
        model = view_of.get(model_id or "")
        if model is None:
            continue
        real = view_of[raw["id"]]
        row = {"cell": real, "model": model, "agrees": real["verdict"] == model["verdict"],
               "kind": _mixed_kind(raw)}
        model["real"].append(row)
        rows.append(row)
    if not rows:
        return None
    return {"rows": rows, "agree": sum(r["agrees"] for r in rows),
            "disagreements": [r for r in rows if not r["agrees"]]}


def _mixed_kind(cell: Mapping[str, Any]) -> str:
    src, dst = (bool(cell[side].get("historic")) for side in ("source", "destination"))
    if src and dst:
        return "real"
    return "real loader, model stream" if dst else "model loader, real stream"


def _script_hash(env: jinja2.Environment) -> str:
    """CSP hash of the inline script, so that only that script may run in the report."""
    script = env.get_template("report.js").render()
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


LAZY_FROM = 300  # detail sections from which routine ones are kept compressed


def render_html(
    results: Mapping[str, Any], baseline: Mapping[str, Any] | None = None
) -> str:
    """The self-contained report page (inline CSS and JS, no external assets) as a string.

    In a report with :data:`LAZY_FROM` or more full detail sections (a history matrix's
    hundreds of cells refused as expected), the routine ones are rendered in full into
    one gzip-compressed block the script opens when a cell is; the page keeps a short
    stub of each (verdict, why, message, the command that reruns it), readable without
    JavaScript. Cells that are unexpected, known issues or passes keep their details.
    """
    env = _environment()
    view = build_view(results, baseline)
    full = [c for c in view["cells"] if not c["plain_pass"]]
    lazy: dict[str, str] = {}
    if len(full) >= LAZY_FROM:
        detail = env.get_template("_detail.html.j2")
        for c in full:
            if c["routine"]:
                lazy[c["anchor"]] = detail.render(c=c).strip()
                c["lazy"] = True
    view["lazy_details"] = _packed(lazy) if lazy else None
    return env.get_template("index.html.j2").render(
        view=view, script_hash=_script_hash(env)
    )


def _packed(details: dict[str, str]) -> str:
    """``details`` as JSON, gzip-compressed, base64: what the script's
    ``DecompressionStream("gzip")`` opens."""
    raw = json.dumps(details, separators=(",", ":")).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")
