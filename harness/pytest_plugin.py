"""Matrix cells as pytest items.

``pytest matrix/default.toml`` collects one item per cell, with ids such as
``0.14/pc->new/pc-0.14[ide-bus-error]``. An item fails when its verdict is not expected;
a cell with a known issue behaves like xfail, and one that unexpectedly passes fails with
a note to update the matrix. ``-k``, ``-m`` (markers ``migmatrix``, ``known_issue``,
``scenario(name)``) and pytest-xdist work; results are gathered on the controller only,
which writes ``results.json``, ``junit.xml`` and ``index.html`` to ``--migmatrix-out``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

__all__ = ["MatrixFile", "MatrixCellItem"]

RESULTS_KEY = pytest.StashKey["Any"]()
_PROPERTY = "migmatrix_result"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("migmatrix")
    group.addoption("--migmatrix-out", default=None, metavar="DIR",
                    help="write results.json, junit.xml and index.html here")
    group.addoption("--migmatrix-driver", default=None, help="driver for every cell")
    group.addoption("--migmatrix-shard", default=None, metavar="I/N",
                    help="only the I-th of N deterministic slices of the cells")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "migmatrix: a migration matrix cell")
    config.addinivalue_line("markers", "known_issue: a cell with a known-issue note")
    config.addinivalue_line("markers", "scenario(name): the cell's scenario")


def _is_matrix_file(file_path: Path) -> bool:
    return file_path.suffix == ".toml" and file_path.parent.name == "matrix"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if _is_matrix_file(file_path):
        return MatrixFile.from_parent(parent, path=file_path)
    return None


class MatrixFile(pytest.File):
    def collect(self) -> Any:
        from .cli import _parse_shard
        from .matrix import load_matrix

        matrix = load_matrix(self.path)
        config = self.config
        driver = config.getoption("--migmatrix-driver") or matrix.driver
        shard = _parse_shard(config.getoption("--migmatrix-shard"))
        state = config.stash.get(RESULTS_KEY, None)
        if state is not None and state.get("matrix") is None:
            state["matrix"] = matrix
            state["driver"] = driver
            state["shard"] = shard
            state["total"] = len(matrix.cells())
        from .runner import execution_order

        cells = matrix.cells(shard=shard)
        if state is not None:
            order = state.setdefault("order", {})
            order.update({c.id: len(order) + i for i, c in enumerate(cells)})
        for cell in execution_order(cells):  # one save per source and scenario
            item = MatrixCellItem.from_parent(self, name=cell.id, cell=cell, driver=driver,
                                              matrix_path=matrix.path)
            item.add_marker("migmatrix")
            item.add_marker(pytest.mark.scenario(cell.scenario))
            if cell.known_issue is not None:
                item.add_marker("known_issue")
            yield item


class MatrixCellFailure(Exception):
    pass


class MatrixCellItem(pytest.Item):
    def __init__(self, *, cell: Any, driver: str, matrix_path: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.cell = cell
        self.driver = driver
        self.matrix_path = matrix_path

    def runtest(self) -> None:
        from .runner import _run_one

        result = _run_one(self.driver, self.cell, self.matrix_path)
        self.user_properties.append((_PROPERTY, result))
        verdict = result["verdict"]
        why = result["detail"]["message"]
        if result["unexpected_pass"]:
            raise MatrixCellFailure(
                f"known issue passed unexpectedly ({verdict}): update the matrix's known_issue "
                f"note ({self.cell.known_issue.text})"
            )
        if result["known_issue"] is not None:
            pytest.xfail(f"known issue: {result['known_issue']['text']} [{verdict}: {why}]")
        if not result["ok"]:
            raise MatrixCellFailure(
                f"verdict {verdict}, expected {'|'.join(result['expected'])} "
                f"({result['expected_rule']}): {why}"
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, MatrixCellFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.cell.id


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if _is_controller(config):
        out = config.getoption("--migmatrix-out")
        lock = contextlib.ExitStack()
        if out:
            from .runner import OutputBusy, lock_output

            try:
                lock.enter_context(lock_output(Path(out), "pytest --migmatrix-out"))
            except OutputBusy as e:
                raise pytest.UsageError(str(e)) from None
        config.stash[RESULTS_KEY] = {
            "matrix": None, "results": None, "out": Path(out) if out else None, "lock": lock,
        }


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(RESULTS_KEY, None)
    if state is not None:
        state["lock"].close()  # the output folder is free for the next run


def _ensure_matrix(config: pytest.Config, state: dict[str, Any]) -> bool:
    """The controller under xdist does not collect: load the matrix it was given."""
    if state.get("matrix") is not None:
        return True
    from .cli import _parse_shard
    from .matrix import load_matrix

    for arg in config.args:
        path = Path(arg.split("::")[0])
        if _is_matrix_file(path):
            matrix = load_matrix(path)
            state["matrix"] = matrix
            state["driver"] = config.getoption("--migmatrix-driver") or matrix.driver
            state["shard"] = _parse_shard(config.getoption("--migmatrix-shard"))
            state["total"] = len(matrix.cells())
            state["order"] = {c.id: i for i, c in enumerate(matrix.cells(shard=state["shard"]))}
            return True
    return False


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == _PROPERTY:
            _add_result(value)


_SESSION: dict[str, Any] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    _SESSION["config"] = session.config


def _add_result(result: dict[str, Any]) -> None:
    config = _SESSION.get("config")
    if config is None or not _is_controller(config):
        return
    state = config.stash.get(RESULTS_KEY, None)
    if state is None or not _ensure_matrix(config, state):
        return
    if state["results"] is None:
        from .runner import ResultsFile, header, holds_full_run

        out = state["out"]
        selection = _selection(config)
        if out is not None and (selection or state["shard"]) and holds_full_run(out):
            # A filtered session (-k, -m, a shard) never replaces the full report.
            out = state["out"] = out / "selected"
        state["results"] = ResultsFile(
            out / "results.json" if out else None,
            header(state["matrix"], state["driver"], state["shard"], state["total"],
                   selection=selection),
        )
        state["results"].order = state.get("order") or None
    state["results"].add(result)


def _selection(config: pytest.Config) -> list[str]:
    """The session's filters, as the report names them."""
    out = [config.option.keyword] if config.option.keyword else []
    if config.option.markexpr:
        out.append(f"(marker {config.option.markexpr})")
    return out


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not _is_controller(config):
        return
    state = config.stash.get(RESULTS_KEY, None)
    if not state or state.get("results") is None or state.get("out") is None:
        return
    from .report import write_reports

    order = state.get("order") or {}
    state["results"].cells.sort(key=lambda r: order.get(r["id"], len(order)))
    doc = state["results"].write(finished=True)
    write_reports(doc, state["out"], results_json=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    state = terminalreporter.config.stash.get(RESULTS_KEY, None)
    if not state or state.get("matrix") is None or state.get("out") is None:
        return
    if state.get("results") is None:
        terminalreporter.write_line(f"migmatrix: no cell ran; nothing written to {state['out']}/")
        return
    out = state["out"]
    note = " (a filtered run: the full report one folder up is kept)" \
        if out.name == "selected" and out != Path(terminalreporter.config.getoption(
            "--migmatrix-out")) else ""
    terminalreporter.write_line(
        f"migmatrix: reports in {out}/ (index.html, results.json, junit.xml){note}")
