"""Many cells: time per cell as the cell count grows, and one worker against two.

    python bench/matrix_scale.py [--counts 1250,2500,5000,10000] [--jobs-cells 1000]

Generates a matrix of every modelled endpoint (all releases and machine types), every
ordered pair, every scenario, with enough seeds of ``random`` to pass 10,000 cells, then
runs the first N cells in-process for each N (results.json kept current as in
``migmatrix run``), printing seconds per 1,000 cells: linear time means a flat column.
Then runs ``--jobs-cells`` cells with one worker and with ``--jobs 2``: target >= 1.8x.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from harness.emulator.releases import RELEASES
from harness.matrix import load_matrix
from harness.runner import ResultsFile, header, run_cells


def write_matrix(path: Path, seeds: int) -> None:
    lines = ['name = "scale"', 'description = "every endpoint, every pair (generated)"',
             "", "[defaults]", 'ram = "2M"', "time_limit = 30", ""]
    for release in RELEASES.values():
        for mt in release.machines:
            lines += ["[[endpoint]]", f'name = "{release.name}/{mt.name}"', ""]
    lines += ["[scenarios]", 'include = ["*"]',
              f"seeds = {{ random = {list(range(1, seeds + 1))} }}", "",
              "[[expect]]", 'source = "*"', 'destination = "*"',
              'verdicts = ["pass", "rejected"]', 'note = "timing only"', ""]
    path.write_text("\n".join(lines))


def run(cells: list, matrix, out: Path, jobs: int) -> float:
    results = ResultsFile(out / "results.json", header(matrix, "inprocess", None, len(cells)))
    t = time.perf_counter()
    run_cells(cells, results, driver="inprocess", matrix_path=matrix.path, jobs=jobs)
    results.write(finished=True)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", default="1250,2500,5000,10000")
    p.add_argument("--jobs-cells", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=56)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mm-scale-"))
    path = tmp / "scale.toml"
    write_matrix(path, args.seeds)
    matrix = load_matrix(str(path))
    cells = matrix.cells()
    print(f"generated matrix: {len(matrix.endpoints)} endpoints, {len(cells):,} cells "
          f"(cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f})")
    print(f"{'cells':>7} {'seconds':>9} {'s per 1000':>11}")
    for n in (int(x) for x in args.counts.split(",")):
        n = min(n, len(cells))
        s = run(cells[:n], matrix, tmp / f"n{n}", 1)
        print(f"{n:7,} {s:9.2f} {1000 * s / n:11.3f}")
    n = min(args.jobs_cells, len(cells))
    one = run(cells[:n], matrix, tmp / "j1", 1)
    two = run(cells[:n], matrix, tmp / "j2", 2)
    print(f"{n:,} cells: one worker {one:.2f} s, --jobs 2 {two:.2f} s: {one / two:.2f}x "
          f"(target >= 1.8x; {'met' if one / two >= 1.8 else 'NOT met'})")


if __name__ == "__main__":
    main()
