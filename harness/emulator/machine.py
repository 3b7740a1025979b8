"""A PC of one (release, machine type): its devices, its RAM, its stream.

The machine is QEMU's ``-M pc`` with ``-serial null -parallel none``: every section a real
pc registers, in the order its release registers them (the release row's ``pc_devices``,
data rather than code: 1.0 moved the i8259s, 0.14 added port92), with the NIC chosen as
on QEMU's command line (``nic``: e1000 with user networking by default, rtl8139 with user
networking, or none), and the RAM blocks of the real machine (pc.ram, pc.bios, pc.rom,
vga.vram, the VGA's and the NIC's option ROMs) in the order of the release's block list.

It saves itself to a stream (live: START, at least one PART pass, as QEMU's migration
always iterates once, END with the guest stopped), loads a stream into a *fresh* machine
so that a refused stream leaves nothing behind, and exposes its guest-visible state as
plain data for comparison across releases.
"""

from __future__ import annotations

import functools
import importlib
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .devices import MEDIA, Board, Device
from .errors import ConfigError
from .ram import RAM, BlockImage, RamLoaderQuirks, compare_ram
from .releases import MachineType, RamOrder, Release, get_release
from .savevm import HeaderPolicy, LoadReport, Saver, load_stream
from .sections import section_key
from .stream import StreamReader, StreamWriter
from .vmstate import Tracer, dump_state, same_state

if TYPE_CHECKING:
    from .stream import Sink

__all__ = [
    "DEFAULT_RAM_SIZE",
    "DEVICE_MODULES",
    "NICS",
    "VGAS",
    "Difference",
    "Machine",
    "compare_machines",
    "jsonable",
    "parse_size",
    "section_key",
    "size_text",
    "state_key",
]

DEFAULT_RAM_SIZE = 8 << 20
# The PC's CPU of the time addressed 40 physical bits: no guest had more RAM than this.
MAX_RAM_SIZE = 1 << 40
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

# Device key (a release row's pc_devices) -> (module in .devices, class).
DEVICE_MODULES: dict[str, tuple[str, str]] = {
    "timer": ("timer", "Timers"),
    "slirp": ("slirp", "Slirp"),
    "block": ("blockmig", "BlockMigration"),
    "cpu": ("cpu", "CPU"),
    "apic": ("apic", "APIC"),
    "fw_cfg": ("fw_cfg", "FwCfg"),
    "pic": ("pic", "PIC"),
    "ioapic": ("ioapic", "IOAPIC"),
    "i440fx": ("piix_pci", "PCIHost"),
    "cirrus_vga": ("cirrus_vga", "CirrusVGA"),
    "hpet": ("hpet", "HPET"),
    "rtc": ("rtc", "RTC"),
    "pit": ("pit", "PIT"),
    "serial": ("serial", "Serial"),
    "pckbd": ("pckbd", "I8042"),
    "vmmouse": ("vmmouse", "VMMouse"),
    "port92": ("port92", "Port92"),
    "dma": ("dma", "DMA"),
    "fdc": ("fdc", "FDC"),
    "e1000": ("e1000", "E1000"),
    "rtl8139": ("rtl8139", "RTL8139"),
    "ide": ("ide", "IDE"),
    "piix4_pm": ("piix4_pm", "PIIX4PM"),
}

# -net option -> the NIC's device key and its option ROM (firmware file, block size).
NICS: dict[str, tuple[str, str, int] | None] = {
    "e1000": ("e1000", "pxe-e1000.bin", 128 << 10),
    "rtl8139": ("rtl8139", "pxe-rtl8139.bin", 64 << 10),
    "none": None,
}
# -vga option -> the display adapter's device key and its option ROM (block, firmware,
# size), or None for no adapter (no vga.vram either).
VGAS: dict[str, tuple[str, tuple[str, str, int]] | None] = {
    "cirrus": ("cirrus_vga", ("0000:00:02.0/cirrus_vga.rom", "vgabios-cirrus.bin", 64 << 10)),
    "none": None,
}
VRAM_IMAGE = "1024xff"  # cirrus_init_common fills the chip's 4 MiB with 0xff
BIOS_SIZE = ROM_SIZE = 128 << 10

Workload = Callable[["Machine", int], None]


