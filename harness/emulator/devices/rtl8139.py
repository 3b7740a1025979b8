"""The RTL8139 NIC at 00:03.0 (vmsd "rtl8139" v4, min 3), with ``-net nic,model=rtl8139``.

Its layout is the same in every modelled release. It embeds two structs without
subsections ("PCIDevice" and "tally_counters"), which matters only to the format-4
sentinel, and has one top-level subsection, "rtl8139/hotplug_ready": no fields, sent once
any device was hot-added or removed in the machine (qdev_machine_modified()), so that a
release without it refuses the stream (0.13 lacks it).

``rtl8139_mmio_io_addr_dummy`` differs by release (variant ``rtl8139.mmio_dummy``): up to
0.15 it holds the index of the NIC's MMIO handler in QEMU's io-memory table (128 on this
machine; 0.13 saves and loads the live index itself, 0.14 and 0.15 a copy they ignore on
load), genstats and 1.0 save 0. It is not guest state. (0.13 overwriting its live index
with another release's value is not modelled: 0.13 refuses every newer stream earlier, at
the ioapic.) The config space's capability
pointer is 0xdc, with no capability there and the status register's capability bit clear.
"""

from __future__ import annotations

import functools
import random
from typing import Any

from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import (
    Buffer,
    Description,
    IntArray,
    Struct,
    Subsection,
    Unused,
    i32,
    i64,
    u8,
    u16,
    u32,
    u64,
)
from . import Device, State
from .pci import Bar, build_config_space, pci_device_field

__all__ = ["IDSTR", "RTL8139", "rtl8139_description", "tally_counters_description"]

IDSTR = "0000:00:03.0/rtl8139"  # behind a VGA; Board.nic_idstr gives the slot
DEFAULT_MAC = bytes.fromhex("525400123456")
MMIO_IO_INDEX = 128  # cpu_register_io_memory's index for the NIC's MMIO on this machine
MMIO_IO_INDEX_KVM = 96  # the same in RHEL 6's qemu-kvm, which registers fewer regions first
IO_MEM_STEP = 32  # one io-memory region earlier or later moves the index by this much
# Variant "rtl8139.mmio_dummy" -> what the field holds on save (with the cirrus VGA).
MMIO_DUMMY = {"io-index": MMIO_IO_INDEX, "io-index-kvm": MMIO_IO_INDEX_KVM, "zero": 0}

_TALLY = (
    ("TxOk", u64), ("RxOk", u64), ("TxERR", u64), ("RxERR", u32), ("MissPkt", u16),
    ("FAE", u16), ("Tx1Col", u32), ("TxMCol", u32), ("RxOkPhy", u64), ("RxOkBrd", u64),
    ("TxAbt", u16), ("TxUndrn", u16),
)  # fmt: skip
_U8_REGS = ("Cfg9346", "Config0", "Config1", "Config3", "Config4", "Config5",
            "clock_enabled", "bChipCmdState")  # fmt: skip
_U16_REGS = ("MultiIntr", "BasicModeCtrl", "BasicModeStatus", "NWayAdvert", "NWayLPAR",
             "NWayExpansion", "CpCmd")  # fmt: skip
_RING_REGS = ("currTxDesc", "currCPlusRxDesc", "currCPlusTxDesc", "RxRingAddrLO", "RxRingAddrHI")


@functools.cache
def tally_counters_description() -> Description:
    """ "tally_counters" v1: 60 bytes of statistics."""
    return Description(
        "tally_counters",
        1,
        [kind(n) for n, kind in _TALLY],
        minimum_version_id=1,
    )


@functools.cache
def _hotplug_ready_description() -> Description:
    return Description("rtl8139/hotplug_ready", 1, [], minimum_version_id=1)


