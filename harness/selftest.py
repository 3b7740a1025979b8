"""``migmatrix selftest``: does the matrix catch the bugs it exists for?

Runs a matrix once without any seeded bug (the baseline: every cell should meet its
expectation) and once per seeded bug of :mod:`harness.emulator.faults`, and reports per
bug how many cells turned unexpected. A bug is *caught* when at least one cell did. A bug
that slips through is a gap in the scenario catalogue.

The bug is switched on in this process (and, through ``MIGMATRIX_SEEDED_BUG``, in every
worker or endpoint process started while it is on).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .emulator import faults
from .matrix import Cell, load_matrix
from .runner import ResultsFile, run_cells, select_cells

__all__ = ["BugResult", "configure_parser", "format_table", "run_selftest"]


@dataclass
class BugResult:
    bug: str  # "(none)" for the baseline
    summary: str
    cells: int = 0
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def caught(self) -> bool:
        return bool(self.unexpected)

    @property
    def example(self) -> str:
        if not self.unexpected:
            return ""
        r = self.unexpected[0]
        return f"{r['id']}: {r['verdict']} (expected {'|'.join(r['expected'])})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "bug": self.bug, "summary": self.summary, "cells": self.cells,
            "unexpected": len(self.unexpected), "caught": self.caught,
            "example": self.example, "unexpected_ids": [r["id"] for r in self.unexpected],
            "seconds": round(self.seconds, 3),
        }  # fmt: skip


BASELINE = "(none)"


def _run(cells: list[Cell], matrix_path: str, driver: str, jobs: int) -> list[dict[str, Any]]:
    results = ResultsFile(None, {"_t0": time.time()})
    run_cells(cells, results, driver=driver, matrix_path=matrix_path, jobs=jobs)
    return results.cells


def run_selftest(
    matrix_path: str = "default",
    bugs: list[str] | None = None,
    *,
    jobs: int = 1,
    driver: str = "inprocess",
    patterns: list[str] | None = None,
    baseline: bool = True,
    on_bug: Any = None,
) -> list[BugResult]:
    """Run the matrix per bug (and first without one); returns one row each."""
    matrix = load_matrix(matrix_path)
    cells = select_cells(matrix.cells(), patterns)
    names = list(faults.BUGS) if not bugs else bugs
    for name in names:
        if name not in faults.BUGS:
            raise KeyError(f"unknown seeded bug {name!r} (known: {', '.join(faults.BUGS)})")
    plan: list[tuple[str | None, str]] = [(None, "no seeded bug")] if baseline else []
    plan += [(n, faults.BUGS[n].summary) for n in names]
    out: list[BugResult] = []
    for name, summary in plan:
        t0 = time.perf_counter()
        with faults.activate(name):
            results = _run(cells, matrix.path, driver, jobs)
        row = BugResult(name or BASELINE, summary, len(results),
                        [r for r in results if not r["ok"]], time.perf_counter() - t0)
        out.append(row)
        if on_bug is not None:
            on_bug(row)
    return out


def format_table(rows: list[BugResult]) -> str:
    head = ("bug", "cells", "unexpected", "caught", "example")
    body = []
    for r in rows:
        caught = "-" if r.bug == BASELINE else ("yes" if r.caught else "NO")
        body.append((r.bug, str(r.cells), str(len(r.unexpected)), caught, r.example))
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head[:4], widths, strict=True)) + "  " + head[4]]
    for b in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(b[:4], widths, strict=True))
                     + "  " + b[4])
    return "\n".join(lines)


def _cmd_selftest(args: argparse.Namespace) -> int:
    import json

    rows = run_selftest(args.matrix, args.bug, jobs=args.jobs, driver=args.driver,
                        patterns=args.k)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=1))
    else:
        print(format_table(rows))
    base = next((r for r in rows if r.bug == BASELINE), None)
    missed = [r.bug for r in rows if r.bug != BASELINE and not r.caught]
    if base is not None and base.unexpected:
        print(f"selftest: the matrix is not green without a seeded bug ({len(base.unexpected)} "
              "unexpected cell(s)): its verdicts on seeded bugs mean little", file=sys.stderr)
        return 1
    if missed:
        print(f"selftest: not caught: {', '.join(missed)} (a gap in the scenario catalogue)",
              file=sys.stderr)
        return 1
    print(f"selftest: every seeded bug caught ({len(rows) - (base is not None)})",
          file=sys.stderr)
    return 0


def configure_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``selftest`` to the ``migmatrix`` sub-commands."""
    s = subparsers.add_parser("selftest", help="run the matrix once per seeded bug")
    s.add_argument("--matrix", default="default", metavar="FILE|NAME",
                   help="a matrix file or a shipped matrix's name (default: default)")
    s.add_argument("--bug", action="append", metavar="NAME",
                   help=f"only this seeded bug (repeatable; known: {', '.join(faults.BUGS)})")
    s.add_argument("-k", action="append", metavar="EXPR", help="only cells matching EXPR")
    s.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="cells run in parallel worker processes (default 1)")
    s.add_argument("--driver", default="inprocess", help="how endpoints run (default inprocess)")
    s.add_argument("--json", action="store_true", help="the table as JSON")
    s.set_defaults(func=_cmd_selftest)
    return s
