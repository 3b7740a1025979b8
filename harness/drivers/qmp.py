"""The QMP driver core: run a cell between two endpoint processes over QMP.

Two layers, kept apart so that a real-QEMU driver can reuse the upper one:

- a :class:`Launcher` starts an endpoint somewhere (a local process, a container) and
  hands back an :class:`EndpointHandle`: where its QMP monitor listens, whether it is
  still alive, its command line, exit code and log tail, and the URIs with which a
  destination listens and a source reaches it;
- :class:`QMPDriver` runs the cell through the handles with the ``qemu.qmp`` client:
  destination ``migrate-incoming``, source ``x-guest-run``, ``migrate`` (with a copy of
  the stream written beside it), the ``MIGRATION`` events of both sides, both sides'
  ``x-dump-state``, then an :class:`~harness.verdict.Outcome` built as the in-process
  driver builds it.

An endpoint that fails to start, dies or exits without finishing its migration makes a
``crashed`` cell, whichever command it was in (a connection that breaks under a QMP
command is the endpoint's death, not the harness's); no outcome within
``cell.time_limit`` makes a ``timeout`` cell (both endpoints are killed), a hang in a
command included. Either carries, per endpoint, the command line, the exit code and
the tail of its log in ``Outcome.extra["endpoints"]``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from qemu.qmp import EventListener, ExecuteError, QMPClient

from ..emulator.errors import Reason
from ..matrix import Cell, Endpoint
from ..scenarios import SCENARIOS
from ..verdict import Outcome
from . import Driver, diff_entry
from .inprocess import DIFF_LIMIT, cell_cause, one_sided_fields, stream_window

__all__ = [
    "EndpointDied",
    "EndpointHandle",
    "Launcher",
    "QMPDriver",
    "compare_states",
    "describe_exit",
]

LOG_TAIL_LINES = 40
CONNECT_TIMEOUT = 30.0
STREAM_COPY = "stream.bin"

# qemu.qmp logs every failed connect attempt and unexpected EOF at ERROR level; the driver
# reports those itself.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class EndpointDied(Exception):
    """An endpoint exited when it should not have (at launch or mid-cell)."""

    def __init__(self, handle: EndpointHandle, when: str) -> None:
        self.handle = handle
        self.when = when
        super().__init__(f"{handle.role} {when}: {describe_exit(handle.exit_code())}")


def describe_exit(code: int | None) -> str:
    """``exited with status 1`` / ``killed by SIGKILL`` / ``still running``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code > 128 and code - 128 in signal.Signals._value2member_map_:
        return f"exited with status {code} ({signal.Signals(code - 128).name})"
    return f"exited with status {code}"


class EndpointHandle(abc.ABC):
    """One launched endpoint, as the driver sees it."""

    role: str  # "source" | "destination"
    argv: list[str]  # how it was started (for the detail of a failed cell)

    @property
    @abc.abstractmethod
    def qmp_address(self) -> str | tuple[str, int]:
        """Where its monitor listens: a unix socket path or (host, port)."""

    @abc.abstractmethod
    def exit_code(self) -> int | None:
        """Its exit status (negative: killed by that signal), ``None`` while it runs."""

    @abc.abstractmethod
    async def wait_exit(self) -> int:
        """Wait until it has exited; returns :meth:`exit_code`."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop it now (idempotent)."""

    @abc.abstractmethod
    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of its stdout and stderr."""

    def describe(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "exit_code": self.exit_code(),
            "status": describe_exit(self.exit_code()),
            "log_tail": self.log_tail(),
        }


class Launcher(abc.ABC):
    """Starts endpoints for one cell at a time; :meth:`open_cell` / :meth:`close_cell`
    bracket a cell (a temporary directory, a network), whatever happens in it."""

    def new_workdir(self) -> Path:
        """A fresh directory for a cell's sockets, logs and stream copy (removed after)."""
        return Path(tempfile.mkdtemp(prefix="mm-"))

    @abc.abstractmethod
    async def open_cell(self, cell: Cell, workdir: Path) -> None: ...

    @abc.abstractmethod
    async def close_cell(self) -> None: ...

    @abc.abstractmethod
    async def launch(self, endpoint: Endpoint, role: str, *, incoming: bool,
                     extra_args: list[str]) -> EndpointHandle: ...

    @abc.abstractmethod
    def incoming_uri(self, destination: EndpointHandle) -> str:
        """What the destination listens on (``migrate-incoming``)."""

    @abc.abstractmethod
    def outgoing_uri(self, destination: EndpointHandle, socket_address: list[dict[str, Any]]
                     ) -> str:
        """What the source migrates to, given the destination's ``socket-address``."""

    @abc.abstractmethod
    def endpoint_path(self, handle: EndpointHandle, name: str) -> str:
        """The path, as ``handle`` sees it, of the file ``workdir/name``."""


