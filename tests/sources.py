"""Byte sources that a StreamReader reads as it reads bytes (a regular file, a pipe and a
socket, each fed with the same data), and a socket as a StreamWriter's sink. Shared by the
stream, RAM and bulk I/O tests."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def _feed(write: Callable[[bytes], Any], close: Callable[[], Any], data: bytes) -> threading.Thread:
    def run() -> None:
        try:
            for i in range(0, len(data), 4096):
                write(data[i : i + 4096])
        except OSError:
            pass  # the reader stopped early (a refused load): the rest is not wanted
        finally:
            close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@contextmanager
def pipe_source(data: bytes) -> Iterator[Any]:
    """The read end of an OS pipe, fed by a thread (a buffered file object)."""
    rfd, wfd = os.pipe()
    wfile = os.fdopen(wfd, "wb", buffering=0)
    rfile = os.fdopen(rfd, "rb")
    t = _feed(wfile.write, wfile.close, data)
    try:
        yield rfile
    finally:
        rfile.close()
        t.join()


@contextmanager
def socket_source(data: bytes) -> Iterator[Any]:
    """One end of a socket pair, fed by a thread that closes the other end when done."""
    a, b = socket.socketpair()
    t = _feed(b.sendall, b.close, data)
    try:
        yield a
    finally:
        a.close()
        t.join()


@contextmanager
def file_source(data: bytes, prefix: bytes = b"") -> Iterator[Any]:
    """A regular file on disk, opened as ``open(path, "rb")`` and positioned after
    ``prefix``: the reader maps it in windows instead of reading it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stream")
        with open(path, "wb") as f:
            f.write(prefix + data)
        with open(path, "rb") as f:
            f.read(len(prefix))
            yield f


class SocketSink:
    """A StreamWriter sink that sends every chunk on a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: Any) -> None:
        self.sock.sendall(data)
