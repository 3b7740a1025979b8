"""Size of the HTML report of the shipped matrices, against the target: history < 2 MB.

    python bench/report_size.py                      # this tree
    python bench/report_size.py --tree ../other      # another checkout, for a before figure

Runs ``migmatrix run`` of the default and history matrices in a fresh process (with the
tree's own code) and prints the sizes of index.html and results.json, and the time of
each run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 2_000_000  # bytes of the history matrix's index.html


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", default=".", help="the checkout whose code renders (default .)")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    tree = Path(args.tree).resolve()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    sizes = {}
    for name in ("default", "history"):
        out = Path(tempfile.mkdtemp(prefix=f"mm-report-{name}-"))
        argv = [sys.executable, "-m", "harness.cli", "run", "-q", "--matrix",
                str(tree / "matrix" / f"{name}.toml"), "--out", str(out), "--jobs",
                str(args.jobs)]
        t = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=tree, env=env)
        wall = time.perf_counter() - t
        if not (out / "index.html").exists():
            sys.exit(f"{name}: no report (exit {proc.returncode}): {proc.stderr[-2000:]}")
        sizes[name] = (out / "index.html").stat().st_size
        print(f"{name}: index.html {sizes[name] / 1e6:.2f} MB, results.json "
              f"{(out / 'results.json').stat().st_size / 1e6:.2f} MB, run {wall:.1f} s")
    met = sizes["history"] < TARGET
    print(f"target: history report < {TARGET / 1e6:.0f} MB ({'met' if met else 'NOT met'})")


if __name__ == "__main__":
    main()
