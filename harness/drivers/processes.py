"""The ``subprocess`` driver: both endpoints as local processes, migration over loopback.

Each endpoint is ``python -m harness.emulator`` with its QMP monitor on a unix socket in a
per-cell temporary directory and its stdout and stderr in a log file beside it. The
destination listens on ``tcp:127.0.0.1:0`` (the kernel picks the port; ``query-migrate``
tells it) unless ``transport="unix"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from ..matrix import Cell, Endpoint
from .qmp import LOG_TAIL_LINES, EndpointHandle, Launcher, QMPDriver

__all__ = ["LocalLauncher", "ProcessHandle", "SubprocessDriver", "endpoint_argv", "tail"]

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def endpoint_argv(endpoint: Endpoint, qmp: str, *, incoming: bool,
                  python: str = sys.executable) -> list[str]:
    argv = [python, "-m", "harness.emulator", "--release", endpoint.release,
            "--machine", endpoint.machine, "--ram", str(endpoint.ram_size), "--qmp", qmp]
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
    def __init__(self, role: str, argv: list[str], proc: asyncio.subprocess.Process,
                 qmp_path: str, log: Path) -> None:
        self.role = role
        self.argv = argv
        self.proc = proc
        self.qmp_path = qmp_path
        self.log = log

    @property
    def qmp_address(self) -> str:
        return self.qmp_path

    def exit_code(self) -> int | None:
        return self.proc.returncode

    async def wait_exit(self) -> int:
        return await self.proc.wait()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log, lines)


class LocalLauncher(Launcher):
    """Endpoints as child processes of this one."""

    def __init__(self, *, transport: str = "tcp", python: str = sys.executable) -> None:
        if transport not in ("tcp", "unix"):
            raise ValueError(f"transport {transport!r}: use tcp or unix")
        self.transport = transport
        self.python = python
        self.workdir: Path | None = None

    async def open_cell(self, cell: Cell, workdir: Path) -> None:
        self.workdir = workdir

    async def close_cell(self) -> None:
        self.workdir = None

    async def launch(self, endpoint: Endpoint, role: str, *, incoming: bool,
                     extra_args: list[str]) -> EndpointHandle:
        assert self.workdir is not None
        qmp = str(self.workdir / f"{role}.qmp")
        argv = endpoint_argv(endpoint, f"unix:{qmp}", incoming=incoming, python=self.python)
        argv += extra_args
        log = self.workdir / f"{role}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [PACKAGE_ROOT, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                cwd=self.workdir, start_new_session=True)
        return ProcessHandle(role, argv, proc, qmp, log)

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
