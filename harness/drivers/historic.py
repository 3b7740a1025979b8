"""The ``historic`` driver: the real QEMU builds of 2010-2011 (and RHEL 6's qemu-kvm) as
endpoints, on their own or facing the emulator core.

A cell has two sides, each real (a build from :mod:`harness.qemu.historic`, kind
``qemu``) or modelled (the emulator core in this process, kind ``emulator``):

1. the real destination starts with ``-S -incoming unix:W/incoming.sock`` (no ``defer``
   in that era), the real source with ``-S``; both with the human monitor and QMP on
   sockets in the cell's directory ``W``, ``-nographic -serial null -parallel none`` and
   the scenario's disks (:mod:`harness.qemu.historic_scenarios`);
2. the scenario runs on the source (monitor commands, a booting guest); a modelled source
   builds its state in this process;
3. the stream goes through this process: a real source migrates to ``unix:W/relay.sock``
   (never ``exec:``: 0.14's SIGCHLD handler can fail an ``exec:`` migration whose file is
   complete), which records it as ``stream.bin`` and forwards it; a modelled source's
   stream is sent the same way. :func:`harness.qemu.feeder.pump` holds back the last byte
   until the destination asks for it, so a destination that closed before that stopped
   early: it read a ``0x00`` as the end of the stream with bytes unread;
4. a real destination that fails a load prints why and exits (status 0 upstream, 1 on
   RHEL): ``rejected``, with its lines verbatim; any other death is ``crashed``. One that
   answers its monitor after closing the stream loaded it: all of it, or ``truncated``
   when it stopped early. For a refusal or an early stop the offset is measured on the
   real program (:func:`harness.qemu.feeder.locate_stop` replays the stream in paced
   steps); QEMU's messages never give one. A modelled destination loads in this process;
5. a destination that loaded saves its state (``migrate`` to ``unix:W/dst-save.sock``),
   and both streams are decoded with the analyzer as the model's release of each side
   reads them: every field both define and every RAM page are compared
   (:mod:`harness.qemu.compare`, with the ignored fields and their reasons). A stream
   the analyzer cannot decode leaves the cell ``error`` with the reason, never ``pass``.

The first lines of each side's log and its monitor transcript go into the cell's detail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from ..emulator.errors import LoadError, SaveCrash
from ..emulator.machine import Machine
from ..emulator.releases import get_release
from ..matrix import Cell, Endpoint
from ..qemu import bootimage
from ..qemu.compare import HISTORIC_IGNORED, StreamState, compare, page_counters, read_state
from ..qemu.feeder import FeedResult, InputProbe, locate_stop, pump
from ..qemu.historic import (
    BUNDLE_SETS,
    HistoricBuild,
    find_build,
    nic_args,
    runtime_args,
    vga_args,
)
from ..qemu.historic_scenarios import (
    COUNTED_TOP,
    HISTORIC_SCENARIOS,
    HistoricScenario,
    ScenarioFailed,
)
from ..qemu.monitor import HumanMonitor, MonitorError
from ..scenarios import media_of
from ..verdict import Outcome
from . import Driver, diff_entry
from .inprocess import DIFF_LIMIT, build_source, stream_window
from .processes import tail
from .qmp import describe_exit

__all__ = ["EndpointStartFailed", "HistoricDriver", "RealEndpoint", "cell_commands",
           "historic_argv", "is_historic"]

STREAM = "stream.bin"
DEST_STATE = "dst.state"
START_TIMEOUT = 20.0
SAVE_TIMEOUT = 60.0
SETTLE_TIMEOUT = 30.0
EXIT_GRACE = 2.0  # a monitor closed under a command: the process is exiting
LOG_LINES = 40
# Lines every run of some builds prints, which say nothing about the cell.
NOISE = ("Could not open option rom 'sgabios.bin'", "GLib-WARNING",
         "custom memory allocation vtable not supported",
         "Warning: vlan 0 is not connected to host network", "has no peer")


def is_historic(endpoint: Endpoint) -> bool:
    return endpoint.kind == "qemu" and endpoint.historic


def historic_argv(endpoint: Endpoint, build: HistoricBuild, role: str, workdir: Path,
                  scenario: HistoricScenario, *, incoming: str | None = None) -> list[str]:
    """The command line of one side of a cell (every path inside ``workdir``)."""
    serial = f"file:{workdir / (role + '.serial')}" if scenario.serial else "null"
    argv = [str(build.binary), "-L", str(build.datadir), "-M", endpoint.machine,
            "-m", f"{endpoint.ram_size >> 20}", "-nographic", "-serial", serial,
            "-parallel", "none", "-S",
            "-monitor", f"unix:{workdir / (role + '.hmp')},server,nowait",
            "-qmp", f"unix:{workdir / (role + '.qmp')},server,nowait"]
    argv += runtime_args(build)
    if scenario.nic_args is not None:  # the scenario places the NIC (nic-hotplug)
        argv += scenario.nic_args(role, endpoint.nic, endpoint.vga)
    else:
        argv += nic_args(endpoint.nic, get_release(endpoint.release).default_nic)
    argv += vga_args(endpoint.vga)
    argv += list(endpoint.args)
    argv += scenario.args(workdir, role)
    if incoming is not None:
        argv += ["-incoming", incoming]
    return argv


class RealEndpoint:
    """One running historic build: its process, monitor, QMP and log."""

    def __init__(self, role: str, argv: list[str], proc: subprocess.Popen[bytes],
                 workdir: Path, build: HistoricBuild, endpoint: Endpoint) -> None:
        self.role = role
        self.nic = endpoint.nic
        self.vga = endpoint.vga
        self.argv = argv
        self.proc = proc
        self.workdir = workdir
        self.build = build
        self.log = workdir / f"{role}.log"
        self.monitor: HumanMonitor | None = None
        self.client: QMPClient | None = None

    @classmethod
    async def start(cls, role: str, argv: list[str], workdir: Path,
                    build: HistoricBuild, endpoint: Endpoint) -> RealEndpoint:
        with open(workdir / f"{role}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    cwd=workdir, start_new_session=True)
        ep = cls(role, argv, proc, workdir, build, endpoint)
        try:
            ep.monitor = await HumanMonitor.connect(str(workdir / f"{role}.hmp"), START_TIMEOUT)
            ep.client = QMPClient(f"migmatrix-{role}")
            await _connect_qmp(ep.client, str(workdir / f"{role}.qmp"), ep)
        except Exception as e:
            ep.kill()
            raise EndpointStartFailed(ep, e) from e
        return ep

    # SourceControl, for the scenarios
    async def hmp(self, line: str) -> str:
        assert self.monitor is not None
        return await self.monitor.command(line)

    async def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        assert self.client is not None
        return await self.client.execute(command, arguments)

    def serial_bytes(self) -> bytes:
        path = self.workdir / f"{self.role}.serial"
        return path.read_bytes() if path.exists() else b""

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(5)

    def messages(self) -> list[str]:
        """QEMU's own lines from its log, verbatim, without the known noise."""
        lines = tail(self.log, LOG_LINES).splitlines()
        return [line.rstrip() for line in lines
                if line.strip() and not any(n in line for n in NOISE)]

    def describe(self) -> dict[str, Any]:
        return {"argv": shlex.join(self.argv), "exit_code": self.exit_code(),
                "status": describe_exit(self.exit_code()), "log_tail": tail(self.log, LOG_LINES),
                "build": self.build.buildinfo().get("ref") or self.build.buildinfo().get("commit"),
                "monitor": [{"command": c, "answer": a}
                            for c, a in (self.monitor.transcript if self.monitor else [])]}

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self.client.disconnect(), 2.0)
        if self.monitor is not None:
            await self.monitor.close()
        self.kill()


