"""A QMP server as QEMU's monitor implements it, on asyncio and the standard library.

The wire protocol (QEMU's docs/interop/qmp-spec): on connect the server sends a greeting
``{"QMP": {"version": ..., "capabilities": []}}``; until the client sends
``qmp_capabilities`` every other command is refused with ``CommandNotFound``. Commands are
JSON objects ``{"execute": NAME, "arguments": {...}, "id": ...}`` read from a byte stream
(not necessarily one per line: QEMU's parser is a streaming lexer, and so is
:class:`JSONStreamer`); each gets ``{"return": ...}`` or ``{"error": {"class", "desc"}}``
with the ``id`` echoed. Events ``{"event", "data", "timestamp": {"seconds",
"microseconds"}}`` go to every negotiated client. Every message ends with ``\\r\\n``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Command",
    "JSONStreamer",
    "QMPError",
    "QMPServer",
    "event_message",
]

GENERIC_ERROR = "GenericError"
COMMAND_NOT_FOUND = "CommandNotFound"


class QMPError(Exception):
    """A command failed: ``error_class`` is QEMU's (GenericError, CommandNotFound, ...)."""

    def __init__(self, desc: str, error_class: str = GENERIC_ERROR) -> None:
        self.desc = desc
        self.error_class = error_class
        super().__init__(desc)

    def to_reply(self) -> dict[str, Any]:
        return {"error": {"class": self.error_class, "desc": self.desc}}


Handler = Callable[[dict[str, Any]], Awaitable[Any]]

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "any": (object,), "list": (list,),
    "dict": (dict,),
}
_TYPE_NAMES = {"str": "string", "int": "integer", "bool": "boolean", "list": "array",
               "dict": "object", "any": "any"}


@dataclass(frozen=True)
class Command:
    """One QMP command: its handler and its arguments ``{name: (type, required)}``."""

    name: str
    handler: Handler
    args: dict[str, tuple[str, bool]] = field(default_factory=dict)

    def check(self, arguments: dict[str, Any]) -> None:
        """Refuse missing, unexpected or mistyped arguments with QEMU's messages."""
        for key in arguments:
            if key not in self.args:
                raise QMPError(f"Parameter '{key}' is unexpected")
        for key, (kind, required) in self.args.items():
            if key not in arguments:
                if required:
                    raise QMPError(f"Parameter '{key}' is missing")
                continue
            value = arguments[key]
            ok = isinstance(value, _TYPES[kind]) and not (
                kind == "int" and isinstance(value, bool)
            )
            if not ok:
                raise QMPError(
                    f"Invalid parameter type for '{key}', expected: {_TYPE_NAMES[kind]}"
                )


