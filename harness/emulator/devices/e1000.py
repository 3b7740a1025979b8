"""The Intel 82540EM gigabit NIC at 00:03.0, QEMU's default NIC (vmsd "e1000" v2, min 1).

The section ``0000:00:03.0/e1000`` (qdev; instance 0) is 67608 bytes: the embedded
"PCIDevice" (276; format 4 adds one 0x06: 67609), padding where v1 kept the instance id
(only in a v1 section) and the MMIO base (always 4 zero bytes), the receive buffer size,
the EEPROM bit-bang state, the transmit context and its 64 KiB packet buffer, the EEPROM
(64 words), the PHY registers (32 words), 37 MAC registers, then the receive-address,
multicast and VLAN tables. No subsections, no old-format loader. The description is the
same in every modelled release.

What differs is the config space: e1000's init set the read-only PCI status bit
"capability list" (0x10) although the device has no capabilities, up to the sentinel
series; 1.0 dropped it. The status byte is compared on load (cmask), so 1.0 and the
older releases refuse each other's e1000 state. The release variant ``e1000.pci_status``
names the value (:data:`PCI_STATUS`).

The option ROM (``pxe-e1000.bin``) is the RAM block :data:`ROM_BLOCK` of
:data:`ROM_SIZE` bytes; its PCI ROM BAR (config 0x30) is not modelled by :mod:`.pci`,
which leaves its 4 zero bytes unchecked.

>>> from harness.emulator.releases import get_release
>>> hex(E1000(get_release("0.15")).dev.read_config(0x06, 2)), E1000(get_release("1.0")).dev.read_config(0x06, 2)
('0x10', 0)
"""

from __future__ import annotations

import functools
import random

from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Buffer, Description, IntArray, Unused, i8, u8, u16, u32
from . import Device, State
from .pci import STATUS, Bar, PCIState, build_config_space, pci_device_field
from .rtl8139 import DEFAULT_MAC  # QEMU's default address for the first NIC, any model

__all__ = [
    "E1000",
    "IDSTR",
    "PCI_STATUS",
    "ROM_BLOCK",
    "ROM_FILE",
    "ROM_SIZE",
    "e1000_description",
    "eeprom_image",
]

IDSTR = "0000:00:03.0/e1000"  # behind a VGA; Board.nic_idstr gives the slot
ROM_FILE = "pxe-e1000.bin"
ROM_BLOCK = "0000:00:03.0/e1000.rom"
ROM_SIZE = 0x20000  # the ROM file's size rounded up to a power of two
MMIO_SIZE, IO_SIZE = 0x20000, 0x40
VENDOR_INTEL, DEVICE_82540EM, CLASS_ETHERNET, REVISION = 0x8086, 0x100E, 0x0200, 0x03

# What the read-only PCI status register holds, per release variant "e1000.pci_status".
PCI_STATUS: dict[str, int] = {
    "cap-list": 0x0010,  # "we have no capabilities, so why is this bit set?" (0.13 - genstats)
    "clear": 0x0000,  # 1.0
}

TX_HEADER_SIZE, TX_DATA_SIZE = 256, 0x10000
EEPROM_WORDS, PHY_REGS = 64, 0x20
EEPROM_CHECKSUM_REG, EEPROM_SUM = 0x3F, 0xBABA
RA_WORDS, MTA_WORDS, VFTA_WORDS = 32, 128, 128

# The MAC registers saved one by one, in wire order.
MAC_REGS = ("CTRL", "EECD", "EERD", "GPRC", "GPTC", "ICR", "ICS", "IMC", "IMS", "LEDCTL",
            "MANC", "MDIC", "MPC", "PBA", "RCTL", "RDBAH", "RDBAL", "RDH", "RDLEN", "RDT",
            "STATUS", "SWSM", "TCTL", "TDBAH", "TDBAL", "TDH", "TDLEN", "TDT", "TORH", "TORL",
            "TOTH", "TOTL", "TPR", "TPT", "TXDCTL", "WUFC", "VET")  # fmt: skip