class EndpointStartFailed(Exception):
    def __init__(self, endpoint: RealEndpoint, cause: BaseException) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint.role} did not start ({describe_exit(endpoint.exit_code())}"
                         f"): {cause}; {' | '.join(endpoint.messages()[-3:])}")


async def _connect_qmp(client: QMPClient, path: str, ep: RealEndpoint) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if ep.exited():
            raise RuntimeError("exited")
        try:
            await client.connect(path)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.02)


# -- moving the stream ----------------------------------------------------------------------


def _listener(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(1)
    return s


def _accepted_chunks(listener: socket.socket, timeout: float) -> Iterator[bytes]:
    listener.settimeout(timeout)
    conn, _ = listener.accept()
    conn.settimeout(timeout)
    with conn:
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            yield data


def _connect_unix(path: Path, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@dataclass
class _Transfer:
    stream: bytes = b""
    feed: FeedResult | None = None
    error: str | None = None


def _record_and_forward(listener: socket.socket, record: Path, dst_sock: socket.socket | None,
                        probe: InputProbe | None, timeout: float) -> _Transfer:
    """The relay (runs in a thread): accept the source, record its stream, and forward it
    to the destination when there is one."""
    out = _Transfer()
    parts: list[bytes] = []
    try:
        chunks = _accepted_chunks(listener, timeout)
        if dst_sock is None or probe is None:
            for chunk in chunks:
                parts.append(chunk)
        else:
            out.feed = pump(chunks, dst_sock, probe, final_timeout=SETTLE_TIMEOUT,
                            on_chunk=parts.append)
    except OSError as e:
        out.error = f"relay: {e}"
    out.stream = b"".join(parts)
    record.write_bytes(out.stream)
    return out


def _chunks_of(data: bytes, size: int = 1 << 16) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


# -- the driver -----------------------------------------------------------------------------


class _CellDone(Exception):
    """The outcome already says what happened."""


@dataclass
class _Cell:
    cell: Cell
    outcome: Outcome
    workdir: Path
    scenario: HistoricScenario
    builds: dict[str, HistoricBuild] = field(default_factory=dict)
    real: dict[str, RealEndpoint] = field(default_factory=dict)
    stream: bytes = b""
    timings: dict[str, float] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)
    doing: str = "starting"  # what the driver is doing, for a death's message


    def lap(self, name: str) -> None:
        self.timings[name] = round(time.perf_counter() - self.t0, 3)

    def endpoint(self, role: str) -> Endpoint:
        return self.cell.source if role == "source" else self.cell.destination

    def is_real(self, role: str) -> bool:
        return self.endpoint(role).kind == "qemu"

    def argv(self, role: str, *, incoming: str | None = None) -> list[str]:
        return historic_argv(self.endpoint(role), self.builds[role], role, self.workdir,
                             self.scenario, incoming=incoming)


async def _dead_endpoints(c: _Cell, grace: float = EXIT_GRACE) -> list[RealEndpoint]:
    """The real endpoints that died. A process killed by a signal closes its sockets
    before it can be reaped, so a monitor that just closed gets ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while True:
        dead = [ep for ep in c.real.values() if ep.exited()]
        if dead or time.monotonic() > deadline:
            return dead
        await asyncio.sleep(0.02)


class HistoricDriver(Driver):
    """Runs cells with at least one historic real endpoint (see the module docstring)."""

    name = "historic"

    def __init__(self, *, keep_workdirs: bool = False, locate: bool = True,
                 workroot: str | Path | None = None) -> None:
        self.keep_workdirs = keep_workdirs
        self.locate = locate  # measure where a refusing or stopping destination stopped
        self.workroot = workroot  # where cell directories are made (default: the temp dir)

    def run_cell(self, cell: Cell) -> Outcome:
        started = time.perf_counter()
        outcome = Outcome()
        workdir = Path(tempfile.mkdtemp(prefix="mmh-", dir=self.workroot))
        state = _Cell(cell, outcome, workdir, HISTORIC_SCENARIOS[cell.scenario])
        try:
            asyncio.run(self._run(state))
        finally:
            if not self.keep_workdirs:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                outcome.extra["workdir"] = str(workdir)
        outcome.duration_s = time.perf_counter() - started
        return outcome

    async def _run(self, c: _Cell) -> None:
        outcome = c.outcome
        outcome.extra["timings_s"] = c.timings
        try:
            await asyncio.wait_for(self._cell(c), c.cell.time_limit)
        except TimeoutError:
            outcome.timed_out = True
            outcome.message = f"no outcome within {c.cell.time_limit:g} s"
        except _CellDone:
            pass
        except EndpointStartFailed as e:
            outcome.harness_error = str(e)
            outcome.message = outcome.harness_error
        except ScenarioFailed as e:
            outcome.harness_error = f"source: the scenario could not be built: {e}"
            outcome.message = outcome.harness_error
        except Exception as e:
            dead = await _dead_endpoints(c)
            if dead:  # a real program died under a command (e.g. 6.1 saving a media event)
                ep = dead[0]
                outcome.crash = (f"{ep.role} {describe_exit(ep.exit_code())} during the "
                                 f"cell, {c.doing} ({type(e).__name__} in the driver)")
                outcome.message = f"{outcome.crash}: {'; '.join(ep.messages()[-3:])}"
            else:  # the driver failed: not a verdict on the emulator
                outcome.harness_error = f"historic driver: {type(e).__name__}: {e}"
                outcome.message = outcome.harness_error
        finally:
            if c.real:
                outcome.extra["endpoints"] = {r: ep.describe() for r, ep in c.real.items()}
            for ep in c.real.values():
                await ep.close()

    async def _cell(self, c: _Cell) -> None:
        cell, outcome = c.cell, c.outcome
        for role in ("source", "destination"):
            if c.is_real(role):
                c.builds[role] = await asyncio.to_thread(
                    find_build, c.endpoint(role).release,
                    builds_dir=c.endpoint(role).historic_dir)
        c.scenario.files(c.workdir, cell.source.ram_size)
        dst_sock: socket.socket | None = None
        probe: InputProbe | None = None
        incoming = c.workdir / "incoming.sock"
        if c.is_real("destination"):
            c.real["destination"] = await RealEndpoint.start(
                "destination", c.argv("destination", incoming=f"unix:{incoming}"), c.workdir,
                c.builds["destination"], c.endpoint("destination"))
            dst_sock = await asyncio.to_thread(_connect_unix, incoming, START_TIMEOUT)
            probe = InputProbe(c.real["destination"].proc.pid, dst_sock)

        if c.is_real("source"):
            src = c.real["source"] = await RealEndpoint.start(
                "source", c.argv("source"), c.workdir, c.builds["source"], c.endpoint("source"))
            c.lap("started")
            c.doing = "building the scenario on the source"
            if c.scenario.prepare is not None:
                await c.scenario.prepare(src)
            c.lap("scenario")
            c.doing = "migrating"
            listener = _listener(c.workdir / "relay.sock")
            relay = asyncio.create_task(asyncio.to_thread(
                _record_and_forward, listener, c.workdir / STREAM, dst_sock, probe,
                SAVE_TIMEOUT))
            try:
                status = await self._migrate(src, f"unix:{c.workdir / 'relay.sock'}",
                                             live=c.scenario.live)
                transfer = await relay
            finally:
                listener.close()
            if status.get("status") != "completed" and not transfer.stream:
                outcome.harness_error = f"source: migration {status.get('status')}: {status}"
                outcome.message = outcome.harness_error
                raise _CellDone()
            outcome.extra["source_migration"] = status
        else:
            c.doing = "migrating"
            # A real destination's RTC catches up from the source's host clock second
            # by second: the model's source runs on this host's clock, as a real one would.
            try:
                _, stream = await asyncio.to_thread(build_source, cell,
                                                    host_time_ns=time.time_ns())
            except SaveCrash as e:  # the modelled source dies saving, as the real one does
                outcome.crash = f"{type(e).__name__}: {e}"
                outcome.message = f"source crashed: {e}"
                raise _CellDone() from e
            (c.workdir / STREAM).write_bytes(stream)
            transfer = _Transfer(stream)
            if dst_sock is not None and probe is not None:
                transfer.feed = await asyncio.to_thread(
                    pump, _chunks_of(stream), dst_sock, probe, final_timeout=SETTLE_TIMEOUT)
        c.stream = transfer.stream
        outcome.stream_bytes = len(c.stream)
        c.lap("migrated")
        if transfer.error:
            outcome.harness_error = transfer.error
            outcome.message = transfer.error
            raise _CellDone()

        if c.is_real("destination"):
            assert transfer.feed is not None and dst_sock is not None
            dst_sock.close()
            await self._real_destination(c, transfer.feed)
        else:
            self._model_destination(c)

    # -- source -------------------------------------------------------------------------

    async def _migrate(self, src: RealEndpoint, uri: str, *, live: bool) -> dict[str, Any]:
        """``migrate`` and poll ``query-migrate`` until it ends. Live: RAM goes out with a
        downtime limit no guest can meet until a quarter more than the guest's RAM was
        sent (the first pass and dirty pages after it), then with one it meets."""
        if live:
            await src.hmp("migrate_set_speed 1g")
            await src.hmp("migrate_set_downtime 0.000001")
        answer = await src.hmp(f"migrate -d {uri}")
        if answer:
            return {"status": "failed", "monitor": answer}
        ram = 0
        lifted = not live
        deadline = time.monotonic() + SAVE_TIMEOUT
        while True:
            if src.exited():
                return {"status": "source exited", "exit": describe_exit(src.exit_code())}
            info = await src.qmp("query-migrate")
            status = info.get("status") if isinstance(info, dict) else None
            if status in ("completed", "failed", "cancelled"):
                out = dict(info)
                out["passes_forced"] = live
                return out
            if not lifted:
                ram = max(ram, int(info.get("ram", {}).get("total", 0)))
                if ram and int(info.get("ram", {}).get("transferred", 0)) > ram + (ram >> 2):
                    await src.hmp("migrate_set_downtime 30")
                    lifted = True
            if time.monotonic() > deadline:
                return {"status": "timeout", "last": info}
            await asyncio.sleep(0.01)

    # -- destination ----------------------------------------------------------------------

    async def _real_destination(self, c: _Cell, feed: FeedResult) -> None:
        outcome = c.outcome
        dst = c.real["destination"]
        outcome.extra["feed"] = {"delivered": feed.delivered, "total": feed.total,
                                 "read_all": feed.read_all, "note": feed.note}
        loaded, status = await self._load_result(dst)
        outcome.extra["destination_status"] = status
        if not loaded:
            code = dst.exit_code()
            lines = dst.messages()
            message = "; ".join(lines[-6:]) or "no message"
            outcome.extra["destination_exit"] = describe_exit(code)
            outcome.extra["qemu_messages"] = lines
            clean_exit = 1 if dst.build.set.startswith("rhel") else 0
            if code is None:
                # Alive, every byte delivered, and its monitor silent: the loader hangs
                # (e.g. waiting for a section the stream never sends), a hang, not a crash.
                outcome.timed_out = True
                outcome.message = (f"the destination stopped answering during the load "
                                   f"(no 'info status' within {SETTLE_TIMEOUT:.0f} s, still "
                                   f"running, {feed.delivered} of {feed.total} bytes "
                                   f"delivered): {message}")
                return
            if code != clean_exit:
                outcome.crash = f"destination {describe_exit(code)} during the load"
                outcome.message = f"{outcome.crash}: {message}"
                return
            offset = await self._where_it_stopped(c, feed)
            outcome.load_error = {"reason": "qemu", "errno": None, "message": message,
                                  "offset": offset, "section": _section_named(lines),
                                  "field": None}
            outcome.message = message
            if offset is not None:
                outcome.window = stream_window(c.cell, c.stream, offset,
                                               "the destination stopped reading here")
            return
        if feed.read_all is None:
            outcome.harness_error = f"could not tell whether the destination read the whole " \
                                    f"stream: {feed.note}"
            outcome.message = outcome.harness_error
            raise _CellDone()
        if not feed.read_all:
            offset = await self._where_it_stopped(c, feed)
            unread = feed.total - 1 - offset if offset is not None else None
            outcome.bytes_unread = unread if unread else max(1, feed.total - feed.delivered)
            outcome.extra["offset"] = offset
            outcome.message = (
                f"the destination reported success and stopped reading the stream after "
                f"byte {offset} with {outcome.bytes_unread} byte(s) unread"
                if offset is not None else
                f"the destination reported success with at least {outcome.bytes_unread} "
                "byte(s) of the stream unread")
            if offset is not None:
                outcome.window = stream_window(c.cell, c.stream, offset, "0x00 read as EOF")
        # It loaded: have it save what it holds, and compare.
        c.doing = "after the load, saving the destination's state"
        saved = await self._save_destination(c)
        dst_state = await asyncio.to_thread(
            read_state, saved, release=c.cell.destination.release,
            machine=c.cell.destination.machine)
        self._compare(c, dst_state)

    async def _load_result(self, dst: RealEndpoint) -> tuple[bool, str]:
        """Whether the destination survived its load, and its ``info status``. A failing
        load exits straight from the load (before the monitor is served again), so an
        answer from the monitor means the load returned success."""
        try:
            status = await asyncio.wait_for(dst.hmp("info status"), SETTLE_TIMEOUT)
        except (MonitorError, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(dst.proc.wait, 5)
            return False, "no answer" + (" (the process exited)" if dst.exited() else "")
        await asyncio.sleep(0.05)
        if dst.exited():
            return False, status
        return True, status

    async def _where_it_stopped(self, c: _Cell, feed: FeedResult) -> int | None:
        """The offset of the last byte the destination read, measured by replaying the
        stream to fresh destinations (None when not measured)."""
        if feed.read_all:
            # It asked for the last byte, then failed: it read past the end of the stream.
            c.outcome.extra["stopped_after"] = {"lo": feed.total - 1, "hi": feed.total - 1,
                                                "past_end": True}
            return feed.total - 1
        if not self.locate or feed.stopped_after is None:
            return None
        started = time.perf_counter()
        argv = c.argv("destination", incoming=f"unix:{c.workdir / 'replay.sock'}")
        replay_log = c.workdir / "replay.log"

        def start() -> tuple[int, socket.socket, Any]:
            with contextlib.suppress(FileNotFoundError):
                (c.workdir / "replay.sock").unlink()
            with open(replay_log, "ab") as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        cwd=c.workdir, start_new_session=True)
            try:
                sock = _connect_unix(c.workdir / "replay.sock", START_TIMEOUT)
            except OSError:
                proc.kill()
                proc.wait()
                raise

            def cleanup() -> None:
                sock.close()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return proc.pid, sock, cleanup

        try:
            lo, hi = await asyncio.to_thread(locate_stop, c.stream, start, feed.stopped_after)
        except (OSError, TimeoutError) as e:
            c.outcome.extra["locate_error"] = str(e)
            return None
        c.outcome.extra["stopped_after"] = {"lo": lo, "hi": hi,
                                            "seconds": round(time.perf_counter() - started, 3)}
        return hi if lo == hi else None

    async def _save_destination(self, c: _Cell) -> Path:
        dst = c.real["destination"]
        path = c.workdir / DEST_STATE
        sock = c.workdir / "dst-save.sock"
        listener = _listener(sock)
        try:
            task = asyncio.create_task(asyncio.to_thread(
                _record_and_forward, listener, path, None, None, SAVE_TIMEOUT))
            status = await self._migrate(dst, f"unix:{sock}", live=False)
            transfer = await task
        finally:
            listener.close()
        if status.get("status") != "completed" or transfer.error:
            c.outcome.harness_error = (f"the destination loaded but could not save its state: "
                                       f"{transfer.error or status}")
            c.outcome.message = c.outcome.harness_error
            raise _CellDone()
        c.lap("saved")
        return path

    def _model_destination(self, c: _Cell) -> None:
        outcome, dst = c.outcome, c.cell.destination
        media = media_of(c.cell.scenario, historic=c.cell.source.historic)
        try:
            machine, report = Machine.load(dst.release, dst.machine, c.stream,
                                           ram_size=dst.ram_size, nic=dst.nic, media=media,
                                           vga=dst.vga)
        except LoadError as e:
            outcome.load_error = e.to_dict()
            outcome.message = str(e)
            if e.offset is not None:
                outcome.window = stream_window(c.cell, c.stream, e.offset, e.reason.text)
            return
        except Exception as e:  # not a migration error: the modelled destination crashed
            outcome.crash = f"{type(e).__name__}: {e}"
            outcome.message = f"destination crashed: {outcome.crash}"
            return
        outcome.bytes_unread = report.bytes_unread
        outcome.not_loaded = report.not_loaded if report.half_loaded else []
        if report.half_loaded:
            eof_at = report.bytes_consumed - 1
            outcome.extra["offset"] = eof_at
            outcome.message = (f"an EOF byte at offset {eof_at} ended the load with "
                               f"{report.bytes_unread} byte(s) unread; never loaded: "
                               f"{', '.join(report.not_loaded) or 'none'}")
            outcome.window = stream_window(c.cell, c.stream, eof_at, "0x00 read as EOF")
        # Saved again and decoded, as a real destination's state is.
        saved = c.workdir / DEST_STATE
        saved.write_bytes(machine.save() or b"")
        self._compare(c, read_state(saved, release=dst.release, machine=dst.machine))

    # -- comparison -------------------------------------------------------------------------

    def _compare(self, c: _Cell, dst_state: StreamState) -> None:
        outcome, src = c.outcome, c.cell.source
        src_state = read_state(c.workdir / STREAM, release=src.release, machine=src.machine)
        problems = [f"the {name} ({st.path}): {(st.error or {}).get('message')}"
                    for name, st in (("source's stream", src_state),
                                     ("destination's state", dst_state)) if st.error]
        if problems:
            note = ("cannot compare the state: the analyzer of the model's release does not "
                    "decode " + "; ".join(problems))
            outcome.extra["comparison"] = {"error": note}
            if outcome.bytes_unread or outcome.not_loaded:
                outcome.message += f"; {note}"
                return  # truncated whatever the state says
            outcome.harness_error = f"loaded the whole stream, but {note}"
            outcome.message = outcome.harness_error
            return
        result = compare(src_state, dst_state, HISTORIC_IGNORED)
        diffs = list(result.diffs)
        outcome.extra["comparison"] = result.to_dict()
        if c.scenario.live and c.cell.source.historic:
            # The counting guest ran only on a real source; a model source's live-ram
            # dirties its own pages, compared page by page above.
            top = min(COUNTED_TOP, bootimage.top_for(c.cell.destination.ram_size))
            counters = page_counters(dst_state, bootimage.START, top)
            problem = counters if isinstance(counters, str) else \
                bootimage.check_counters(counters)
            if problem:
                diffs.append({"path": "guest/page-counters", "source": "at most one step",
                              "destination": problem})
        outcome.diff_total = len(diffs)
        outcome.diff = [diff_entry(d["path"], d["source"], d["destination"])
                        for d in diffs[:DIFF_LIMIT]]
        if diffs and not outcome.bytes_unread:
            outcome.message = (f"loaded without error but {len(diffs)} difference(s), "
                               f"first {diffs[0]['path']}")


def cell_commands(cell: Cell) -> dict[str, str]:
    """The command lines of the cell's real sides, for its detail (``$W`` is the cell's
    directory, ``$BUNDLE`` the unpacked build); a modelled side is the migmatrix command
    that writes or loads the same stream."""
    scenario = HISTORIC_SCENARIOS[cell.scenario]
    out = {}
    for role, ep in (("source", cell.source), ("destination", cell.destination)):
        if ep.kind == "qemu":
            build = HistoricBuild(ep.release, BUNDLE_SETS[ep.release], Path(f"$BUNDLE-{ep.release}"))
            incoming = "unix:$W/incoming.sock" if role == "destination" else None
            try:
                argv = historic_argv(ep, build, role, Path("$W"), scenario, incoming=incoming)
            except ScenarioFailed as e:
                out[role] = f"(none: {e})"
                continue
            out[role] = shlex.join(argv).replace("'", "")
        elif role == "source":
            out[role] = (f"migmatrix save --release {ep.release} --machine {ep.machine} "
                         f"--ram {ep.ram_size} --scenario {cell.scenario} -o $W/stream.bin")
        else:
            out[role] = (f"migmatrix load --release {ep.release} --machine {ep.machine} "
                         f"--ram {ep.ram_size} $W/stream.bin")
    return out


def _section_named(lines: list[str]) -> str | None:
    """The section QEMU's message names (for the report's section column only)."""
    for line in reversed(lines):
        for pattern in (r"instance '([^']+)'", r"for '([^']+)'", r"device '([^']+)'",
                        r"ramblock \"([^\"]+)\""):
            m = re.search(pattern, line)
            if m:
                return m.group(1)
    return None


