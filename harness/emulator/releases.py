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

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .vmstate import PeekPolicy

__all__ = ["MachineType", "RamOrder", "Release", "RELEASES", "get_release", "parse_endpoint"]


class RamOrder(enum.Enum):
    """The order of QEMU's RAM block list, which is the order RAM is saved in."""

    OFFSET = "offset"  # 0.14+: sorted by ram_addr, i.e. registration order
    MOVE_TO_FRONT = "move-to-front"  # 0.13: newest first, each looked-up block moved first


@dataclass(frozen=True)
class MachineType:
    name: str
    stream_format: int
    aliases: tuple[str, ...] = ()
    description: str = ""
    # PCI option ROMs mapped through their ROM BAR, each a RAM block of its own; False
    # where the machine type sets "rombar=0" on every PCI device (RHEL 5.x: the ROMs go
    # through fw_cfg into pc.rom).
    rom_bars: bool = True
    cpu_model: str = ""  # the default CPU model it sets ("": the release's "cpu.model")


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
    pc_devices: tuple[str, ...] = ()  # device keys of a pc machine in registration order
    ram_order: RamOrder = RamOrder.OFFSET
    roms: Mapping[str, str] = field(default_factory=dict)  # firmware file -> page runs
    default_nic: str = "e1000"  # the NIC of a command line without -net options
    vram_size: int = 8 << 20  # vga.vram: VGA_RAM_SIZE (16 MiB in RHEL 6's qemu-kvm)

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
_SUB_10 = _SUB_NEW | {
    "ide_drive/tray_state",
    "ps2kbd/ledstate",
    "cpu/msr_tscdeadline",
    "cpu/msr_ia32_misc_enable",
}

# RHEL 6's qemu-kvm (0.12.1.2 with backports; ../shared/spec/rhel6.md).
_SUB_RHEL61 = _SUB_013 | {"rtl8139/hotplug_ready", "ide_drive/atapi/gesn_state",
                          "fdrive/media_changed"}  # fmt: skip
_SUB_RHEL62 = _SUB_RHEL61 | {"ide_drive/tray_state", "ide_bus/error", "ide bmdma/status",
                             "ps2kbd/ledstate", "xsave"}  # fmt: skip

