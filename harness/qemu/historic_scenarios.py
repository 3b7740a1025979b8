"""Scenarios on the real 2010-2011 builds, each built the way a user built the state.

The names are the emulator core's (:mod:`harness.scenarios`), so that a real cell lines
up with the model's: ``qemu-0.14/pc->qemu-new/pc-0.14[ide-bus-error]`` beside
``0.14/pc->new/pc-0.14[ide-bus-error]``. A scenario says what both command lines need
(disks, a floppy, a CD-ROM) and what is done on the source before it migrates, through
the human monitor and QMP of that era; the destination is started with the same
hardware, as a user migrating a guest would start it.

Scenarios whose state a guest under TCG cannot reach are not here but in
:data:`UNREACHABLE`, with the reason: a matrix lists their cells as excluded, never as
faked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..emulator.devices import nic_slot
from . import bootimage

__all__ = ["COUNTED_TOP", "HISTORIC_SCENARIOS", "UNREACHABLE", "HistoricScenario", "SourceControl",
           "hotplug_device", "why_not_historic"]

BOOT_TIMEOUT = 30.0  # the 2011 SeaBIOS under TCG boots the image in about 1-2 s
ERROR_TIMEOUT = 30.0
FLOPPY_BYTES = 1_474_560
CDROM_BYTES = 1 << 20
FLOPPY_DIR = 0x3F7  # the floppy controller's digital input register (disk change line)
# The guest counts in the 8 MiB above 1 MiB only: every page it counts in is dirty again
# after each of its passes, so a whole-RAM count would make every pass (and the stream)
# as large as RAM without exercising anything more.
COUNTED_TOP = bootimage.START + (8 << 20)


class SourceControl(Protocol):
    """What a scenario may do on the source: the driver's view of one real endpoint."""

    workdir: Path
    nic: str  # the endpoint's NIC model (e1000, rtl8139, none)
    vga: str  # and its VGA (cirrus, none)

    async def hmp(self, line: str) -> str: ...

    async def qmp(self, command: str, arguments: dict[str, Any] | None = None) -> Any: ...

    def serial_bytes(self) -> bytes: ...

    def exited(self) -> bool: ...


Prepare = Callable[[SourceControl], Awaitable[None]]
# (role, the endpoint's NIC, its VGA) -> the NIC's arguments on that side's command line.
NicArgs = Callable[[str, str, str], list[str]]


@dataclass(frozen=True)
class HistoricScenario:
    """``files(workdir, ram)`` creates what the command lines refer to; ``args(workdir,
    role)`` gives each side's extra arguments; ``nic_args``, where the scenario places the
    endpoint's NIC itself, its arguments on each side (otherwise the NIC is cold-plugged);
    ``prepare`` runs on the source before the migration; ``live`` migrates while the guest
    runs."""

    name: str
    how: str  # what the real guest and the user do, for the report and the docs
    prepare: Prepare | None = None
    args: Callable[[Path, str], list[str]] = field(default=lambda workdir, role: [])
    files: Callable[[Path, int], None] = field(default=lambda workdir, ram: None)
    nic_args: NicArgs | None = None
    live: bool = False
    serial: bool = False  # the source's COM1 goes to a file the scenario reads
    seeded: bool = False  # no recipe depends on a seed
    # The images on the command line, by the model's names: a model machine reading
    # these streams has the same drives.
    media: frozenset[str] = frozenset()

    @property
    def summary(self) -> str:
        return self.how

    @property
    def exercises(self) -> str:
        return "the real loaders of 2011 on a state a TCG guest reaches"


class ScenarioFailed(Exception):
    """The source could not be put in the scenario's state (a harness problem)."""


# -- building blocks ----------------------------------------------------------------------


async def _wait_serial(src: SourceControl, want: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while want not in src.serial_bytes():
        if src.exited():
            raise ScenarioFailed("the source exited while its guest booted")
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"the guest wrote {src.serial_bytes()[:16]!r} to COM1 in "
                                 f"{timeout:g} s, not {want!r}")
        await asyncio.sleep(0.02)


async def _wait_stopped(src: SourceControl, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = await src.hmp("info status")
        if "running" not in status:
            return status
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"the guest still runs after {timeout:g} s ({status})")
        await asyncio.sleep(0.05)


def _disk(workdir: Path, ram: int, *, probes: tuple[int, ...] = ()) -> None:
    for role in ("source", "destination"):
        bootimage.write_image(workdir / f"{role}.img", ram, probes=probes,
                              top=min(COUNTED_TOP, bootimage.top_for(ram)))


def _boot_args(workdir: Path, role: str) -> list[str]:
    return ["-drive", f"file={workdir / (role + '.img')},if=ide,index=0,media=disk",
            "-boot", "c"]


async def _boot_then_stop(src: SourceControl) -> None:
    await src.hmp("cont")
    await _wait_serial(src, bootimage.BOOTED + bootimage.PASS, BOOT_TIMEOUT)
    await src.hmp("stop")


# -- the scenarios --------------------------------------------------------------------------


def _bus_error_files(workdir: Path, ram: int) -> None:
    (workdir / "disk.img").write_bytes(bytes(1 << 20))
    (workdir / "blkdebug.cfg").write_text(
        '[inject-error]\nevent = "read_aio"\nerrno = "5"\n')


def _bus_error_args(workdir: Path, role: str) -> list[str]:
    image = workdir / "disk.img"
    # Only the source's disk fails: the destination has the same disk, healthy, as a
    # user's would be once the storage problem is fixed.
    file = f"blkdebug:{workdir / 'blkdebug.cfg'}:{image}" if role == "source" else str(image)
    return ["-drive", f"file={file},if=ide,index=0,media=disk,rerror=stop,werror=stop"]


