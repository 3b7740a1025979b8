"""Releases and machine types as data.

Each :class:`Release` row says how that QEMU build reads and writes the stream: its peek
policy, which file versions it accepts, its machine types with their stream format, which
subsections its devices define, and named *variants* where a device's description differs
(a renamed field, a changed ``needed`` rule, a save-side hook). Device modules build their
descriptions from a row; the engine never asks which release it is running.

Adding a release means adding a row here (and, if it brings a new variant value, the
table entry in the device module that gives that value its meaning).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ConfigError
from .vmstate import PeekPolicy

__all__ = ["MachineType", "Release", "RELEASES", "get_release", "parse_endpoint"]


@dataclass(frozen=True)
class MachineType:
    name: str
    stream_format: int
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True, eq=False)
class Release:
    name: str
    description: str
    peek: PeekPolicy
    machines: tuple[MachineType, ...]
    accepted_versions: frozenset[int]
    subsections: frozenset[str]
    variants: Mapping[str, str] = field(default_factory=dict)
    format_per_machine: bool = False  # the loader requires stream version == machine format

    def machine(self, name: str) -> MachineType:
        for m in self.machines:
            if name == m.name or name in m.aliases:
                return m
        known = ", ".join(m.name for m in self.machines)
        raise ConfigError(f"release {self.name} has no machine type {name!r} (has: {known})")

    def has(self, subsection: str) -> bool:
        return subsection in self.subsections

    def variant(self, key: str) -> str:
        try:
            return self.variants[key]
        except KeyError:
            raise ConfigError(f"release {self.name} does not set variant {key!r}") from None


_SUB_013 = frozenset({"ide_drive/pio_state", "ide bmdma_current"})
_SUB_014 = _SUB_013 | {"rtl8139/hotplug_ready", "cpu/async_pf_msr"}
_SUB_015 = _SUB_014 | {
    "ide_bus/error",
    "ide bmdma/status",
    "ide_drive/atapi/gesn_state",
    "cpu/fpop_ip_dp",
}
_SUB_NEW = _SUB_015 | {"fdrive/media_changed"}
_SUB_10 = _SUB_NEW | {"ide_drive/tray_state"}

# Variant keys and the values each device module understands:
#   bmdma.status          inline (0.14: retry flags kept in `status`, field 2 `status`)
#                         | compat (0.15: field 2 `migration_compat_status` + hooks)
#   pio_state.needed      drq | drq-or-pio-retry
#   fdrive.media_changed  bs-flag (pre_save copies the block layer's flag)
#                         | drive-flag (1.0: the drive's own field, no hooks)
#   cpu.fpregs            80bit (builds with USE_X86LDOUBLE, every modelled host)
_V_014 = {"bmdma.status": "inline", "pio_state.needed": "drq", "cpu.fpregs": "80bit"}
_V_015 = {"bmdma.status": "compat", "pio_state.needed": "drq-or-pio-retry", "cpu.fpregs": "80bit"}

_PC_013 = MachineType("pc-0.13", 3, description="0.13 ABI")

RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release(
            "0.13",
            "QEMU 0.13.0: subsections without the eb60260 guard",
            PeekPolicy.ALWAYS_PEEK,
            (MachineType("pc", 3, ("pc-0.13",), "0.13 ABI"),),
            frozenset({3}),
            _SUB_013,
            {**_V_014, "fdrive.media_changed": "bs-flag"},
        ),
        Release(
            "0.14",
            "QEMU 0.14.0: peek only where the description defines subsections",
            PeekPolicy.PEEK_IF_DEFINED,
            (MachineType("pc", 3, ("pc-0.14",), "0.14 ABI"), _PC_013),
            frozenset({3}),
            _SUB_014,
            {**_V_014, "fdrive.media_changed": "bs-flag"},
        ),
        Release(
            "0.15",
            "QEMU 0.15.0: four new subsections on embedded structs",
            PeekPolicy.PEEK_IF_DEFINED,
            (MachineType("pc", 3, ("pc-0.14",), "0.14 ABI (0.15.0 has no pc-0.15)"), _PC_013),
            frozenset({3}),
            _SUB_015,
            {**_V_015, "fdrive.media_changed": "bs-flag"},
        ),
        Release(
            "new",
            "the August 2011 sentinel series (genstats): per-machine stream format",
            PeekPolicy.ALWAYS_PEEK,
            (
                MachineType("pc", 4, ("pc-1.0",), "1.0 ABI, format 4 (sentinel)"),
                MachineType("pc-0.14", 3, ("pc-0.15",), "0.14 ABI, format 3"),
                _PC_013,
            ),
            frozenset({3, 4}),
            _SUB_NEW,
            {**_V_015, "fdrive.media_changed": "bs-flag"},
            format_per_machine=True,
        ),
        Release(
            "1.0",
            "QEMU 1.0: the subsection prefix heuristic, format 3",
            PeekPolicy.PREFIX_MATCH,
            (
                MachineType("pc", 3, ("pc-1.0",), "1.0 ABI"),
                MachineType("pc-0.15", 3, (), "0.15 ABI"),
                MachineType("pc-0.14", 3, (), "0.14 ABI"),
                _PC_013,
            ),
            frozenset({3}),
            _SUB_10,
            {**_V_015, "fdrive.media_changed": "drive-flag"},
        ),
    )
}


def get_release(name: str) -> Release:
    try:
        return RELEASES[name]
    except KeyError:
        known = ", ".join(RELEASES)
        raise ConfigError(f"unknown release {name!r} (known: {known})") from None


def parse_endpoint(text: str) -> tuple[Release, MachineType]:
    """``"0.14/pc"`` -> (release, machine type)."""
    release_name, sep, machine_name = text.partition("/")
    if not sep or not machine_name:
        raise ConfigError(f"endpoint {text!r} is not of the form RELEASE/MACHINE")
    release = get_release(release_name)
    return release, release.machine(machine_name)
