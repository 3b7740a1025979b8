"""`migmatrix report` against results files it did not write, or that were damaged.

A results file is input from outside (a CI artifact, a colleague's upload). Whatever it
holds, `load_results` either returns a document the renderers can draw, or raises
`ResultsError` naming the file and the key; the command prints that one line and exits 2.
Memory and page size stay bounded by what the report shows, not by what the file holds.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.report import ResultsError, build_junit, load_results, render_html
from harness.report.sample import sample_results


def small_results() -> dict[str, Any]:
    """A few cells of the sample with every kind of detail: windows, a cause, diffs."""
    full = sample_results(hostile=True)
    keep = [c for c in full["cells"] if c["verdict"] != "pass"][:6] + full["cells"][:2]
    assert any(c["detail"].get("cause") for c in keep)
    full["cells"] = keep
    full["total_cells"] = len(keep)
    return full


def write(tmp_path: Path, data: Any, name: str = "results.json") -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


def report_fails_in_one_line(path: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("migmatrix report: "), err
    assert str(path) in err
    assert not (tmp_path / "out" / "index.html").exists()  # nothing half-written
    return err


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target: Any = doc
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if isinstance(target, list) else target[k]
    last = keys[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return doc


@pytest.mark.parametrize(("content", "says"), [
    (b"", "not JSON: Expecting value at line 1 column 1"),
    (b"{}", "missing key 'schema'"),
    (b"[1, 2]", "expected a JSON object at the top, got list"),
    (b"\xff\xfe{\x00}", "not UTF-8: byte 0xff at offset 0"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_files_that_are_no_results(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   content: bytes, says: str) -> None:
    assert says in report_fails_in_one_line(write(tmp_path, content), tmp_path, capsys)


def test_a_truncated_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = json.dumps(small_results()).encode()
    err = report_fails_in_one_line(write(tmp_path, text[: len(text) // 2]), tmp_path, capsys)
    assert "not JSON:" in err and "line 1 column" in err


@pytest.mark.parametrize(("path", "value", "says"), [
    ("duration_s", math.nan, "NaN is not a number JSON allows"),
    ("cells.0.duration_s", math.inf, "Infinity is not a number JSON allows"),
    ("cells", 5, "cells: expected list, got integer"),
    ("cells.0.verdict", 5, ".verdict: expected string, got integer"),
    ("cells.0.verdict", "fine", "is not one of pass"),
    ("cells.0.ok", "yes", ".ok: expected boolean, got string"),
    ("cells.0.detail.not_loaded", 5, ".detail.not_loaded: expected list or null"),
    ("cells.0.detail.not_loaded", [5], ".detail.not_loaded[0]: expected string"),
    ("cells.0.detail.diff", [5], ".detail.diff[0]: expected object"),
    ("cells.0.detail.diff", [{"path": 5}], ".detail.diff[0].path: expected string"),
    ("cells.0.detail.window", {"start": -1, "hex": "00"}, ".window.start: expected an offset"),
    ("cells.0.detail.window", {"start": 0, "hex": "zz"}, ".window.hex: not hexadecimal"),
    ("cells.0.detail.window", {"start": 0, "hex": "00", "marks": "x"}, ".window.marks"),
    ("cells.0.detail.cause", {"offset": "x"}, ".detail.cause.offset: expected integer"),
    ("cells.0.detail.cause", {"offset": 1, "rows": [5]}, ".detail.cause.rows[0]"),
    ("cells.0.source", {"endpoint": 5}, ".source.endpoint: expected string"),
    ("cells.0.known_issue", {"text": 5}, ".known_issue.text: expected string"),
    ("cells.0.prediction", {"verdicts": 5}, ".prediction.verdicts: expected list"),
    ("cells.0.commands", {"run": 5}, ".commands.run: expected string"),
    ("endpoints", [5], "endpoints[0]: expected string"),
    ("merge", {"problems": [5]}, "merge.problems[0]: expected object"),
    ("shard", {"index": 3, "count": 2}, "shard: index 3 not within 1..2"),
])
def test_values_of_the_wrong_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  path: str, value: Any, says: str) -> None:
    doc = _set(small_results(), path, value)
    assert says in report_fails_in_one_line(write(tmp_path, doc), tmp_path, capsys)


def test_a_huge_cell_renders_within_bounds(tmp_path: Path) -> None:
    """A 1.2 MB file whose one cell carries 20,000 marks: the page shows 64 of them."""
    doc = small_results()
    cell = next(c for c in doc["cells"] if c["detail"].get("window")
                and not c["detail"].get("cause"))
    start = cell["detail"]["window"]["start"]
    cell["detail"]["window"]["marks"] = [
        {"offset": start + i % 90, "end": start + 96, "kind": "field",
         "label": f"0000:00:01.1/ide/bus[0]/ifs[0]/io_buffer[{i}]"}
        for i in range(20_000)]
    path = write(tmp_path, doc)
    assert path.stat().st_size > 1_200_000
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "index.html").read_text()
    assert len(page) < 400_000
    assert "io_buffer[63]" in page and "io_buffer[64]" not in page


# -- fuzzing: any mutation of a valid file --------------------------------------------------

BASE = small_results()
BASE_TEXT = json.dumps(BASE)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def _paths(doc: Any, prefix: str = "") -> list[str]:
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) \
        if isinstance(doc, list) else []
    for k, v in items:
        here = f"{prefix}.{k}" if prefix else str(k)
        out.append(here)
        out += _paths(v, here)
    return out


PATHS = _paths(BASE)


def _renders_or_refuses(path: Path) -> None:
    try:
        doc = load_results(path)
    except ResultsError:
        return
    render_html(doc)
    build_junit(doc)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(PATHS), json_values)
def test_any_value_anywhere_renders_or_is_refused(tmp_path_factory, path: str,
                                                  value: Any) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    _renders_or_refuses(write(tmp, _set(BASE, path, value)))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(0, len(BASE_TEXT) - 1), st.integers(0, 255)),
                min_size=1, max_size=8), st.integers(0, len(BASE_TEXT)))
def test_any_bytes_render_or_are_refused(tmp_path_factory, flips: list[tuple[int, int]],
                                         cut: int) -> None:
    raw = bytearray(BASE_TEXT.encode())
    for at, byte in flips:
        raw[at] = byte
    tmp = tmp_path_factory.mktemp("fuzz")
    _renders_or_refuses(write(tmp, bytes(raw[:cut] if cut % 3 == 0 else raw)))