MAC_TABLES = (("RA", RA_WORDS), ("MTA", MTA_WORDS), ("VFTA", VFTA_WORDS))

# e1000_reset: mac_reg_init and phy_reg_init; everything else 0.
MAC_REG_INIT = {
    "PBA": 0x00100030,
    "LEDCTL": 0x602,
    "CTRL": 0x00140240,  # SWDPIN2 | SWDPIN0 | SPD_1000 | SLU
    "STATUS": 0x80080783,  # GIO master enable, ASDV, MTXCKOK, 1000 Mb/s, full duplex, link up
    "MANC": 0x00222300,  # MNG2HOST, RCV_TCO, ARP, 0298, RMCP
}
PHY_REG_INIT = {0x00: 0x1140, 0x01: 0x796D, 0x02: 0x141, 0x03: 0xC20, 0x04: 0xDE1,
                0x05: 0x1E0, 0x09: 0x0E00, 0x0A: 0x3C00, 0x10: 0x360, 0x11: 0xAC00,
                0x14: 0x0D60}  # fmt: skip
PHY_RW = (0x00, 0x04, 0x09, 0x10, 0x14)  # the registers a driver may write over MDIC
EEPROM_TEMPLATE = (
    0x0000, 0x0000, 0x0000, 0x0000, 0xFFFF, 0x0000, 0x0000, 0x0000,
    0x3000, 0x1000, 0x6403, DEVICE_82540EM, 0x8086, DEVICE_82540EM, 0x8086, 0x3040,
    0x0008, 0x2000, 0x7E14, 0x0048, 0x1000, 0x00D8, 0x0000, 0x2700,
    0x6CC9, 0x3150, 0x0722, 0x040B, 0x0984, 0x0000, 0xC000, 0x0706,
    0x1008, 0x0000, 0x0F04, 0x7FFF, 0x4D01, 0xFFFF, 0xFFFF, 0xFFFF,
    0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF,
    0x0100, 0x4000, 0x121C, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF,
    0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0x0000,
)  # fmt: skip

RCTL_EN, RCTL_RDMTS_QUAT, RCTL_BSEX = 0x2, 0x100, 0x02000000
RCTL_SIZE_BITS = 0x00030000
TCTL_EN = 0x2
ICR_INT_ASSERTED = 0x80000000
RAH_AV = 0x80000000
EERD_DONE = 0x10
COMMAND_IO_MEM_MASTER = 0x7

_TX_FIELDS = (
    ("ipcss", u8), ("ipcso", u8), ("ipcse", u16), ("tucss", u8), ("tucso", u8),
    ("tucse", u16), ("paylen", u32), ("hdr_len", u8), ("mss", u16), ("size", u16),
    ("tso_frames", u16), ("sum_needed", u8), ("ip", i8), ("tcp", i8),
)  # fmt: skip


def _is_version_1(obj: object, version: int) -> bool:
    return version == 1


@functools.cache
def e1000_description(release: Release) -> Description:
    """ "e1000" v2 (min 1): 67608 bytes in format 3."""
    return Description(
        "e1000", 2,
        [pci_device_field("dev"),
         Unused(4, "instance_id", exists=_is_version_1),  # v1 kept the instance id here
         Unused(4, "mmio_base"),
         u32("rxbuf_size"), u32("rxbuf_min_shift"),
         u32("eecd_state.val_in"), u16("eecd_state.bitnum_in"), u16("eecd_state.bitnum_out"),
         u16("eecd_state.reading"), u32("eecd_state.old_eecd"),
         *(kind(f"tx.{name}") for name, kind in _TX_FIELDS),
         Buffer("tx.header", TX_HEADER_SIZE), Buffer("tx.data", TX_DATA_SIZE),
         IntArray("eeprom_data", 2, EEPROM_WORDS), IntArray("phy_reg", 2, PHY_REGS),
         *(u32(f"mac_reg.{name}") for name in MAC_REGS),
         *(IntArray(f"mac_reg.{name}", 4, count) for name, count in MAC_TABLES)],
        minimum_version_id=1,
    )  # fmt: skip


