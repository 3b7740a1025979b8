"""Run a matrix's cells with a driver and keep their results.

Results are written as they come (``results.json`` is rewritten atomically at most a few
times a second, with ``finished`` null until the run ends), so an interrupted run keeps
every finished cell. One cell failing to run is an ``error`` cell; the run goes on.

Faults of the run itself: when ``results.json`` cannot be written (a full disk, a
read-only folder), the run stops at once with :class:`ResultsWriteError` (an ``OSError``
naming the file and how many cells the last good write kept); the file on disk is that
last good write, never a torn one. On SIGINT (``KeyboardInterrupt``) no further cell
starts, parallel workers (which ignore SIGINT themselves) are not waited for, and the
caller writes what finished.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import contextlib
import datetime as _dt
import errno
import fcntl
import fnmatch
import json
import os
import platform
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from . import __version__
from .drivers import get_driver
from .emulator.machine import size_text
from .matrix import Cell, Matrix, matrix_ref
from .report.results import SCHEMA, summarize
from .schema import predict_cell
from .verdict import Outcome, classify

__all__ = ["cell_result", "driver_for", "run_cells", "select_cells", "ResultsFile",
           "ResultsWriteError", "OutputBusy", "OutputHoldsFullRun", "lock_output",
           "check_overwrite", "holds_full_run", "is_full_run", "worker_count"]

LOCK_NAME = ".migmatrix.lock"
JOBS_PER_CORE = 4  # endpoint processes mostly wait on I/O; more than this only thrashes


def select_cells(cells: Iterable[Cell], patterns: list[str] | None) -> list[Cell]:
    """Cells whose id matches every pattern: a glob if it has ``*`` or ``?``, else a
    substring (so ``new/pc->new/pc[`` selects one pair)."""
    if not patterns:
        return list(cells)

    def hit(cell_id: str, pattern: str) -> bool:
        if "*" in pattern or "?" in pattern:
            return fnmatch.fnmatchcase(cell_id, pattern)
        return pattern in cell_id

    return [c for c in cells if all(hit(c.id, p) for p in patterns)]


class OutputBusy(Exception):
    """Another run holds the output folder."""


class OutputHoldsFullRun(Exception):
    """A filtered run would replace the results of a full run in the output folder."""


@contextlib.contextmanager
def lock_output(out: Path, holder: str = "migmatrix run") -> Iterator[None]:
    """Hold ``out`` for one run: a second run into the same folder fails at once with
    :class:`OutputBusy` (who holds it, since when) instead of mixing two runs' cells.
    The lock is an ``flock`` on ``out/.migmatrix.lock``: it ends with the process, even
    one that was killed."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another run"
            raise OutputBusy(f"{out}/ is in use by {other}: wait for it to finish, or "
                             "choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder} (pid {os.getpid()}, started {_now()})\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def is_full_run(doc: Any) -> bool:
    """A finished run of every cell of its matrix (no -k, no shard)."""
    if not isinstance(doc, dict) or doc.get("finished") is None or doc.get("shard"):
        return False
    if doc.get("selection"):
        return False
    cells, total = doc.get("cells"), doc.get("total_cells")
    return isinstance(cells, list) and isinstance(total, int) and len(cells) == total > 0


def _previous(out: Path) -> Any:
    try:
        return json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # nothing there, or nothing worth keeping


def holds_full_run(out: Path) -> bool:
    """Whether ``out`` holds the results of a full run (see :func:`is_full_run`)."""
    return is_full_run(_previous(out))


def check_overwrite(out: Path, *, filtered: bool) -> None:
    """Refuse to let a filtered run replace a full run's results in ``out``."""
    if not filtered:
        return
    doc = _previous(out)
    if is_full_run(doc):
        raise OutputHoldsFullRun(
            f"{out}/ holds the full run of matrix {doc.get('matrix')!r} "
            f"({len(doc['cells'])} cells, finished {doc.get('finished')}); a filtered run "
            "would replace it: give another --out (or remove that folder first)")


def worker_count(jobs: int, cells: int) -> int:
    """``--jobs`` as run: at most one worker per cell and JOBS_PER_CORE per core."""
    return max(1, min(jobs, cells, JOBS_PER_CORE * (os.cpu_count() or 1)))


def commands(cell: Cell, matrix_path: str) -> dict[str, str]:
    src, dst = cell.source, cell.destination
    if src.historic or dst.historic:
        from .drivers.historic import cell_commands as historic_commands

        return {**historic_commands(cell),
                "run": _run_command(cell, matrix_path)}
    if src.kind == "qemu":
        from .drivers.qemu import cell_commands

        return {**cell_commands(cell), "run": _run_command(cell, matrix_path)}
    stream = "cell.mig"
    seed = f" --seed {cell.seed}" if cell.seed else ""
    return {
        "save": (
            f"migmatrix save --release {src.release} --machine {src.machine} "
            f"--ram {size_text(src.ram_size)} --scenario {cell.scenario}{seed} -o {stream}"
        ),
        "load": (
            f"migmatrix load --release {dst.release} --machine {dst.machine} "
            f"--ram {size_text(dst.ram_size)} {stream} --dump-state"
        ),
        "run": _run_command(cell, matrix_path),
    }


def _run_command(cell: Cell, matrix_path: str) -> str:
    # A filtered run writes its own report folder (the full report stays where it is).
    return f"migmatrix run --matrix {matrix_ref(matrix_path)} -k '{cell.id}'"


def cell_result(cell: Cell, outcome: Outcome, matrix_path: str, driver: str) -> dict[str, Any]:
    verdict = classify(outcome)
    expected_hit = verdict.value in cell.expected
    known = cell.known_issue is not None
    error = outcome.load_error or {}
    offset = error.get("offset", outcome.extra.get("offset"))
    return {
        "id": cell.id,
        "source": cell.source.to_dict(),
        "destination": cell.destination.to_dict(),
        "scenario": cell.scenario,
        "seed": cell.seed,
        "driver": driver,
        "verdict": verdict.value,
        "expected": list(cell.expected),
        "expected_rule": cell.rule,
        "ok": expected_hit != known,
        "known_issue": cell.known_issue.to_dict() if known else None,
        "unexpected_pass": known and expected_hit,
        "detail": {
            "message": outcome.message,
            "reason": error.get("reason"),
            "errno": error.get("errno"),
            "offset": offset,
            "section": error.get("section"),
            "field": error.get("field"),
            "diff": outcome.diff,
            "diff_total": outcome.diff_total,
            "bytes_unread": outcome.bytes_unread,
            "not_loaded": outcome.not_loaded,
            "window": outcome.window,
            **{k: v for k, v in outcome.extra.items() if k not in ("offset",)},
        },
        "prediction": predict_cell(cell) if cell.source.kind == "emulator" else {
            "verdicts": [], "reason": "no model of real QEMU: observed only"},
        "stream_bytes": outcome.stream_bytes,
        "duration_s": round(outcome.duration_s, 6),
        "commands": commands(cell, matrix_path),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class ResultsWriteError(OSError):
    """``results.json`` could not be written; ``kept`` cells are in the last good file."""

    def __init__(self, path: Path, cause: OSError, kept: int, total: int) -> None:
        self.path, self.cause, self.kept, self.total = path, cause, kept, total
        super().__init__(
            cause.errno or errno.EIO,
            f"cannot write {path}: {cause.strerror or cause}; the run stopped after "
            f"{total} cell(s), {kept} of them kept in the last good {path.name}",
        )


class ResultsFile:
    """``results.json`` kept current while a run goes on (atomic rewrite, throttled)."""

    def __init__(self, path: Path | None, header: dict[str, Any], *, every: float = 0.5):
        self.path = path
        self.header = header
        self.cells: list[dict[str, Any]] = []
        self.every = every
        self._last = 0.0
        self._cost = 0.0  # seconds the last rewrite took
        self.kept = 0  # cells in the last results.json written successfully
        # The matrix's order by cell id: cells run grouped (:func:`execution_order`) are
        # listed in it all the same, while the run goes on too. None: as they come.
        self.order: dict[str, int] | None = None

    def add(self, cell: dict[str, Any]) -> None:
        order = self.order
        if order is None:
            self.cells.append(cell)
        else:
            bisect.insort(self.cells, cell, key=lambda r: order.get(r["id"], len(order)))
        if self.path is not None and time.monotonic() - self._last >= self._wait:
            self.write()

    @property
    def _wait(self) -> float:
        """Seconds between rewrites: ``every``, or four times the last rewrite's cost when
        that is longer, so that rewriting a growing file stays a bounded share of the run
        (a run of N cells costs O(N), not O(N^2)). ``every=0`` rewrites after each cell."""
        return self.every if self.every <= 0 else max(self.every, 4 * self._cost)

    def document(self, finished: bool = False) -> dict[str, Any]:
        doc = dict(self.header)
        doc["finished"] = _now() if finished else None
        doc["cells"] = self.cells
        doc["summary"] = summarize(self.cells)
        return doc

    def write(self, finished: bool = False) -> dict[str, Any]:
        t0 = time.monotonic()
        doc = self.document(finished)
        if finished:
            doc["duration_s"] = round(time.time() - self.header["_t0"], 3)
        doc = {k: v for k, v in doc.items() if not k.startswith("_")}
        if self.path is not None:
            tmp = self.path.with_suffix(".json.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Rewrites while the run goes on are compact (the C encoder: an indented
                # dump runs in Python, 10x slower); the finished file is indented.
                tmp.write_text(json.dumps(doc, indent=1) if finished
                               else json.dumps(doc, separators=(",", ":")))
                os.replace(tmp, self.path)
            except OSError as e:
                try:
                    tmp.unlink(missing_ok=True)  # never leave a torn file behind
                except OSError:
                    pass
                raise ResultsWriteError(self.path, e, self.kept, len(self.cells)) from e
            self.kept = len(self.cells)
        self._last = time.monotonic()
        self._cost = self._last - t0
        return doc


def header(matrix: Matrix, driver: str, shard: tuple[int, int] | None,
           total_cells: int, selection: list[str] | None = None) -> dict[str, Any]:
    releases = sorted({e.release for e in matrix.endpoints})
    return {
        "schema": SCHEMA,
        "matrix": matrix.name,
        "matrix_file": matrix.path,
        "description": matrix.description,
        "driver": driver,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "migmatrix_version": __version__,
        "releases": releases,
        "endpoints": [e.name for e in matrix.endpoints],
        "scenarios": [s for s, _ in matrix.scenarios],
        "shard": {"index": shard[0], "count": shard[1]} if shard else None,
        "selection": list(selection) if selection else None,
        "total_cells": total_cells,
        "excluded": [{"id": i, "reason": r} for i, r in matrix.excluded],
        "started": _now(),
        "_t0": time.time(),
    }


def driver_for(cell: Cell, driver_name: str) -> str:
    """The driver that runs ``cell``: a real build of a modelled release always runs
    under ``historic`` (facing a real build or the model), today's QEMU under ``qemu``."""
    if cell.source.historic or cell.destination.historic:
        return "historic"
    return "qemu" if cell.source.kind == "qemu" or cell.destination.kind == "qemu" \
        else driver_name


def _run_one(driver_name: str, cell: Cell, matrix_path: str) -> dict[str, Any]:
    driver_name = driver_for(cell, driver_name)
    driver = _worker_driver(driver_name)
    try:
        outcome = driver.run_cell(cell)
    except Exception as e:  # a driver bug must not stop the run
        outcome = Outcome(harness_error=f"driver: {type(e).__name__}: {e}", message=str(e))
    return cell_result(cell, outcome, matrix_path, driver_name)


_DRIVERS: dict[str, Any] = {}


def _worker_driver(name: str) -> Any:
    if name not in _DRIVERS:
        _DRIVERS[name] = get_driver(name)
    return _DRIVERS[name]


def run_cells(
    cells: list[Cell],
    results: ResultsFile,
    *,
    driver: str,
    matrix_path: str,
    jobs: int = 1,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Run ``cells`` (in parallel with ``jobs`` > 1, capped by :func:`worker_count`),
    adding each result as it finishes."""
    jobs = worker_count(jobs, len(cells))
    if results.order is None:
        results.order = {c.id: i for i, c in enumerate(cells)}
    if jobs <= 1:
        for cell in execution_order(cells):
            result = _run_one(driver, cell, matrix_path)
            results.add(result)
            if on_result:
                on_result(result)
        return
    pool = concurrent.futures.ProcessPoolExecutor(jobs, initializer=_worker_init)
    try:
        futures = {pool.submit(_run_one, driver, c, matrix_path): c
                   for c in execution_order(cells)}
        for fut in concurrent.futures.as_completed(futures):
            cell = futures[fut]
            try:
                result = fut.result()
            except Exception as e:  # a worker died
                outcome = Outcome(harness_error=f"worker: {type(e).__name__}: {e}", message=str(e))
                result = cell_result(cell, outcome, matrix_path, driver)
            results.add(result)
            if on_result:
                on_result(result)
    except BaseException:
        # Interrupted, or results.json cannot be written: start nothing more and do not
        # wait for the whole queue; the cells already finished stay in ``results``.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def execution_order(cells: list[Cell]) -> list[Cell]:
    """The cells of one source, scenario and seed one after another, the groups in the
    order of their first cell: the source saves once for all its destinations
    (:func:`harness.scenarios.saved_scenario` keeps the last save). Results are listed
    in the matrix's order whatever the execution order."""
    groups: dict[tuple[str, str, int], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.source.name, c.scenario, c.seed), []).append(c)
    return [c for group in groups.values() for c in group]


def _worker_init() -> None:
    """Workers leave SIGINT to the parent, which stops the run and keeps the results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
