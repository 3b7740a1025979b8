"""The endpoint process (``python -m harness.emulator``) speaks QMP as QEMU does.

Protocol tests use a bare socket, so they see the bytes a client sees; migration tests
drive two endpoint processes with qemu.qmp's synchronous client, as a harness would.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.drivers.inprocess import build_source
from harness.emulator.endpoint.qmp import JSONStreamer
from harness.matrix import Cell, Endpoint

REPO = Path(__file__).resolve().parents[1]


class Proc:
    """One endpoint process with its QMP socket and captured stderr."""

    def __init__(self, tmp: Path, name: str, *args: str) -> None:
        self.qmp_path = str(tmp / f"{name}.qmp")
        self.argv = [sys.executable, "-m", "harness.emulator", "--ram", "2M",
                     "--qmp", f"unix:{self.qmp_path}", *args]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.stderr_path = tmp / f"{name}.err"
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(self.argv, stdout=self._err, stderr=self._err, env=env)
        self.monitors: list[QEMUMonitorProtocol] = []
        deadline = time.monotonic() + 20
        while not os.path.exists(self.qmp_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"endpoint did not start: {self.stderr()}")
            time.sleep(0.01)

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text()

    def qmp(self) -> QEMUMonitorProtocol:
        mon = QEMUMonitorProtocol(self.qmp_path)
        mon.connect(negotiate=True)
        self.monitors.append(mon)
        return mon

    def raw(self) -> RawClient:
        return RawClient(self.qmp_path)

    def close(self) -> None:
        for mon in self.monitors:
            with contextlib.suppress(Exception):
                mon.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._err.close()


class RawClient:
    """A QMP client that shows exactly what the server sends."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.sock.settimeout(10)
        self.file = self.sock.makefile("rb")

    def recv(self) -> dict:
        line = self.file.readline()
        assert line.endswith(b"\r\n"), line
        return json.loads(line)

    def send(self, data: bytes | dict) -> None:
        self.sock.sendall(data if isinstance(data, bytes) else json.dumps(data).encode())

    def execute(self, name: str, arguments: dict | None = None, **extra: object) -> dict:
        msg: dict = {"execute": name, **extra}
        if arguments is not None:
            msg["arguments"] = arguments
        self.send(msg)
        while True:
            reply = self.recv()
            if "event" not in reply:
                return reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator:
    procs: list[Proc] = []

    def start(name: str, *args: str) -> Proc:
        p = Proc(tmp_path, name, *args)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.close()