def eeprom_image(mac: bytes) -> list[int]:
    """The EEPROM as pci_e1000_init fills it: the template, the station address in words
    0-2, and the checksum word that makes the first 64 words sum to 0xBABA."""
    words = list(EEPROM_TEMPLATE)
    for i in range(3):
        words[i] = mac[2 * i] | (mac[2 * i + 1] << 8)
    words[EEPROM_CHECKSUM_REG] = (EEPROM_SUM - sum(words[:EEPROM_CHECKSUM_REG])) & 0xFFFF
    return words


def rxbufsize(rctl: int) -> int:
    """The receive buffer size RCTL selects (set_rx_control)."""
    bsex, size = rctl & RCTL_BSEX, (rctl & RCTL_SIZE_BITS) >> 16
    if bsex and size:
        return {1: 16384, 2: 8192, 3: 4096}[size]
    return {0: 2048, 1: 1024, 2: 512, 3: 256}[size] if not bsex else 2048


def _config_space(release: Release) -> PCIState:
    """After pci_e1000_init and the PCI reset (which clears the cache line size init set)."""
    dev = build_config_space(
        VENDOR_INTEL, DEVICE_82540EM, CLASS_ETHERNET, revision=REVISION, interrupt_pin=1,
        bars=[Bar(0, MMIO_SIZE), Bar(1, IO_SIZE, io=True)],
    )  # fmt: skip
    config = bytearray(dev.config)
    config[STATUS : STATUS + 2] = PCI_STATUS[release.variant("e1000.pci_status")].to_bytes(
        2, "little"
    )
    dev.config = bytes(config)
    return dev


