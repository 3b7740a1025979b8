"""The ``subprocess`` driver: both endpoints as local processes, migration over loopback.

Each endpoint is ``python -m harness.emulator`` with its QMP monitor on a unix socket in a
per-cell temporary directory and its stdout and stderr in a log file beside it. The
destination listens on ``tcp:127.0.0.1:0`` (the kernel picks the port; ``query-migrate``
tells it) unless ``transport="unix"``.

Every cell gets fresh endpoint processes, but starting an interpreter and importing the
endpoint costs more than the rest of a cell, so the launcher asks a fork server
(:mod:`harness.emulator.endpoint.forkserver`, one per launcher and environment, started on
first use) to fork them from a process that has imported everything already. When the
server cannot be started, endpoints are started with ``python -m harness.emulator`` as
before. ``forkserver=False`` always does that.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import multiprocessing.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..matrix import Cell, Endpoint
from .qmp import LOG_TAIL_LINES, EndpointHandle, Launcher, QMPDriver

__all__ = ["ForkedEndpoint", "LocalLauncher", "ProcessHandle", "SubprocessDriver",
           "endpoint_argv", "fork_endpoint", "tail"]

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def endpoint_argv(endpoint: Endpoint, qmp: str, *, incoming: bool,
                  python: str = sys.executable) -> list[str]:
    argv = [python, "-m", "harness.emulator", "--release", endpoint.release,
            "--machine", endpoint.machine, "--ram", str(endpoint.ram_size),
            "--nic", endpoint.nic, "--vga", endpoint.vga, "--qmp", qmp]
    if incoming:
        argv += ["--incoming", "defer"]
    return argv


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


class ProcessHandle(EndpointHandle):
    """An endpoint process: an ``asyncio`` subprocess or a fork server's child."""

    def __init__(self, role: str, argv: list[str], proc: Any, qmp_path: str, log: Path) -> None:
        self.role = role
        self.argv = argv
        self.proc = proc
        self.qmp_path = qmp_path
        self.log = log

    @property
    def qmp_address(self) -> str:
        return self.qmp_path

    def exit_code(self) -> int | None:
        if hasattr(self.proc, "poll"):
            return self.proc.poll()
        return self.proc.returncode

    async def wait_exit(self) -> int:
        if hasattr(self.proc, "poll"):
            # A fork server's child: not a child of this process, so polled.
            while (code := self.proc.poll()) is None:
                await asyncio.sleep(0.005)
            return code
        return await self.proc.wait()

    def kill(self) -> None:
        if self.exit_code() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log, lines)


class ForkedEndpoint:
    """A child of a fork server, with the parts of :class:`subprocess.Popen` that
    :class:`ProcessHandle` uses; its exit status arrives on the request's connection.
    ``remote``: the child is in another pid namespace (a container), so it is killed
    through the server, and its pid says nothing here."""

    def __init__(self, conn: socket.socket, pid: int, *, remote: bool = False) -> None:
        self.conn = conn
        self.pid = pid
        self.remote = remote
        self.returncode: int | None = None
        self._buf = b""
        self._eof = False
        conn.setblocking(False)

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if not self._eof:
            try:
                data = self.conn.recv(4096)
            except BlockingIOError:
                return None
            except OSError:
                data = b""
            if data:
                self._buf += data
                for line in self._buf.split(b"\n")[:-1]:
                    msg = json.loads(line)
                    if "exit" in msg:
                        self.returncode = int(msg["exit"])
                        self.conn.close()
                return self.returncode
            self._eof = True
            self.conn.close()
        if self.remote:  # the server is gone, and its children with it (their container)
            self.returncode = -signal.SIGKILL  # exit status unknown
            return self.returncode
        try:  # the server is gone: all that is left to know is whether the child is
            os.kill(self.pid, 0)
        except ProcessLookupError:
            self.returncode = -signal.SIGKILL  # exit status unknown
        except PermissionError:
            pass
        return self.returncode

    def kill(self) -> None:
        if self.poll() is not None:
            return
        if not self.remote:
            os.kill(self.pid, signal.SIGKILL)
            return
        with contextlib.suppress(OSError):
            self.conn.send(json.dumps({"signal": int(signal.SIGKILL)}).encode() + b"\n")

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            time.sleep(0.005)
        return code


