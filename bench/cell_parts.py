"""One passing cell, the save of its source and a machine's construction, each repeated in
one process: the median of each (the parts of a default-matrix cell, alone).

    python bench/cell_parts.py
    PYTHONPATH=OLD_TREE python bench/cell_parts.py    # an earlier checkout, to alternate

Compare trees by alternating the two commands run by run: on a shared machine only
figures taken side by side mean anything.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from harness.drivers.inprocess import InProcessDriver
from harness.emulator.machine import Machine
from harness.matrix import load_matrix

CELL = "new/pc->new/pc[ide-pio]"


def median_ms(f: Callable[[], object], n: int) -> tuple[float, float]:
    """Median and 10th percentile of ``n`` calls, in ms."""
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        xs.append(time.perf_counter() - t)
    xs.sort()
    return statistics.median(xs) * 1e3, xs[n // 10] * 1e3


def main() -> None:
    matrix = load_matrix(Path(__file__).resolve().parent.parent / "matrix" / "default.toml")
    cell = next(c for c in matrix.cells() if c.id == CELL)
    driver = InProcessDriver()
    driver.run_cell(cell)  # the source's save is kept: what follows is the cell alone
    src = cell.source
    results = {
        "passing cell": median_ms(lambda: driver.run_cell(cell), 150),
        "save of its source": median_ms(
            lambda: Machine(src.release, src.machine, src.ram_size, src.nic, (),
                            src.vga).save(), 80),
        "construction": median_ms(lambda: Machine("new", "pc", 2 << 20), 400),
    }
    for name, (median, p10) in results.items():
        print(f"{name}: median {median:.2f} ms, 10th percentile {p10:.2f} ms ({CELL})")


if __name__ == "__main__":
    main()