# Variant keys and the values each device module understands:
#   bmdma.status          inline (0.14: retry flags kept in `status`, field 2 `status`)
#                         | compat (0.15: field 2 `migration_compat_status` + hooks)
#   pio_state.needed      drq | drq-or-pio-retry
#   pio_state.end_fn      table-size-ok (up to genstats: post_load refuses an index > the
#                         table size) | below-table-size (1.0: >= is refused)
#   fdrive.media_changed  bs-flag (pre_save copies the block layer's flag)
#                         | drive-flag (1.0: the drive's own field, no hooks)
#   fdc.media_changed     stays-set (a fresh drive's flag stays 1) | open-clears (genstats:
#                         the empty default drive's flag is 0 from power-on)
#   cpu.fpregs            80bit (builds with USE_X86LDOUBLE, every modelled host)
#   cpu.pat               zero (0.13, 0.14: cpu_reset leaves PAT 0) | wb-default (0.15+)
#   cpu.mcg_cap           ctl (0.13: MCG_CTL_P) | ctl-ser (0.14+: and MCG_SER_P)
#   cpu.power_on_irq      pending (the PIT's IRQ0 reaches the CPU before -S stops it:
#                         interrupt_request HARD) | none (genstats, 1.0)
#   ioapic.layout         v1 (0.13) | v3 (0.14+: irr and qemu-kvm's unused bytes)
#   pic.ids               iobase (instances 0x20, 0xa0) | qdev (1.0: 0, 1; aliases 0x20, 0xa0)
#   pic.power_on_irq0     pending (the PIT raised IRQ0 after the PICs' reset) | cleared
#                         (1.0: qdev resets the PICs after the PIT's reset handler ran)
#   pit.ids               iobase (instance 0x40) | qdev (0.15+: 0; alias 0x40)
#   piix4_pm.gpe          u16 (0.13, 0.14) | gpe-array (0.15+: 4 x u16 each)
#   pci.bus_reset         before-device (0.13: PIIX3 keeps the command its reset sets)
#                         | after-device (0.14+: the bus reset clears it last)
#   ram.fill_target       unchecked (0.13: a uniform page for an unknown block is
#                         written through NULL) | checked (0.14+: refused)
#   e1000.pci_status      cap-list (init sets the read-only "capability list" bit)
#                         | clear (1.0: no longer set)
#   rtl8139.mmio_dummy    io-index (up to 0.15: the MMIO handler's io-memory index)
#                         | io-index-kvm (RHEL 6's index) | zero (genstats, 1.0)
#   rtc.ids, serial.ids, fdc.ids
#                         qdev (instance 0, the I/O base a load-only alias) | iobase
#                         (RHEL 6: vmstate_register(base), nothing else accepted)
#   pit.flags             none | u32 (qemu-kvm: a flags word before the channels)
#   cpu.xsave             v12-fields (xcr0, xstate_bv, ymmh_regs at v12) | none (RHEL 6:
#                         qemu-kvm's v12 is v11 plus two pvclock MSRs)
#   piix4_pm.registration qdev (i2c_bus, then 0000:00:01.3/piix4_pm, alias piix4_pm)
#                         | legacy (RHEL 6: bare "piix4_pm" first, then i2c_bus)
#   i8042.vmmouse         separate (its own registration) | inside (RHEL 6: the i8042's
#                         init creates it, between ps2mouse and pckbd)
#   cpu.model             qemu64 | cpu64-rhel6 (the default CPU's cpuid_version in EDX)
#   i440fx.drb            ram-size (config 0x57 = RAM / 8 MiB) | unset (RHEL 6)
#   gesn_state.fields     terminated | unterminated (RHEL 6.1: no VMSTATE_END_OF_LIST)
_V_013 = {
    "bmdma.status": "inline", "pio_state.needed": "drq", "pio_state.end_fn": "table-size-ok",
    "fdrive.media_changed": "bs-flag", "fdc.media_changed": "stays-set", "cpu.fpregs": "80bit",
    "cpu.pat": "zero", "cpu.mcg_cap": "ctl", "cpu.power_on_irq": "pending",
    "ioapic.layout": "v1", "pic.ids": "iobase", "pic.power_on_irq0": "pending",
    "pit.ids": "iobase", "piix4_pm.gpe": "u16",
    "pci.bus_reset": "before-device", "ram.fill_target": "unchecked",
    "rtl8139.mmio_dummy": "io-index", "e1000.pci_status": "cap-list",
    "rtc.ids": "qdev", "serial.ids": "qdev", "fdc.ids": "qdev", "pit.flags": "none",
    "cpu.xsave": "v12-fields", "piix4_pm.registration": "qdev", "i8042.vmmouse": "separate",
    "gesn_state.fields": "terminated", "cpu.model": "qemu64", "i440fx.drb": "ram-size",
    "cirrus_vga.outer_post_load": "none",
}  # fmt: skip
_V_014 = {
    **_V_013, "cpu.mcg_cap": "ctl-ser", "ioapic.layout": "v3", "pci.bus_reset": "after-device",
    "ram.fill_target": "checked",
}  # fmt: skip
_V_015 = {
    **_V_014, "bmdma.status": "compat", "pio_state.needed": "drq-or-pio-retry",
    "cpu.pat": "wb-default", "pit.ids": "qdev", "piix4_pm.gpe": "gpe-array",
}  # fmt: skip
_V_NEW = {
    **_V_015, "fdc.media_changed": "open-clears", "cpu.power_on_irq": "none",
    "rtl8139.mmio_dummy": "zero",
}  # fmt: skip
_V_10 = {
    **_V_NEW, "fdc.media_changed": "stays-set", "fdrive.media_changed": "drive-flag",
    "pio_state.end_fn": "below-table-size", "pic.ids": "qdev", "pic.power_on_irq0": "cleared",
    "e1000.pci_status": "clear",
}  # fmt: skip
_V_RHEL61 = {
    **_V_014, "fdc.media_changed": "open-clears", "ioapic.layout": "v2-kvm",
    "rtc.ids": "iobase", "serial.ids": "iobase", "fdc.ids": "iobase", "pit.flags": "u32",
    "cpu.xsave": "none", "piix4_pm.registration": "legacy", "i8042.vmmouse": "inside",
    "gesn_state.fields": "unterminated", "cpu.model": "cpu64-rhel6", "i440fx.drb": "unset",
    "pci.bus_reset": "before-device", "rtl8139.mmio_dummy": "io-index-kvm",
    "cirrus_vga.outer_post_load": "inner-on-wrapper",
}  # fmt: skip
_V_RHEL62 = {
    **_V_RHEL61, "bmdma.status": "compat", "pio_state.needed": "drq-or-pio-retry",
    "fdrive.media_changed": "accepted-unused", "gesn_state.fields": "terminated",
}  # fmt: skip

