"""A PC of one (release, machine type): its devices, its RAM, its stream.

The machine registers its sections in QEMU's order (``ram`` first, then the devices as
``pc_init1`` created them), saves itself to a stream (optionally live: START, PART passes
with the guest running between them, END with the guest stopped), loads a stream into a
*fresh* machine so that a refused stream leaves nothing behind, and exposes its
guest-visible state as plain data for comparison across releases.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .ram import RAM, compare_ram
from .releases import MachineType, Release, get_release
from .savevm import HeaderPolicy, LoadReport, Saver, load_stream
from .sections import section_key
from .stream import Sink, StreamReader, StreamWriter
from .vmstate import Tracer, dump_state

__all__ = [
    "DEFAULT_RAM_SIZE",
    "DEVICE_MODULES",
    "Difference",
    "Machine",
    "compare_machines",
    "jsonable",
    "parse_size",
    "section_key",
    "size_text",
]

DEFAULT_RAM_SIZE = 8 << 20
# The PC's CPU of the time addressed 40 physical bits: no guest had more RAM than this.
MAX_RAM_SIZE = 1 << 40
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

# Registration order of the PC's devices after "ram" (pc_init1: CPUs, PICs, then
# pc_basic_device_init's RTC, PIT, serial and floppy, then the NIC, then IDE).
DEVICE_MODULES: tuple[tuple[str, str], ...] = (
    ("cpu", "CPU"),
    ("pic", "PIC"),
    ("rtc", "RTC"),
    ("pit", "PIT"),
    ("serial", "Serial"),
    ("fdc", "FDC"),
    ("rtl8139", "RTL8139"),
    ("ide", "IDE"),
)

Workload = Callable[["Machine", int], None]


def _device_classes() -> Iterator[type]:
    for module, cls in DEVICE_MODULES:
        yield getattr(importlib.import_module(f".devices.{module}", __package__), cls)


def parse_size(text: str | int) -> int:
    """``"8M"`` -> 8388608; plain integers are bytes. Must be a multiple of 4 KiB, and at
    most 1 TiB (40 physical address bits)."""
    if isinstance(text, int):
        size = text
    else:
        t = text.strip().upper().removesuffix("IB").removesuffix("B")
        try:
            size = int(t[:-1]) * _UNITS[t[-1]] if t and t[-1] in _UNITS else int(t)
        except ValueError:
            raise ConfigError(f"bad size {text!r} (use bytes or a K/M/G suffix)") from None
    if size <= 0 or size % 4096:
        raise ConfigError(f"RAM size {size} is not a positive multiple of 4096")
    if size > MAX_RAM_SIZE:
        raise ConfigError(f"RAM size {text!r} is more than the 1024G a PC of the time could "
                          "address")
    return size


def size_text(size: int) -> str:
    """The shortest form :func:`parse_size` reads back: 2097152 -> ``"2M"``."""
    for suffix in ("G", "M", "K"):
        if size and size % _UNITS[suffix] == 0:
            return f"{size // _UNITS[suffix]}{suffix}"
    return str(size)


@dataclass(frozen=True)
class Difference:
    """One guest-visible difference: ``path`` is ``section/field`` or ``ram/block/page[n]``."""

    path: str
    source: Any
    destination: Any


class Machine:
    """A PC built for ``release`` and ``machine`` (a type name or alias) with ``ram_size``."""

    def __init__(
        self, release: Release | str, machine: str = "pc", ram_size: int | str = DEFAULT_RAM_SIZE
    ) -> None:
        self.release = get_release(release) if isinstance(release, str) else release
        self.machine_type: MachineType = self.release.machine(machine)
        self.machine_name = machine
        self.ram_size = parse_size(ram_size)
        self.ram = RAM(self.ram_size)
        self.devices: dict[str, Any] = {}
        for cls in _device_classes():
            self.devices[cls.key] = cls(self.release)
        self.running = True

    # -- identity ---------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"{self.release.name}/{self.machine_name}"

    @property
    def stream_format(self) -> int:
        return self.machine_type.stream_format

    def __getitem__(self, key: str) -> Any:
        return self.devices[key]

    def handlers(self) -> list[Any]:
        """Every savevm handler in registration order."""
        out: list[Any] = [self.ram.handler]
        for device in self.devices.values():
            out.extend(device.sections())
        return out

    def header_policy(self) -> HeaderPolicy:
        return HeaderPolicy(
            accepted=self.release.accepted_versions,
            machine_format=self.stream_format,
            must_match_machine=self.release.format_per_machine,
        )

    # -- save -------------------------------------------------------------------------

    def save(
        self,
        sink: Sink | None = None,
        *,
        passes: int = 0,
        workload: Workload | None = None,
    ) -> bytes | None:
        """Write the whole stream; returns it when no ``sink`` is given.

        ``passes`` PART passes of RAM run before the guest stops, with ``workload(machine,
        pass_index)`` dirtying memory before each, as a live migration would.
        """
        w = StreamWriter(sink)
        saver = Saver(w, self.handlers(), self.stream_format, self.release.peek)
        saver.begin()
        for i in range(passes):
            if workload is not None:
                workload(self, i)
            saver.iterate()
        self.running = False
        saver.complete()
        return None if sink is not None else w.getvalue()

    # -- load -------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        release: Release | str,
        machine: str,
        source: Any,
        *,
        ram_size: int | str = DEFAULT_RAM_SIZE,
        tracer: Tracer | None = None,
    ) -> tuple[Machine, LoadReport]:
        """Load ``source`` (bytes or a readable stream) into a fresh machine.

        Raises :class:`~.errors.LoadError` when the stream is refused; the new machine is returned
        only when the load completed (possibly half-loaded: see the report).
        """
        dest = cls(release, machine, ram_size)
        reader = source if isinstance(source, StreamReader) else StreamReader(source)
        report = load_stream(
            reader, dest.handlers(), dest.header_policy(), dest.release.peek, tracer=tracer
        )
        dest.running = False
        return dest, report

    # -- state ------------------------------------------------------------------------

    def state(self) -> dict[str, dict[str, Any]]:
        """Guest-visible device state: ``{section: {field path: value}}`` (RAM apart)."""
        out: dict[str, dict[str, Any]] = {}
        for device in self.devices.values():
            for section in device.sections():
                fields = device.guest_view(section, dump_state(section.desc, section.obj))
                out[section_key(section.idstr, section.instance_id)] = fields
        return out

    def state_json(self) -> dict[str, Any]:
        """:meth:`state` with bytes as hex strings, plus a RAM digest per block."""
        return {
            "endpoint": self.endpoint,
            "devices": {k: {p: jsonable(v) for p, v in s.items()} for k, s in self.state().items()},
            "ram": self.ram.digest(),
        }

    def randomize(self, rng: random.Random) -> None:
        for device in self.devices.values():
            device.randomize(rng)


def jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def compare_machines(source: Machine, dest: Machine, *, ram_limit: int = 20) -> list[Difference]:
    """Every field both machines define whose values differ, then RAM by block and page."""
    diffs: list[Difference] = []
    src_state, dst_state = source.state(), dest.state()
    for section, fields in src_state.items():
        other = dst_state.get(section)
        if other is None:
            continue
        for path, value in fields.items():
            if path in other and other[path] != value:
                diffs.append(Difference(f"{section}/{path}", value, other[path]))
    for d in compare_ram(source.ram, dest.ram, limit=ram_limit):
        where = ", ".join(map(str, d.pages)) + (", ..." if d.count > len(d.pages) else "")
        diffs.append(Difference(
            f"ram/{d.block}", f"{d.count} page(s) differ: [{where}] {d.detail}".strip(),
            "differs",
        ))
    return diffs

