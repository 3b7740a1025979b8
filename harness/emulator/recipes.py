"""State recipes: a guest state as a list of device operations, replayable anywhere.

A recipe is plain data, ``[["ide.device_control", {"bus": 0, "value": 5}], ...]``: each
step names an operation of :data:`OPERATIONS` (the device operations the guest programs
use, plus a few register writes) with its arguments. ``migmatrix hunt`` searches over
recipes and saves what it finds as JSON files; :mod:`.guest` registers every saved recipe
as a guest program ``found-<name>``, so that endpoint processes replay it like any other
scenario.

A saved recipe file (``harness/emulator/found/<name>.json``, or the directory named by
``MIGMATRIX_FOUND_DIR``)::

    {"name": "...", "summary": "...", "ops": [[op, {args}], ...],
     "source": "0.14/pc", "destination": "0.14/pc", "verdict": "rejected", ...}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .releases import Release

if TYPE_CHECKING:
    from .machine import Machine

__all__ = [
    "FOUND_DIR",
    "FOUND_ENV",
    "OPERATIONS",
    "Operation",
    "Recipe",
    "apply_ops",
    "found_dir",
    "load_recipes",
    "media_of",
    "requirements",
]

FOUND_ENV = "MIGMATRIX_FOUND_DIR"
FOUND_DIR = Path(__file__).with_name("found")


@dataclass(frozen=True)
class Operation:
    """One step: ``run(machine, **args)``; ``available(release)`` says if it applies."""

    name: str
    run: Callable[..., None]
    requires: str | None = None  # a subsection the release must define
    doc: str = ""
    media: frozenset[str] = frozenset()  # images the machine needs (-hda, -fda, -cdrom)

    def available(self, release: Release) -> bool:
        return self.requires is None or release.has(self.requires)


def media_of(ops: Any) -> frozenset[str]:
    """The images a machine must be started with to replay ``ops``."""
    out: frozenset[str] = frozenset()
    for step in ops:
        op = OPERATIONS.get(step[0])
        if op is not None:
            out |= op.media
    return out


def requirements(ops: Any) -> frozenset[str]:
    """The subsections a release must define to replay ``ops``."""
    return frozenset(
        r for step in ops if (r := OPERATIONS[step[0]].requires) is not None
    )


def _ide_tray(m: Machine, open: bool, locked: bool) -> None:
    m["ide"].set_tray(1, 0, open=open, locked=locked)


def _ide_booted(m: Machine) -> Any:
    """The IDE once the guest has booted: the BIOS identified every drive."""
    ide = m["ide"]
    ide.bios_probe()
    return ide


def _nic_hotplug(m: Machine) -> None:
    if m.nic == "none":
        raise ConfigError("nic.hotplug needs a machine with a NIC")
    m.hot_add(m.nic)


def _cpu_fpu(m: Machine, fpop: int, fpip: int, fpdp: int, pushes: int) -> None:
    m["cpu"].execute_fpu(fpop, fpip, fpdp, stack=tuple(1.0 + i for i in range(pushes)))


def _serial_write(m: Machine, register: str, value: int) -> None:
    from .devices.serial import write_fcr

    s = m["serial"].state
    if register == "fcr":
        write_fcr(s, value)
    elif register in ("ier", "lcr", "mcr", "scr"):
        setattr(s, register, value & (0x0F if register == "ier" else 0xFF))
    elif register == "divider":
        s.divider = value & 0xFFFF
    else:
        raise ConfigError(f"serial register {register!r} is not guest-writable here")


def _pit_program(m: Machine, channel: int, rw_mode: int, mode: int, count: int,
                 half_written: bool) -> None:
    """A guest programs a PIT channel (control word, then the count bytes)."""
    ch = m["pit"].channels[channel]
    ch.rw_mode, ch.mode, ch.bcd = rw_mode, mode, 0
    ch.count = count or 0x10000
    ch.write_state = ch.read_state = rw_mode
    ch.status = (rw_mode << 4) | (mode << 1)
    if half_written and rw_mode == 3:  # the low byte written, the high byte pending
        ch.write_state = 4
        ch.write_latch = count & 0xFF


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation("ide.pio_read",
                  lambda m, bus: _ide_booted(m).start_pio_read(bus=bus, unit=0),
                  doc="a PIO read in flight on unit 0 of the bus (disk or CD-ROM)",
                  media=frozenset({"hda", "cdrom"})),
        Operation("ide.dma", lambda m, lba, count, write: _ide_booted(m).start_dma(
            0, 0, lba=lba, count=count, write=write), doc="a bus-master DMA in flight",
            media=frozenset({"hda"})),
        Operation("ide.dma_retry", lambda m: _ide_booted(m).fail_dma_for_retry(bus=0),
                  doc="a failed DMA waiting for retry", media=frozenset({"hda"})),
        Operation("ide.pio_retry", lambda m, lba: _ide_booted(m).fail_pio_for_retry(0, 0, lba),
                  doc="a failed PIO write waiting for retry", media=frozenset({"hda"})),
        Operation("ide.dma_capable", lambda m, bus, bits: m["ide"].set_dma_capable(bus, bits),
                  doc="the guest sets the drive-DMA-capable bits"),
        Operation("ide.media_event", lambda m: m["ide"].raise_media_event(1, 0),
                  doc="a new CD-ROM medium"),
        Operation("ide.device_control",
                  lambda m, bus, value: m["ide"].write_device_control(bus, value),
                  doc="a write to the device control register"),
        Operation("ide.tray", _ide_tray, "ide_drive/tray_state", "CD-ROM tray"),
        Operation("fdc.clear_media_changed",
                  lambda m, drive: m["fdc"].clear_media_changed(drive),
                  doc="select and seek: the media-changed flag clears",
                  media=frozenset({"fda"})),
        Operation("fdc.change_media", lambda m: m["fdc"].change_media(0),
                  doc="insert or swap the floppy"),
        Operation("cpu.async_pf", lambda m, page: m["cpu"].enable_async_pf((page << 6) | 1),
                  "cpu/async_pf_msr", "enable async page faults"),
        Operation("cpu.fpu", _cpu_fpu, doc="FPU instructions: pushes, last opcode, pointers"),
        Operation("cpu.xmm", lambda m, index, lo, hi: m["cpu"].set_xmm(index, lo, hi),
                  doc="load an XMM register"),
        Operation("nic.hotplug", _nic_hotplug, doc="the NIC was hot-plugged after start"),
        Operation("serial.receive", lambda m, byte: m["serial"].receive(byte),
                  doc="a byte arrives on COM1"),
        Operation("serial.write", _serial_write, doc="a UART register write"),
        Operation("pit.program", _pit_program, doc="program a PIT channel"),
        Operation("pic.raise_irq", lambda m, line: m["pic"].raise_irq(line),
                  doc="an interrupt line goes up"),
    )
}


Recipe = list[tuple[str, dict[str, Any]]]


def apply_ops(machine: Machine, ops: Any) -> None:
    """Run each ``[name, {args}]`` step on ``machine`` in order."""
    for step in ops:
        name, args = step[0], dict(step[1]) if len(step) > 1 else {}
        try:
            op = OPERATIONS[name]
        except KeyError:
            raise ConfigError(f"unknown recipe operation {name!r}") from None
        if not op.available(machine.release):
            raise ConfigError(f"{name} is not available on release {machine.release.name}")
        missing = op.media - machine.media
        if missing:
            raise ConfigError(f"{name} needs a machine started with the media "
                              f"{', '.join(sorted(missing))}")
        op.run(machine, **args)


def found_dir() -> Path:
    return Path(os.environ.get(FOUND_ENV) or FOUND_DIR)


def load_recipes(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every saved recipe in ``directory`` (default :func:`found_dir`), by name."""
    directory = directory or found_dir()
    out: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            name = str(doc.get("name") or path.stem)
            ops = doc["ops"]
            if not isinstance(ops, list):
                raise TypeError("ops is not a list")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}: not a state recipe ({e})") from e
        out[name] = {**doc, "name": name, "path": str(path)}
    return out