# The sections of a `-M pc` machine, by device key (harness/emulator/devices), in the order
# each release registers them: QEMU numbers sections in this order and saves the live ones
# (block, ram) first, then the rest. "slirp" exists only with user networking; "nic" is the
# chosen NIC's device, or nothing with -net none; "vga" the -vga adapter's, or nothing.
_PC_013 = (
    "timer", "slirp", "block", "ram", "cpu", "apic", "fw_cfg", "pic", "ioapic", "i440fx",
    "vga", "hpet", "rtc", "pit", "serial", "pckbd", "vmmouse", "dma", "fdc", "nic",
    "ide", "piix4_pm",
)  # fmt: skip
_PC_014 = (*_PC_013[: _PC_013.index("dma")], "port92", *_PC_013[_PC_013.index("dma"):])
# 1.0: the i8259s became qdev ISA devices, created on the PIIX3's ISA bus, and the I/O
# APIC after them.
_PC_10 = tuple(k for k in _PC_014 if k not in ("pic", "ioapic"))
_PC_10 = (*_PC_10[: _PC_10.index("i440fx") + 1], "pic", "ioapic",
          *_PC_10[_PC_10.index("i440fx") + 1 :])  # fmt: skip
# RHEL 6: no hpet (no_hpet is always set), no port92 section, the I/O APIC after the
# RTC, the NIC before the IDE, the vmmouse inside the i8042 (pckbd), the PM before its
# SMBus; user networking registers first.
_PC_RHEL6 = (
    "slirp", "block", "timer", "ram", "cpu", "apic", "fw_cfg", "pic", "i440fx", "vga",
    "rtc", "ioapic", "pit", "serial", "nic", "ide", "pckbd", "dma", "fdc", "piix4_pm",
)  # fmt: skip

# Firmware as the RAM blocks hold it at power-on, as page runs (ram.BlockImage): each
# release ships its own builds in pc-bios/.
_ROMS_013 = {"bios.bin": "8z 24r", "vgabios-cirrus.bin": "9r", "pxe-e1000.bin": "18r",
             "pxe-rtl8139.bin": "14r"}  # fmt: skip
_ROMS_014 = {**_ROMS_013, "bios.bin": "5z 27r"}
_ROMS_015 = {**_ROMS_014, "bios.bin": "4z 28r", "pxe-e1000.bin": "17r", "pxe-rtl8139.bin": "15r"}
_ROMS_NEW = {**_ROMS_015, "bios.bin": "2z 30r"}
_ROMS_RHEL = {**_ROMS_014, "bios.bin": "13z 19r"}

_PC_013_TYPE = MachineType("pc-0.13", 3, description="0.13 ABI")
# RHEL machine types change no section the model covers (rhel6.md): only their names.
# rhel5.x set rombar=0 on every PCI device (no option ROM blocks) and default to the
# cpu64-rhel5 CPU model.
_RHEL_TYPES = (
    MachineType("rhel6.1.0", 3, ("pc",), "RHEL 6.1 ABI"),
    MachineType("rhel6.0.0", 3, (), "RHEL 6.0 ABI"),
    *(MachineType(name, 3, (), f"{name} ABI: PCI ROMs through fw_cfg, cpu64-rhel5",
                  rom_bars=False, cpu_model="cpu64-rhel5")
      for name in ("rhel5.5.0", "rhel5.4.4", "rhel5.4.0")),
)

