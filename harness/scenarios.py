"""The scenario catalogue: named guest states built from device operations.

A scenario puts a source machine in a state a real guest can reach, the way it reaches
it, deterministically for a seed: the images on the command line (``media``: both sides
of the migration are started with them), then what the guest or the monitor does. It
declares the subsections its state needs (``requires``): a release that does not define
them cannot express it (a 0.14 source cannot set state only 0.15 saves), and the matrix
does not generate such cells. A scenario whose state only KVM produces (``kvm_only``)
cannot be reproduced by the TCG builds the model is checked against. Names are part of
the interface (matrix files, cell ids, ``--scenario``).

A scenario's state for a seed stays the same from one version of migmatrix to the next,
device state and stream framing always. Guest RAM that a workload fills with random pages
(``live-ram``) changed once, when its generator became fast (issue 18, bench/README.md):
a stream saved before that carries other RAM pages for the same seed. (Issue 14 changed
every device's power-on state and the machine's sections: the model became the real
machine.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .emulator import faults as _faults
from .emulator.guest import FOUND, PROGRAMS, GuestProgram, run_program
from .emulator.machine import Machine
from .emulator.releases import Release

__all__ = ["SCENARIOS", "Scenario", "all_scenarios", "catalogue", "get_scenario", "media_of",
           "apply_scenario", "lookup", "saved_scenario"]


@dataclass(frozen=True)
class Scenario:
    """A catalogue entry; ``program`` is the emulator's guest program that builds it."""

    name: str
    summary: str
    exercises: str
    requires: frozenset[str] = frozenset()
    seeded: bool = False  # the seed changes the state (and is part of the cell id)
    kinds: frozenset[str] = frozenset({"emulator"})  # endpoint kinds it applies to
    kvm_only: str = ""  # why only a KVM guest reaches the state (a model-only scenario)

    @property
    def program(self) -> GuestProgram:
        return PROGRAMS[self.name]

    @property
    def media(self) -> frozenset[str]:
        """The images both machines are started with."""
        return self.program.media

    @property
    def live_passes(self) -> int:
        return self.program.live_passes

    @property
    def workload(self) -> Callable[[Machine, int], None] | None:
        return self.program.workload

    def expressible_on(self, release: Release) -> bool:
        return self.requires <= release.subsections

    def missing_on(self, release: Release) -> frozenset[str]:
        return self.requires - release.subsections


_KVM_ASYNC_PF = "the async PF MSR exists only under KVM (TCG never sets it)"
_KVM_FPU = "TCG does not track the FPU's last opcode and pointers; KVM's FXSAVE fills them"

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("idle", "the power-on state of a guest started with -S (no BIOS ran)",
                 "no subsection needed anywhere (but genstats' floppy flag)"),
        Scenario(
            "ide-pio", "a PIO read in flight on drive 0 of bus 0 (DRQ set)",
            "ide_drive/pio_state (embedded)", frozenset({"ide_drive/pio_state"}),
        ),
        Scenario(
            "ide-dma", "a bus-master DMA in flight on bus 0",
            "ide bmdma_current (embedded)", frozenset({"ide bmdma_current"}),
        ),
        Scenario(
            "ide-bus-error", "a failed DMA on bus 0 waiting for retry",
            "ide_bus/error: embedded, unknown to 0.14 whose ide_bus defines no subsections",
        ),
        Scenario(
            "ide-dma-capable", "the guest set the drive-DMA-capable bits (0x60) in bmdma status",
            "ide bmdma/status on 0.15 and later",
        ),
        Scenario(
            "atapi-media-event", "a CD-ROM on bus 1 with a new-media event pending",
            "ide_drive/atapi/gesn_state",
            frozenset({"ide_drive/atapi/gesn_state"}),
        ),
        Scenario(
            "atapi-two-subsections", "a PIO read in flight on the CD-ROM with a media event pending",
            "two sibling subsections (pio_state, gesn_state) on one embedded drive",
            frozenset({"ide_drive/pio_state", "ide_drive/atapi/gesn_state"}),
        ),
        Scenario(
            "fdc-media-changed", "a floppy whose media-changed flag is clear",
            "fdrive/media_changed, two struct levels deep, where defined",
        ),
        Scenario(
            "cpu-async-pf", "the guest enabled async page faults",
            "cpu/async_pf_msr (top level)", frozenset({"cpu/async_pf_msr"}),
            kvm_only=_KVM_ASYNC_PF,
        ),
        Scenario(
            "cpu-fpu-ip", "the last FPU instruction pointer and opcode are set",
            "cpu/fpop_ip_dp (top level)", frozenset({"cpu/fpop_ip_dp"}),
            kvm_only=_KVM_FPU,
        ),
        Scenario(
            "cpu-two-subsections", "async page faults and the FPU pointers together",
            "two sibling subsections on one description",
            frozenset({"cpu/async_pf_msr", "cpu/fpop_ip_dp"}),
            kvm_only=f"{_KVM_ASYNC_PF}; {_KVM_FPU}",
        ),
        Scenario(
            "cpu-misc-enable", "the guest wrote IA32_MISC_ENABLE (wrmsr, under TCG too)",
            "cpu/msr_ia32_misc_enable (1.0, top level)",
            frozenset({"cpu/msr_ia32_misc_enable"}),
        ),
        Scenario(
            "nic-hotplug", "the NIC was hot-plugged after start (-net none, device_add)",
            "rtl8139/hotplug_ready (no fields) on an rtl8139; the ACPI hot-plug event; a "
            "section registered last",
        ),
        Scenario(
            "collide-0x05", "parent data after an embedded struct begins with 0x05",
            "the ambiguity itself: spurious rejection under always-peek and peek-if-defined",
        ),
        Scenario(
            "collide-eof", "a misread subsection puts a 0x00 on a type-byte position",
            "the half-loaded outcome (truncated)", frozenset({"ide_bus/error"}),
        ),
        Scenario(
            "live-ram", "a workload keeps dirtying pages while RAM is sent in several passes",
            "live migration: START, PARTs, END; RAM equality",
        ),
        Scenario(
            "random", "every device in a seeded random but valid state",
            "broad coverage; the seed is part of the cell id", seeded=True,
        ),
        Scenario(
            "serial-configured", "a driver probed and set up COM1 (scratch, divisor, FIFOs)",
            "every register of the embedded 16550A state, deterministically",
        ),
        Scenario(
            "pit-half-written", "a PIT channel with only the low byte of its count written",
            "pit channel state machines in distinct states (read_state != write_state)",
        ),
    )
}


