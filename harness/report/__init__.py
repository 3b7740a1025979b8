"""Reports of a matrix run: results.json, JUnit XML and a self-contained HTML page.

The runner hands `write_reports` the results object (schema `migmatrix/results/1`, see
`results.py`); `migmatrix report` reloads saved results with `load_results`, merges CI
shards with `merge_results` and renders again. The HTML is rendered from jinja2 templates
shipped as package data, with autoescape on: everything that came from a stream is text.

Errors: `ResultsError` (a ValueError) for a results file or object that does not match the
schema, or shards that do not come from the same matrix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..shards import shard_cells, shard_of
from .html import render_html
from .junit import build_junit, write_junit
from .results import (
    SCHEMA,
    VERDICTS,
    ResultsError,
    diff_against_baseline,
    load_results,
    merge_results,
    summarize,
    validate_results,
)

__all__ = [
    "SCHEMA",
    "VERDICTS",
    "ResultsError",
    "load_results",
    "validate_results",
    "summarize",
    "shard_of",
    "shard_cells",
    "merge_results",
    "diff_against_baseline",
    "build_junit",
    "write_junit",
    "render_html",
    "write_results",
    "write_reports",
]


def _write_text(path: Path, text: str) -> Path:
    """Write via a temporary file and rename, so a reader never sees half a report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_results(results: Mapping[str, Any], path: str | Path) -> Path:
    """Write `results` as pretty-printed JSON (UTF-8, trailing newline)."""
    return _write_text(Path(path), json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def write_reports(
    results: Mapping[str, Any],
    out_dir: str | Path,
    baseline: Mapping[str, Any] | None = None,
    *,
    results_json: bool = True,
) -> dict[str, Path]:
    """Write results.json (unless `results_json` is false), junit.xml and index.html.

    `out_dir` is created if needed. Returns the paths written, keyed "results", "junit"
    and "html". The results are validated first, so a bad object fails before any file
    is touched.
    """
    validate_results(results, name="results")
    if baseline is not None:
        validate_results(baseline, name="baseline")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html = render_html(results, baseline)
    paths: dict[str, Path] = {}
    if results_json:
        paths["results"] = write_results(results, out / "results.json")
    paths["junit"] = write_junit(results, out / "junit.xml")
    paths["html"] = _write_text(out / "index.html", html)
    return paths