# The closed set of reasons, labelled as the in-process driver labels them.
_REASON_TEXT = {r.name.lower(): r.text for r in Reason}


# -- state comparison across processes ---------------------------------------------------


def compare_states(source: dict[str, Any], dest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every field both ``x-dump-state`` documents define whose values differ (as
    :func:`~harness.emulator.machine.compare_machines` does on objects), then every RAM
    block whose digest differs (pages are located by :meth:`QMPDriver._ram_pages`)."""
    diffs: list[dict[str, Any]] = []
    dst_devices = dest.get("devices", {})
    for section, fields in source.get("devices", {}).items():
        other = dst_devices.get(section)
        if other is None:
            continue
        for path, value in fields.items():
            if path in other and other[path] != value:
                diffs.append({"path": f"{section}/{path}", "source": value,
                              "destination": other[path]})
    dst_ram = dest.get("ram", {})
    for block, digest in source.get("ram", {}).items():
        if block not in dst_ram:
            diffs.append({"path": f"ram/{block}", "source": "missing on the second machine",
                          "destination": "differs"})
        elif dst_ram[block] != digest:
            diffs.append({"path": f"ram/{block}", "source": None, "destination": "differs"})
    return diffs


# -- the driver --------------------------------------------------------------------------


class _CellFailed(Exception):
    """Ends a cell early once the outcome says why."""


class QMPDriver(Driver):
    """Runs cells through a :class:`Launcher` (see the module docstring)."""

    name = "qmp"

    def __init__(self, launcher: Launcher, *, keep_workdirs: bool = False,
                 source_args: list[str] | None = None,
                 destination_args: list[str] | None = None) -> None:
        self.launcher = launcher
        self.keep_workdirs = keep_workdirs
        self.source_args = list(source_args or [])
        self.destination_args = list(destination_args or [])

    # extra endpoint arguments per cell (tests override these to inject faults)
    def endpoint_args(self, cell: Cell, role: str) -> list[str]:
        """Extra arguments of an endpoint: the driver's, and for an emulator endpoint the
        scenario's media (both sides are started with them, as real migrations are)."""
        args = list(self.source_args if role == "source" else self.destination_args)
        endpoint = cell.source if role == "source" else cell.destination
        scenario = SCENARIOS.get(cell.scenario)  # an unknown one fails later, on the source
        if endpoint.kind == "emulator" and scenario is not None and scenario.media:
            args += ["--media", ",".join(sorted(scenario.media))]
        return args

    def run_cell(self, cell: Cell) -> Outcome:
        started = time.perf_counter()
        outcome = Outcome()
        asyncio.run(self._run_cell(cell, outcome))
        outcome.duration_s = time.perf_counter() - started
        return outcome

    async def _run_cell(self, cell: Cell, outcome: Outcome) -> None:
        workdir = self.launcher.new_workdir()
        handles: dict[str, EndpointHandle] = {}
        clients: dict[str, QMPClient] = {}
        try:
            await self.launcher.open_cell(cell, workdir)
            try:
                await asyncio.wait_for(self._cell(cell, outcome, workdir, handles, clients),
                                       cell.time_limit)
            except TimeoutError:
                outcome.timed_out = True
                outcome.message = (
                    f"no outcome within {cell.time_limit:g} s; "
                    + ", ".join(f"{r} {describe_exit(h.exit_code())}" for r, h in handles.items())
                )
                for h in handles.values():
                    h.kill()
                outcome.extra["endpoints"] = await self._describe(handles)
            except EndpointDied as e:
                outcome.crash = str(e)
                outcome.message = f"{e}; see the endpoints' log tails"
                outcome.extra["endpoints"] = await self._describe(handles)
            except _CellFailed:
                pass
        except Exception as e:  # the launcher or the driver failed: not a verdict
            outcome.harness_error = f"{self.name} driver: {type(e).__name__}: {e}"
            outcome.message = outcome.harness_error
            if handles:
                outcome.extra["endpoints"] = await self._describe(handles)
        finally:
            await self._shutdown(handles, clients)
            with contextlib.suppress(Exception):
                await self.launcher.close_cell()
            if not self.keep_workdirs:
                shutil.rmtree(workdir, ignore_errors=True)

    async def _describe(self, handles: dict[str, EndpointHandle]) -> dict[str, Any]:
        out = {}
        for role, h in handles.items():
            if h.exit_code() is None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(h.wait_exit(), 0.5)
            out[role] = h.describe()
        return out

    async def _shutdown(self, handles: dict[str, EndpointHandle],
                        clients: dict[str, QMPClient]) -> None:
        for role, client in clients.items():
            h = handles.get(role)
            if h is not None and h.exit_code() is None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.execute("quit"), 2.0)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(client.disconnect(), 2.0)
        for role, h in handles.items():
            if role not in clients:
                h.kill()  # never reached over QMP: nothing to ask it
            if h.exit_code() is None:
                try:
                    await asyncio.wait_for(h.wait_exit(), 2.0)
                except TimeoutError:
                    h.kill()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(h.wait_exit(), 5.0)

    # -- one cell --------------------------------------------------------------------------

    async def _connect(self, handle: EndpointHandle) -> QMPClient:
        """Connect to ``handle``'s monitor as soon as it listens, or fail if it exits."""
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:
            if handle.exit_code() is not None:
                raise EndpointDied(handle, "failed to start")
            client = QMPClient(f"migmatrix-{handle.role}")
            try:
                await client.connect(handle.qmp_address)
                return client
            except Exception:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.02)

    async def _execute(self, handle: EndpointHandle, client: QMPClient, command: str,
                       arguments: dict[str, Any] | None = None) -> Any:
        """``command`` on ``handle``'s monitor. A QMP error is the caller's to read; a
        connection that breaks instead means the endpoint died (or dropped its monitor)
        in that command: :class:`EndpointDied`, so the cell is ``crashed``."""
        try:
            return await client.execute(command, arguments)
        except ExecuteError:
            raise
        except Exception as e:  # ExecInterruptedError, ConnectionError, EOF...
            if handle.exit_code() is None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(handle.wait_exit(), 2.0)
            when = (f"died during {command}" if handle.exit_code() is not None else
                    f"dropped its QMP connection during {command}")
            raise EndpointDied(handle, when) from e

    async def _cell(self, cell: Cell, outcome: Outcome, workdir: Path,
                    handles: dict[str, EndpointHandle], clients: dict[str, QMPClient]) -> None:
        launch = self.launcher.launch
        # Both at once (a container takes a while to start); kept in this order whatever
        # happens, so that one that started is cleaned up when the other failed.
        started = await asyncio.gather(
            launch(cell.destination, "destination", incoming=True,
                   extra_args=self.endpoint_args(cell, "destination")),
            launch(cell.source, "source", incoming=False,
                   extra_args=self.endpoint_args(cell, "source")),
            return_exceptions=True)
        for role, result in zip(("destination", "source"), started, strict=True):
            if isinstance(result, EndpointHandle):
                handles[role] = result
        for result in started:
            if isinstance(result, BaseException):
                raise result
        dst, src = handles["destination"], handles["source"]
        clients["destination"] = dq = await self._connect(dst)
        clients["source"] = sq = await self._connect(src)

        await self._execute(dst, dq, "migrate-incoming",
                            {"uri": self.launcher.incoming_uri(dst)})
        listening = await self._execute(dst, dq, "query-migrate")
        uri = self.launcher.outgoing_uri(dst, listening.get("socket-address", []))  # type: ignore[union-attr]

        try:
            await self._execute(src, sq, "x-guest-run",
                                {"program": cell.scenario, "seed": cell.seed})
        except ExecuteError as e:
            outcome.harness_error = f"source: {e.error_class}: {e}"
            outcome.message = outcome.harness_error
            raise _CellFailed() from e

        dst_events, src_events = EventListener("MIGRATION"), EventListener("MIGRATION")
        with dq.listen(dst_events), sq.listen(src_events):
            copy = workdir / STREAM_COPY
            await self._execute(src, sq, "migrate", {
                "uri": uri, "x-tee": self.launcher.endpoint_path(src, STREAM_COPY)})
            dst_status, dst_data = await self._migration_result(dst, dst_events)
            src_status, src_data = await self._migration_result(src, src_events)

        stream = copy.read_bytes() if copy.exists() else b""
        outcome.stream_bytes = len(stream)
        if src_status == "died":
            raise EndpointDied(src, "died during the migration")
        if dst_status == "died":
            raise EndpointDied(dst, "died during the migration")
        if src_status == "failed" and src_data.get("x-fault") == "source":
            outcome.harness_error = f"source: {src_data.get('error-desc')}"
            outcome.message = outcome.harness_error
            raise _CellFailed()
        if dst_status == "failed":
            await self._rejected(cell, outcome, dst, dst_data, stream)
            return
        await self._loaded(cell, outcome, (src, sq), (dst, dq), stream)

    async def _migration_result(self, handle: EndpointHandle, events: EventListener
                                ) -> tuple[str, dict[str, Any]]:
        """``("completed"|"failed", event data)``, or ``("died", {})`` when the endpoint
        exited without a final MIGRATION event."""

        async def final_event() -> dict[str, Any]:
            while True:
                event = await events.get()
                data = event.get("data", {})
                if data.get("status") in ("completed", "failed"):
                    return dict(data)

        waiter = asyncio.ensure_future(final_event())
        exited = asyncio.ensure_future(handle.wait_exit())
        try:
            await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                # It exited: an event it sent before exiting may still be in flight.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), 0.5)
            if waiter.done() and not waiter.cancelled():
                data = waiter.result()
                return data["status"], data
            return "died", {}
        finally:
            for task in (waiter, exited):
                task.cancel()
            await asyncio.gather(waiter, exited, return_exceptions=True)

    async def _rejected(self, cell: Cell, outcome: Outcome, dst: EndpointHandle,
                        data: dict[str, Any], stream: bytes) -> None:
        """The destination reported a failed load. With the error as data it refused the
        stream (and must then exit with status 1, as QEMU does); without, the transport
        broke under it."""
        error = data.get("x-load-error")
        code = dst.exit_code()
        if code is None:
            with contextlib.suppress(asyncio.TimeoutError):
                code = await asyncio.wait_for(dst.wait_exit(), 5.0)
        if error is None:
            raise EndpointDied(dst, f"failed its incoming migration ({data.get('error-desc')})")
        outcome.load_error = error
        outcome.message = str(error.get("message") or data.get("error-desc"))
        outcome.extra["destination_exit"] = describe_exit(code)
        if code != 1:
            outcome.crash = (f"destination refused the stream but then {describe_exit(code)} "
                             "(expected status 1)")
        if error.get("offset") is not None and stream:
            reason = str(error.get("reason", ""))
            label = _REASON_TEXT.get(reason, reason.replace("_", " "))
            outcome.window = stream_window(cell, stream, int(error["offset"]), label)
        if stream:
            offset = error.get("offset")
            outcome.extra["cause"] = cell_cause(
                cell, stream, stopped_at=int(offset) if isinstance(offset, int) else None)

    async def _loaded(self, cell: Cell, outcome: Outcome,
                      source: tuple[EndpointHandle, QMPClient],
                      destination: tuple[EndpointHandle, QMPClient], stream: bytes) -> None:
        (src, sq), (dst, dq) = source, destination
        src_state, dst_state = await asyncio.gather(self._execute(src, sq, "x-dump-state"),
                                                    self._execute(dst, dq, "x-dump-state"))
        assert isinstance(src_state, dict) and isinstance(dst_state, dict)
        report = dst_state.get("load") or {}
        outcome.bytes_unread = int(report.get("bytes_unread", 0))
        # Destination sections the stream lacked keep their reset state; they count as
        # cut off only when an early EOF ended the load.
        outcome.not_loaded = list(report.get("not_loaded", [])) if outcome.bytes_unread else []
        outcome.extra["sections_loaded"] = int(report.get("section_count",
                                                          len(report.get("sections", []))))
        outcome.extra["bytes_consumed"] = report.get("bytes_consumed", 0)
        diffs = compare_states(src_state, dst_state)
        for d in diffs:
            if d["path"].startswith("ram/") and d["source"] is None:
                d["source"] = await self._ram_pages(source, destination, d["path"][4:])
        outcome.diff_total = len(diffs)
        outcome.diff = [
            diff_entry(d["path"], d["source"], d["destination"]) for d in diffs[:DIFF_LIMIT]
        ]
        outcome.extra["one_sided"] = one_sided_fields(cell, src_state.get("devices", {}),
                                                      dst_state.get("devices", {}))
        if stream and (diffs or outcome.bytes_unread > 0 or outcome.not_loaded):
            outcome.extra["cause"] = cell_cause(cell, stream,
                                                frozenset(d["path"] for d in diffs))
        if outcome.bytes_unread > 0 or outcome.not_loaded:
            eof_at = int(report.get("bytes_consumed", 1)) - 1
            outcome.extra["offset"] = eof_at
            outcome.message = (
                f"an EOF byte at offset {eof_at} ended the load with {outcome.bytes_unread} "
                f"byte(s) unread; never loaded: {', '.join(outcome.not_loaded) or 'none'}"
            )
            if stream:
                outcome.window = stream_window(cell, stream, eof_at, "0x00 read as EOF")
        elif diffs:
            outcome.message = (
                f"loaded without error but {len(diffs)} field(s) differ, first {diffs[0]['path']}"
            )

    async def _ram_pages(self, source: tuple[EndpointHandle, QMPClient],
                         destination: tuple[EndpointHandle, QMPClient], block: str,
                         limit: int = 20) -> str:
        """Which pages of ``block`` differ, worded as the in-process comparison words it."""
        try:
            a = await self._execute(*source, "x-query-ram-pages", {"block": block})
            b = await self._execute(*destination, "x-query-ram-pages", {"block": block})
        except ExecuteError:
            return "digests differ"
        assert isinstance(a, list) and isinstance(b, list)
        pages = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y]
        where = ", ".join(map(str, pages[:limit])) + (", ..." if len(pages) > limit else "")
        return f"{len(pages)} page(s) differ: [{where}]"

