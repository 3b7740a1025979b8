"""Migration transports: where a stream goes to and comes from, given a QEMU-style URI.

``tcp:HOST:PORT``, ``unix:PATH``, ``exec:CMD`` (a shell command: the source writes to its
stdin, the destination reads its stdout) and ``file:PATH``. Both directions are
incremental: an :class:`Outgoing` is a sink for :class:`~harness.emulator.stream.StreamWriter`
(``write`` each flushed chunk), an :class:`Incoming` hands out a source that
:class:`~harness.emulator.stream.StreamReader` reads as it needs, so a large guest is never
held as one bytes object. Everything here blocks; the endpoint runs it in threads.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
from dataclasses import dataclass
from typing import Any, BinaryIO

__all__ = [
    "Counter",
    "Incoming",
    "Outgoing",
    "TeeSink",
    "TransportError",
    "Uri",
    "parse_uri",
]


class TransportError(Exception):
    """A migration URI that cannot be used: bad syntax, or the connect/listen failed."""


@dataclass(frozen=True)
class Uri:
    kind: str  # tcp | unix | exec | file
    host: str = ""
    port: int = 0
    path: str = ""  # unix and file paths, exec command

    def __str__(self) -> str:
        if self.kind == "tcp":
            return f"tcp:{self.host}:{self.port}"
        return f"{self.kind}:{self.path}"


def parse_uri(text: str) -> Uri:
    """``tcp:[HOST]:PORT`` | ``unix:PATH`` | ``exec:CMD`` | ``file:PATH``.

    >>> parse_uri("tcp:127.0.0.1:4444")
    Uri(kind='tcp', host='127.0.0.1', port=4444, path='')
    >>> parse_uri("exec:cat > /tmp/x").path
    'cat > /tmp/x'
    """
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise TransportError(f"unknown migration protocol: {text}")
    if "\x00" in text:  # QEMU's JSON parser refuses \u0000 before it gets this far
        raise TransportError(f"invalid migration URI {text!r}: a NUL byte in it")
    if kind == "tcp":
        host, sep, port = rest.split(",", 1)[0].rpartition(":")
        if not sep:
            raise TransportError(f"address resolution failed for {rest}: missing port")
        host = host.strip("[]") or "0.0.0.0"
        try:
            port_no = int(port)
        except ValueError:
            raise TransportError(f"address resolution failed for {rest}: bad port") from None
        if not 0 <= port_no <= 65535:
            raise TransportError(f"address resolution failed for {rest}: port {port_no} "
                                 "is outside 0..65535")
        return Uri("tcp", host=host, port=port_no)
    if kind in ("unix", "exec", "file"):
        return Uri(kind, path=rest)
    raise TransportError(f"unknown migration protocol: {text}")


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


class Counter:
    """A byte count shared between a transport thread and the monitor."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


# -- outgoing ---------------------------------------------------------------------------