@functools.cache
def _device_class(key: str) -> type[Device]:
    try:
        module, cls = DEVICE_MODULES[key]
    except KeyError:
        raise ConfigError(f"no device module for {key!r}") from None
    return getattr(importlib.import_module(f".devices.{module}", __package__), cls)


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
    """A PC built for ``release`` and ``machine`` (a type name or alias) with ``ram_size``
    of RAM, the NIC ``nic`` (e1000 | rtl8139 | none; a NIC comes with user networking;
    default: the release's, as without -net options), the display ``vga`` (cirrus | none)
    and ``media`` (hda, fda, cdrom: images given on the command line); ``host_time_ns`` is
    the host's clock its RTC runs on (default: a fixed one, see :class:`Board`).
    """

    def __init__(
        self,
        release: Release | str,
        machine: str = "pc",
        ram_size: int | str = DEFAULT_RAM_SIZE,
        nic: str | None = None,
        media: Iterable[str] = (),
        vga: str = "cirrus",
        host_time_ns: int | None = None,
    ) -> None:
        self.release = get_release(release) if isinstance(release, str) else release
        self.machine_type: MachineType = self.release.machine(machine)
        self.machine_name = machine
        self.ram_size = parse_size(ram_size)
        nic = self.release.default_nic if nic is None else nic
        if nic not in NICS:
            raise ConfigError(f"unknown NIC {nic!r} (known: {', '.join(NICS)})")
        if vga not in VGAS:
            raise ConfigError(f"unknown VGA {vga!r} (known: {', '.join(VGAS)})")
        self.nic = nic
        self.vga = vga
        nic_info = NICS[nic]
        vga_info = VGAS[vga]
        self.media = frozenset(media)
        if not self.media <= MEDIA:
            raise ConfigError(f"unknown media {sorted(self.media - MEDIA)} "
                              f"(known: {', '.join(sorted(MEDIA))})")
        clock = {} if host_time_ns is None else {"host_time_ns": host_time_ns}
        self.board = Board(ram_size=self.ram_size, nic=nic, user_net=nic_info is not None,
                           media=self.media, vga=vga,
                           cpu_model=self.machine_type.cpu_model, **clock)
        self.order: list[str] = []
        for key in self.release.pc_devices:
            if key == "nic":
                if nic_info is not None:
                    self.order.append(nic_info[0])
            elif key == "vga":
                if vga_info is not None:
                    self.order.append(vga_info[0])
            elif key != "slirp" or self.board.user_net:
                self.order.append(key)
        self.devices: dict[str, Any] = {}
        for key in self.order:
            if key != "ram":
                self.devices[key] = _device_class(key)(self.release, self.board)
        self.ram = self._build_ram()
        self.running = True

    def _build_ram(self) -> RAM:
        """The blocks in registration order (offsets), listed in the release's order."""
        roms = self.release.roms
        blocks = [("pc.ram", self.ram_size, None), ("pc.bios", BIOS_SIZE, roms["bios.bin"]),
                  ("pc.rom", ROM_SIZE, None)]  # fmt: skip
        vga_info = VGAS[self.vga]
        if vga_info is not None:
            blocks.append(("vga.vram", self.release.vram_size, VRAM_IMAGE))
            if self.machine_type.rom_bars:
                block, firmware, size = vga_info[1]
                blocks.append((block, size, roms[firmware]))
        nic_info = NICS[self.nic]
        if nic_info is not None and self.machine_type.rom_bars:
            key, firmware, size = nic_info
            blocks.append((f"{self.board.nic_idstr(key)}.rom", size, roms[firmware]))
        names = [name for name, _, _ in blocks]
        if self.release.ram_order is RamOrder.MOVE_TO_FRONT:
            # Each new block goes first, and the last block looked up moves first: at
            # power-on that is the BIOS, which rom_reset copies in last.
            names = ["pc.bios", *(n for n in reversed(names) if n != "pc.bios")]
        return RAM(
            layout=[(name, size) for name, size, _ in blocks],
            order=names,
            images=[BlockImage(name, runs) for name, _, runs in blocks if runs],
            seed=self.release.name,
            quirks=RamLoaderQuirks(
                checks_fill_target=self.release.variant("ram.fill_target") == "checked"),
        )

    # -- identity ---------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"{self.release.name}/{self.machine_name}"

    @property
    def stream_format(self) -> int:
        return self.machine_type.stream_format

    def __getitem__(self, key: str) -> Any:
        return self.devices[key]

    def __contains__(self, key: str) -> bool:
        return key in self.devices

    def handlers(self) -> list[Any]:
        """Every savevm handler in registration order (section ids are positions here)."""
        out: list[Any] = []
        for key in self.order:
            if key == "ram":
                out.append(self.ram.handler)
            else:
                out.extend(self.devices[key].sections())
        return out

    def device_sections(self) -> list[tuple[Any, Any]]:
        """(device, section) of every non-live section, in registration order."""
        return [(device, section) for key in self.order if key != "ram"
                for device in (self.devices[key],) for section in device.sections()
                if not section.live]

    def header_policy(self) -> HeaderPolicy:
        return HeaderPolicy(
            accepted=self.release.accepted_versions,
            machine_format=self.stream_format,
            must_match_machine=self.release.format_per_machine,
        )

    # -- events -----------------------------------------------------------------------

    def hot_add(self, key: str) -> None:
        """``key``'s device was hot-plugged after start: it registers last (its section
        and its option ROM block come after everything else), the ACPI hotplug event is
        pending for its slot, and the machine counts as modified
        (qdev_machine_modified()), which every device that cares is told."""
        if key not in self.devices:
            raise ConfigError(f"this machine has no {key!r} to hot-plug")
        self.order.remove(key)
        self.order.append(key)
        rom = f"{self.board.nic_idstr(key)}.rom"
        if rom in self.ram.blocks:
            names = [n for n in self.ram.blocks if n != rom]
            front = self.release.ram_order is RamOrder.MOVE_TO_FRONT
            self.ram.reorder([rom, *names] if front else [*names, rom])
        if "piix4_pm" in self.devices:
            self.devices["piix4_pm"].hotplug(self.board.nic_slot)
        self.qdev_modified()

    def qdev_modified(self) -> None:
        """A device was hot-added or removed after machine creation."""
        for device in self.devices.values():
            device.machine_modified()

    # -- save -------------------------------------------------------------------------

    def save(
        self,
        sink: Sink | None = None,
        *,
        passes: int = 1,
        workload: Workload | None = None,
    ) -> bytes | None:
        """Write the whole stream; returns it when no ``sink`` is given.

        ``passes`` PART passes of the live sections run before the guest stops (at least
        one, as in QEMU, whose migration and savevm always iterate once), with
        ``workload(machine, pass_index)`` dirtying memory before each.
        """
        # The guest's pages go into the stream as views, copied once by getvalue; they are
        # copied before the workload changes them.
        w = StreamWriter(sink, keep_views=True)
        saver = Saver(w, self.handlers(), self.stream_format, self.release.peek)
        saver.begin()
        for i in range(max(1, passes)):
            if workload is not None:
                w.settle()
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
        nic: str | None = None,
        media: Iterable[str] = (),
        vga: str = "cirrus",
        tracer: Tracer | None = None,
    ) -> tuple[Machine, LoadReport]:
        """Load ``source`` (bytes or a readable stream) into a fresh machine.

        Raises :class:`~.errors.LoadError` when the stream is refused and
        :class:`~.errors.LoadCrash` where the release would have died; the new machine is
        returned only when the load completed (possibly half-loaded: see the report).
        """
        dest = cls(release, machine, ram_size, nic, media, vga)
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
        for device, section in self.device_sections():
            fields = device.guest_view(section, dump_state(section.desc, section.obj))
            out[state_key(section)] = fields
        return out

    def state_json(self) -> dict[str, Any]:
        """:meth:`state` with bytes as hex strings, plus a RAM digest per block."""
        return {
            "endpoint": self.endpoint,
            "nic": self.nic,
            "vga": self.vga,
            "media": sorted(self.media),
            "devices": {k: {p: jsonable(v) for p, v in s.items()} for k, s in self.state().items()},
            "ram": self.ram.digest(),
        }

    def randomize(self, rng: random.Random) -> None:
        for device in self.devices.values():
            device.randomize(rng)