def fork_endpoint(server: str, request: dict[str, Any], *, remote: bool = False
                  ) -> ForkedEndpoint | None:
    """Ask the fork server listening at ``server`` for an endpoint (``request``: argv,
    log, cwd, as the server sees paths); ``None`` when the server does not answer."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(10)
        conn.connect(server)
        conn.sendall(json.dumps(request).encode() + b"\n")
        reply = b""
        while b"\n" not in reply:
            data = conn.recv(4096)
            if not data:
                raise ConnectionError("fork server closed the connection")
            reply += data
    except OSError:
        conn.close()
        return None
    line, rest = reply.split(b"\n", 1)
    forked = ForkedEndpoint(conn, int(json.loads(line)["pid"]), remote=remote)
    forked._buf = rest
    return forked


class LocalLauncher(Launcher):
    """Endpoints as child processes of this one, or of its fork server (module docstring)."""

    def __init__(self, *, transport: str = "tcp", python: str = sys.executable,
                 forkserver: bool = True) -> None:
        if transport not in ("tcp", "unix"):
            raise ValueError(f"transport {transport!r}: use tcp or unix")
        self.transport = transport
        self.python = python
        self.forkserver = forkserver
        self.workdir: Path | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._server_dir: Path | None = None
        self._server_env: tuple[tuple[str, str], ...] | None = None
        self._atexit = False

    async def open_cell(self, cell: Cell, workdir: Path) -> None:
        self.workdir = workdir

    async def close_cell(self) -> None:
        self.workdir = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [PACKAGE_ROOT, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    async def launch(self, endpoint: Endpoint, role: str, *, incoming: bool,
                     extra_args: list[str]) -> EndpointHandle:
        assert self.workdir is not None
        qmp = str(self.workdir / f"{role}.qmp")
        argv = endpoint_argv(endpoint, f"unix:{qmp}", incoming=incoming, python=self.python)
        argv += extra_args
        log = self.workdir / f"{role}.log"
        env = self._env()
        server = self._server_socket(env) if self.forkserver else None
        if server is not None:
            forked = self._fork(server, argv[3:], log)
            if forked is not None:
                return ProcessHandle(role, argv, forked, qmp, log)
        with open(log, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                cwd=self.workdir, start_new_session=True)
        return ProcessHandle(role, argv, proc, qmp, log)

    # -- the fork server -------------------------------------------------------------

    def _server_socket(self, env: dict[str, str]) -> str | None:
        """The socket of a running fork server for ``env`` (started if need be)."""
        key = tuple(sorted(env.items()))
        if self._server is not None and (key != self._server_env or
                                         self._server.poll() is not None):
            self.stop_forkserver()
        if self._server is None:
            self._start_server(env, key)
        if self._server is None or self._server_dir is None:
            return None
        return str(self._server_dir / "fork.sock")

    def _start_server(self, env: dict[str, str], key: tuple[tuple[str, str], ...]) -> None:
        folder = Path(tempfile.mkdtemp(prefix="mm-fork-"))
        sock = folder / "fork.sock"
        try:
            with open(folder / "forkserver.log", "wb") as out:
                proc = subprocess.Popen(
                    [self.python, "-m", "harness.emulator.endpoint.forkserver", str(sock)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=folder,
                    start_new_session=True)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            return
        deadline = time.monotonic() + 20
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    proc.kill()
                proc.wait()
                shutil.rmtree(folder, ignore_errors=True)
                return  # endpoints are then started one by one
            time.sleep(0.005)
        self._server, self._server_dir, self._server_env = proc, folder, key
        if not self._atexit:
            atexit.register(self.stop_forkserver)
            # Pool workers leave through multiprocessing's exit, which skips atexit.
            multiprocessing.util.Finalize(self, self.stop_forkserver, exitpriority=10)
            self._atexit = True

    def _fork(self, server: str, args: list[str], log: Path) -> ForkedEndpoint | None:
        log.write_bytes(b"")
        forked = fork_endpoint(server, {"argv": args, "log": str(log),
                                        "cwd": str(self.workdir)})
        if forked is None:
            self.stop_forkserver()
        return forked

    def stop_forkserver(self) -> None:
        """Stop the fork server (its children are not touched)."""
        proc, folder = self._server, self._server_dir
        self._server = self._server_dir = self._server_env = None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def incoming_uri(self, destination: EndpointHandle) -> str:
        if self.transport == "unix":
            assert self.workdir is not None
            return f"unix:{self.workdir / 'migrate.sock'}"
        return "tcp:127.0.0.1:0"

    def outgoing_uri(self, destination: EndpointHandle,
                     socket_address: list[dict[str, Any]]) -> str:
        for addr in socket_address:
            if addr.get("type") == "inet":
                return f"tcp:{addr['host']}:{addr['port']}"
            if addr.get("type") == "unix":
                return f"unix:{addr['path']}"
        raise RuntimeError(f"the destination reports no listening address ({socket_address})")

    def endpoint_path(self, handle: EndpointHandle, name: str) -> str:
        assert self.workdir is not None
        return str(self.workdir / name)


class SubprocessDriver(QMPDriver):
    name = "subprocess"

    def __init__(self, *, transport: str = "tcp", **kwargs: Any) -> None:
        super().__init__(LocalLauncher(transport=transport), **kwargs)
