"""Real streams of the historic builds, for device conformance tests.

A device test holds its model against the real programs three ways:

* **idle**: the payload of its section in the stream of a real ``-S`` guest that never
  ran (no BIOS), saved over QMP ``migrate unix:``, is byte-identical to the model's
  power-on payload;
* **booted**: the payload of a real guest whose BIOS ran up to its boot attempt and then
  took ``sendkey num_lock`` (and set the keyboard LEDs, where its SeaBIOS does) loads
  into the model's description and saves back to the same bytes;
* **through the real loader**: a model payload spliced into the real idle stream in place
  of the real one loads in the real build, which saves it back unchanged.

Streams are cut into FULL sections without any model: the live sections (``block``,
``ram``) are parsed record by record, and a FULL section's payload ends where the next
FULL header starts (the next section id, a printable idstr, then the EOF byte).

Captures are made once per test run (shared by the pytest-xdist workers). Tests ask for
the :func:`historic` fixture, which skips (or fails in CI) when the builds are absent.
A device's test module runs all three checks by subclassing :class:`RealBuilds`.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from qemu.qmp import ConnectError
from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.emulator.devices import Device
from harness.emulator.releases import get_release
from harness.emulator.savevm import DeviceSection, wire_rules_for
from harness.emulator.stream import StreamReader, StreamWriter
from harness.qemu.historic import find_build, historic_problem, nic_args, runtime_args, vga_args
from harness.qemu.monitor import HumanMonitor

from .ci import require

__all__ = [
    "ENDPOINTS",
    "ENDPOINT_IDS",
    "NICS",
    "Historic",
    "RealBuilds",
    "RealRefused",
    "RealSection",
    "full_sections",
    "historic",
    "idle_mismatches",
    "model_payloads",
    "resave",
    "section_payload",
    "splice",
]

# Every modelled (release, machine type) and its stream format.
ENDPOINTS = [("0.13", "pc", 3), ("0.14", "pc", 3), ("0.15", "pc", 3), ("new", "pc-0.14", 3),
             ("new", "pc", 4), ("1.0", "pc-0.14", 3), ("1.0", "pc", 3)]  # fmt: skip
ENDPOINT_IDS = [f"{r}/{m}" for r, m, _ in ENDPOINTS]

MAGIC = 0x5145564D
SCREEN = 0xB8000  # the VGA text buffer
BDA_KBD_FLAGS, NUM_LOCK_ON = 0x417, 0x20  # the BIOS's shift flags
BDA_KBD_LED, NUM_LOCK_LED = 0x497, 0x02  # the LED state the BIOS last sent
RAM_MEM_SIZE, RAM_COMPRESS, RAM_PAGE, RAM_EOS, RAM_CONTINUE = 0x04, 0x02, 0x08, 0x10, 0x20
BLOCK_EOS = 0x02
PAGE = 4096
TIMEOUT = 30.0


class RealRefused(Exception):
    """The real destination refused the stream; ``log`` is what it printed."""

    def __init__(self, log: str) -> None:
        super().__init__(log.strip().splitlines()[-3:])
        self.log = log


class StreamLayoutError(AssertionError):
    """A real stream does not have the shape this reader expects."""


@dataclass(frozen=True)
class RealSection:
    idstr: str
    instance_id: int
    version_id: int
    offset: int  # of the payload's first byte
    payload: bytes


def _skip_live(data: bytes) -> int:
    """The offset of the first FULL section: every live START/PART/END record skipped."""
    (magic, _version) = struct.unpack_from(">II", data, 0)
    if magic != MAGIC:
        raise StreamLayoutError(f"bad magic 0x{magic:08x}")
    pos, names = 8, {}
    while True:
        kind = data[pos]
        if kind == 0x04 or kind == 0x00:
            return pos
        section_id = struct.unpack_from(">I", data, pos + 1)[0]
        pos += 5
        if kind == 0x01:
            n = data[pos]
            names[section_id] = data[pos + 1 : pos + 1 + n].decode()
            pos += 1 + n + 8
        elif kind not in (0x02, 0x03):
            raise StreamLayoutError(f"section type {kind} at offset {pos - 5}")
        name = names[section_id]
        if name == "block":
            while not struct.unpack_from(">Q", data, pos)[0] & BLOCK_EOS:
                pos += 8
            pos += 8
        elif name == "ram":
            pos = _skip_ram(data, pos)
        else:
            raise StreamLayoutError(f"unknown live section {name!r}")


def _skip_ram(data: bytes, pos: int) -> int:
    while True:
        head = struct.unpack_from(">Q", data, pos)[0]
        pos += 8
        flags = head & (PAGE - 1)
        if flags & RAM_MEM_SIZE:
            total, seen = head & ~(PAGE - 1), 0
            while seen < total:
                n = data[pos]
                seen += struct.unpack_from(">Q", data, pos + 1 + n)[0]
                pos += 1 + n + 8
            continue
        if flags & RAM_EOS:
            return pos
        if not flags & RAM_CONTINUE:
            pos += 1 + data[pos]
        pos += 1 if flags & RAM_COMPRESS else PAGE


def _header_at(data: bytes, pos: int) -> tuple[int, str, int, int, int] | None:
    """(section id, idstr, instance, version, payload offset) of a FULL header at ``pos``."""
    if pos + 6 > len(data) or data[pos] != 0x04:
        return None
    section_id, n = struct.unpack_from(">IB", data, pos + 1)
    body = pos + 6 + n + 8
    if n == 0 or body > len(data):
        return None
    name = data[pos + 6 : pos + 6 + n]
    if not all(0x21 <= c < 0x7F for c in name):
        return None
    instance, version = struct.unpack_from(">II", data, pos + 6 + n)
    return section_id, name.decode(), instance, version, body


def full_sections(data: bytes) -> list[RealSection]:
    """Every FULL section of a real stream, in stream order.

    Section ids count registrations, live ones included, so the next FULL section has a
    larger id than the last (at most a few more); its header is the first such match
    after the payload start. The last payload ends before the final EOF byte.
    """
    pos = _skip_live(data)
    first = _header_at(data, pos)
    if first is None:
        return []
    headers = [(pos, first)]
    while True:
        last_id, body = headers[-1][1][0], headers[-1][1][4]
        found = None
        p = data.find(b"\x04", body)
        while 0 <= p < len(data) - 1:
            h = _header_at(data, p)
            if h is not None and last_id < h[0] <= last_id + 8:
                found = (p, h)
                break
            p = data.find(b"\x04", p + 1)
        if found is None:
            break
        headers.append(found)
    if data[-1] != 0x00:
        raise StreamLayoutError("the stream does not end with EOF")
    out = []
    for i, (_p, (_sid, idstr, inst, ver, body)) in enumerate(headers):
        end = headers[i + 1][0] if i + 1 < len(headers) else len(data) - 1
        out.append(RealSection(idstr, inst, ver, body, data[body:end]))
    return out


def section_payload(data: bytes, idstr: str, instance_id: int = 0) -> bytes:
    """The payload of one FULL section of a real stream."""
    for s in full_sections(data):
        if (s.idstr, s.instance_id) == (idstr, instance_id):
            return s.payload
    raise KeyError(f"no section {idstr!r} instance {instance_id}")


def splice(data: bytes, payloads: Mapping[tuple[str, int], bytes]) -> bytes:
    """``data`` with the payloads of some FULL sections replaced (nothing else moves:
    no section carries a length)."""
    out, pos = bytearray(), 0
    todo = dict(payloads)
    for s in full_sections(data):
        new = todo.pop((s.idstr, s.instance_id), None)
        if new is not None:
            out += data[pos : s.offset] + new
            pos = s.offset + len(s.payload)
    if todo:
        raise KeyError(f"sections not in the stream: {sorted(todo)}")
    return bytes(out + data[pos:])


# -- the model side -------------------------------------------------------------------


def model_payloads(dev: Device, fmt: int) -> dict[tuple[str, int], bytes]:
    """Each section's payload as the model saves it in stream format ``fmt``."""
    rules = wire_rules_for(fmt, dev.release.peek)
    out = {}
    for section in dev.sections():
        w = StreamWriter()
        section.save(w, rules)
        out[(section.idstr, section.instance_id)] = w.getvalue()
    return out