def wait_migration(mon: QEMUMonitorProtocol, timeout: float = 20) -> dict:
    """The data of the next final MIGRATION event."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = mon.pull_event(wait=max(0.1, deadline - time.monotonic()))
        if event and event["event"] == "MIGRATION" and event["data"]["status"] in (
                "completed", "failed"):
            return event["data"]
    raise AssertionError("no final MIGRATION event")


# -- the protocol ---------------------------------------------------------------------


def test_greeting_names_the_endpoint_and_capabilities_must_be_negotiated(spawn) -> None:
    ep = spawn("src", "--release", "0.14", "--machine", "pc")
    c = ep.raw()
    greeting = c.recv()
    assert greeting == {"QMP": {"version": {"qemu": {"major": 0, "minor": 14, "micro": 0},
                                            "package": "migmatrix 0.14/pc"},
                                "capabilities": []}}
    refused = c.execute("query-status", id="a")
    assert refused == {"error": {"class": "CommandNotFound", "desc":
                                 "Expecting capabilities negotiation with 'qmp_capabilities'"},
                       "id": "a"}
    assert c.execute("qmp_capabilities") == {"return": {}}
    again = c.execute("qmp_capabilities")
    assert again["error"]["class"] == "CommandNotFound"
    assert c.execute("query-status", id=7) == {
        "return": {"status": "running", "singlestep": False, "running": True}, "id": 7}
    c.close()


def test_errors_are_qmp_errors(spawn) -> None:
    c = spawn("src", "--release", "new").raw()
    c.recv()
    c.execute("qmp_capabilities")
    assert c.execute("no-such-command")["error"] == {
        "class": "CommandNotFound", "desc": "The command no-such-command has not been found"}
    assert c.execute("migrate", {})["error"] == {
        "class": "GenericError", "desc": "Parameter 'uri' is missing"}
    assert c.execute("migrate", {"uri": 5})["error"]["desc"] == (
        "Invalid parameter type for 'uri', expected: string")
    assert c.execute("query-status", {"bogus": 1})["error"]["desc"] == (
        "Parameter 'bogus' is unexpected")
    assert c.execute("migrate", {"uri": "gopher:x"})["error"] == {
        "class": "GenericError", "desc": "unknown migration protocol: gopher:x"}
    assert c.execute("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})["error"]["desc"] == (
        "'-incoming' was not specified on the command line")
    assert c.execute("x-guest-run", {"program": "nope"})["error"]["class"] == "GenericError"
    c.send(b'{"execute": }')
    assert c.recv()["error"]["class"] == "GenericError"
    c.send(b'{"arguments": {}}')
    assert c.recv()["error"]["desc"] == "QMP input lacks member 'execute'"
    # Still serving after all that; messages split anywhere are reassembled.
    c.send(b'{"execute": "query-')
    c.send(b'status"}')
    assert c.recv()["return"]["status"] == "running"
    c.close()


def test_json_streamer_splits_values_across_chunk_boundaries() -> None:
    s = JSONStreamer()
    assert list(s.feed(b'{"a": "}{"}  {"b"')) == [{"a": "}{"}]
    assert list(s.feed(b': [1, {"c": "\\""}]}\n{"d": 1}')) == [{"b": [1, {"c": '"'}]}, {"d": 1}]


def test_run_states_stop_cont_and_quit(spawn) -> None:
    ep = spawn("src", "--release", "new")
    mon = ep.qmp()
    mon.cmd("stop")
    assert mon.cmd("query-status")["status"] == "paused"
    assert mon.pull_event(wait=5)["event"] == "STOP"
    mon.cmd("cont")
    assert mon.cmd("query-status")["status"] == "running"
    assert mon.pull_event(wait=5)["event"] == "RESUME"
    dest = spawn("dst", "--release", "new", "--incoming", "defer").qmp()
    assert dest.cmd("query-status")["status"] == "inmigrate"
    assert dest.cmd_raw("migrate", {"uri": "tcp:127.0.0.1:1"})["error"]["desc"] == (
        "Guest is waiting for an incoming migration")
    assert mon.cmd("quit") == {}
    assert ep.proc.wait(10) == 0
    assert not os.path.exists(ep.qmp_path)


# -- migration ------------------------------------------------------------------------


def _incoming(transport: str, tmp: Path) -> tuple[list[str], str | None]:
    """(destination arguments, source URI or None to take it from query-migrate)."""
    if transport == "tcp":
        return ["--incoming", "defer"], None
    if transport == "unix":
        return ["--incoming", f"unix:{tmp / 'mig.sock'}"], f"unix:{tmp / 'mig.sock'}"
    fifo = tmp / "mig.fifo"
    os.mkfifo(fifo)
    if transport == "exec":
        return ["--incoming", f"exec:cat {fifo}"], f"exec:cat > {fifo}"
    return ["--incoming", f"file:{fifo}"], f"file:{fifo}"


@pytest.mark.parametrize("transport", ["tcp", "unix", "exec", "file"])
def test_migration_between_two_endpoints(spawn, tmp_path: Path, transport: str) -> None:
    dest_args, uri = _incoming(transport, tmp_path)
    media = ("--media", "hda,fda,cdrom")  # what "random" needs, on both sides
    dst = spawn("dst", "--release", "new", "--machine", "pc", *media, *dest_args)
    src = spawn("src", "--release", "new", "--machine", "pc", *media)
    dq, sq = dst.qmp(), src.qmp()
    if uri is None:
        dq.cmd("migrate-incoming", **{"uri": "tcp:127.0.0.1:0"})
        addr = dq.cmd("query-migrate")["socket-address"][0]
        uri = f"tcp:{addr['host']}:{addr['port']}"
    assert sq.cmd("x-guest-run", **{"program": "random", "seed": 2})["program"] == "random"
    sq.cmd("migrate", **{"uri": uri})
    assert wait_migration(sq)["status"] == "completed"
    assert wait_migration(dq)["status"] == "completed"
    assert sq.cmd("query-status")["status"] == "postmigrate"
    assert dq.cmd("query-status")["status"] == "running"
    stats = sq.cmd("query-migrate")
    assert stats["status"] == "completed" and stats["ram"]["transferred"] > 0
    a, b = sq.cmd("x-dump-state"), dq.cmd("x-dump-state")
    assert a["devices"] == b["devices"] and a["ram"] == b["ram"]
    assert b["load"]["bytes_consumed"] == stats["ram"]["transferred"]
    assert b["load-error"] is None and a["load"] is None
    assert dq.cmd("x-query-load")["report"]["half_loaded"] is False


def test_a_live_migration_sends_the_same_stream_as_the_in_process_save(spawn, tmp_path) -> None:
    """The workload dirties RAM between the passes exactly as in the in-process driver."""
    src = spawn("src", "--release", "new", "--machine", "pc").qmp()
    assert src.cmd("x-guest-run", **{"program": "live-ram"})["live-passes"] == 3
    src.cmd("migrate", **{"uri": f"file:{tmp_path / 'a.bin'}", "x-tee": str(tmp_path / "b.bin")})
    assert wait_migration(src)["status"] == "completed"
    cell = Cell(Endpoint("new/pc", "new", "pc", 2 << 20), Endpoint("new/pc", "new", "pc", 2 << 20),
                "live-ram", 0, ("pass",), "")
    _, expected = build_source(cell)
    assert (tmp_path / "a.bin").read_bytes() == expected
    assert (tmp_path / "b.bin").read_bytes() == expected


def test_a_refused_stream_ends_the_destination_as_qemu_does(spawn, tmp_path: Path) -> None:
    dst = spawn("dst", "--release", "0.14", "--machine", "pc", "--incoming", "defer")
    src = spawn("src", "--release", "new", "--machine", "pc")
    dq, sq = dst.qmp(), src.qmp()
    dq.cmd("migrate-incoming", **{"uri": "tcp:127.0.0.1:0"})
    port = dq.cmd("query-migrate")["socket-address"][0]["port"]
    sq.cmd("migrate", **{"uri": f"tcp:127.0.0.1:{port}"})
    failed = wait_migration(dq)
    assert failed["status"] == "failed"
    error = failed["x-load-error"]
    assert error["reason"] == "unsupported_version" and error["offset"] == 4
    assert dst.proc.wait(10) == 1
    assert "load of migration failed: unsupported stream version" in dst.stderr()
    assert wait_migration(sq)["status"] == "failed"  # the source saw the connection close
    assert sq.cmd("query-status")["status"] == "running"


def test_a_stream_cut_short_is_a_failed_load_not_a_half_started_guest(spawn, tmp_path) -> None:
    src = spawn("src", "--release", "new").qmp()
    src.cmd("migrate", **{"uri": f"file:{tmp_path / 's.bin'}"})
    assert wait_migration(src)["status"] == "completed"
    data = (tmp_path / "s.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    # Not spawn(): the load starts at once and may fail before a poll sees the monitor.
    dst = subprocess.run(
        [sys.executable, "-m", "harness.emulator", "--ram", "2M", "--release", "new",
         "--qmp", f"unix:{tmp_path / 'dst.qmp'}", "--incoming", f"file:{tmp_path / 'cut.bin'}"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=30)
    assert dst.returncode == 1
    assert "load of migration failed: truncated input" in dst.stderr


def test_a_bad_command_line_fails_before_qmp(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "harness.emulator", "--release", "0.14", "--machine", "bogus",
         "--qmp", f"unix:{tmp_path / 'q'}"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=30)
    assert proc.returncode == 1
    assert "bogus" in proc.stderr


def test_the_fork_server_starts_and_listens(tmp_path) -> None:
    """It once died at start (a preload name gone from the machine) and the subprocess
    driver fell back to an interpreter per endpoint without a word."""
    import subprocess
    import sys
    import time

    sock = tmp_path / "fork.sock"
    proc = subprocess.Popen([sys.executable, "-m", "harness.emulator.endpoint.forkserver",
                             str(sock)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-500:]
        assert sock.exists()
    finally:
        proc.kill()
        proc.wait()