class E1000(Device):
    """The NIC after init and reset: registers at their reset values, link up, the
    EEPROM holding QEMU's default station address, nothing programmed by a driver."""

    key = "e1000"

    def reset(self) -> None:
        self.dev = _config_space(self.release)
        self.conf = State(macaddr=DEFAULT_MAC)
        self.eeprom_data = eeprom_image(DEFAULT_MAC)
        self.phy_reg = [PHY_REG_INIT.get(i, 0) for i in range(PHY_REGS)]
        self.mac_reg = State(
            **{name: MAC_REG_INIT.get(name, 0) for name in MAC_REGS},
            **{name: [0] * count for name, count in MAC_TABLES},
        )
        self.rxbuf_size = 0  # set by the first RCTL write
        self.rxbuf_min_shift = 1
        self.eecd_state = State(val_in=0, bitnum_in=0, bitnum_out=0, reading=0, old_eecd=0)
        self.tx = State(
            **{name: 0 for name, _ in _TX_FIELDS},
            header=bytes(TX_HEADER_SIZE),
            data=bytes(TX_DATA_SIZE),
        )

    def sections(self) -> list[DeviceSection]:
        return [DeviceSection(self.board.nic_idstr("e1000"), 0, e1000_description(self.release),
                              self)]

    def randomize(self, rng: random.Random) -> None:
        """A driver's work: BARs assigned and decoding, the station address in the
        receive-address table, receive and transmit rings set up and running, multicast
        and VLAN filters, PHY registers written over MDIC, statistics counted, an
        interrupt cause or two (the INTx line follows ICR & IMS), an EEPROM read left in
        EERD or half a bit-banged one in flight, and a transmit context with a packet
        partly gathered. The EEPROM itself is read-only to the guest.
        """
        self.reset()
        dev, m = self.dev, self.mac_reg
        dev.write_config(0x10, rng.randrange(0xF000_0000, 0xFEBE_0000, MMIO_SIZE), 4)
        dev.write_config(0x14, rng.randrange(0xC000, 0x10000, IO_SIZE), 4)
        dev.write_config(0x04, rng.choice((0x0, 0x3, COMMAND_IO_MEM_MASTER)), 2)
        dev.write_config(0x3C, rng.choice((9, 10, 11)))
        mac = bytes([rng.randrange(256) & 0xFE]) + rng.randbytes(5)
        m.RA[0] = int.from_bytes(mac[:4], "little")
        m.RA[1] = int.from_bytes(mac[4:], "little") | RAH_AV
        m.MTA = [rng.choice((0, rng.randrange(1 << 32))) for _ in range(MTA_WORDS)]
        m.VFTA = [rng.choice((0, 0, rng.randrange(1 << 32))) for _ in range(VFTA_WORDS)]
        m.RCTL = rng.randrange(1 << 27) | RCTL_EN
        self.rxbuf_size = rxbufsize(m.RCTL)
        self.rxbuf_min_shift = ((m.RCTL // RCTL_RDMTS_QUAT) & 3) + 1
        for ring in ("RD", "TD"):
            setattr(m, f"{ring}BAL", rng.randrange(0, 1 << 26, 16))
            setattr(m, f"{ring}BAH", 0)
            length = rng.choice((256, 4096, 8192)) * 16
            setattr(m, f"{ring}LEN", length)
            setattr(m, f"{ring}H", rng.randrange(length // 16))
            setattr(m, f"{ring}T", rng.randrange(length // 16))
        m.TCTL = rng.randrange(1 << 26) | TCTL_EN
        m.TXDCTL = rng.randrange(1 << 26)
        m.IMS = rng.choice((0, 0x9D, 0x1F6DC, rng.randrange(1 << 17)))
        m.ICR = rng.choice((0, ICR_INT_ASSERTED | rng.randrange(1 << 17)))
        m.ICS = m.ICR
        m.IMC = rng.randrange(1 << 17)
        dev.set_irq(0, int(bool(m.IMS & m.ICR)))
        for name in ("GPRC", "GPTC", "TPR", "TPT", "MPC", "TORL", "TOTL"):
            setattr(m, name, rng.randrange(1 << 32))
        m.TORH, m.TOTH = rng.randrange(16), rng.randrange(16)
        m.CTRL = rng.choice(
            (MAC_REG_INIT["CTRL"], 0x00140248, rng.randrange(1 << 32) & ~0x04000000)
        )
        m.STATUS = MAC_REG_INIT["STATUS"] & ~rng.choice((0, 0x2))  # link down after set_link
        m.LEDCTL, m.SWSM, m.WUFC, m.VET = rng.randrange(1 << 32), rng.randrange(4), 0, 0x8100
        m.MDIC = rng.randrange(1 << 32) | 0x10000000  # READY
        word = rng.randrange(EEPROM_WORDS)
        m.EERD = (self.eeprom_data[word] << 16) | (word << 8) | EERD_DONE
        m.EECD = rng.randrange(16) | 0x100  # bit-bang lines, EE_PRES
        e = self.eecd_state
        e.val_in, e.bitnum_in = rng.randrange(1 << 9), rng.randrange(10)
        e.bitnum_out, e.reading = rng.randrange(16 * EEPROM_WORDS), rng.randrange(2)
        e.old_eecd = m.EECD & 0xF
        for reg in PHY_RW:
            self.phy_reg[reg] = rng.randrange(1 << 16)
        t = self.tx
        for name, kind in _TX_FIELDS:
            setattr(t, name, rng.randrange(1 << (8 * (kind(name).size or 1))))
        t.sum_needed = rng.randrange(4)  # IP and TCP/UDP checksum insertion (POPTS)
        t.ip, t.tcp = rng.randrange(2), rng.randrange(2)  # from the context descriptor
        t.size = rng.randrange(TX_DATA_SIZE)
        t.header = rng.randbytes(TX_HEADER_SIZE)
        t.data = rng.randbytes(t.size) + bytes(TX_DATA_SIZE - t.size)