def _first_difference(a: bytes, b: bytes) -> str:
    at = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    return (
        f"{len(a)} vs {len(b)} bytes, first difference at {at}: "
        f"{a[at : at + 8].hex()} vs {b[at : at + 8].hex()}"
    )


def idle_mismatches(dev: Device, fmt: int, real: bytes) -> list[str]:
    """Where the model's sections differ from the same sections of a real stream
    (version or payload); empty when byte-identical."""
    found = {(s.idstr, s.instance_id): s for s in full_sections(real)}
    problems = []
    versions = {(s.idstr, s.instance_id): s.version_id for s in dev.sections()}
    for key, payload in model_payloads(dev, fmt).items():
        theirs = found.get(key)
        if theirs is None:
            problems.append(f"{key}: not in the real stream")
        elif theirs.version_id != versions[key]:
            problems.append(f"{key}: version {versions[key]}, real {theirs.version_id}")
        elif theirs.payload != payload:
            problems.append(f"{key}: model vs real {_first_difference(payload, theirs.payload)}")
    return problems


def _section(dev: Device, key: tuple[str, int]) -> DeviceSection:
    for section in dev.sections():
        if (section.idstr, section.instance_id) == key:
            return section
    raise KeyError(key)


def resave(
    dev: Device, fmt: int, key: tuple[str, int], payload: bytes, version: int | None = None
) -> bytes:
    """Load ``payload`` into ``dev``'s section ``key`` (all of it must be consumed) and
    save that section again."""
    section = _section(dev, key)
    rules = wire_rules_for(fmt, dev.release.peek)
    r = StreamReader(payload)
    section.load(r, section.version_id if version is None else version, rules)
    assert r.at_eof(), f"{key}: {len(payload) - r.offset} byte(s) left unread"
    w = StreamWriter()
    section.save(w, rules)
    return w.getvalue()


