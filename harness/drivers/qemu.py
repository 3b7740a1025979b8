"""The ``qemu`` driver: real QEMU binaries as endpoints, driven by the QMP driver core.

An endpoint names a binary (on this host) or a container image holding one, a machine
type and extra arguments (:class:`~harness.matrix.Endpoint` of kind ``qemu``). Per cell:

1. the destination starts with ``-S -incoming defer``, the source with ``-S``; both with
   ``-nodefaults -display none``, ``-accel tcg`` unless the endpoint names an accelerator,
   and their QMP monitor on a unix socket in the cell's directory (bind-mounted at the
   same path into a container, so that every path means the same on both sides);
2. the scenario (:mod:`harness.qemu.scenarios`): ``guest-dirty`` boots the project's image
   (:mod:`harness.qemu.bootimage`) on the source, waits for it to run, and migrates live
   with a 1 ms downtime limit until RAM has been sent in at least two passes, then lifts
   the limit so that the migration completes with the guest still dirtying pages;
3. the migration: over ``unix`` (default) or ``tcp`` through a relay in this process that
   records every byte the source sends (``stream.bin``), or over ``exec`` (the source writes
   ``stream.bin``, the destination then reads it);
4. a destination that exits during the load refused the stream: ``rejected`` with QEMU's
   own message from its stderr (exit status 1), ``crashed`` on any other exit;
5. a destination that loaded saves its own stream (``migrate exec:cat > dst.state``); the
   source's state is the stream it sent, whose last copy of each page is its memory when
   it stopped. Both are decoded through their VMDESCRIPTION and compared field by field
   and page by page (:mod:`harness.qemu.compare`); a running guest's page counters must
   form at most one step, and the guest must run on after ``cont`` on the destination.

Why the sent stream and not a second save of the source: QEMU refuses to migrate a
guest again once it is paused by a completed migration, and the sent stream is exactly
what the destination was given: device sections once, at the end, RAM pages resent
whenever the guest dirtied them, and the final pass sent with the source stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from ..matrix import Cell, Endpoint
from ..qemu import bootimage
from ..qemu.compare import compare, page_counters, read_state
from ..qemu.scenarios import QEMU_SCENARIOS
from ..verdict import Outcome
from .inprocess import DIFF_LIMIT
from .processes import ProcessHandle
from .qmp import EndpointDied, EndpointHandle, Launcher, QMPDriver, _CellFailed, describe_exit

__all__ = ["QemuDriver", "QemuLauncher", "cell_commands", "qemu_argv", "qemu_problem"]

STREAM = "stream.bin"  # what the source sent
DEST_STATE = "dst.state"  # what the destination saved after loading
BOOT_TIMEOUT = 20.0  # the guest's first pass must show on COM1 within this
ALIVE_TIMEOUT = 10.0  # ... and a new pass after ``cont`` on the destination
LIVE_PASSES = 3  # dirty-sync-count at which the downtime limit is lifted
POLL = 0.01
# QEMU prefixes its error lines with the program name.
_PREFIX = re.compile(r"^(?:\S*qemu-system-\w+|qemu-kvm|kvm): ")


def qemu_problem(binary: str = "qemu-system-x86_64") -> str | None:
    """Why real-QEMU cells cannot run here, or ``None``."""
    if shutil.which(binary) is None:
        return (f"{binary} not found: apt-get install -y --no-install-recommends "
                "qemu-system-x86")
    return None


def _accel_given(args: tuple[str, ...]) -> bool:
    return any(a in ("-accel", "-enable-kvm") or "accel=" in a for a in args)


def qemu_argv(endpoint: Endpoint, role: str, workdir: Path, *, incoming: bool,
              runs_guest: bool) -> list[str]:
    """The command line of one endpoint (QMP, serial and disk in ``workdir``)."""
    argv = [endpoint.binary or "qemu-system-x86_64", "-M", endpoint.machine,
            "-nodefaults", "-display", "none", "-m", f"{endpoint.ram_size >> 20}M", "-S",
            "-qmp", f"unix:{workdir / (role + '.qmp')},server=on,wait=off"]
    if not _accel_given(endpoint.args):
        argv += ["-accel", "tcg"]
    if not any("suppress-vmdesc" in a for a in endpoint.args):
        # Machine types up to pc-*-2.2 leave out the VMDESCRIPTION JSON after EOF, which
        # the comparison decodes the device sections with. Loaders stop at EOF (or read
        # it and skip it), so asking for it on both sides changes nothing they load.
        argv += ["-machine", "suppress-vmdesc=off"]
    if "-rtc" not in endpoint.args:
        # The RTC follows the guest's clock, which stands still while it is paused: its
        # time registers, update flags and next-update time are then the same however
        # long after the migration each side saves (with the host clock they are not).
        argv += ["-rtc", "clock=vm"]
    if runs_guest:
        argv += ["-drive", f"file={workdir / (role + '.img')},format=raw,if=ide",
                 "-serial", f"file:{workdir / (role + '.serial')}"]
    argv += list(endpoint.args)
    if incoming:
        argv += ["-incoming", "defer"]
    return argv


def cell_commands(cell: Cell) -> dict[str, str]:
    """The two command lines of a cell, for its detail (``$W`` is the cell directory)."""
    runs = QEMU_SCENARIOS[cell.scenario].runs_guest
    out = {}
    for role, ep, incoming in (("source", cell.source, False),
                               ("destination", cell.destination, True)):
        argv = qemu_argv(ep, role, Path("$W"), incoming=incoming, runs_guest=runs)
        line = shlex.join(argv).replace("'", "")
        if ep.image:
            line = f"docker run --network none -v $W:$W {ep.image} {line}"
        out[role] = line
    return out


# -- launching --------------------------------------------------------------------------


class QemuLauncher(Launcher):
    """QEMU processes on this host, or in containers of the endpoint's ``image``."""

    def __init__(self) -> None:
        self.workdir: Path | None = None
        self.cell: Cell | None = None
        self.docker: Any = None
        self.containers: list[Any] = []
        self.tag = ""

    async def open_cell(self, cell: Cell, workdir: Path) -> None:
        self.cell, self.workdir = cell, workdir
        self.tag = f"mmq-{uuid.uuid4().hex[:10]}"
        if QEMU_SCENARIOS[cell.scenario].runs_guest:
            image = bootimage.write_image(workdir / "boot.img", cell.source.ram_size)
            for role in ("source", "destination"):
                shutil.copy(image, workdir / f"{role}.img")  # each its own (image locks)

    async def close_cell(self) -> None:
        for h in self.containers:
            await asyncio.to_thread(h.remove)
        self.containers = []
        self.workdir = self.cell = None

    async def launch(self, endpoint: Endpoint, role: str, *, incoming: bool,
                     extra_args: list[str]) -> EndpointHandle:
        assert self.workdir is not None and self.cell is not None
        runs = QEMU_SCENARIOS[self.cell.scenario].runs_guest
        argv = qemu_argv(endpoint, role, self.workdir, incoming=incoming, runs_guest=runs)
        argv += extra_args
        if endpoint.image:
            return await self._container(endpoint.image, role, argv)
        log = self.workdir / f"{role}.log"
        with open(log, "wb") as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                    cwd=self.workdir, start_new_session=True)
            except FileNotFoundError as e:
                raise RuntimeError(f"{argv[0]}: not found ({qemu_problem(argv[0])})") from e
        return ProcessHandle(role, argv, proc, str(self.workdir / f"{role}.qmp"), log)

    async def _container(self, image: str, role: str, argv: list[str]) -> EndpointHandle:
        from .containers import ContainerHandle

        assert self.workdir is not None
        if self.docker is None:
            import docker

            self.docker = docker.from_env(timeout=60)
        os.chmod(self.workdir, 0o777)
        name = f"{self.tag}-{role[:3]}"
        devices = ["/dev/kvm:/dev/kvm"] if _accel_given(tuple(argv)) and \
            os.path.exists("/dev/kvm") else []
        container = await asyncio.to_thread(
            self.docker.containers.run, image, argv, name=name, detach=True,
            network_mode="none", labels={"migmatrix": role}, devices=devices,
            volumes={str(self.workdir): {"bind": str(self.workdir), "mode": "rw"}})
        shown = ["docker", "run", "--name", name, "--network", "none", "-v",
                 f"{self.workdir}:{self.workdir}", image, *argv]
        handle = ContainerHandle(role, shown, container, self.workdir)
        handle.start_waiting()
        self.containers.append(handle)
        return handle

    # The QMP driver core's transport hooks; the qemu driver relays the stream itself.
    def incoming_uri(self, destination: EndpointHandle) -> str:
        assert self.workdir is not None
        return f"unix:{self.workdir / 'incoming.sock'}"

    def outgoing_uri(self, destination: EndpointHandle,
                     socket_address: list[dict[str, Any]]) -> str:
        return self.incoming_uri(destination)

    def endpoint_path(self, handle: EndpointHandle, name: str) -> str:
        assert self.workdir is not None
        return str(self.workdir / name)

    def close(self) -> None:
        if self.docker is not None:
            self.docker.close()
            self.docker = None