def event_message(name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    now = time.time()
    seconds = int(now)
    msg: dict[str, Any] = {"event": name}
    if data is not None:
        msg["data"] = data
    msg["timestamp"] = {"seconds": seconds, "microseconds": int((now - seconds) * 1e6)}
    return msg


class JSONStreamer:
    """Splits a byte stream into top-level JSON values, like QEMU's json-streamer.

    >>> s = JSONStreamer()
    >>> list(s.feed(b'{"execute": "a"}{"exe'))
    [{'execute': 'a'}]
    >>> list(s.feed(b'cute": "b"}\\n'))
    [{'execute': 'b'}]
    >>> [type(x).__name__ for x in s.feed(b'{"x": }')]
    ['JSONDecodeError']
    """

    MAX_SIZE = 1 << 24

    def __init__(self) -> None:
        self._buf = bytearray()
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._scan = 0

    def feed(self, data: bytes) -> Iterator[Any]:
        """Values completed by ``data`` (a ``ValueError`` in place of a malformed one)."""
        self._buf += data
        start = 0
        i = self._scan
        buf = self._buf
        while i < len(buf):
            c = buf[i]
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == 0x5C:  # backslash
                    self._escape = True
                elif c == 0x22:
                    self._in_string = False
            elif c == 0x22:
                self._in_string = True
            elif c in (0x7B, 0x5B):  # { [
                self._depth += 1
            elif c in (0x7D, 0x5D):  # } ]
                self._depth -= 1
                if self._depth <= 0:
                    text = bytes(buf[start : i + 1])
                    start = i + 1
                    self._depth = 0
                    yield _parse(text)
            elif self._depth == 0 and c not in b" \t\r\n":
                # A bare token outside any object: consume up to the next delimiter.
                j = i
                while j < len(buf) and buf[j] not in b" \t\r\n{[":
                    j += 1
                text = bytes(buf[start:j])
                start = j
                i = j
                yield _parse(text)
                continue
            i += 1
        del buf[:start]
        self._scan = len(buf)
        if len(buf) > self.MAX_SIZE:
            buf.clear()
            self._scan = self._depth = 0
            self._in_string = self._escape = False
            yield ValueError("JSON message too large")


def _parse(text: bytes) -> Any:
    """One JSON value, or a ``ValueError`` saying why not (nesting deeper than the
    parser's recursion limit included, as QEMU's parser refuses deep nesting)."""
    try:
        return json.loads(text)
    except RecursionError:
        return ValueError("JSON nesting too deep")
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        return e


class _Client:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.negotiated = False

    def send(self, msg: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(json.dumps(msg).encode() + b"\r\n")


class QMPServer:
    """Serves ``commands`` to any number of clients; :meth:`emit` broadcasts an event."""

    def __init__(self, greeting: dict[str, Any]) -> None:
        self.greeting = greeting
        self.commands: dict[str, Command] = {}
        self.clients: set[_Client] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._paths: list[str] = []

    def register(self, command: Command) -> None:
        self.commands[command.name] = command

    # -- listening ---------------------------------------------------------------------

    async def listen(self, address: str) -> str:
        """Listen on ``unix:PATH`` or ``tcp:HOST:PORT`` (QEMU's ``,server=on,...`` options
        are accepted and ignored); returns the address actually bound."""
        spec = address.split(",", 1)[0]
        kind, _, rest = spec.partition(":")
        if "\x00" in spec:
            raise ValueError(f"bad QMP address {address!r}: a NUL byte in it")
        if kind == "unix" and rest:
            if os.path.exists(rest) and stat.S_ISSOCK(os.stat(rest).st_mode):
                os.unlink(rest)  # a stale socket of an earlier endpoint
            # Listen on a private name, then rename: a client that sees the path can connect
            # (between bind and listen a connect is refused).
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            pending = f"{rest}.{os.getpid()}.tmp"
            listener.bind(pending)
            listener.listen(16)
            os.rename(pending, rest)
            server = await asyncio.start_unix_server(self._serve, sock=listener)
            self._paths.append(rest)
            bound = f"unix:{rest}"
        elif kind == "tcp" and rest:
            host, _, port = rest.rpartition(":")
            try:
                port_no = int(port)
            except ValueError:
                raise ValueError(f"bad QMP address {address!r}: port must be a number") from None
            server = await asyncio.start_server(self._serve, host or "127.0.0.1", port_no)
            sock = server.sockets[0].getsockname()
            bound = f"tcp:{sock[0]}:{sock[1]}"
        else:
            raise ValueError(f"bad QMP address {address!r} (use unix:PATH or tcp:HOST:PORT)")
        self._servers.append(server)
        return bound

    def close(self) -> None:
        for server in self._servers:
            server.close()
        for client in list(self.clients):
            client.writer.close()
        for path in self._paths:
            try:
                os.unlink(path)
            except OSError:
                pass

    # -- events ------------------------------------------------------------------------

    def emit(self, name: str, data: dict[str, Any] | None = None) -> None:
        msg = event_message(name, data)
        for client in list(self.clients):
            if client.negotiated:
                client.send(msg)

    async def drain(self) -> None:
        """Wait until what was sent to clients has left this process (best effort)."""
        for client in list(self.clients):
            try:
                await asyncio.wait_for(client.writer.drain(), 2.0)
            except (TimeoutError, OSError):
                pass

    # -- one client ----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer)
        self.clients.add(client)
        streamer = JSONStreamer()
        try:
            client.send(self.greeting)
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for item in streamer.feed(data):
                    reply = await self._dispatch(client, item)
                    if reply is not None:
                        client.send(reply)
                        await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # the client went away, or the endpoint is shutting down
        finally:
            self.clients.discard(client)
            writer.close()

    async def _dispatch(self, client: _Client, item: Any) -> dict[str, Any] | None:
        if isinstance(item, ValueError):
            return QMPError(f"JSON parse error, {item}").to_reply()
        if not isinstance(item, dict):
            return QMPError("QMP input must be a JSON object").to_reply()
        reply = await self._execute(client, item)
        if "id" in item:
            reply["id"] = item["id"]
        return reply

    async def _execute(self, client: _Client, msg: dict[str, Any]) -> dict[str, Any]:
        name = msg.get("execute", msg.get("exec-oob"))
        if name is None:
            return QMPError("QMP input lacks member 'execute'").to_reply()
        if not isinstance(name, str):
            return QMPError("QMP input member 'execute' must be a string").to_reply()
        for key in msg:
            if key not in ("execute", "exec-oob", "arguments", "id"):
                return QMPError(f"QMP input member '{key}' is unexpected").to_reply()
        arguments = msg.get("arguments", {})
        if not isinstance(arguments, dict):
            return QMPError("QMP input member 'arguments' must be an object").to_reply()
        if name == "qmp_capabilities":
            if client.negotiated:
                return QMPError(
                    "Capabilities negotiation is already complete, command ignored",
                    COMMAND_NOT_FOUND,
                ).to_reply()
            enable = arguments.get("enable", [])
            if set(arguments) - {"enable"}:
                return QMPError(f"Parameter '{sorted(set(arguments) - {'enable'})[0]}' "
                                "is unexpected").to_reply()
            if not isinstance(enable, list) or not all(isinstance(c, str) for c in enable):
                return QMPError("Invalid parameter type for 'enable', expected: array of "
                                "strings").to_reply()
            if enable:
                return QMPError(f"Capability '{enable[0]}' not available").to_reply()
            client.negotiated = True
            return {"return": {}}
        if not client.negotiated:
            return QMPError(
                "Expecting capabilities negotiation with 'qmp_capabilities'", COMMAND_NOT_FOUND
            ).to_reply()
        command = self.commands.get(name)
        if command is None:
            return QMPError(f"The command {name} has not been found", COMMAND_NOT_FOUND).to_reply()
        try:
            command.check(arguments)
            result = await command.handler(arguments)
        except QMPError as e:
            return e.to_reply()
        except Exception as e:  # a handler bug must not cost the client its connection
            return QMPError(f"{name}: internal error: {type(e).__name__}: {e}").to_reply()
        return {"return": {} if result is None else result}
