"""results.json: load and validate, summarise, shard, merge, and compare with a baseline.

Everything here works on the plain JSON data (dicts and lists) that the runner writes, so
that a saved results file can be merged or re-rendered by a later job without the matrix
or the emulator. Errors name the file and the key, because the person reading them is
usually looking at a CI log, not at the file.

Error tree::

    ResultsError (ValueError)      a results file or object does not match the schema,
                                   or shards cannot be merged (different matrices)
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA",
    "VERDICTS",
    "ResultsError",
    "MAX_RESULTS_BYTES",
    "load_results",
    "parse_results_json",
    "validate_results",
    "model_counterpart",
    "model_vs_real",
    "summarize",
    "cell_order_key",
    "merge_results",
    "diff_against_baseline",
]

SCHEMA = "migmatrix/results/1"

#: Every verdict, in the order reports list them (good news first, harness trouble last).
VERDICTS: tuple[str, ...] = (
    "pass",
    "rejected",
    "corrupted",
    "truncated",
    "crashed",
    "timeout",
    "error",
)

#: Top-level keys every results object carries, and their JSON types.
_REQUIRED_TOP: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "matrix": str,
    "driver": str,
    "started": str,
    "cells": list,
}
_NUMBER = (int, float)
#: Top-level keys that may be absent (an interrupted run) and their types when present.
_OPTIONAL_TOP: dict[str, type | tuple[type, ...]] = {
    "matrix_file": (str, type(None)),
    "description": (str, type(None)),
    "host": (str, type(None)),
    "platform": (str, type(None)),
    "python": (str, type(None)),
    "migmatrix_version": (str, type(None)),
    "finished": (str, type(None)),
    "duration_s": (*_NUMBER, type(None)),
    "endpoints": list,
    "scenarios": list,
    "releases": (list, type(None)),
    "shard": (dict, type(None)),
    "selection": (list, type(None)),
    "total_cells": (int, type(None)),
    "excluded": (list, type(None)),
    "summary": (dict, type(None)),
    "merge": (dict, type(None)),
}
_REQUIRED_CELL: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "source": dict,
    "destination": dict,
    "scenario": str,
    "verdict": str,
    "expected": list,
    "ok": bool,
}
_OPTIONAL_CELL: dict[str, type | tuple[type, ...]] = {
    "seed": (int, type(None)),
    "driver": (str, type(None)),
    "expected_rule": (str, type(None)),
    "known_issue": (dict, type(None)),
    "unexpected_pass": bool,
    "detail": (dict, type(None)),
    "stream_bytes": (int, type(None)),
    "duration_s": (*_NUMBER, type(None)),
    "commands": (dict, type(None)),
    "prediction": (dict, type(None)),
}
#: The keys of a cell's ``detail`` that the reports read, and their types.
_DETAIL: dict[str, type | tuple[type, ...]] = {
    "message": (str, type(None)),
    "reason": (str, type(None)),
    "errno": (str, int, type(None)),
    "offset": (int, type(None)),
    "section": (str, type(None)),
    "field": (str, type(None)),
    "bytes_unread": (int, type(None)),
    "not_loaded": (list, type(None)),
    "diff": (list, type(None)),
    "diff_total": (int, type(None)),
    "window": (dict, type(None)),
    "cause": (dict, type(None)),
    "one_sided": (list, type(None)),
}
#: Fields every shard of one matrix must agree on.
_MATRIX_FIELDS = ("schema", "matrix", "matrix_file", "driver", "endpoints", "scenarios",
                  "total_cells")
#: A results file larger than this is refused before it is parsed (a matrix of 10,000
#: cells writes about 20 MB).
MAX_RESULTS_BYTES = 256 << 20


class ResultsError(ValueError):
    """A results file or object does not match the schema, or shards do not belong together."""


# --------------------------------------------------------------------------- loading


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results.json file; errors name the file and the offending key."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_RESULTS_BYTES + 1)
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_RESULTS_BYTES:
        raise ResultsError(f"{path}: larger than {MAX_RESULTS_BYTES >> 20} MiB: not a "
                           "results file this tool wrote")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8: byte 0x{raw[exc.start]:02x} at offset "
                           f"{exc.start}") from None
    data = parse_results_json(text, str(path))
    validate_results(data, name=str(path))
    return data


def _no_constant(name: str) -> Any:
    raise ResultsError(f"{name} is not a number JSON allows")


def parse_results_json(text: str, name: str) -> Any:
    """``json.loads`` that refuses NaN and Infinity and names the place of a syntax error."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ResultsError as exc:
        raise ResultsError(f"{name}: not JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(
            f"{name}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ResultsError(f"{name}: not a results file: nested too deeply") from None


def _type_names(types: type | tuple[type, ...]) -> str:
    names = {
        str: "string", int: "integer", float: "number", bool: "boolean", list: "list",
        dict: "object", type(None): "null",
    }
    if not isinstance(types, tuple):
        types = (types,)
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_type(value: Any, types: type | tuple[type, ...], where: str) -> None:
    allowed = types if isinstance(types, tuple) else (types,)
    # bool is an int in Python; a JSON true is never a valid count or offset.
    if isinstance(value, bool) and bool not in allowed:
        raise ResultsError(f"{where}: expected {_type_names(types)}, got boolean")
    if not isinstance(value, allowed):
        raise ResultsError(
            f"{where}: expected {_type_names(types)}, got {_type_names(type(value))}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ResultsError(f"{where}: expected a finite number, got {value}")


def _check_keys(data: Mapping[str, Any], types: Mapping[str, type | tuple[type, ...]],
                where: str) -> None:
    for key, t in types.items():
        if key in data:
            _check_type(data[key], t, f"{where}.{key}" if where else key)


def _check_items(items: list[Any], types: type | tuple[type, ...], where: str) -> None:
    for k, item in enumerate(items):
        _check_type(item, types, f"{where}[{k}]")


def validate_results(data: Any, name: str = "results") -> None:
    """Check `data` against the results schema; raise ResultsError naming `name` and the key.

    Everything the reports read is checked (types, verdict names, finite numbers); unknown
    keys are allowed (newer runners may add some), optional keys may be missing (an
    interrupted run writes what it has).
    """
    if not isinstance(data, Mapping):
        raise ResultsError(f"{name}: expected a JSON object at the top, "
                           f"got {_type_names(type(data))}")
    for key, types in _REQUIRED_TOP.items():
        if key not in data:
            raise ResultsError(f"{name}: missing key {key!r}")
        _check_type(data[key], types, f"{name}: {key}")
    if data["schema"] != SCHEMA:
        raise ResultsError(f"{name}: schema: expected {SCHEMA!r}, got {data['schema']!r}")
    for key, types in _OPTIONAL_TOP.items():
        if key in data:
            _check_type(data[key], types, f"{name}: {key}")
    for key in ("endpoints", "scenarios", "releases", "selection"):
        _check_items(data.get(key) or [], str, f"{name}: {key}")
    shard = data.get("shard")
    if shard is not None:
        for key in ("index", "count"):
            if not isinstance(shard.get(key), int) or isinstance(shard.get(key), bool):
                raise ResultsError(f"{name}: shard.{key}: expected integer")
        if not 1 <= shard["index"] <= shard["count"]:
            raise ResultsError(
                f"{name}: shard: index {shard['index']} not within 1..{shard['count']}"
            )
    merge = data.get("merge")
    if merge is not None:
        _check_keys(merge, {"sources": list, "problems": list}, f"{name}: merge")
        for k, problem in enumerate(merge.get("problems") or []):
            where = f"{name}: merge.problems[{k}]"
            _check_type(problem, dict, where)
            _check_keys(problem, {"kind": str, "message": str}, where)
    for i, cell in enumerate(data["cells"]):
        _validate_cell(cell, f"{name}: cells[{i}]")


def _validate_cell(cell: Any, where: str) -> None:
    if not isinstance(cell, Mapping):
        raise ResultsError(f"{where}: expected object, got {_type_names(type(cell))}")
    for key, types in _REQUIRED_CELL.items():
        if key not in cell:
            raise ResultsError(f"{where}: missing key {key!r}")
        _check_type(cell[key], types, f"{where}.{key}")
    where = f"{where} ({cell['id'][:200]})"
    for key, types in _OPTIONAL_CELL.items():
        if key in cell:
            _check_type(cell[key], types, f"{where}.{key}")
    if cell["verdict"] not in VERDICTS:
        raise ResultsError(
            f"{where}.verdict: {cell['verdict']!r} is not one of {', '.join(VERDICTS)}"
        )
    for j, verdict in enumerate(cell["expected"]):
        if verdict not in VERDICTS:
            raise ResultsError(
                f"{where}.expected[{j}]: {verdict!r} is not one of {', '.join(VERDICTS)}"
            )
    for side in ("source", "destination"):
        ep = cell[side]
        if "endpoint" not in ep and not ("release" in ep and "machine" in ep):
            raise ResultsError(f"{where}.{side}: needs 'endpoint' or 'release' and 'machine'")
        _check_keys(ep, {"endpoint": str, "release": str, "machine": str}, f"{where}.{side}")
    ki = cell.get("known_issue")
    if ki is not None:
        _check_type(ki.get("text"), str, f"{where}.known_issue.text")
        _check_keys(ki, {"link": (str, type(None))}, f"{where}.known_issue")
    for key, value in (cell.get("commands") or {}).items():
        _check_type(value, str, f"{where}.commands.{key}")
    prediction = cell.get("prediction")
    if prediction is not None:
        _check_keys(prediction, {"verdicts": list, "reason": (str, type(None))},
                    f"{where}.prediction")
        _check_items(prediction.get("verdicts") or [], str, f"{where}.prediction.verdicts")
    detail = cell.get("detail")
    if detail is not None:
        _validate_detail(detail, f"{where}.detail")


def _validate_window(window: Mapping[str, Any], where: str) -> None:
    _check_type(window.get("start"), int, f"{where}.start")
    _check_type(window.get("hex"), str, f"{where}.hex")
    if window["start"] < 0:
        raise ResultsError(f"{where}.start: expected an offset, got {window['start']}")
    try:
        bytes.fromhex(window["hex"])
    except ValueError as exc:
        raise ResultsError(f"{where}.hex: not hexadecimal: {exc}") from exc
    _check_keys(window, {"marks": (list, type(None))}, where)
    for k, mark in enumerate(window.get("marks") or []):
        _check_type(mark, dict, f"{where}.marks[{k}]")
        for key in ("offset", "end"):
            _check_type(mark.get(key), int, f"{where}.marks[{k}].{key}")
        _check_keys(mark, {"kind": (str, type(None)), "label": (str, type(None))},
                    f"{where}.marks[{k}]")


def _validate_detail(detail: Mapping[str, Any], where: str) -> None:
    _check_keys(detail, _DETAIL, where)
    _check_items(detail.get("not_loaded") or [], str, f"{where}.not_loaded")
    for k, row in enumerate(detail.get("diff") or []):
        _check_type(row, dict, f"{where}.diff[{k}]")
        if "path" not in row:
            raise ResultsError(f"{where}.diff[{k}]: missing key 'path'")
        _check_type(row["path"], str, f"{where}.diff[{k}].path")
    for k, row in enumerate(detail.get("one_sided") or []):
        _check_type(row, dict, f"{where}.one_sided[{k}]")
        _check_type(row.get("path"), str, f"{where}.one_sided[{k}].path")
        _check_keys(row, {"only_in": str}, f"{where}.one_sided[{k}]")
    if detail.get("window") is not None:
        _validate_window(detail["window"], f"{where}.window")
    cause = detail.get("cause")
    if cause is not None:
        _check_keys(cause, {"offset": int, "summary": str, "rows": list,
                            "window": (dict, type(None))}, f"{where}.cause")
        for k, row in enumerate(cause.get("rows") or []):
            _check_type(row, dict, f"{where}.cause.rows[{k}]")
            _check_keys(row, {"offset": int, "bytes": str, "writer": str, "destination": str,
                              "diverged": bool}, f"{where}.cause.rows[{k}]")
        if cause.get("window") is not None:
            _validate_window(cause["window"], f"{where}.cause.window")


# --------------------------------------------------------------------------- summary


def summarize(cells: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The `summary` object of a results file, computed from its cells."""
    cells = list(cells)
    by_verdict = dict.fromkeys(VERDICTS, 0)
    total = ok = known = unexpected_pass = 0
    for cell in cells:
        total += 1
        by_verdict[cell["verdict"]] = by_verdict.get(cell["verdict"], 0) + 1
        ok += bool(cell["ok"])
        known += cell.get("known_issue") is not None
        unexpected_pass += bool(cell.get("unexpected_pass"))
    out = {
        "total": total,
        "ok": ok,
        "unexpected": total - ok,
        "known_issues": known,
        "unexpected_passes": unexpected_pass,
        "by_verdict": by_verdict,
    }
    pairs = model_vs_real(cells)
    if pairs["pairs"]:
        out["model_vs_real"] = pairs
    return out


def model_counterpart(cell: Mapping[str, Any]) -> str | None:
    """The id of the all-model cell a cell with a real historic side lines up with
    (``qemu-0.14/pc->qemu-new/pc-0.14[idle]`` -> ``0.14/pc->new/pc-0.14[idle]``), or
    ``None`` for a cell without one."""
    sides = (cell["source"], cell["destination"])
    if not any(side.get("historic") for side in sides):
        return None
    src, dst = (endpoint_name(side).removeprefix("qemu-") if side.get("historic")
                else endpoint_name(side) for side in sides)
    tail = cell["id"][cell["id"].index("["):]
    return f"{src}->{dst}{tail}"


def model_vs_real(cells: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Each cell with a real side beside its model counterpart in the same run: how many
    agree, and every disagreement (the model is wrong there, or the harness is)."""
    cells = list(cells)
    by_id = {c["id"]: c for c in cells}
    rows = []
    for cell in cells:
        other = by_id.get(model_counterpart(cell) or "")
        if other is None:
            continue
        rows.append({"cell": cell["id"], "model": other["id"], "verdict": cell["verdict"],
                     "model_verdict": other["verdict"],
                     "agrees": cell["verdict"] == other["verdict"]})
    return {"pairs": len(rows), "agree": sum(r["agrees"] for r in rows),
            "disagreements": [r for r in rows if not r["agrees"]]}


def endpoint_name(side: Mapping[str, Any]) -> str:
    """`release/machine` of one side of a cell (older files lack the `endpoint` key)."""
    if "endpoint" in side:
        return str(side["endpoint"])
    return f"{side.get('release')}/{side.get('machine')}"


def cell_order_key(results: Mapping[str, Any]):
    """A sort key putting cells in matrix order: source, destination, scenario, seed, id."""
    endpoints = {e: i for i, e in enumerate(results.get("endpoints") or [])}
    scenarios: dict[str, int] = {}
    for i, s in enumerate(results.get("scenarios") or []):
        scenarios.setdefault(str(s), i)
        scenarios.setdefault(str(s).split(":", 1)[0], i)
    big = 1 << 30

    def key(cell: Mapping[str, Any]) -> tuple:
        src = endpoint_name(cell["source"])
        dst = endpoint_name(cell["destination"])
        return (
            endpoints.get(src, big), src,
            endpoints.get(dst, big), dst,
            scenarios.get(cell["scenario"], big), cell["scenario"],
            cell.get("seed") or 0,
            cell["id"],
        )

    return key


# --------------------------------------------------------------------------- merging


def merge_results(
    results_list: Sequence[Mapping[str, Any]],
    names: Sequence[str] | None = None,
    expected_ids: Iterable[str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Merge shard results into one results object; return it and a list of problems.

    Every shard must come from the same matrix (same matrix, driver, endpoints,
    scenarios, total_cells), else ResultsError. Problems are plain dicts
    `{"kind": "duplicate" | "missing" | "missing_shard" | "interrupted", "cell": id or
    None, "message": str}`: a cell present in two shards (the first is kept), cells that
    the matrix has but no shard reported (by id when `expected_ids` is given, else by
    count against `total_cells`), shards never seen, shards that were interrupted. The
    merged object also records them under `"merge"` so the report can show them.
    """
    if not results_list:
        raise ResultsError("nothing to merge: no results given")
    names = list(names) if names is not None else [
        f"results #{i + 1}" for i in range(len(results_list))
    ]
    if len(names) != len(results_list):
        raise ValueError("names must have one entry per results object")
    for res, name in zip(results_list, names, strict=True):
        validate_results(res, name=name)

    first, first_name = results_list[0], names[0]
    for res, name in zip(results_list[1:], names[1:], strict=True):
        for key in _MATRIX_FIELDS:
            if res.get(key) != first.get(key):
                raise ResultsError(
                    f"{name}: {key} {res.get(key)!r} differs from {first_name}'s "
                    f"{first.get(key)!r}: shards must come from the same matrix"
                )
        a, b = res.get("shard"), first.get("shard")
        if (a or {}).get("count") != (b or {}).get("count"):
            raise ResultsError(
                f"{name}: shard count {(a or {}).get('count')} differs from {first_name}'s "
                f"{(b or {}).get('count')}"
            )

    problems: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    cells: list[dict[str, Any]] = []
    for res, name in zip(results_list, names, strict=True):
        if res.get("finished") is None:
            problems.append({
                "kind": "interrupted", "cell": None,
                "message": f"{name}: run was interrupted (finished is null); its cells may be incomplete",
            })
        for cell in res["cells"]:
            cid = cell["id"]
            if cid in seen:
                problems.append({
                    "kind": "duplicate", "cell": cid,
                    "message": f"duplicate cell {cid}: in {seen[cid]} and {name}; kept the first",
                })
                continue
            seen[cid] = name
            cells.append(copy.deepcopy(dict(cell)))

    count = (first.get("shard") or {}).get("count")
    if count:
        present = {r["shard"]["index"] for r in results_list if r.get("shard")}
        dup_shards = len(present) != len([r for r in results_list if r.get("shard")])
        for index in range(1, count + 1):
            if index not in present:
                problems.append({
                    "kind": "missing_shard", "cell": None,
                    "message": f"shard {index}/{count} is missing",
                })
        if dup_shards:
            problems.append({
                "kind": "duplicate_shard", "cell": None,
                "message": "the same shard index was given more than once",
            })

    if expected_ids is not None:
        for cid in expected_ids:
            if cid not in seen:
                problems.append({
                    "kind": "missing", "cell": cid, "message": f"missing cell {cid}",
                })
    else:
        total = first.get("total_cells")
        if isinstance(total, int) and total > len(cells):
            problems.append({
                "kind": "missing", "cell": None,
                "message": f"{total - len(cells)} of {total} cells missing: the matrix has "
                           f"{total} cells, the shards reported {len(cells)}",
            })
        elif isinstance(total, int) and total < len(cells):
            problems.append({
                "kind": "extra", "cell": None,
                "message": f"the shards reported {len(cells)} distinct cells but the matrix "
                           f"has {total}",
            })

    cells.sort(key=cell_order_key(first))
    merged: dict[str, Any] = {k: copy.deepcopy(v) for k, v in first.items()
                              if k not in ("cells", "summary", "merge")}
    hosts = list(dict.fromkeys(str(r.get("host")) for r in results_list if r.get("host")))
    merged["host"] = ", ".join(hosts) if hosts else first.get("host")
    merged["started"] = min(str(r["started"]) for r in results_list)
    finishes = [r.get("finished") for r in results_list]
    merged["finished"] = None if None in finishes else max(str(f) for f in finishes)
    durations = [float(r.get("duration_s") or 0.0) for r in results_list]
    merged["duration_s"] = max(durations) if durations else 0.0
    merged["shard"] = None
    merged["cells"] = cells
    merged["summary"] = summarize(cells)
    merged["merge"] = {
        "sources": names,
        "shards": [r.get("shard") for r in results_list],
        "problems": problems,
    }
    return merged, problems


# --------------------------------------------------------------------------- baseline


def _brief(cell: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if cell is None:
        return None
    return {"verdict": cell["verdict"], "ok": bool(cell["ok"]),
            "expected": list(cell["expected"])}


def diff_against_baseline(
    results: Mapping[str, Any], baseline: Mapping[str, Any]
) -> dict[str, Any]:
    """Compare two runs cell by cell (matched by id).

    Returns plain data: `changed` (verdict differs), `new_unexpected` (unexpected now, and
    expected or absent in the baseline), `fixed` (unexpected in the baseline, met now),
    `added` and `removed` (ids in only one run), each a list of `{"id", "scenario",
    "source", "destination", "before", "after"}` where before/after are
    `{"verdict", "ok", "expected"}` or None; and `baseline`, the baseline's run facts.
    """
    old = {c["id"]: c for c in baseline["cells"]}
    new = {c["id"]: c for c in results["cells"]}
    order = cell_order_key(results)

    def entry(cid: str) -> dict[str, Any]:
        cell = new.get(cid) or old[cid]
        return {
            "id": cid,
            "scenario": cell["scenario"],
            "source": endpoint_name(cell["source"]),
            "destination": endpoint_name(cell["destination"]),
            "before": _brief(old.get(cid)),
            "after": _brief(new.get(cid)),
        }

    changed, new_unexpected, fixed, added = [], [], [], []
    for cell in sorted(new.values(), key=order):
        cid = cell["id"]
        before = old.get(cid)
        if before is None:
            added.append(entry(cid))
            if not cell["ok"]:
                new_unexpected.append(entry(cid))
            continue
        if before["verdict"] != cell["verdict"]:
            changed.append(entry(cid))
        if not cell["ok"] and before["ok"]:
            new_unexpected.append(entry(cid))
        elif cell["ok"] and not before["ok"]:
            fixed.append(entry(cid))
    removed = [entry(cid) for cid in sorted(set(old) - set(new))]
    return {
        "baseline": {
            "matrix": baseline.get("matrix"),
            "started": baseline.get("started"),
            "host": baseline.get("host"),
            "migmatrix_version": baseline.get("migmatrix_version"),
            "summary": summarize(baseline["cells"]),
        },
        "changed": changed,
        "new_unexpected": new_unexpected,
        "fixed": fixed,
        "added": added,
        "removed": removed,
    }
