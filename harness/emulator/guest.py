"""What the guest does: named programs that drive the devices into a state.

A program is the guest side of a scenario (the harness's catalogue in ``harness.scenarios``
names them): it calls device operations as a guest driver would, deterministically for a
seed, and may keep running while a live migration sends RAM (``workload``). The endpoint
process runs them for ``x-guest-run``, the in-process driver calls them directly.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .devices import MEDIA
from .errors import ConfigError, LoadError
from .ram import GuestWorkload, fill_pattern
from .recipes import apply_ops, load_recipes, media_of
from .releases import RELEASES, Release
from .vmstate import PeekPolicy, Tracer

if TYPE_CHECKING:
    from .machine import Machine

__all__ = ["FOUND", "PROGRAMS", "GuestProgram", "run_program"]


@dataclass(frozen=True)
class GuestProgram:
    """``media``: the images the machine is started with (on both sides of a migration,
    as a real destination is started with the source's command line)."""

    name: str
    build: Callable[[Machine, random.Random], None]
    live_passes: int = 0  # PART passes of RAM with the guest running between them
    workload: Callable[[Machine, int], None] | None = field(default=None, compare=False)
    media: frozenset[str] = frozenset()


def _idle(m: Machine, rng: random.Random) -> None:
    """The power-on state of a guest started with -S: nothing has run."""


def _ide_pio(m: Machine, rng: random.Random) -> None:
    # -hda: the BIOS identified the drives, the guest reads its disk by PIO.
    m["ide"].bios_probe()
    m["ide"].start_pio_read(bus=0, unit=0)


def _ide_dma(m: Machine, rng: random.Random) -> None:
    m["ide"].bios_probe()
    m["ide"].start_dma(bus=0, unit=0)


def _ide_bus_error(m: Machine, rng: random.Random) -> None:
    # -hda with werror=stop on a failing image: the write waits for a retry.
    m["ide"].bios_probe()
    m["ide"].fail_dma_for_retry(bus=0)


def _ide_dma_capable(m: Machine, rng: random.Random) -> None:
    m["ide"].bios_probe()
    m["ide"].set_dma_capable(bus=0, bits=0x60)


def _atapi_read_during_media_event(m: Machine, rng: random.Random) -> None:
    # A PIO read in flight on the CD-ROM while its new-media event is pending: pio_state
    # and gesn_state, two sibling subsections on one embedded drive.
    m["ide"].bios_probe()
    m["ide"].raise_media_event(bus=1, unit=0)
    m["ide"].start_pio_read(bus=1, unit=0)


def _atapi_media_event(m: Machine, rng: random.Random) -> None:
    # `change ide1-cd0 FILE` on the monitor: a disc in the default empty CD-ROM drive.
    m["ide"].raise_media_event(bus=1, unit=0)


def _fdc_media_changed(m: Machine, rng: random.Random) -> None:
    # -fda: the floppy's flag is set as it is opened; the guest selects the drive and seeks.
    m["fdc"].clear_media_changed(drive=0)


def _cpu_async_pf(m: Machine, rng: random.Random) -> None:
    m["cpu"].enable_async_pf()


def _cpu_fpu_ip(m: Machine, rng: random.Random) -> None:
    m["cpu"].execute_fpu()


def _cpu_misc_enable(m: Machine, rng: random.Random) -> None:
    m["cpu"].write_misc_enable()


def _cpu_two(m: Machine, rng: random.Random) -> None:
    _cpu_async_pf(m, rng)
    _cpu_fpu_ip(m, rng)


def _nic_hotplug(m: Machine, rng: random.Random) -> None:
    # -net none at start, then `device_add` of the endpoint's NIC: it registers last, the
    # ACPI hot-plug event is pending, and the machine counts as modified.
    if m.nic == "none":
        raise ConfigError("nic-hotplug needs an endpoint with a NIC (nic = e1000 or rtl8139)")
    m.hot_add(m.nic)


def _collide_0x05(m: Machine, rng: random.Random) -> None:
    # Parent data beginning with 0x05 right after an embedded struct, no subsection sent:
    # xmm_regs[1] follows the embedded xmm_regs[0]; bus[0].cmd follows bmdma[1], whose
    # description defines subsections on every release.
    m["cpu"].set_xmm(1, 0x05 << 56 | 0x1122334455, 0x6677)
    m["ide"].write_device_control(bus=0, value=0x05)


def _misreading_release(source: Release) -> Release | None:
    """A release that peeks only where defined and lacks ``ide_bus/error``."""
    for release in RELEASES.values():
        if release.peek is PeekPolicy.PEEK_IF_DEFINED and not release.has("ide_bus/error"):
            return release
    return None


def _ide_onwards(m: Machine, stream: bytes) -> bytes:
    """``stream``'s header followed by its sections from the IDE's on: what a destination
    meets from the IDE section, whatever it made of the sections before."""
    tracer = Tracer()
    type(m).load(m.release, m.machine_name, stream, ram_size=m.ram_size, nic=m.nic,
                 media=m.media, tracer=tracer)
    at = next(mark.offset for mark in tracer.marks
              if mark.kind == "section" and mark.value == "FULL 0000:00:01.1/ide")
    return stream[:8] + stream[at:]


def _collide_eof(m: Machine, rng: random.Random) -> None:
    """A pending bus error, with the state arranged so that a destination that reads
    ``ide_bus/error`` as parent data meets a 0x00 where it expects a section type byte.

    The search reads the stream from the IDE section on: a real misreader (0.14) refuses
    every newer stream earlier (its i8254 instance), so only the IDE's bytes decide."""
    ide = m["ide"]
    ide.bios_probe()
    ide.fail_dma_for_retry(bus=0)
    reader = _misreading_release(m.release)
    if reader is None or m.stream_format not in reader.accepted_versions:
        return  # no release misreads this stream: the state is the bus error alone
    for _ in range(64):
        try:
            _, report = type(m).load(reader, "pc", _ide_onwards(m, m.save()),
                                     ram_size=m.ram_size, nic=m.nic, media=m.media)
        except LoadError:
            report = None
        m.running = True
        if report is not None and report.bytes_unread > 0:
            return
        ide.randomize(rng)  # another valid register file, then the error again
        ide.fail_dma_for_retry(bus=0)
    raise RuntimeError("collide-eof: no state found that ends the misread on a 0x00")


def _serial_configured(m: Machine, rng: random.Random) -> None:
    """A driver probes and sets up COM1: scratch test, 115200 8E1, FIFOs, RX interrupt."""
    apply_ops(m, [
        ("serial.write", {"register": "scr", "value": 0x5A}),
        ("serial.write", {"register": "divider", "value": 1}),
        ("serial.write", {"register": "lcr", "value": 0x1B}),
        ("serial.write", {"register": "fcr", "value": 0xC7}),
        ("serial.write", {"register": "ier", "value": 0x01}),
        ("serial.write", {"register": "mcr", "value": 0x0B}),
        ("serial.receive", {"byte": 0x41}),
    ])  # fmt: skip


def _pit_half_written(m: Machine, rng: random.Random) -> None:
    """The speaker channel in lobyte/hibyte mode with only the low byte of a count written:
    its write and read state machines are in different states."""
    apply_ops(m, [("pit.program", {"channel": 2, "rw_mode": 3, "mode": 3, "count": 0x04A9,
                                   "half_written": True})])


def _live_workload(m: Machine, pass_index: int) -> None:
    GuestWorkload(1000 + pass_index, pages=48).step(m.ram)


def _live_ram(m: Machine, rng: random.Random) -> None:
    fill_pattern(m.ram, rng, 0.5)


def _random(m: Machine, rng: random.Random) -> None:
    m.randomize(rng)



_HDA = frozenset({"hda"})

PROGRAMS: dict[str, GuestProgram] = {
    p.name: p
    for p in (
        GuestProgram("idle", _idle),
        GuestProgram("ide-pio", _ide_pio, media=_HDA),
        GuestProgram("ide-dma", _ide_dma, media=_HDA),
        GuestProgram("ide-bus-error", _ide_bus_error, media=_HDA),
        GuestProgram("ide-dma-capable", _ide_dma_capable, media=_HDA),
        GuestProgram("atapi-media-event", _atapi_media_event),
        GuestProgram("atapi-two-subsections", _atapi_read_during_media_event),
        GuestProgram("fdc-media-changed", _fdc_media_changed, media=frozenset({"fda"})),
        GuestProgram("cpu-async-pf", _cpu_async_pf),
        GuestProgram("cpu-fpu-ip", _cpu_fpu_ip),
        GuestProgram("cpu-two-subsections", _cpu_two),
        GuestProgram("cpu-misc-enable", _cpu_misc_enable),
        GuestProgram("nic-hotplug", _nic_hotplug),
        GuestProgram("collide-0x05", _collide_0x05),
        GuestProgram("collide-eof", _collide_eof, media=_HDA),
        GuestProgram("live-ram", _live_ram, live_passes=3, workload=_live_workload),
        GuestProgram("random", _random, media=MEDIA),
        GuestProgram("serial-configured", _serial_configured),
        GuestProgram("pit-half-written", _pit_half_written),
    )
}


def _recipe_program(ops: list[object]) -> Callable[[Machine, random.Random], None]:
    def build(m: Machine, rng: random.Random) -> None:
        apply_ops(m, ops)

    return build


def _register_found() -> dict[str, dict[str, object]]:
    """Saved ``migmatrix hunt`` findings become programs ``found-<name>``."""
    try:
        recipes = load_recipes()
    except ConfigError as e:  # a broken file must not take the core down with it
        warnings.warn(f"found scenarios not loaded: {e}", stacklevel=2)
        return {}
    found = {}
    for name, doc in recipes.items():
        program = f"found-{name}"
        PROGRAMS[program] = GuestProgram(program, _recipe_program(doc["ops"]),  # type: ignore[arg-type]
                                         media=media_of(doc["ops"]))
        found[program] = doc
    return found


FOUND: dict[str, dict[str, object]] = _register_found()


def run_program(machine: Machine, name: str, seed: int = 0) -> GuestProgram:
    """Run guest program ``name`` on ``machine`` (deterministic for ``seed``)."""
    try:
        program = PROGRAMS[name]
    except KeyError:
        raise ConfigError(f"unknown guest program {name!r} (known: {', '.join(PROGRAMS)})") from None
    program.build(machine, random.Random(f"{name}:{seed}"))
    return program
