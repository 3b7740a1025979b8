"""One endpoint: a machine, its run state, its migrations, and the QMP commands on them.

Run states are QEMU's: a source starts ``running`` (``prelaunch`` with ``-S``); ``stop``
pauses it, ``cont`` resumes it; a completed outgoing migration leaves it ``postmigrate``.
A destination (``--incoming``) is ``inmigrate`` until its stream has loaded, then
``running`` (``paused`` with ``-S``). A refused or broken incoming stream ends the process
as QEMU 7.2 does: ``load of migration failed: ...`` on stderr, a ``MIGRATION`` event with
status ``failed`` (carrying the error as data in ``x-load-error``), exit status 1. A load
that fails with something other than a migration error is a crash: the traceback on
stderr and ``abort()``, with no event.

Saves and loads run in threads, so the monitor answers while a stream moves.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from typing import Any

from ..devices import MEDIA
from ..errors import EmulatorError, LoadCrash, LoadError, SaveCrash
from ..guest import GuestProgram, run_program
from ..machine import DEFAULT_RAM_SIZE, NICS, VGAS, Machine
from ..ram import PAGE_SIZE
from ..savevm import LoadReport
from ..stream import StreamReader
from .qmp import Command, QMPError, QMPServer
from .transport import Incoming, Outgoing, TeeSink, TransportError, parse_uri

__all__ = ["Endpoint", "build_parser", "main"]

QEMU_VERSION = {"major": 0, "minor": 14, "micro": 0}


class Endpoint:
    """The monitor's view of one machine (see the module docstring for the states)."""

    def __init__(
        self,
        release: str,
        machine: str,
        ram_size: int | str = DEFAULT_RAM_SIZE,
        *,
        nic: str | None = None,
        vga: str = "cirrus",
        media: Iterable[str] = (),
        incoming: str | None = None,
        start_paused: bool = False,
        debug_stall_incoming: bool = False,
        debug_kill_after: int | None = None,
        debug_kill_on: str | None = None,
        debug_hang_on: str | None = None,
    ) -> None:
        self.release = release
        self.machine_name = machine
        self.ram_size = ram_size
        self.media = frozenset(media)
        self.vga = vga
        self.machine = Machine(release, machine, ram_size, nic, self.media, vga)
        self.nic = self.machine.nic
        self.start_paused = start_paused
        self.incoming_spec = incoming
        self.program: GuestProgram | None = None
        self.runstate = "inmigrate" if incoming else ("prelaunch" if start_paused else "running")
        # migration bookkeeping (query-migrate)
        self.mig_status: str | None = None
        self.mig_error: str | None = None
        self.mig_started = 0.0
        self.mig_finished = 0.0
        self.mig_counter: Any = None
        self.incoming: Incoming | None = None
        self.load_report: LoadReport | None = None
        self.load_error: dict[str, Any] | None = None
        self.debug_stall_incoming = debug_stall_incoming
        self.debug_kill_after = debug_kill_after
        self.debug_kill_on = debug_kill_on
        self.debug_hang_on = debug_hang_on
        self.exit_code: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done: asyncio.Future[int] | None = None
        self.qmp = QMPServer({
            "QMP": {
                "version": {"qemu": dict(QEMU_VERSION),
                            "package": f"migmatrix {release}/{machine}"},
                "capabilities": [],
            }
        })
        for command in self._commands():
            self.qmp.register(self._debug_command(command))

    # -- lifecycle -----------------------------------------------------------------------

    async def serve(self, qmp_address: str) -> int:
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        await self.qmp.listen(qmp_address)
        if self.incoming_spec and self.incoming_spec != "defer":
            self._start_incoming(self.incoming_spec)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._finish, 0)
        code = await self.done
        await self.qmp.drain()
        self.qmp.close()
        return code

    def _finish(self, code: int) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(code)

    def _set_runstate(self, state: str) -> None:
        was_running = self.runstate == "running"
        self.runstate = state
        if was_running and state != "running":
            self.qmp.emit("STOP")
        elif not was_running and state == "running":
            self.qmp.emit("RESUME")

    def _migration_event(self, status: str, **extra: Any) -> None:
        self.mig_status = status
        self.qmp.emit("MIGRATION", {"status": status, **extra})

    def _from_thread(self, func: Any, *args: Any) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(func, *args)

    # -- commands ------------------------------------------------------------------------

    def _commands(self) -> list[Command]:
        return [
            Command("query-status", self.cmd_query_status),
            Command("query-version", self.cmd_query_version),
            Command("query-commands", self.cmd_query_commands),
            Command("stop", self.cmd_stop),
            Command("cont", self.cmd_cont),
            Command("quit", self.cmd_quit),
            Command("migrate", self.cmd_migrate,
                    {"uri": ("str", True), "x-tee": ("str", False), "detach": ("bool", False),
                     "blk": ("bool", False), "inc": ("bool", False)}),
            Command("migrate-incoming", self.cmd_migrate_incoming, {"uri": ("str", True)}),
            Command("query-migrate", self.cmd_query_migrate),
            Command("x-guest-run", self.cmd_guest_run,
                    {"program": ("str", True), "seed": ("int", False)}),
            Command("x-dump-state", self.cmd_dump_state),
            Command("x-query-load", self.cmd_query_load),
            Command("x-query-ram-pages", self.cmd_query_ram_pages, {"block": ("str", True)}),
        ]

    async def cmd_query_status(self, args: dict[str, Any]) -> Any:
        return {"status": self.runstate, "singlestep": False,
                "running": self.runstate == "running"}

    async def cmd_query_version(self, args: dict[str, Any]) -> Any:
        return {"qemu": dict(QEMU_VERSION), "package": f"migmatrix {self.release}/"
                f"{self.machine_name}"}

    async def cmd_query_commands(self, args: dict[str, Any]) -> Any:
        return [{"name": n} for n in ["qmp_capabilities", *self.qmp.commands]]

    async def cmd_stop(self, args: dict[str, Any]) -> Any:
        if self.runstate == "running":
            self._set_runstate("paused")
        return {}

    async def cmd_cont(self, args: dict[str, Any]) -> Any:
        if self.runstate == "inmigrate":
            self.start_paused = False  # QEMU: start once the incoming stream has loaded
            return {}
        if self.mig_status == "active":
            raise QMPError("Guest can not be resumed while a migration is in progress")
        self._set_runstate("running")
        return {}

    async def cmd_quit(self, args: dict[str, Any]) -> Any:
        assert self.loop is not None
        self.qmp.emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        self.loop.call_soon(self._finish, 0)
        return {}

    async def cmd_migrate(self, args: dict[str, Any]) -> Any:
        if self.runstate == "inmigrate":
            raise QMPError("Guest is waiting for an incoming migration")
        if self.mig_status in ("setup", "active"):
            raise QMPError("There's a migration process in progress")
        try:
            uri = parse_uri(args["uri"])
        except TransportError as e:
            raise QMPError(str(e)) from e
        tee = args.get("x-tee")
        if tee is not None and (not tee or "\x00" in tee):
            raise QMPError(f"Invalid parameter 'x-tee': {tee!r} is not a path")
        self.mig_error = None
        self.mig_started = time.time()
        self.mig_counter = None
        self._migration_event("setup")
        threading.Thread(target=self._save_thread, args=(uri, tee), daemon=True,
                         name="migrate").start()
        return {}

    async def cmd_migrate_incoming(self, args: dict[str, Any]) -> Any:
        if self.incoming_spec is None:
            raise QMPError("'-incoming' was not specified on the command line")
        if self.incoming_spec != "defer" or self.incoming is not None or self.runstate != "inmigrate":
            raise QMPError("The incoming migration has already been started")
        try:
            self._start_incoming(args["uri"])
        except TransportError as e:
            raise QMPError(str(e)) from e
        return {}

    async def cmd_query_migrate(self, args: dict[str, Any]) -> Any:
        if self.mig_status is None:
            out: dict[str, Any] = {}
        else:
            out = {"status": self.mig_status}
            moved = self.mig_counter.value if self.mig_counter is not None else 0
            end = self.mig_finished or time.time()
            out["total-time"] = int((end - self.mig_started) * 1000) if self.mig_started else 0
            out["ram"] = {"transferred": moved, "total": self.machine.ram_size,
                          "remaining": 0 if self.mig_status == "completed" else None}
            if out["ram"]["remaining"] is None:
                del out["ram"]["remaining"]
            if self.mig_error:
                out["error-desc"] = self.mig_error
        if self.incoming is not None:
            addresses = self.incoming.socket_address()
            if addresses:
                out["socket-address"] = addresses
        return out

    async def cmd_guest_run(self, args: dict[str, Any]) -> Any:
        if self.runstate in ("inmigrate", "postmigrate") or self.mig_status in ("setup", "active"):
            raise QMPError(f"The guest cannot run a program in state '{self.runstate}'")
        assert self.loop is not None
        seed = args.get("seed", 0)
        try:
            program = await self.loop.run_in_executor(
                None, run_program, self.machine, args["program"], seed
            )
        except EmulatorError as e:
            raise QMPError(str(e)) from e
        self.program = program
        return {"program": program.name, "seed": seed, "live-passes": program.live_passes}

    async def cmd_dump_state(self, args: dict[str, Any]) -> Any:
        assert self.loop is not None
        state = await self.loop.run_in_executor(None, self.machine.state_json)
        state["runstate"] = self.runstate
        state["load"] = self.load_report.to_dict() if self.load_report else None
        state["load-error"] = self.load_error
        return state

    async def cmd_query_load(self, args: dict[str, Any]) -> Any:
        return {"report": self.load_report.to_dict() if self.load_report else None,
                "error": self.load_error}

    async def cmd_query_ram_pages(self, args: dict[str, Any]) -> Any:
        """A short digest per page of one RAM block, to locate differing pages."""
        block = self.machine.ram.blocks.get(args["block"])
        if block is None:
            raise QMPError(f"No RAM block '{args['block']}'")
        data = memoryview(block.data)
        return [
            hashlib.blake2b(data[o : o + PAGE_SIZE], digest_size=8).hexdigest()
            for o in range(0, len(data), PAGE_SIZE)
        ]

    # -- outgoing ------------------------------------------------------------------------

    def _save_thread(self, uri: Any, tee: str | None) -> None:
        # Whatever happens here ends in completed or failed: a migration left in setup
        # would refuse every later migrate.
        try:
            out = Outgoing(uri)
        except TransportError as e:
            self._from_thread(self._save_failed, str(e), "transport")
            return
        except Exception as e:
            self._from_thread(self._save_failed, f"{type(e).__name__}: {e}", "transport")
            return
        self.mig_counter = out.sent
        self._from_thread(self._migration_event, "active")
        copy = None
        try:
            copy = open(tee, "wb") if tee else None  # noqa: SIM115 - TeeSink closes it
            sink: Any = TeeSink(out, copy) if copy is not None else out
            program = self.program
            workload = None
            if program is not None and program.workload is not None:
                workload = self._guarded_workload(program.workload)
            self.machine.save(sink, passes=program.live_passes if program else 0,
                              workload=workload)
            if isinstance(sink, TeeSink):
                sink.finish()
            out.close()
        except OSError as e:
            out.abort()
            self._from_thread(self._save_failed, f"{type(e).__name__}: {e}", "io")
            return
        except SaveCrash as e:  # the modelled QEMU dies saving (RHEL 6.1's gesn_state)
            sys.stderr.write(f"migmatrix endpoint: the save dies: {e}\n")
            sys.stderr.flush()
            os.abort()
        except Exception as e:  # a fault of the source itself (e.g. a SaveError)
            out.abort()
            traceback.print_exc()
            self._from_thread(self._save_failed, f"{type(e).__name__}: {e}", "source")
            return
        self._from_thread(self._save_completed)

    def _guarded_workload(self, workload: Any) -> Any:
        def run(machine: Machine, index: int) -> None:
            if self.runstate == "running":  # a stopped guest dirties nothing
                workload(machine, index)
        return run

    def _save_completed(self) -> None:
        self.mig_finished = time.time()
        self._set_runstate("postmigrate")
        self._migration_event("completed")

    def _save_failed(self, message: str, fault: str) -> None:
        self.mig_finished = time.time()
        self.mig_error = message
        self.machine.running = self.runstate == "running"
        self._migration_event("failed", **{"error-desc": message, "x-fault": fault})

    # -- incoming ------------------------------------------------------------------------

    def _start_incoming(self, spec: str) -> None:
        self.incoming = Incoming(parse_uri(spec))
        self.mig_started = time.time()
        self.mig_counter = self.incoming.received
        threading.Thread(target=self._load_thread, daemon=True, name="incoming").start()

    def _debug_command(self, command: Command) -> Command:
        """Test hooks: die by SIGKILL, or never answer, when ``command`` arrives."""
        if command.name not in (self.debug_kill_on, self.debug_hang_on):
            return command
        kill = command.name == self.debug_kill_on

        async def handler(args: dict[str, Any]) -> Any:
            if kill:
                _kill_self()
            await asyncio.Event().wait()  # hang: the monitor answers nothing more

        return Command(command.name, handler, command.args)

    def _debug_hook(self) -> Any:
        limit = self.debug_kill_after
        if limit is None:
            return None

        def on_bytes(total: int) -> None:
            if total >= limit:
                _kill_self()
        return on_bytes

    def _load_thread(self) -> None:
        assert self.incoming is not None
        try:
            source = self.incoming.open(self._debug_hook())
        except (TransportError, OSError) as e:
            self._from_thread(self._load_failed, None, f"{e}")
            return
        self._from_thread(self._migration_event, "active")
        if self.debug_stall_incoming:
            threading.Event().wait()  # a destination that never reads its stream
        try:
            machine, report = Machine.load(
                self.release, self.machine_name, StreamReader(source), ram_size=self.ram_size,
                nic=self.nic, media=self.media, vga=self.vga,
            )
        except LoadCrash as e:  # the modelled QEMU dies here (a NULL dereference, an abort)
            sys.stderr.write(f"migmatrix endpoint: the loader dies: {e}\n")
            sys.stderr.flush()
            os.abort()
        except LoadError as e:
            self._from_thread(self._load_failed, e.to_dict(), str(e))
            return
        except OSError as e:  # the connection broke: QEMU reports it as a failed load (-EIO)
            self._from_thread(self._load_failed, None, f"{type(e).__name__}: {e}")
            return
        except BaseException:
            sys.stderr.write("migmatrix endpoint: internal error during incoming migration\n")
            traceback.print_exc()
            sys.stderr.flush()
            os.abort()
        finally:
            self.incoming.close()
        self._from_thread(self._load_completed, machine, report)

    def _load_completed(self, machine: Machine, report: LoadReport) -> None:
        self.machine = machine
        self.load_report = report
        self.mig_finished = time.time()
        if report.half_loaded:
            sys.stderr.write(
                f"migmatrix endpoint: warning: EOF at offset {report.bytes_consumed - 1} "
                f"ended the load with {report.bytes_unread} byte(s) unread\n"
            )
        self._migration_event("completed")
        self._set_runstate("paused" if self.start_paused else "running")

    def _load_failed(self, error: dict[str, Any] | None, message: str) -> None:
        self.load_error = error
        self.mig_error = message
        self.mig_finished = time.time()
        sys.stderr.write(f"load of migration failed: {message}\n")
        sys.stderr.flush()
        extra: dict[str, Any] = {"error-desc": message}
        if error is not None:
            extra["x-load-error"] = error
        self._migration_event("failed", **extra)
        self._finish(1)