@functools.cache
def rtl8139_description(release: Release) -> Description:
    """ "rtl8139" v4, min 3: 638 bytes, then hotplug_ready where the release has it."""
    subs = []
    if release.has("rtl8139/hotplug_ready"):
        subs.append(Subsection(_hotplug_ready_description(), lambda n: bool(n.qdev_modified)))
    return Description(
        "rtl8139",
        4,
        [
            pci_device_field("dev"),
            Buffer("phys", 6),
            Buffer("mult", 8),
            IntArray("TxStatus", 4, 4),
            IntArray("TxAddr", 4, 4),
            u32("RxBuf"),
            u32("RxBufferSize"),
            u32("RxBufPtr"),
            u32("RxBufAddr"),
            u16("IntrStatus"),
            u16("IntrMask"),
            u32("TxConfig"),
            u32("RxConfig"),
            u32("RxMissed"),
            u16("CSCR"),
            *(u8(n) for n in _U8_REGS),
            *(u16(n) for n in _U16_REGS),
            u8("TxThresh"),
            Unused(4),
            Buffer("conf.macaddr", 6),
            i32("rtl8139_mmio_io_addr_dummy"),
            *(u32(n) for n in _RING_REGS),
            IntArray("eeprom.contents", 2, 64),
            i32("eeprom.mode"),
            u32("eeprom.tick"),
            u8("eeprom.address"),
            u16("eeprom.input"),
            u16("eeprom.output"),
            u8("eecs"),
            u8("eesk"),
            u8("eedi"),
            u8("eedo"),
            u32("TCTR"),
            u32("TimerInt"),
            i64("TCTR_base"),
            Struct("tally_counters", tally_counters_description()),
            u32("cplus_enabled", version_id=4),
        ],
        minimum_version_id=3,
        subsections=tuple(subs),
    )


def _eeprom_image(mac: bytes) -> list[int]:
    """The 93C46 contents rtl8139_init writes: ids, then the station address in words
    7-9."""
    words = [0] * 64
    words[0], words[1], words[2] = 0x8129, 0x10EC, 0x8139
    for i in range(3):
        words[7 + i] = mac[2 * i] | (mac[2 * i + 1] << 8)
    return words


