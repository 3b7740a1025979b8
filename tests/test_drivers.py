"""The subprocess driver: same verdicts as the in-process reference, and failures of the
endpoints (killed, stalled, unable to start) become crashed / timeout cells with the
command line, exit code and log tail of each endpoint."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.drivers import DRIVERS, get_driver
from harness.drivers.processes import SubprocessDriver
from harness.matrix import Cell, Endpoint, load_matrix
from harness.runner import ResultsFile, run_cells
from harness.verdict import Verdict, classify

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "matrix" / "default.toml"


def _cell(src: str, dst: str, scenario: str = "idle", *, time_limit: float = 30) -> Cell:
    def ep(name: str) -> Endpoint:
        release, _, machine = name.partition("/")
        return Endpoint(name, release, machine, 2 << 20)

    return Cell(ep(src), ep(dst), scenario, 0, ("pass",), "test", None, time_limit)


def run_matrix(driver: str, cells: list[Cell], jobs: int = 2) -> dict[str, dict]:
    results = ResultsFile(None, {"_t0": time.time()})
    run_cells(cells, results, driver=driver, matrix_path=str(DEFAULT), jobs=jobs)
    return {r["id"]: r for r in results.cells}


def test_the_qmp_drivers_are_registered() -> None:
    assert DRIVERS["subprocess"].startswith("harness.drivers.processes:")
    assert DRIVERS["docker"].startswith("harness.drivers.containers:")
    assert isinstance(get_driver("subprocess"), SubprocessDriver)


@pytest.mark.slow
def test_the_default_matrix_gives_the_same_verdicts_in_processes_as_in_process() -> None:
    cells = load_matrix(DEFAULT).cells()
    reference = run_matrix("inprocess", cells, jobs=1)
    observed = run_matrix("subprocess", cells, jobs=2)
    assert set(observed) == set(reference)
    differ = {i: (reference[i]["verdict"], observed[i]["verdict"], observed[i]["detail"]["message"])
              for i in reference if reference[i]["verdict"] != observed[i]["verdict"]}
    assert differ == {}
    for cell_id, ref in reference.items():
        got = observed[cell_id]
        assert got["stream_bytes"] == ref["stream_bytes"], cell_id
        detail, ref_detail = got["detail"], ref["detail"]
        for key in ("reason", "offset", "section", "field", "bytes_unread", "not_loaded",
                    "diff_total"):
            assert detail[key] == ref_detail[key], (cell_id, key)
        if ref_detail["window"] is not None:
            assert detail["window"] == ref_detail["window"], cell_id
        assert [d["path"] for d in detail["diff"]] == [d["path"] for d in ref_detail["diff"]]


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_a_cell_over_either_transport(transport: str) -> None:
    outcome = SubprocessDriver(transport=transport).run_cell(_cell("0.15/pc", "new/pc-0.14",
                                                                   "live-ram"))
    assert classify(outcome) is Verdict.PASS, outcome.message
    assert outcome.stream_bytes > 1 << 20


@pytest.mark.parametrize("driver", ["inprocess", "subprocess"])
def test_a_source_that_dies_saving_is_a_crash(driver: str) -> None:
    """RHEL 6.1 dies saving a pending media event: in process a SaveCrash, in processes
    the endpoint aborts as the real build dies (SIGSEGV there)."""
    outcome = get_driver(driver).run_cell(_cell("rhel6.1/rhel6.1.0", "rhel6.2/rhel6.2.0",
                                                "atapi-media-event"))
    assert classify(outcome) is Verdict.CRASHED, outcome.message
    assert outcome.message.startswith(("source crashed: ", "source died during the migration"))


class KillingDriver(SubprocessDriver):
    """Kills the destination mid-stream in cells of the ``live-ram`` scenario."""

    def endpoint_args(self, cell: Cell, role: str) -> list[str]:
        if role == "destination" and cell.scenario == "live-ram":
            return ["--x-debug-kill-after", str(64 << 10)]
        return []


def test_killing_the_destination_mid_migration_is_a_crash_and_the_next_cell_runs() -> None:
    driver = KillingDriver()
    killed = driver.run_cell(_cell("new/pc", "new/pc", "live-ram"))
    assert classify(killed) is Verdict.CRASHED, killed.message
    assert "destination" in killed.crash and "SIGKILL" in killed.crash
    dest = killed.extra["endpoints"]["destination"]
    assert dest["exit_code"] == -9
    assert "harness.emulator" in " ".join(dest["argv"])
    assert "--x-debug-kill-after" in dest["argv"]
    assert "log_tail" in dest and "source" in killed.extra["endpoints"]
    following = driver.run_cell(_cell("new/pc", "new/pc", "idle"))
    assert classify(following) is Verdict.PASS, following.message


def test_a_stalled_destination_is_a_timeout_and_both_endpoints_are_stopped() -> None:
    driver = SubprocessDriver(destination_args=["--x-debug-stall-incoming"])
    outcome = driver.run_cell(_cell("new/pc", "new/pc", "idle", time_limit=2))
    assert classify(outcome) is Verdict.TIMEOUT, outcome.message
    endpoints = outcome.extra["endpoints"]
    assert endpoints["destination"]["exit_code"] is not None  # killed, not left behind
    assert "no outcome within 2 s" in outcome.message


def test_an_endpoint_that_cannot_start_is_a_crash_with_its_command_line_and_log() -> None:
    outcome = SubprocessDriver().run_cell(_cell("new/pc", "0.14/bogus"))
    assert classify(outcome) is Verdict.CRASHED
    assert "destination failed to start: exited with status 1" in outcome.crash
    dest = outcome.extra["endpoints"]["destination"]
    assert dest["exit_code"] == 1
    assert dest["argv"][dest["argv"].index("--machine") + 1] == "bogus"
    assert "bogus" in dest["log_tail"]


def test_a_guest_program_the_source_does_not_know_is_a_harness_error() -> None:
    outcome = SubprocessDriver().run_cell(_cell("new/pc", "new/pc", "no-such-program"))
    assert classify(outcome) is Verdict.ERROR
    assert "unknown guest program" in outcome.harness_error


PHASES = [("destination", "migrate-incoming"), ("destination", "query-migrate"),
          ("source", "x-guest-run"), ("source", "migrate"), ("source", "x-dump-state"),
          ("destination", "x-dump-state")]


@pytest.mark.parametrize("role,command", PHASES, ids=[f"{r}-{c}" for r, c in PHASES])
def test_an_endpoint_killed_in_any_qmp_command_is_a_crash_and_the_run_goes_on(
        role: str, command: str) -> None:
    """SIGKILL while the endpoint handles ``command``: the client sees its connection
    break under the command, and the cell is crashed (not a harness error)."""
    args = ["--x-debug-kill-on", command]
    driver = SubprocessDriver(**{f"{role}_args": args})
    killed = driver.run_cell(_cell("new/pc", "new/pc", "idle"))
    assert classify(killed) is Verdict.CRASHED, (killed.message, killed.harness_error)
    assert killed.crash == f"{role} died during {command}: killed by SIGKILL"
    assert killed.extra["endpoints"][role]["exit_code"] == -9
    following = SubprocessDriver().run_cell(_cell("new/pc", "new/pc", "idle"))
    assert classify(following) is Verdict.PASS, following.message


@pytest.mark.parametrize("role,command", [("destination", "migrate-incoming"),
                                          ("source", "migrate"),
                                          ("destination", "x-dump-state")])
def test_an_endpoint_that_hangs_in_a_qmp_command_is_a_timeout(role: str, command: str) -> None:
    driver = SubprocessDriver(**{f"{role}_args": ["--x-debug-hang-on", command]})
    outcome = driver.run_cell(_cell("new/pc", "new/pc", "idle", time_limit=2))
    assert classify(outcome) is Verdict.TIMEOUT, (outcome.message, outcome.harness_error)
    assert "no outcome within 2 s" in outcome.message
    assert all(e["exit_code"] is not None for e in outcome.extra["endpoints"].values())


def test_killed_and_hung_endpoints_leave_the_rest_of_a_run_intact() -> None:
    """A run of cells through run_cells: the crashed and timed-out cells are recorded as
    such and every other cell still runs to its verdict."""

    class Faulty(SubprocessDriver):
        def endpoint_args(self, cell: Cell, role: str) -> list[str]:
            args = super().endpoint_args(cell, role)  # the scenario's media
            if cell.scenario == "ide-pio" and role == "source":
                return [*args, "--x-debug-kill-on", "migrate"]
            if cell.scenario == "serial-configured" and role == "destination":
                return [*args, "--x-debug-hang-on", "x-dump-state"]
            return args

    # Only the hung cell needs a short limit; the others get room on a loaded machine.
    cells = [_cell("new/pc", "new/pc", s, time_limit=3 if s == "serial-configured" else 60)
             for s in ("idle", "ide-pio", "serial-configured", "live-ram")]
    driver = Faulty()
    results = [(c.scenario, classify(driver.run_cell(c))) for c in cells]
    assert results == [("idle", Verdict.PASS), ("ide-pio", Verdict.CRASHED),
                       ("serial-configured", Verdict.TIMEOUT), ("live-ram", Verdict.PASS)]


def test_a_fork_server_child_in_another_pid_namespace_is_killed_through_the_server(
        tmp_path: Path) -> None:
    """A client that cannot signal the child itself (the host of a container) asks the
    server to: the child dies by SIGKILL and its exit status still arrives."""
    import os
    import subprocess
    import sys

    from harness.drivers.processes import PACKAGE_ROOT, fork_endpoint

    sock = tmp_path / "fork.sock"
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    server = subprocess.Popen([sys.executable, "-m", "harness.emulator.endpoint.forkserver",
                               str(sock)], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        args = ["--release", "new", "--machine", "pc", "--ram", "2M",
                "--qmp", f"unix:{tmp_path / 'e.qmp'}"]
        child = fork_endpoint(str(sock), {"argv": args, "log": str(tmp_path / "e.log"),
                                          "cwd": str(tmp_path)}, remote=True)
        assert child is not None
        while not (tmp_path / "e.qmp").exists():  # it runs, waiting for its monitor
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        child.kill()
        assert child.wait(timeout=10) == -9
    finally:
        server.terminate()
        server.wait(10)


def test_the_cells_of_one_source_and_scenario_save_once_and_list_in_matrix_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import scenarios
    from harness.emulator.machine import Machine

    monkeypatch.setattr(scenarios, "_LAST_SAVED", [])  # nothing kept from earlier tests
    saves = []
    real_save = Machine.save

    def counting_save(self: Machine, *args: object, **kwargs: object) -> bytes | None:
        saves.append(self.endpoint)
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Machine, "save", counting_save)
    cells = [_cell(src, dst, scenario)
             for src in ("0.14/pc", "new/pc") for dst in ("0.14/pc", "new/pc-0.14", "new/pc")
             for scenario in ("idle", "ide-bus-error")]
    results = ResultsFile(None, {"_t0": time.time()})
    run_cells(cells, results, driver="inprocess", matrix_path=str(DEFAULT), jobs=1)
    assert sorted(saves) == ["0.14/pc", "0.14/pc", "new/pc", "new/pc"]  # 12 cells, 4 saves
    assert [r["id"] for r in results.cells] == [c.id for c in cells]


def test_a_window_marks_what_the_bytes_mean_past_where_the_writers_own_loader_fails() -> None:
    """The sentinel series cannot load its own stream with two sibling subsections; the
    window after that point still names the writer's fields, as the analyzer reads them."""
    from harness.drivers.inprocess import build_source, stream_window

    cell = _cell("new/pc", "new/pc", "cpu-two-subsections")
    _, stream = build_source(cell)
    window = stream_window(cell, stream, len(stream) - 3, "here")
    labels = [m["label"] for m in window["marks"]]
    assert any(label.startswith("0000:00:01.3/piix4_pm/") for label in labels), labels
    assert labels[-2:] == ["eof", "here"]