def _kill_self() -> None:
    if os.getpid() == 1:  # PID 1 of a container cannot be killed from inside
        os._exit(128 + signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


# -- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.emulator",
        description="A migmatrix emulator endpoint controlled over QMP.",
    )
    p.add_argument("--release", required=True)
    p.add_argument("--machine", default="pc")
    p.add_argument("--ram", default=str(DEFAULT_RAM_SIZE), help="RAM size, e.g. 8M")
    p.add_argument("--nic", default=None, choices=sorted(NICS),
                   help="the NIC, with user networking (QEMU's -net nic,model=...), or none "
                        "(default: the release's)")
    p.add_argument("--vga", default="cirrus", choices=sorted(VGAS),
                   help="the display adapter (QEMU's -vga), or none")
    p.add_argument("--media", default="", help="images on the command line: any of "
                   f"{', '.join(sorted(MEDIA))}, comma separated")
    p.add_argument("--qmp", required=True, help="unix:PATH or tcp:HOST:PORT")
    p.add_argument("--incoming", help="tcp:HOST:PORT | unix:PATH | exec:CMD | file:PATH | defer")
    p.add_argument("-S", dest="start_paused", action="store_true",
                   help="do not start the guest (prelaunch; paused after an incoming stream)")
    # Test hooks, not part of the interface.
    p.add_argument("--x-debug-stall-incoming", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--x-debug-kill-after", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--x-debug-kill-on", metavar="COMMAND", help=argparse.SUPPRESS)
    p.add_argument("--x-debug-hang-on", metavar="COMMAND", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "migmatrix endpoint"
    try:
        endpoint = Endpoint(
            args.release, args.machine, args.ram, nic=args.nic, vga=args.vga,
            media=[m for m in args.media.split(",") if m], incoming=args.incoming,
            start_paused=args.start_paused,
            debug_stall_incoming=args.x_debug_stall_incoming,
            debug_kill_after=args.x_debug_kill_after,
            debug_kill_on=args.x_debug_kill_on, debug_hang_on=args.x_debug_hang_on,
        )
    except EmulatorError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    if args.incoming and args.incoming != "defer":
        try:
            parse_uri(args.incoming)
        except TransportError as e:
            print(f"{prog}: -incoming {args.incoming}: {e}", file=sys.stderr)
            return 1
    try:
        return asyncio.run(endpoint.serve(args.qmp))
    except (OSError, ValueError, TransportError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1

