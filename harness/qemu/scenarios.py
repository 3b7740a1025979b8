"""The scenario catalogue for real QEMU endpoints.

A QEMU scenario says what the source guest does before and during the migration; the
driver (:mod:`harness.drivers.qemu`) carries it out. Names are part of the interface
(matrix files, cell ids), as in :mod:`harness.scenarios`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QEMU_SCENARIOS", "QemuScenario"]


@dataclass(frozen=True)
class QemuScenario:
    name: str
    summary: str
    exercises: str
    runs_guest: bool  # boot the project's image and migrate live while it runs
    seeded: bool = False
    kinds: frozenset[str] = frozenset({"qemu"})


QEMU_SCENARIOS: dict[str, QemuScenario] = {
    s.name: s
    for s in (
        QemuScenario(
            "boot-idle", "started with -S and never run: the machine as it was built",
            "configuration section, every device's reset state, RAM of ROMs and zeroes",
            runs_guest=False,
        ),
        QemuScenario(
            "guest-dirty",
            "the project's boot image counts in every page and writes CMOS and COM1 "
            "while RAM is sent in several passes",
            "live RAM transfer and dirty tracking (the counters must form at most one "
            "step), device state of a running guest, the guest running on afterwards",
            runs_guest=True,
        ),
    )
}
