"""A fork server for endpoint processes: fresh endpoints without an interpreter start each.

``python -m harness.emulator.endpoint.forkserver SOCKET`` imports the endpoint (the QMP
server, the machine and every device module) once, listens on the unix socket ``SOCKET``
and forks one child per request. A child is a new process with a new machine, exactly what
``python -m harness.emulator ARGS`` would run, minus the ~0.2 s of interpreter start and
imports that would otherwise dominate a matrix cell.

Protocol, one connection per endpoint, JSON lines::

    -> {"argv": [endpoint arguments], "log": PATH, "cwd": PATH}
    <- {"pid": N}                       the child runs, in its own session, with stdin
                                        /dev/null and stdout and stderr appended to PATH
    -> {"signal": N}                    optional, later: send the child signal N (a
                                        client in another pid namespace, such as the
                                        host of a container, cannot kill it itself)
    <- {"exit": CODE}                   when it ends: its exit status, or -SIGNAL

The child sees the environment the server was started with (seeded bugs are read from it
at import time), so a client starts one server per environment. The server ends when its
socket is removed, when it is sent SIGTERM, or when its parent exits. It reaps whatever
child of it exits, so it can also be a container's first process.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import Any

__all__ = ["main", "serve"]

_POLL = 0.01  # seconds between checks for exited children and a gone parent


def _preload() -> None:
    """Import what every endpoint imports, so that children inherit it."""
    from .. import machine

    for key in machine.DEVICE_MODULES:
        machine._device_class(key)
    from . import server  # noqa: F401


def serve(path: str) -> list[str] | None:
    """Serve requests until told to stop (returns ``None``); in a forked child, return its
    endpoint arguments (the caller then runs the endpoint, outside this loop)."""
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    pending: dict[socket.socket, bytes] = {}  # connections whose request is incomplete
    children: dict[int, socket.socket] = {}  # pid -> the connection to tell of its exit
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    previous = signal.signal(signal.SIGTERM, on_term)
    child = False
    try:
        while not stop and os.getppid() == parent and os.path.exists(path):
            for key, _ in sel.select(_POLL):
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    pending[conn] = b""
                    sel.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj  # type: ignore[assignment]
                data = conn.recv(65536)
                if not data:
                    sel.unregister(conn)
                    pending.pop(conn, None)
                    if conn not in children.values():
                        conn.close()
                    continue
                if conn not in pending:
                    _signal_child(conn, data, children)  # after its request, only signals
                    continue
                buf = pending[conn] + data
                if b"\n" not in buf:
                    pending[conn] = buf
                    continue
                del pending[conn]
                request = json.loads(buf.split(b"\n", 1)[0])
                pid = os.fork()
                if pid == 0:
                    # The child: drop every resource of the server, then become the endpoint.
                    signal.signal(signal.SIGTERM, previous)
                    sel.close()
                    listener.close()
                    for c in [*pending, *children.values(), conn]:
                        c.close()
                    child = True
                    _become_child(request)
                    return list(request["argv"])
                children[pid] = conn
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            _reap(children, sel)
    finally:
        if not child:  # a child has closed these already; the socket is the server's
            signal.signal(signal.SIGTERM, previous)
            sel.close()
            listener.close()
            try:
                os.unlink(path)
            except OSError:
                pass
    return None


def _reap(children: dict[int, socket.socket], sel: selectors.BaseSelector) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        try:
            conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode()
                         + b"\n")
        except OSError:
            pass
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn)  # before closing: a new connection may reuse its number
        conn.close()


def _signal_child(conn: socket.socket, data: bytes, children: dict[int, socket.socket]
                  ) -> None:
    """Send the child of ``conn`` the signals its client asks for in ``data`` (JSON lines,
    ``{"signal": N}``; anything else is ignored)."""
    pid = next((p for p, c in children.items() if c is conn), None)
    for line in data.splitlines():
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            number = int(json.loads(line)["signal"])
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, number)


def _become_child(request: dict[str, Any]) -> None:
    os.setsid()
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness.emulator.endpoint.forkserver SOCKET", file=sys.stderr)
        return 2
    _preload()
    try:
        child_argv = serve(args[0])
    except BaseException:
        traceback.print_exc()
        return 1
    if child_argv is None:
        return 0
    from .server import main as endpoint_main

    sys.argv = ["python -m harness.emulator", *child_argv]
    try:
        code = endpoint_main(child_argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    # The endpoint is done (its loop closed, its streams finished): skip tearing down the
    # server's imported modules, which would take longer than the endpoint's whole run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