# What both RHEL 6 builds share beyond their rows: qemu-kvm's registration and RAM block
# order, its firmware, rtl8139 as the default NIC and a 16 MiB vga.vram.
_RHEL6_BUILD: dict[str, Any] = {
    "pc_devices": _PC_RHEL6, "ram_order": RamOrder.MOVE_TO_FRONT, "roms": _ROMS_RHEL,
    "default_nic": "rtl8139", "vram_size": 16 << 20,
}

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
            _V_013,
            pc_devices=_PC_013,
            ram_order=RamOrder.MOVE_TO_FRONT,
            roms=_ROMS_013,
        ),
        Release(
            "0.14",
            "QEMU 0.14.0: peek only where the description defines subsections",
            PeekPolicy.PEEK_IF_DEFINED,
            (MachineType("pc", 3, ("pc-0.14",), "0.14 ABI"), _PC_013_TYPE),
            frozenset({3}),
            _SUB_014,
            _V_014,
            pc_devices=_PC_014,
            roms=_ROMS_014,
        ),
        Release(
            "0.15",
            "QEMU 0.15.0: four new subsections on embedded structs",
            PeekPolicy.PEEK_IF_DEFINED,
            (MachineType("pc", 3, ("pc-0.14",), "0.14 ABI (0.15.0 has no pc-0.15)"),
             _PC_013_TYPE),
            frozenset({3}),
            _SUB_015,
            _V_015,
            pc_devices=_PC_014,
            roms=_ROMS_015,
        ),
        Release(
            "new",
            "the August 2011 sentinel series (genstats): per-machine stream format",
            PeekPolicy.ALWAYS_PEEK,
            (
                MachineType("pc", 4, ("pc-1.0",), "1.0 ABI, format 4 (sentinel)"),
                MachineType("pc-0.14", 3, ("pc-0.15",), "0.14 ABI, format 3"),
                _PC_013_TYPE,
            ),
            frozenset({3, 4}),
            _SUB_NEW,
            _V_NEW,
            format_per_machine=True,
            pc_devices=_PC_014,
            roms=_ROMS_NEW,
        ),
        Release(
            "1.0",
            "QEMU 1.0: the subsection prefix heuristic, format 3",
            PeekPolicy.PREFIX_MATCH,
            (
                MachineType("pc", 3, ("pc-1.0",), "1.0 ABI (no pc-0.15: it came in 1.0.1)"),
                MachineType("pc-0.14", 3, (), "0.14 ABI"),
                _PC_013_TYPE,
            ),
            frozenset({3}),
            _SUB_10,
            _V_10,
            pc_devices=_PC_10,
            roms=_ROMS_NEW,
        ),
        Release(
            "rhel6.1",
            "RHEL 6.1 qemu-kvm 0.12.1.2-2.160.el6: peek only where subsections are defined",
            PeekPolicy.PEEK_IF_DEFINED,
            _RHEL_TYPES,
            frozenset({3}),
            _SUB_RHEL61,
            _V_RHEL61,
            **_RHEL6_BUILD,
        ),
        Release(
            "rhel6.2",
            "RHEL 6.2 qemu-kvm 0.12.1.2-2.209.el6_2.4: always peek, then 1.0's name-prefix check",
            PeekPolicy.PREFIX_MATCH,
            (MachineType("rhel6.2.0", 3, ("pc",), "RHEL 6.2 ABI"),
             MachineType("rhel6.1.0", 3, (), "RHEL 6.1 ABI"), *_RHEL_TYPES[1:]),
            frozenset({3}),
            _SUB_RHEL62,
            _V_RHEL62,
            **_RHEL6_BUILD,
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