class Outgoing:
    """A connected destination: ``write`` chunks, then ``close`` (which reports failures)."""

    def __init__(self, uri: Uri, *, connect_timeout: float = 30.0) -> None:
        self.uri = uri
        self.sent = Counter()
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            if uri.kind == "tcp":
                self._sock = socket.create_connection((uri.host, uri.port), connect_timeout)
                self._sock.settimeout(None)
            elif uri.kind == "unix":
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(uri.path)
                self._sock = s
            elif uri.kind == "exec":
                self._proc = subprocess.Popen(["/bin/sh", "-c", uri.path],
                                              stdin=subprocess.PIPE)
                self._file = self._proc.stdin
            else:
                self._file = open(uri.path, "wb")  # noqa: SIM115 - closed in close()
        except (OSError, ValueError, OverflowError) as e:  # a name that cannot resolve...
            raise TransportError(f"Failed to connect to '{uri}': "
                                 f"{getattr(e, 'strerror', None) or e}") from e

    def write(self, data: Any) -> None:
        if self._sock is not None:
            self._sock.sendall(data)
        else:
            assert self._file is not None
            self._file.write(data)
        self.sent.value += len(data)

    def close(self) -> None:
        """Finish the stream; raises ``OSError`` when the far side did not take it all."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_WR)
                # Wait for the destination to close its end. A reset means it closed with
                # bytes of the stream unread: it did not take the whole stream.
                self._sock.settimeout(60)
                while self._sock.recv(4096):
                    pass
            except ConnectionResetError as e:
                raise OSError("the destination closed the connection before reading "
                              "the whole stream") from e
            except OSError as e:
                # A reset that came before the shutdown makes the shutdown fail instead.
                if e.errno in (errno.ENOTCONN, errno.EPIPE):
                    raise OSError("the destination closed the connection before reading "
                                  "the whole stream") from e
            finally:
                self._sock.close()
            return
        if self._file is not None:
            try:
                self._file.close()
            finally:
                if self._proc is not None:
                    status = self._proc.wait()
                    if status != 0:
                        raise OSError(f"exec migration command exited with status {status}")

    def abort(self) -> None:
        try:
            if self._sock is not None:
                self._sock.close()
            if self._file is not None:
                self._file.close()
        except OSError:
            pass
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


class TeeSink:
    """Writes every chunk to ``copy`` and to ``primary``; after ``primary`` fails the copy
    still receives the whole stream (so the harness can show the bytes a destination
    refused), and :meth:`finish` re-raises the failure."""

    def __init__(self, primary: Outgoing, copy: BinaryIO) -> None:
        self.primary = primary
        self.copy = copy
        self.error: OSError | None = None

    def write(self, data: Any) -> None:
        self.copy.write(data)
        if self.error is None:
            try:
                self.primary.write(data)
            except OSError as e:
                self.error = e

    def finish(self) -> None:
        self.copy.close()
        if self.error is not None:
            raise self.error


# -- incoming ---------------------------------------------------------------------------


class _Source:
    """What :class:`StreamReader` reads: ``read``/``readinto`` over a socket or a file,
    counting bytes and honouring the endpoint's debug hooks (``on_bytes``)."""

    def __init__(self, raw: Any, counter: Counter, on_bytes: Any = None) -> None:
        self._raw = raw
        self._counter = counter
        self._on_bytes = on_bytes
        if hasattr(raw, "recv"):
            self._read = raw.recv
            self._readinto = raw.recv_into
        else:
            self._read = getattr(raw, "read1", raw.read)
            self._readinto = raw.readinto

    def _count(self, n: int) -> None:
        self._counter.value += n
        if self._on_bytes is not None:
            self._on_bytes(self._counter.value)

    def read(self, n: int) -> bytes:
        data = self._read(n)
        self._count(len(data))
        return data

    def readinto(self, buf: Any) -> int:
        n = self._readinto(buf)
        self._count(n or 0)
        return n or 0


class Incoming:
    """Where a destination waits for its stream. Listening sockets are bound at
    construction (so a bad address is an immediate error and port 0 gets a real port);
    :meth:`open` blocks until the stream starts and returns a readable source."""

    def __init__(self, uri: Uri) -> None:
        self.uri = uri
        self.received = Counter()
        self._listener: socket.socket | None = None
        self._conn: Any = None
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            if uri.kind == "tcp":
                s = socket.socket(socket.AF_INET6 if ":" in uri.host else socket.AF_INET)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((uri.host, uri.port))
                s.listen(1)
                self._listener = s
            elif uri.kind == "unix":
                if _is_socket(uri.path):
                    os.unlink(uri.path)  # a stale socket of an earlier endpoint
                elif os.path.lexists(uri.path):  # anything else stays, as bind would leave it
                    raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                pending = f"{uri.path}.{os.getpid()}.tmp"  # visible only once listening
                s.bind(pending)
                s.listen(1)
                os.rename(pending, uri.path)
                self._listener = s
        except (OSError, ValueError, OverflowError) as e:
            raise TransportError(f"Failed to bind socket for '{uri}': "
                                 f"{getattr(e, 'strerror', None) or e}") from e

    def socket_address(self) -> list[dict[str, str]]:
        """As QEMU's query-migrate reports it on the destination."""
        if self._listener is None:
            return []
        if self.uri.kind == "unix":
            return [{"type": "unix", "path": self.uri.path}]
        host, port = self._listener.getsockname()[:2]
        return [{"type": "inet", "host": host, "port": str(port)}]

    def open(self, on_bytes: Any = None) -> _Source:
        if self._listener is not None:
            conn, _ = self._listener.accept()
            self._listener.close()
            self._conn = conn
        elif self.uri.kind == "exec":
            self._proc = subprocess.Popen(["/bin/sh", "-c", self.uri.path],
                                          stdout=subprocess.PIPE)
            self._conn = self._proc.stdout
        else:
            try:
                self._conn = open(self.uri.path, "rb")  # noqa: SIM115 - closed in close()
            except (OSError, ValueError) as e:
                raise TransportError(f"Failed to open '{self.uri.path}': "
                                     f"{getattr(e, 'strerror', None) or e}") from e
        return _Source(self._conn, self.received, on_bytes)

    def close(self) -> None:
        for thing in (self._conn, self._listener):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    pass
        if self.uri.kind == "unix" and os.path.exists(self.uri.path):
            try:
                os.unlink(self.uri.path)
            except OSError:
                pass
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
