"""The docker driver: endpoints in two containers, migration over a bridge network.

Needs a Docker engine (``DOCKER_HOST``) and the endpoint image built from this checkout
(containers/README.md). Without them the tests skip, saying why; in CI (``CI=true``) a
missing engine or image fails them instead.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.drivers.containers import engine_problem
from harness.matrix import Cell, Endpoint, load_matrix
from harness.runner import ResultsFile, run_cells
from harness.verdict import Verdict, classify

from .ci import require

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "matrix" / "default.toml"
# Every pair with the scenarios that reach every verdict of the default matrix.
SUBSET = {"idle", "collide-0x05", "collide-eof", "live-ram", "cpu-two-subsections"}


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    require(engine_problem(), "docker tests")


def leftovers() -> tuple[set[str], set[str]]:
    """Ids of the project's containers and networks on the engine."""
    import docker

    client = docker.from_env()
    try:
        return ({c.id for c in client.containers.list(all=True, filters={"label": "migmatrix"})},
                {n.id for n in client.networks.list(filters={"label": "migmatrix"})})
    finally:
        client.close()


def new_leftovers(before: tuple[set[str], set[str]]) -> tuple[set[str], set[str]]:
    """What a test left behind (an engine may hold remains of an earlier, killed run)."""
    after = leftovers()
    return after[0] - before[0], after[1] - before[1]


def run(driver: str, cells: list[Cell]) -> dict[str, dict]:
    results = ResultsFile(None, {"_t0": time.time()})
    run_cells(cells, results, driver=driver, matrix_path=str(DEFAULT), jobs=2)
    return {r["id"]: r for r in results.cells}


@pytest.mark.slow
def test_the_default_matrix_subset_gives_the_same_verdicts_in_containers() -> None:
    before = leftovers()
    cells = [c for c in load_matrix(DEFAULT).cells() if c.scenario in SUBSET]
    reference = run("inprocess", cells)
    observed = run("docker", cells)
    assert {i: r["verdict"] for i, r in observed.items()} == {
        i: r["verdict"] for i, r in reference.items()}
    for cell_id, ref in reference.items():
        if ref["detail"]["window"] is not None:
            assert observed[cell_id]["detail"]["window"] == ref["detail"]["window"]
    assert new_leftovers(before) == (set(), set())


def test_a_killed_container_is_a_crash_and_everything_is_removed() -> None:
    from harness.drivers.containers import DockerDriver

    before = leftovers()
    ep = Endpoint("new/pc", "new", "pc", 2 << 20)
    cell = Cell(ep, ep, "live-ram", 0, ("pass",), "test", None, 30)
    with DockerDriver(destination_args=["--x-debug-kill-after", str(64 << 10)]) as driver:
        outcome = driver.run_cell(cell)
    assert classify(outcome) is Verdict.CRASHED, outcome.message
    dest = outcome.extra["endpoints"]["destination"]
    assert dest["argv"][:2] == ["docker", "run"] and dest["exit_code"] not in (None, 0)
    assert new_leftovers(before) == (set(), set())
