"""Faults of a run that need no endpoint process: a driver that raises, a results file
that cannot be written (a full disk), SIGINT during ``migmatrix run``.

Each ends with the right verdict or a clean stop; what finished is kept and
``migmatrix report`` renders it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from html import escape as html_escape
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.cli import main
from harness.drivers import DRIVERS, Driver
from harness.drivers.inprocess import InProcessDriver
from harness.matrix import Cell, load_matrix
from harness.runner import ResultsFile, ResultsWriteError, header, run_cells
from harness.verdict import Outcome

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "matrix" / "default.toml"
HISTORY = ROOT / "matrix" / "history.toml"


class FlakyDriver(Driver):
    """In-process, except that cells of one scenario make the driver itself raise."""

    name = "flaky"
    fail_on = "ide-pio"

    def run_cell(self, cell: Cell) -> Outcome:
        if cell.scenario == self.fail_on:
            raise RuntimeError("driver lost its endpoint")
        return InProcessDriver().run_cell(cell)


class InterruptingDriver(Driver):
    """Behaves as if SIGINT arrived while the fourth cell ran."""

    name = "interrupting"
    calls = 0

    def run_cell(self, cell: Cell) -> Outcome:
        type(self).calls += 1
        if type(self).calls == 4:
            raise KeyboardInterrupt
        return InProcessDriver().run_cell(cell)


@pytest.fixture
def fake_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DRIVERS, "flaky", f"{__name__}:FlakyDriver")
    monkeypatch.setitem(DRIVERS, "interrupting", f"{__name__}:InterruptingDriver")
    monkeypatch.setattr(runner, "_DRIVERS", {})
    InterruptingDriver.calls = 0


def _cells(k: str) -> tuple[Any, list[Cell]]:
    m = load_matrix(DEFAULT)
    return m, [c for c in m.cells() if k in c.id]


def test_a_cell_whose_driver_raises_is_an_error_and_the_rest_still_run(fake_drivers: None) -> None:
    m, cells = _cells("0.14/pc->0.14/pc[")
    results = ResultsFile(None, header(m, "flaky", None, len(cells)))
    run_cells(cells, results, driver="flaky", matrix_path=m.path)
    by_scenario = {r["scenario"]: r for r in results.cells}
    assert len(results.cells) == len(cells)
    bad = by_scenario["ide-pio"]
    assert bad["verdict"] == "error" and not bad["ok"]
    assert "driver lost its endpoint" in bad["detail"]["message"]
    assert by_scenario["idle"]["verdict"] == "pass" and by_scenario["idle"]["ok"]


def test_a_full_disk_stops_the_run_and_keeps_the_last_good_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m, cells = _cells("0.14/pc->0.14/pc[")
    path = tmp_path / "results.json"
    results = ResultsFile(path, header(m, "inprocess", None, len(cells)), every=0)
    real = Path.write_text
    writes = {"n": 0}

    def write_text(self: Path, text: str, *a: Any, **k: Any) -> int:
        if self.name.endswith(".json.tmp"):
            writes["n"] += 1
            if writes["n"] > 3:
                real(self, text[: len(text) // 2])  # the disk filled up half-way
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(ResultsWriteError) as info:
        run_cells(cells, results, driver="inprocess", matrix_path=m.path)
    e = info.value
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC
    assert e.kept == 3 and e.total == 4 and "No space left" in str(e)
    doc = json.loads(path.read_text())  # the last good write, not a torn one
    assert len(doc["cells"]) == 3 and doc["finished"] is None
    assert not path.with_suffix(".json.tmp").exists()
    assert len(results.cells) == 4 < len(cells)  # no cell ran after the failure


def test_migmatrix_run_on_a_full_disk_exits_1_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = Path.write_text

    def write_text(self: Path, text: str, *a: Any, **k: Any) -> int:
        if self.name == "results.json.tmp" and '"finished": null' not in text:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", write_text)
    out = tmp_path / "out"
    code = main(["run", "--matrix", str(DEFAULT), "-k", "0.14/pc->0.14/pc[", "-q",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot write" in err and "No space left on device" in err
    assert not (out / "results.json.tmp").exists()


def test_an_interrupt_keeps_partial_results_that_report_renders(
    fake_drivers: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["run", "--matrix", str(DEFAULT), "-k", "0.14/pc->", "-q", "--out", str(out),
                 "--driver", "interrupting"])
    assert code == 130
    doc = json.loads((out / "results.json").read_text())
    assert doc["finished"] is None and len(doc["cells"]) == 3
    report = tmp_path / "report"
    assert main(["report", str(out / "results.json"), "--out", str(report)]) == 0
    html = (report / "index.html").read_text()
    assert html_escape(doc["cells"][0]["id"]) in html or doc["cells"][0]["id"] in html


def _run_and_interrupt(tmp_path: Path, jobs: int) -> tuple[int, dict[str, Any], float]:
    out = tmp_path / f"out{jobs}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--matrix", str(HISTORY), "-q",
         "--jobs", str(jobs), "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    results = out / "results.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until some cells are on disk
        try:
            if len(json.loads(results.read_text())["cells"]) >= 5:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    return code, json.loads(results.read_text()), time.monotonic() - t0


@pytest.mark.parametrize("jobs", [1, 2])
def test_sigint_during_migmatrix_run_stops_cleanly(tmp_path: Path, jobs: int) -> None:
    code, doc, _ = _run_and_interrupt(tmp_path, jobs)
    total = doc["total_cells"]
    assert code == 130
    assert doc["finished"] is None
    assert 5 <= len(doc["cells"]) < total  # stopped: the queue was not run to its end
    assert all(c["verdict"] != "error" for c in doc["cells"])
    assert main(["report", str(tmp_path / f"out{jobs}" / "results.json"),
                 "--out", str(tmp_path / f"report{jobs}")]) == 0


def test_results_json_lists_cells_in_the_matrixs_order_while_the_run_goes_on(
        tmp_path: Path) -> None:
    """Cells run grouped by source and scenario (one save each), yet every rewrite of
    results.json lists those finished so far in the matrix's order."""
    from harness.runner import execution_order

    m, cells = _cells("0.14/pc->")
    assert [c.id for c in execution_order(cells)] != [c.id for c in cells]
    path = tmp_path / "results.json"
    results = ResultsFile(path, header(m, "inprocess", None, len(cells)), every=0)
    index = {c.id: i for i, c in enumerate(cells)}
    seen: list[list[int]] = []

    def check(_: dict[str, Any]) -> None:
        seen.append([index[c["id"]] for c in json.loads(path.read_text())["cells"]])

    run_cells(cells, results, driver="inprocess", matrix_path=m.path, on_result=check)
    assert len(seen) == len(cells) and all(s == sorted(s) for s in seen), seen
    assert [c["id"] for c in results.cells] == [c.id for c in cells]