async def _bus_error(src: SourceControl) -> None:
    await src.hmp("cont")  # the BIOS's first disk read fails; rerror=stop stops the guest
    await _wait_stopped(src, ERROR_TIMEOUT)


def _floppy_files(workdir: Path, ram: int) -> None:
    _disk(workdir, ram, probes=(FLOPPY_DIR,))
    for role in ("source", "destination"):
        (workdir / f"{role}.fd").write_bytes(bytes(FLOPPY_BYTES))


def _floppy_args(workdir: Path, role: str) -> list[str]:
    return [*_boot_args(workdir, role), "-fda", str(workdir / f"{role}.fd")]


def _cdrom_files(workdir: Path, ram: int) -> None:
    for name in ("first.iso", "second.iso"):
        (workdir / name).write_bytes(bytes(CDROM_BYTES))


def _cdrom_args(workdir: Path, role: str) -> list[str]:
    # The destination starts with the medium the source holds after the change.
    medium = "first.iso" if role == "source" else "second.iso"
    return ["-drive", f"file={workdir / medium},if=ide,index=2,media=cdrom"]


async def _cdrom_change(src: SourceControl) -> None:
    answer = await src.hmp(f"change ide1-cd0 {src.workdir / 'second.iso'}")
    if answer:
        raise ScenarioFailed(f"change ide1-cd0: {answer}")


# As the model's nic-hotplug: the machine starts with user networking but no NIC, and
# the endpoint's NIC is hot-plugged into the slot a cold-plugged one would take, so the
# stream holds the same sections as the model's (slirp; the NIC registered last).
def hotplug_device(nic: str, vga: str) -> str:
    """The ``device_add`` argument that hot-plugs ``nic`` where the model puts it."""
    if nic == "none":
        raise ScenarioFailed("nic-hotplug needs an endpoint with a NIC (nic = e1000 or "
                             "rtl8139)")
    return f"{nic},addr={nic_slot(vga):#x},mac=52:54:00:12:34:56"


def _hotplug_nic_args(role: str, nic: str, vga: str) -> list[str]:
    device = hotplug_device(nic, vga)
    if role == "source":
        return ["-net", "user"]
    # The destination is started with the NIC the source hot-plugged, in the same slot.
    return ["-net", "user", "-device", device]


async def _hotplug(src: SourceControl) -> None:
    answer = await src.hmp(f"device_add {hotplug_device(src.nic, src.vga)}")
    if answer:
        raise ScenarioFailed(f"device_add: {answer}")


async def _live_start(src: SourceControl) -> None:
    await src.hmp("cont")
    await _wait_serial(src, bootimage.BOOTED + bootimage.PASS, BOOT_TIMEOUT)


def _copy_disk(workdir: Path, ram: int) -> None:
    _disk(workdir, ram)


HISTORIC_SCENARIOS: dict[str, HistoricScenario] = {
    s.name: s
    for s in (
        HistoricScenario(
            "idle", "started with -S and never run: default devices at power-on"),
        HistoricScenario(
            "booted", "the BIOS booted the project's image from an IDE disk, which counts "
            "in every page; stopped with 'stop' after its first pass",
            prepare=_boot_then_stop, args=_boot_args, files=_copy_disk, serial=True,
            media=frozenset({"hda"})),
        HistoricScenario(
            "ide-bus-error", "a blkdebug disk fails the BIOS's first read; rerror=stop "
            "stops the guest with the request pending for retry",
            prepare=_bus_error, args=_bus_error_args, files=_bus_error_files,
            media=frozenset({"hda"})),
        HistoricScenario(
            "fdc-media-changed", "a floppy is inserted and the guest reads the disk "
            "change line (port 0x3f7), which clears the media-changed flag",
            prepare=_boot_then_stop, args=_floppy_args, files=_floppy_files, serial=True,
            media=frozenset({"fda"})),
        HistoricScenario(
            "atapi-media-event", "'change ide1-cd0' swaps the CD-ROM's medium on the "
            "monitor: a new-media event is pending for the guest",
            prepare=_cdrom_change, args=_cdrom_args, files=_cdrom_files,
            media=frozenset({"cdrom"})),
        HistoricScenario(
            "nic-hotplug", "started with -net user (no NIC), then the endpoint's NIC "
            "hot-plugged with device_add in the slot a cold-plugged one takes; the "
            "destination starts with it on its command line",
            prepare=_hotplug, nic_args=_hotplug_nic_args),
        HistoricScenario(
            "live-ram", "the project's image counts in every page while RAM is sent in "
            "several passes (a tiny downtime limit until then)",
            prepare=_live_start, args=_boot_args, files=_copy_disk, live=True, serial=True,
            media=frozenset({"hda"})),
    )
}

# Scenarios of the model that no TCG guest of these builds can produce.
UNREACHABLE: dict[str, str] = {
    "cpu-async-pf": "only KVM sets the async page fault MSR; under TCG it stays 0",
    "cpu-fpu-ip": "only KVM fills the FPU instruction/data pointers the subsection carries",
    "cpu-two-subsections": "needs KVM (async page faults and FPU pointers)",
}


def why_not_historic(name: str) -> str | None:
    """Why scenario ``name`` has no cells on real historic endpoints, or ``None``."""
    if name in HISTORIC_SCENARIOS:
        return None
    return UNREACHABLE.get(name, "a model-only scenario: no recipe builds it on a real guest")

