"""The docker driver: endpoints in two containers, migration over a bridge network; the
containers are started once per driver and each cell's endpoints are forked in them.

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


def _new_pc_cell(scenario: str = "live-ram", time_limit: float = 30) -> Cell:
    ep = Endpoint("new/pc", "new", "pc", 2 << 20)
    return Cell(ep, ep, scenario, 0, ("pass",), "test", None, time_limit)


def test_a_killed_endpoint_is_a_crash_and_everything_is_removed() -> None:
    from harness.drivers.containers import DockerDriver

    before = leftovers()
    with DockerDriver(destination_args=["--x-debug-kill-after", str(64 << 10)]) as driver:
        outcome = driver.run_cell(_new_pc_cell())
    assert classify(outcome) is Verdict.CRASHED, outcome.message
    dest = outcome.extra["endpoints"]["destination"]
    assert dest["argv"][:2] == ["docker", "run"] and dest["exit_code"] == -9
    assert new_leftovers(before) == (set(), set())


def test_a_hung_endpoint_is_killed_through_its_container_and_the_next_cell_runs() -> None:
    """The host cannot signal a process of the container's pid namespace: the timeout
    kills the hung destination through its fork server, and the containers serve on."""
    from harness.drivers.containers import DockerDriver

    class HangsOnce(DockerDriver):
        def endpoint_args(self, cell: Cell, role: str) -> list[str]:
            hang = cell.scenario == "idle" and role == "destination"
            return ["--x-debug-hang-on", "x-dump-state"] if hang else []

    before = leftovers()
    with HangsOnce() as driver:
        hung = driver.run_cell(_new_pc_cell("idle", time_limit=3))
        following = driver.run_cell(_new_pc_cell("live-ram"))
    assert classify(hung) is Verdict.TIMEOUT, (hung.message, hung.harness_error)
    assert hung.extra["endpoints"]["destination"]["exit_code"] == -9
    assert classify(following) is Verdict.PASS, following.message
    assert new_leftovers(before) == (set(), set())


def test_a_container_that_died_between_cells_is_replaced() -> None:
    from harness.drivers.containers import DockerDriver

    before = leftovers()
    with DockerDriver() as driver:
        first = driver.run_cell(_new_pc_cell("idle"))
        driver.launcher.containers["source"].kill()  # type: ignore[attr-defined]
        second = driver.run_cell(_new_pc_cell("idle"))
    assert classify(first) is Verdict.PASS, first.message
    assert classify(second) is Verdict.PASS, (second.message, second.harness_error)
    assert new_leftovers(before) == (set(), set())