# -- the relay that records the stream ---------------------------------------------------


class Relay:
    """Accepts the source's connection, connects to the destination, copies both ways and
    records what the source sends."""

    def __init__(self, record: Path, connect: Any) -> None:
        self.record = record
        self.connect = connect  # async () -> (reader, writer) to the destination
        self.server: asyncio.AbstractServer | None = None
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.tasks: list[asyncio.Task[Any]] = []

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    record: Any) -> int:
        n = 0
        try:
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                n += len(data)
                if record is not None:
                    record.write(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the destination went away: its exit says why
        finally:
            with contextlib.suppress(Exception):
                writer.close()
        return n

    async def _on_source(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            dst_reader, dst_writer = await self.connect()
        except OSError:
            writer.close()
            if not self.done.done():
                self.done.set_result(0)
            return
        with open(self.record, "wb") as record:
            sent, _ = await asyncio.gather(self._pump(reader, dst_writer, record),
                                           self._pump(dst_reader, writer, None))
        if not self.done.done():
            self.done.set_result(sent)

    async def start_unix(self, path: Path) -> str:
        self.server = await asyncio.start_unix_server(self._on_source, str(path))
        return f"unix:{path}"

    async def start_tcp(self) -> str:
        self.server = await asyncio.start_server(self._on_source, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"tcp:127.0.0.1:{port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)


# -- the driver --------------------------------------------------------------------------


class QemuDriver(QMPDriver):
    name = "qemu"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(QemuLauncher(), **kwargs)

    def close(self) -> None:
        launcher = self.launcher
        assert isinstance(launcher, QemuLauncher)
        launcher.close()

    async def _cell(self, cell: Cell, outcome: Outcome, workdir: Path,
                    handles: dict[str, EndpointHandle], clients: dict[str, QMPClient]) -> None:
        scenario = QEMU_SCENARIOS[cell.scenario]
        transport = cell.destination.transport
        if transport == "tcp" and (cell.source.image or cell.destination.image):
            transport = "unix"  # containers have no network; the socket is in the mount
        timings: dict[str, float] = {}
        outcome.extra["transport"] = transport
        outcome.extra["timings_s"] = timings
        t0 = time.perf_counter()

        def lap(name: str) -> None:
            timings[name] = round(time.perf_counter() - t0, 3)

        launch = self.launcher.launch
        handles["destination"] = await launch(cell.destination, "destination", incoming=True,
                                              extra_args=self.endpoint_args(cell, "destination"))
        handles["source"] = await launch(cell.source, "source", incoming=False,
                                         extra_args=self.endpoint_args(cell, "source"))
        dst, src = handles["destination"], handles["source"]
        clients["destination"] = dq = await self._connect(dst)
        clients["source"] = sq = await self._connect(src)
        lap("started")

        stream = workdir / STREAM
        relay: Relay | None = None
        try:
            if transport == "exec":
                out_uri = f"exec:cat > {shlex.quote(str(stream))}"
            else:
                if transport == "unix":
                    listen = workdir / "incoming.sock"
                    await self._execute(dst, dq, "migrate-incoming", {"uri": f"unix:{listen}"})
                    relay = Relay(stream, lambda: asyncio.open_unix_connection(str(listen)))
                    out_uri = await relay.start_unix(workdir / "relay.sock")
                else:
                    await self._execute(dst, dq, "migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
                    port = _listening_port(await self._execute(dst, dq, "query-migrate"))
                    relay = Relay(stream, lambda: asyncio.open_connection("127.0.0.1", port))
                    out_uri = await relay.start_tcp()

            if scenario.runs_guest:
                await self._execute(src, sq, "cont")
                await self._wait_serial(src, workdir / "source.serial", 2, BOOT_TIMEOUT,
                                        outcome, "the guest did not boot on the source")
                lap("guest_running")
                await self._execute(src, sq, "migrate-set-parameters",
                                 {"downtime-limit": 1, "max-bandwidth": 1 << 40})
            await self._execute(src, sq, "migrate", {"uri": out_uri})
            src_info = await self._source_migration(src, sq, scenario.runs_guest)
            outcome.extra["migration"] = _migration_stats(src_info)
            if transport == "exec":
                if src_info.get("status") != "completed":
                    outcome.harness_error = (f"source: saving to {stream.name} "
                                             f"{src_info.get('status')}: "
                                             f"{src_info.get('error-desc', '')}")
                    outcome.message = outcome.harness_error
                    raise _CellFailed()
                await self._execute(dst, dq, "migrate-incoming",
                                 {"uri": f"exec:cat {shlex.quote(str(stream))}"})
            dst_status, dst_desc = await self._destination_migration(dst, dq)
            lap("migrated")
        finally:
            if relay is not None:
                await relay.close()
        outcome.stream_bytes = stream.stat().st_size if stream.exists() else 0

        if dst_status in ("exited", "failed"):
            await self._refused(outcome, dst, dst_desc)
            return
        if src_info.get("status") != "completed":
            outcome.harness_error = (f"source: migration {src_info.get('status')}: "
                                     f"{src_info.get('error-desc', '')}".strip())
            outcome.message = outcome.harness_error
            outcome.extra["endpoints"] = await self._describe(handles)
            raise _CellFailed()

        # The destination loaded: have it save what it holds, and compare.
        await self._execute(dst, dq, "migrate", {"uri": f"exec:cat > {shlex.quote(str(workdir / DEST_STATE))}"})
        saved = await self._source_migration(dst, dq, False)
        if saved.get("status") != "completed":
            outcome.harness_error = f"destination could not save its state: {saved}"
            outcome.message = outcome.harness_error
            raise _CellFailed()
        lap("saved")
        src_state, dst_state = await asyncio.gather(
            asyncio.to_thread(read_state, stream), asyncio.to_thread(read_state, workdir / DEST_STATE))
        for name, st in (("source stream", src_state), ("destination stream", dst_state)):
            if st.error is not None:
                outcome.harness_error = f"the analyzer cannot decode the {name}: {st.error.get('message')}"
                outcome.message = outcome.harness_error
                raise _CellFailed()
        result = compare(src_state, dst_state)
        diffs = list(result.diffs)
        outcome.extra["comparison"] = result.to_dict()
        outcome.extra["machine_types"] = {"source": src_state.machine_type,
                                          "destination": dst_state.machine_type}
        if scenario.runs_guest:
            top = bootimage.top_for(cell.destination.ram_size)
            counters = page_counters(dst_state, bootimage.START, top)
            problem = counters if isinstance(counters, str) else \
                bootimage.check_counters(counters)
            outcome.extra["guest_pages_checked"] = 0 if isinstance(counters, str) else len(counters)
            if problem:
                diffs.append({"path": "guest/page-counters", "source": "at most one step",
                              "destination": problem})
            await self._execute(dst, dq, "cont")
            serial = workdir / "destination.serial"
            before = serial.stat().st_size if serial.exists() else 0
            if not await self._serial_grows(serial, before, ALIVE_TIMEOUT):
                diffs.append({"path": "guest/running-after-migration", "source": "running",
                              "destination": f"no new pass on COM1 within {ALIVE_TIMEOUT:g} s "
                                             "after cont"})
        lap("compared")
        outcome.diff_total = len(diffs)
        outcome.diff = diffs[:DIFF_LIMIT]
        if diffs:
            outcome.message = (f"loaded without error but {len(diffs)} difference(s), "
                               f"first {diffs[0]['path']}")

    # -- steps ------------------------------------------------------------------------------

    async def _wait_serial(self, handle: EndpointHandle, path: Path, count: int,
                           limit: float, outcome: Outcome, what: str) -> None:
        deadline = time.monotonic() + limit
        while True:
            size = path.stat().st_size if path.exists() else 0
            if size >= count:
                return
            if handle.exit_code() is not None:
                raise EndpointDied(handle, "exited while the guest booted")
            if time.monotonic() > deadline:
                outcome.harness_error = f"{what}: {size} byte(s) on COM1 after {limit:g} s"
                outcome.message = outcome.harness_error
                raise _CellFailed()
            await asyncio.sleep(0.02)

    @staticmethod
    async def _serial_grows(path: Path, before: int, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if path.exists() and path.stat().st_size > before:
                return True
            await asyncio.sleep(0.02)
        return False

    async def _source_migration(self, handle: EndpointHandle, client: QMPClient,
                                live: bool) -> dict[str, Any]:
        """Poll ``query-migrate`` until completed or failed; when ``live``, lift the
        downtime limit once RAM went out in :data:`LIVE_PASSES` dirty-sync rounds."""
        lifted = not live
        while True:
            if handle.exit_code() is not None:
                raise EndpointDied(handle, "died during the migration")
            try:
                info = await client.execute("query-migrate")
            except Exception as e:  # the monitor closed under us
                if handle.exit_code() is None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(handle.wait_exit(), 2.0)
                if handle.exit_code() is not None:
                    raise EndpointDied(handle, "died during the migration") from e
                raise
            assert isinstance(info, dict)
            status = info.get("status")
            if status in ("completed", "failed", "cancelled"):
                return info
            if not lifted and info.get("ram", {}).get("dirty-sync-count", 0) >= LIVE_PASSES:
                await self._execute(handle, client, "migrate-set-parameters",
                                    {"downtime-limit": 30000})
                lifted = True
            await asyncio.sleep(POLL)

    async def _destination_migration(self, handle: EndpointHandle, client: QMPClient
                                     ) -> tuple[str, str]:
        """``("completed", "")``, ``("failed", error-desc)`` while it still runs, or
        ``("exited", "")`` when it exited (as QEMU does when a load fails)."""
        while True:
            if handle.exit_code() is not None:
                return "exited", ""
            try:
                info = await client.execute("query-migrate")
            except Exception:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(handle.wait_exit(), 5.0)
                if handle.exit_code() is not None:
                    return "exited", ""
                raise
            assert isinstance(info, dict)
            if info.get("status") == "completed":
                return "completed", ""
            if info.get("status") == "failed":
                return "failed", str(info.get("error-desc", ""))
            await asyncio.sleep(POLL)

    async def _refused(self, outcome: Outcome, dst: EndpointHandle, desc: str) -> None:
        code = dst.exit_code()
        if code is None:
            with contextlib.suppress(asyncio.TimeoutError):
                code = await asyncio.wait_for(dst.wait_exit(), 5.0)
        lines = [_PREFIX.sub("", line).strip() for line in dst.log_tail().splitlines()]
        lines = [line for line in lines if line and not line.startswith("terminating on")]
        message = "; ".join(lines[-6:]) or desc or "no message"
        outcome.extra["destination_exit"] = describe_exit(code)
        outcome.extra["endpoints"] = {"destination": dst.describe()}
        if code not in (1, None):
            outcome.crash = f"destination {describe_exit(code)} during the load"
            outcome.message = f"{outcome.crash}: {message}"
            return
        section = next((m.group(1) for line in lines for pattern in _SECTION_IN_MESSAGE
                        for m in [pattern.search(line)] if m), None)
        outcome.load_error = {"reason": "qemu", "errno": None, "message": message,
                              "offset": None, "section": section, "field": None}
        outcome.message = message


# Where QEMU's own message names the section (for the report's section column only; the
# verdict comes from the exit, never from this text).
_SECTION_IN_MESSAGE = (
    re.compile(r"section footer for (\S+)"),
    re.compile(r"Unknown savevm section or instance '([^']+)'"),
    re.compile(r"error while loading state for instance \S+ of device '([^']+)'"),
)


def _listening_port(info: Any) -> int:
    for addr in (info or {}).get("socket-address", []):
        if addr.get("type") == "inet":
            return int(addr["port"])
    raise RuntimeError(f"the destination reports no listening TCP port ({info})")


def _migration_stats(info: dict[str, Any]) -> dict[str, Any]:
    ram = info.get("ram", {})
    return {k: v for k, v in {
        "status": info.get("status"), "total_time_ms": info.get("total-time"),
        "downtime_ms": info.get("downtime"), "dirty_sync_count": ram.get("dirty-sync-count"),
        "transferred": ram.get("transferred"), "pages": ram.get("normal"),
        "error": info.get("error-desc"),
    }.items() if v is not None}


__all__ += ["Relay"]