class RTL8139(Device):
    """The NIC after rtl8139_reset. ``qdev_modified`` (the machine's hot-plug flag) makes
    hotplug_ready needed."""

    key = "rtl8139"

    def reset(self) -> None:
        self.dev = build_config_space(
            0x10EC, 0x8139, 0x0200, revision=0x20, interrupt_pin=1,
            capability_pointer=0xDC,  # set by rtl8139_init, with no capability behind it
            bars=[Bar(0, 0x100, io=True), Bar(1, 0x100)],
        )  # fmt: skip
        self.qdev_modified = False
        self.conf = State(macaddr=DEFAULT_MAC)
        self.phys = DEFAULT_MAC
        self.mult = bytes(8)
        self.TxStatus = [0x2000] * 4  # TxHostOwns
        self.TxAddr = [0] * 4
        self.RxBuf = self.RxBufPtr = self.RxBufAddr = 0
        self.RxBufferSize = 8192
        self.IntrStatus = self.IntrMask = 0
        self.TxConfig = 0x74800000  # hardware revision: RTL8139C+
        self.RxConfig = self.RxMissed = 0
        self.CSCR = 0x0340  # F_LINK_100 | F_Connect ... as rtl8139_reset sets it
        for name in _U8_REGS:
            setattr(self, name, 0)
        self.Config1 = 0x0C
        self.Config3 = 0x01  # PARM_En
        self.bChipCmdState = 0x10  # CmdReset still set
        self.clock_enabled = 1
        for name in _U16_REGS:
            setattr(self, name, 0)
        self.BasicModeCtrl = 0x1000  # autonegotiation
        self.BasicModeStatus = 0x782D
        self.NWayAdvert = self.NWayLPAR = 0x05E1
        self.NWayExpansion = 0x0001
        self.TxThresh = 0
        dummy = MMIO_DUMMY[self.release.variant("rtl8139.mmio_dummy")]
        if dummy and self.board.vga == "none":
            dummy -= IO_MEM_STEP  # no VGA registered its MMIO region before the NIC's
        self.rtl8139_mmio_io_addr_dummy = dummy
        for name in _RING_REGS:
            setattr(self, name, 0)
        self.eeprom = State(
            contents=_eeprom_image(DEFAULT_MAC), mode=0, tick=0, address=0, input=0, output=0
        )
        self.eecs = self.eesk = self.eedi = self.eedo = 0
        self.TCTR = self.TimerInt = 0
        self.TCTR_base = 0
        self.tally_counters = State(**{name: 0 for name, _ in _TALLY})
        self.cplus_enabled = 0

    def sections(self) -> list[DeviceSection]:
        return [DeviceSection(self.board.nic_idstr("rtl8139"), 0, rtl8139_description(self.release),
                              self)]

    def machine_modified(self) -> None:
        self.qdev_modified = True

    def guest_view(self, section: DeviceSection, fields: dict[str, Any]) -> dict[str, Any]:
        """Without the MMIO dummy: an index into QEMU's own tables, not guest state."""
        return {k: v for k, v in fields.items() if k != "rtl8139_mmio_io_addr_dummy"}

    def randomize(self, rng: random.Random) -> None:
        """Random registers within their guest-visible ranges; a unicast station address.

        A unicast address has bit 0 of its first byte clear, so the byte after the
        embedded PCIDevice is never 0x05. A hot-plug is a machine event
        (:meth:`Machine.hot_add`).
        """
        self.reset()
        dev = self.dev
        dev.write_config(0x10, rng.randrange(0xC000, 0x10000, 0x100), 4)
        dev.write_config(0x14, rng.randrange(0xF000_0000, 0xFEBF_FF00, 0x100), 4)
        dev.write_config(0x04, rng.choice((0x0, 0x3, 0x7, 0x407)), 2)
        dev.write_config(0x3C, rng.choice((9, 10, 11)))
        dev.set_irq(0, rng.randrange(2))
        self.phys = bytes([rng.randrange(256) & 0xFE]) + rng.randbytes(5)
        self.mult = rng.randbytes(8)
        self.TxStatus = [rng.randrange(1 << 32) for _ in range(4)]
        self.TxAddr = [rng.randrange(0, 1 << 32, 4) for _ in range(4)]
        self.RxBuf = rng.randrange(0, 1 << 32, 4)
        self.RxBufferSize = rng.choice((8192, 16384, 32768, 65536)) + 16
        self.RxBufPtr = rng.randrange(self.RxBufferSize)
        self.RxBufAddr = rng.randrange(self.RxBufferSize)
        self.IntrStatus, self.IntrMask = rng.randrange(1 << 16), rng.randrange(1 << 16)
        self.TxConfig = 0x74800000 | rng.randrange(1 << 20)
        self.RxConfig, self.RxMissed = rng.randrange(1 << 32), rng.randrange(1 << 24)
        self.CSCR = rng.randrange(1 << 16)
        for name in _U8_REGS:
            setattr(self, name, rng.randrange(256))
        self.clock_enabled = rng.randrange(2)
        for name in _U16_REGS:
            setattr(self, name, rng.randrange(1 << 16))
        self.TxThresh = rng.randrange(64)
        for name in _RING_REGS:
            setattr(self, name, rng.randrange(1 << 32))
        self.eeprom.mode = rng.randrange(6)
        self.eeprom.tick = rng.randrange(32)
        self.eeprom.address = rng.randrange(64)
        self.eeprom.input, self.eeprom.output = rng.randrange(1 << 16), rng.randrange(1 << 16)
        self.eecs, self.eesk, self.eedi, self.eedo = (rng.randrange(2) for _ in range(4))
        self.TCTR, self.TimerInt = rng.randrange(1 << 32), rng.randrange(1 << 32)
        self.TCTR_base = rng.randrange(1 << 40)
        for name, kind in _TALLY:
            width = kind("x").size or 8
            setattr(self.tally_counters, name, rng.randrange(1 << (8 * width - 4)))
        self.cplus_enabled = rng.randrange(2)
