"""``migmatrix run`` end to end on a matrix, as a user runs it: wall time and cell times.

    python bench/matrix_run.py                                  # default matrix, in-process
    python bench/matrix_run.py --driver subprocess [-k 0.14/pc->]
    python bench/matrix_run.py --driver docker -k 0.14/pc->0.14/pc

Runs the command in a fresh process (interpreter start, matrix load, every cell,
results.json, junit.xml and index.html included) and reads its results.json. Prints the
wall time, the wall time per cell, and the median and slowest cell (``duration_s``),
against the targets: in-process, the default matrix in at most 3 s with a median cell of
at most 5 ms; subprocess at most 150 ms per cell; docker at most 1 s per cell.

The tree's bytecode is compiled beforehand into a scratch pycache, as an installed
package's is (with ``PYTHONDONTWRITEBYTECODE`` set, as on these machines, every run would
compile every module first: 0.15-0.3 s). ``--repeat N`` runs the command N times and
prints each run and the median of the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"inprocess": ("whole run <= 3 s, median cell <= 5 ms", 3.0, 0.005),
           "subprocess": ("<= 150 ms per cell", None, 0.150),
           "docker": ("<= 1 s per cell", None, 1.0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--matrix", default="matrix/default.toml")
    p.add_argument("--driver", default="inprocess", choices=sorted(TARGETS))
    p.add_argument("-k", action="append", default=[])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="mm-pycache-")
    package = subprocess.run(  # the tree the command imports (PYTHONPATH may name another)
        [sys.executable, "-c", "import harness, os; print(os.path.dirname(harness.__file__))"],
        env=env, check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], env=env, check=True)
    runs = [run_once(args, env) for _ in range(args.repeat)]
    if len(runs) > 1:
        walls = [w for w, _ in runs]
        medians = [m for _, m in runs]
        print(f"{len(runs)} runs: wall median {statistics.median(walls):.2f} s "
              f"(best {min(walls):.2f}), median cell median "
              f"{1000 * statistics.median(medians):.1f} ms (best {1000 * min(medians):.1f})")
    wall, median = (statistics.median(x) for x in zip(*runs, strict=True))
    text, whole, per_cell = TARGETS[args.driver]
    if args.driver == "inprocess":
        met = wall <= whole and median <= per_cell
    else:
        met = wall <= per_cell  # per cell, for these drivers
    print(f"target: {text} ({'met' if met else 'NOT met'})")


def run_once(args: argparse.Namespace, env: dict[str, str]) -> tuple[float, float]:
    """One run: (wall time, median cell) for the in-process target, (wall time per cell,
    median cell) for the others."""
    out = Path(tempfile.mkdtemp(prefix="mm-run-"))
    argv = [sys.executable, "-m", "harness.cli", "run", "-q", "--matrix", args.matrix,
            "--driver", args.driver, "--out", str(out), "--jobs", str(args.jobs)]
    for k in args.k:
        argv += ["-k", k]
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if not (out / "results.json").exists():
        sys.exit(f"no results (exit {proc.returncode}): {proc.stderr[-2000:]}")
    doc = json.loads((out / "results.json").read_text())
    cells = doc["cells"]
    durations = sorted(c["duration_s"] for c in cells)
    median = statistics.median(durations)
    print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "")
    print(f"{args.driver}: {len(cells)} cells; wall {wall:.2f} s ({1000 * wall / len(cells):.1f} "
          f"ms per cell); cells: median {1000 * median:.1f} ms, slowest "
          f"{1000 * durations[-1]:.1f} ms, sum {sum(durations):.2f} s")
    shutil.rmtree(out, ignore_errors=True)
    return (wall if args.driver == "inprocess" else wall / len(cells)), median


if __name__ == "__main__":
    main()