def state_key(section: Any) -> str:
    """A section's key in :meth:`Machine.state`, the same in every release: a section with
    a legacy (alias) id is keyed by it, so 0.14's i8254 0x40 and 0.15's i8254 0 (alias
    0x40) are one device."""
    alias = getattr(section, "alias_id", None)
    return section_key(section.idstr, section.instance_id if alias is None else alias)


def jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def same_device_state(a: Machine, b: Machine) -> bool:
    """``a.state() == b.state()`` for machines of one release and machine type whose
    sections are alike, found without building either state (a device's guest view is a
    function of its section's fields and its release). False when they differ or are not
    alike: compare their states then."""
    if a.release is not b.release or a.machine_type is not b.machine_type:
        return False
    sections_a, sections_b = a.device_sections(), b.device_sections()
    if len(sections_a) != len(sections_b):
        return False
    for (device_a, x), (device_b, y) in zip(sections_a, sections_b, strict=True):
        if type(device_a) is not type(device_b) or x.desc is not y.desc \
                or state_key(x) != state_key(y) or not same_state(x.desc, x.obj, y.obj):
            return False
    return True


def compare_machines(source: Machine, dest: Machine, *, ram_limit: int = 20,
                     states: tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]
                     | None = None) -> list[Difference]:
    """Every field both machines define whose values differ, then RAM by block and page.
    ``states``: the two machines' :meth:`Machine.state`, when the caller has them (two
    empty ones: compare RAM only)."""
    diffs: list[Difference] = []
    if states is None:
        states = ({}, {}) if same_device_state(source, dest) else (source.state(),
                                                                   dest.state())
    src_state, dst_state = states
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