def _found_scenarios() -> dict[str, Scenario]:
    """Findings saved by ``migmatrix hunt --save`` (replayed state recipes)."""
    out = {}
    for program, doc in FOUND.items():
        out[program] = Scenario(
            program,
            str(doc.get("summary") or "a state found by migmatrix hunt"),
            f"found by migmatrix hunt on {doc.get('source')} -> {doc.get('destination')}: "
            f"{doc.get('verdict')}",
            frozenset(str(r) for r in doc.get("requires", ()) or ()),  # type: ignore[attr-defined]
        )
    return out


SCENARIOS.update(_found_scenarios())


def catalogue(kind: str) -> dict[str, Any]:
    """The scenarios for endpoints of ``kind``: ``emulator``, ``qemu`` (today's QEMU) or
    ``historic`` (the real builds of the modelled releases, whose scenarios share the
    model's names so that a real cell lines up with the model's)."""
    if kind == "qemu":
        from .qemu.scenarios import QEMU_SCENARIOS

        return dict(QEMU_SCENARIOS)
    if kind == "historic":
        from .qemu.historic_scenarios import HISTORIC_SCENARIOS

        return dict(HISTORIC_SCENARIOS)
    return dict(SCENARIOS)


def all_scenarios() -> dict[str, Any]:
    """Every catalogue's scenarios by name; where the model and the real builds share a
    name, the model's entry (the real recipe builds the same state)."""
    return {**catalogue("historic"), **catalogue("qemu"), **catalogue("emulator")}


def lookup(name: str) -> Any:
    """A scenario of any catalogue (``Scenario`` or ``QemuScenario``), as
    :func:`all_scenarios` has it; the model's own are found without importing the
    others."""
    for kind in ("emulator", "qemu", "historic"):  # all_scenarios' precedence
        entry = SCENARIOS.get(name) if kind == "emulator" else catalogue(kind).get(name)
        if entry is not None:
            return entry
    raise KeyError(f"unknown scenario {name!r} (known: {', '.join(all_scenarios())})")


def media_of(name: str, *, historic: bool = False) -> frozenset[str]:
    """The images on the command line of scenario ``name`` (``historic``: as the real
    builds' recipe runs it, e.g. ``booted`` or ``live-ram`` from a disk): a model machine
    reading its streams needs the same drives."""
    real = catalogue("historic").get(name) if historic else None
    return frozenset(getattr(real or lookup(name), "media", frozenset()))


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})") from None


def apply_scenario(machine: Machine, scenario: Scenario | str, seed: int = 0) -> Scenario:
    """Put ``machine`` in the scenario's state (deterministic for ``seed``)."""
    if isinstance(scenario, str):
        scenario = get_scenario(scenario)
    missing = scenario.media - machine.media
    if missing:
        raise ValueError(f"scenario {scenario.name} needs a machine started with the media "
                         f"{', '.join(sorted(missing))}")
    run_program(machine, scenario.name, seed)
    return scenario


def saved_scenario(release: str, machine: str, ram_size: int, scenario: str, seed: int = 0,
                   *, nic: str | None = None, vga: str = "cirrus",
                   host_time_ns: int | None = None) -> tuple[Machine, bytes]:
    """A source machine started for ``scenario``, put in its state for ``seed`` and saved:
    the machine as the save left it, and the stream.

    Deterministic for its arguments and the seeded bug the core runs with, so the last
    one is kept: the cells of one source and scenario (a destination each) and the
    prediction of each save it once, as a user saves once and loads the file on each
    build. Only guests of up to :data:`KEEP_RAM` are kept (a large one's machine must not
    outlive its cells). Callers only read the machine.
    """
    bug = _faults.active()
    key = (release, machine, ram_size, scenario, seed, nic, vga, host_time_ns,
           bug.name if bug else None)
    if _LAST_SAVED and _LAST_SAVED[0] == key:
        return _LAST_SAVED[1]
    _LAST_SAVED.clear()
    sc = get_scenario(scenario)
    m = Machine(release, machine, ram_size, nic, sc.media, vga, host_time_ns=host_time_ns)
    apply_scenario(m, sc, seed)
    stream = m.save(passes=sc.live_passes, workload=sc.workload)
    assert stream is not None
    if m.ram.total_size <= KEEP_RAM:
        _LAST_SAVED[:] = [key, (m, stream)]
    return m, stream


KEEP_RAM = 64 << 20  # the largest guest (all RAM blocks) whose last save is kept
_LAST_SAVED: list[Any] = []