# -- running the real builds -----------------------------------------------------------


# The model's --nic options, each with user networking but "none".
NICS = ("e1000", "rtl8139", "none")


def _argv(release: str, machine: str, qmp: Path, *, stopped: bool, nic: str = "",
          vga: str = "cirrus") -> list[str]:
    """``nic`` "": the release's own NIC (QEMU without -net options)."""
    build = find_build(release)
    default = get_release(release).default_nic
    return [str(build.binary), "-L", str(build.datadir), "-M", machine, "-m", "64",
            "-nographic", "-serial", "null", "-parallel", "none",
            *nic_args(nic or default, default), *vga_args(vga),
            *runtime_args(build),
            "-qmp", f"unix:{qmp},server,nowait", *(["-S"] if stopped else [])]  # fmt: skip


def _wait_for(path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path.name} never appeared: {log.read_text(errors='replace')}")
        time.sleep(0.01)


class _Run:
    """One real process: started, driven over QMP (and the human monitor), saved, quit."""

    def __init__(
        self, release: str, machine: str, *, stopped: bool = True, incoming: bytes | None = None,
        nic: str = "", vga: str = "cirrus", monitor: bool = True,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="migmatrix-real-"))
        self.qmp_path = self.dir / "qmp.sock"
        self.log = self.dir / "log"
        argv = _argv(release, machine, self.qmp_path, stopped=stopped, nic=nic, vga=vga)
        if not stopped:
            argv += ["-monitor", f"unix:{self.dir / 'mon.sock'},server,nowait"]
        if incoming is not None:
            argv += ["-incoming", f"unix:{self.dir / 'in.sock'}"]
        self.argv = argv
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        _wait_for(self.qmp_path, self.proc, self.log)
        if incoming is not None:
            try:
                self._feed(incoming)
            except BaseException:
                self.proc.kill()
                self.proc.wait()
                shutil.rmtree(self.dir, ignore_errors=True)
                raise
        self.qmp = self._connect() if monitor else None

    def _connect(self) -> QEMUMonitorProtocol:
        """The socket file appears at bind(), a moment before QEMU listens on it."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            qmp = QEMUMonitorProtocol(str(self.qmp_path))
            try:
                qmp.connect()
                return qmp
            except ConnectError:
                qmp.close()
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no QMP: {self.describe()}") from None
                time.sleep(0.02)

    def _feed(self, stream: bytes) -> None:
        """Send the stream; the load is over when the destination closes the socket (it
        loads in its main loop, so QMP answers only after that). A refused load prints
        "load of migration failed" before the process exits, hence before that close."""
        _wait_for(self.dir / "in.sock", self.proc, self.log)
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(TIMEOUT)
            deadline = time.monotonic() + TIMEOUT
            while True:  # the socket file appears at bind(), a moment before listen()
                try:
                    conn.connect(str(self.dir / "in.sock"))
                    break
                except ConnectionRefusedError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            try:
                conn.sendall(stream)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(4096):
                    pass
            except (BrokenPipeError, ConnectionResetError):
                pass  # it stopped reading early: refused, or ended at an early EOF byte
        log = self.log.read_text(errors="replace")
        if "load of migration failed" in log:
            self.proc.wait(TIMEOUT)
            raise RealRefused(log)

    def describe(self) -> str:
        return f"{' '.join(self.argv)}: {self.log.read_text(errors='replace')[-800:]}"

    def wait_memory(self, addr: int, size: int, ready: Callable[[bytes], bool]) -> bytes | None:
        """Poll guest memory (QMP pmemsave) until ``ready``: those bytes, or None."""
        dump = self.dir / "mem.bin"
        deadline = time.monotonic() + TIMEOUT
        while True:
            self.qmp.cmd("pmemsave", val=addr, size=size, filename=str(dump))
            data = dump.read_bytes()
            if ready(data):
                return data
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def human(self, command: str) -> str:
        """One human-monitor command (sendkey has no QMP form in this era); its answer."""

        async def run() -> str:
            monitor = await HumanMonitor.connect(str(self.dir / "mon.sock"), TIMEOUT)
            try:
                return await monitor.command(command, TIMEOUT)
            finally:
                await monitor.close()

        return asyncio.run(run())

    def save(self) -> bytes:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(self.dir / "out.sock"))
        listener.listen(1)
        received = bytearray()

        def receive() -> None:
            conn, _ = listener.accept()
            with conn:
                while chunk := conn.recv(1 << 20):
                    received.extend(chunk)

        thread = threading.Thread(target=receive, daemon=True)
        thread.start()
        self.qmp.cmd("migrate", uri=f"unix:{self.dir / 'out.sock'}")
        deadline = time.monotonic() + TIMEOUT
        while (status := self.qmp.cmd("query-migrate").get("status")) not in (
            "completed",
            "failed",
        ):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        thread.join(TIMEOUT)
        listener.close()
        if status != "completed":
            raise RuntimeError(f"migration {status}: {self.describe()}")
        return bytes(received)

    def close(self) -> None:
        try:
            if self.qmp is not None:
                self.qmp.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _idle(release: str, machine: str, nic: str = "", vga: str = "cirrus") -> bytes:
    run = _Run(release, machine, nic=nic, vga=vga)
    try:
        return run.save()
    finally:
        run.close()


def _accepts(release: str, machine: str, stream: bytes, nic: str, vga: str = "cirrus"
             ) -> str | None:
    """None when the real destination loads ``stream`` and answers its monitor after it,
    else the reason it gave (its log's last lines); a destination that died without a
    reason, or stopped answering, is an error.

    A stream whose RTC was saved on a host clock far behind this one makes the 0.15-family
    and 1.0 destinations catch up second by second after the load, starving the monitor
    for minutes: a source must run on this host's clock (the model's: ``host_time_ns``)."""
    try:
        run = _Run(release, machine, incoming=stream, nic=nic, vga=vga)
    except RealRefused as e:
        return " / ".join(line for line in e.log.strip().splitlines()[-3:])
    try:
        status = run.qmp.cmd("query-status")
        if run.proc.poll() is not None:
            raise RuntimeError(f"the destination died after loading: {run.describe()}")
        assert status["running"] is False, status  # -S: loaded and paused
        return None
    finally:
        run.close()


def _booted(release: str, machine: str) -> bytes:
    run = _Run(release, machine, stopped=False)
    try:
        # SeaBIOS has initialised the keyboard and the VGA BIOS once it tries to boot.
        screen = run.wait_memory(SCREEN, 4000, lambda text: b"Boot" in text[::2])
        if screen is None:
            raise RuntimeError(f"SeaBIOS never tried to boot: {run.describe()}")
        run.human("sendkey num_lock")
        if run.wait_memory(BDA_KBD_FLAGS, 1, lambda b: bool(b[0] & NUM_LOCK_ON)) is None:
            raise RuntimeError(f"the BIOS never took num lock: {run.describe()}")
        # SeaBIOS 0.6.1 (0.13, 0.14) leaves the LEDs alone; the 0.6.3 snapshots (0.15,
        # genstats, 1.0) set them after a lock key.
        if (
            b"0.6.1" not in screen[::2]
            and run.wait_memory(BDA_KBD_LED, 1, lambda b: bool(b[0] & NUM_LOCK_LED)) is None
        ):
            raise RuntimeError(f"the BIOS never set the keyboard LEDs: {run.describe()}")
        run.qmp.cmd("stop")
        return run.save()
    finally:
        run.close()


def _through(release: str, machine: str, stream: bytes) -> bytes:
    run = _Run(release, machine, incoming=stream)
    try:
        return run.save()
    finally:
        run.close()


class Historic:
    """The real builds as a test sees them (see the module docstring).

    Captures are kept in this process and in ``shared``, a directory all pytest-xdist
    workers of a run see, so each is made once per run.
    """

    def __init__(self, shared: Path) -> None:
        self.shared = shared
        self._captures: dict[tuple[str, str, str, str, str], bytes] = {}

    def _capture(self, kind: str, release: str, machine: str, nic: str = "",
                 vga: str = "cirrus") -> bytes:
        key = (kind, release, machine, nic, vga)
        if key not in self._captures:
            path = self.shared / f"{kind}-{release}-{machine}-{nic}-{vga}.bin"
            self.shared.mkdir(parents=True, exist_ok=True)
            with open(self.shared / f"{path.name}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not path.exists():
                    data = (_idle(release, machine, nic, vga) if kind == "idle"
                            else _booted(release, machine))
                    path.with_suffix(".tmp").write_bytes(data)
                    path.with_suffix(".tmp").rename(path)
                self._captures[key] = path.read_bytes()
        return self._captures[key]

    def idle(self, release: str, machine: str, nic: str = "", vga: str = "cirrus"
             ) -> bytes:
        """The stream a -S guest saves, with the model's ``nic`` and ``vga`` as QEMU
        options."""
        return self._capture("idle", release, machine, nic, vga)

    def fresh_idle(self, release: str, machine: str) -> bytes:
        """An idle stream captured now (never the cached one)."""
        return _idle(release, machine)

    def accepts(self, release: str, machine: str, stream: bytes, nic: str = "",
                vga: str = "cirrus") -> str | None:
        """Whether the real build loads ``stream``: None, or the reason it refused."""
        return _accepts(release, machine, stream, nic, vga)

    def booted(self, release: str, machine: str) -> bytes:
        return self._capture("booted", release, machine)

    def through(self, release: str, machine: str, stream: bytes) -> bytes:
        """Load ``stream`` in the real build (stopped), then save what it loaded."""
        return _through(release, machine, stream)


@pytest.fixture(scope="session")
def historic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Historic]:
    for release in dict.fromkeys(r for r, _, _ in ENDPOINTS):
        require(historic_problem(release), f"historic QEMU {release}")
    # An xdist worker's base temp directory is one per worker inside the run's.
    run_dir = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_dir = run_dir.parent
    yield Historic(run_dir / "historic-captures")


class RealBuilds:
    """The checks of one device class against the real builds, on every endpoint.

    A test module subclasses it as ``class TestRealBuilds(RealBuilds)`` with ``device``
    set (and imports the :func:`historic` fixture); ``wanted`` picks randomized states
    worth sending (an enabled timer, a queue with events).
    """

    device: ClassVar[type[Device]]
    seed: ClassVar[int] = 7

    def wanted(self, dev: Device) -> bool:
        """Whether a randomized state is worth sending (by default, any)."""
        return True

    def randomized(self, release: str) -> Device:
        dev, rng = self.device(get_release(release)), random.Random(self.seed)
        dev.randomize(rng)
        while not self.wanted(dev):
            dev.randomize(rng)
        return dev

    @pytest.mark.parametrize("release,machine,fmt", ENDPOINTS, ids=ENDPOINT_IDS)
    def test_power_on_payloads_are_the_real_idle_ones(
        self, historic: Historic, release: str, machine: str, fmt: int
    ) -> None:
        """No field is left out: nothing in these sections depends on time or the host
        while a ``-S`` guest has never run."""
        dev = self.device(get_release(release))
        assert idle_mismatches(dev, fmt, historic.idle(release, machine)) == []

    @pytest.mark.parametrize("release,machine,fmt", ENDPOINTS, ids=ENDPOINT_IDS)
    @pytest.mark.parametrize("when", ["idle", "booted"])
    def test_real_payloads_load_and_save_back(
        self, historic: Historic, release: str, machine: str, fmt: int, when: str
    ) -> None:
        real = getattr(historic, when)(release, machine)
        for section in self.device(get_release(release)).sections():
            key = (section.idstr, section.instance_id)
            data = section_payload(real, *key)
            assert resave(self.device(get_release(release)), fmt, key, data) == data, key

    @pytest.mark.parametrize("release,machine,fmt", ENDPOINTS, ids=ENDPOINT_IDS)
    def test_the_real_loader_takes_randomized_states(
        self, historic: Historic, release: str, machine: str, fmt: int
    ) -> None:
        """The model's state in place of the real one: the stopped real destination loads
        it and saves it back unchanged (its guest clock does not move in between)."""
        ours = model_payloads(self.randomized(release), fmt)
        back = historic.through(release, machine, splice(historic.idle(release, machine), ours))
        assert {key: section_payload(back, *key) for key in ours} == ours
