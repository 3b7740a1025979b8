"""The e1000 NIC: "e1000" v2, 67608 bytes, and the PCI status byte that 1.0 changed,
held against the real builds' payloads."""

from __future__ import annotations

import doctest
import random
import struct

import pytest

from harness.emulator.devices import e1000 as e1000_module
from harness.emulator.devices.e1000 import (
    E1000,
    IDSTR,
    MAC_REGS,
    PCI_STATUS,
    e1000_description,
    eeprom_image,
    rxbufsize,
)
from harness.emulator.devices.rtl8139 import DEFAULT_MAC
from harness.emulator.errors import LoadError, Reason
from harness.emulator.releases import Release, get_release
from harness.emulator.vmstate import dump_state

from . import devtools
from .devtools import RUN_IDS, RUNS, pci_device_bytes, stream
from .realqemu import (
    RealBuilds,
    RealRefused,
    historic,  # noqa: F401 - the fixture
    model_payloads,
    resave,
    section_payload,
    splice,
)

KEY = (IDSTR, 0)
TX = struct.Struct(">BBHBBHIBHHHBbb")  # the transmit context, 22 bytes


def load(release: Release, fmt: int, data: bytes) -> E1000:
    return devtools.load(E1000, release, fmt, data)


def state(dev: E1000) -> dict:
    return dump_state(e1000_description(dev.release), dev)


def golden(n: E1000, sentinel: bool = False) -> bytes:
    """The payload packed from the field list of vmstate_e1000."""
    out = pci_device_bytes(n.dev, sentinel) + bytes(4)  # then what was mmio_base
    e, t, m = n.eecd_state, n.tx, n.mac_reg
    out += struct.pack(">IIIHHHI", n.rxbuf_size, n.rxbuf_min_shift, e.val_in, e.bitnum_in,
                       e.bitnum_out, e.reading, e.old_eecd)  # fmt: skip
    out += TX.pack(t.ipcss, t.ipcso, t.ipcse, t.tucss, t.tucso, t.tucse, t.paylen, t.hdr_len,
                   t.mss, t.size, t.tso_frames, t.sum_needed, t.ip, t.tcp)  # fmt: skip
    out += t.header + t.data
    out += struct.pack(">64H", *n.eeprom_data) + struct.pack(">32H", *n.phy_reg)
    out += struct.pack(">37I", *(getattr(m, r) for r in MAC_REGS))
    out += struct.pack(">32I", *m.RA) + struct.pack(">128I", *m.MTA)
    return out + struct.pack(">128I", *m.VFTA)


def test_description():
    desc = e1000_description(get_release("0.14"))
    assert (desc.name, desc.version_id, desc.minimum_version_id) == ("e1000", 2, 1)
    assert desc.load_state_old is None and desc.subsections == ()
    assert len(MAC_REGS) == 37 and TX.size == 22
    (section,) = E1000(get_release("0.14")).sections()
    assert (section.idstr, section.instance_id, section.version_id) == (
        "0000:00:03.0/e1000", 0, 2)  # fmt: skip


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("seed", [None, 1])
def test_golden_bytes(name, fmt, seed):
    """67608 bytes; format 4 adds one 0x06 after the embedded PCIDevice."""
    dev = E1000(get_release(name))
    if seed is not None:
        dev.randomize(random.Random(seed))
    data = model_payloads(dev, fmt)[KEY]
    assert data == golden(dev, sentinel=fmt == 4)
    assert len(data) == (67608 if fmt == 3 else 67609)


def test_power_on_state():
    dev = E1000(get_release("0.15"))
    cfg = dev.dev.config
    assert cfg[:4] == bytes.fromhex("86800e10") and cfg[8] == 3 and cfg[0x0A:0x0C] == b"\x00\x02"
    assert cfg[0x0C] == 0  # init set a cache line size of 0x10, the PCI reset clears it
    assert cfg[0x14] == 0x01 and cfg[0x3D] == 1  # BAR1 is I/O; INTA
    m = dev.mac_reg
    assert (m.CTRL, m.STATUS, m.PBA, m.MANC, m.LEDCTL) == (
        0x140240, 0x80080783, 0x100030, 0x222300, 0x602)  # fmt: skip
    assert not any(m.RA) and dev.rxbuf_size == 0 and dev.rxbuf_min_shift == 1
    assert dev.eeprom_data[:3] == [0x5452, 0x1200, 0x5634]  # 52:54:00:12:34:56


def test_eeprom_checksum():
    words = eeprom_image(DEFAULT_MAC)
    assert sum(words) & 0xFFFF == 0xBABA and words[0x3F] == 0x79AD


@pytest.mark.parametrize("name,status", [("0.13", 0x10), ("0.14", 0x10), ("0.15", 0x10),
                                         ("new", 0x10), ("1.0", 0x00)])  # fmt: skip
def test_pci_status_per_release(name, status):
    r = get_release(name)
    assert PCI_STATUS[r.variant("e1000.pci_status")] == status
    assert E1000(r).dev.read_config(0x06, 2) == status


@pytest.mark.parametrize("src,dst", [("0.15", "1.0"), ("new", "1.0"), ("1.0", "0.15"),
                                     ("1.0", "0.13")])  # fmt: skip
def test_1_0_and_older_releases_refuse_each_others_status_byte(src, dst):
    data = model_payloads(E1000(get_release(src)), 3)[KEY]
    with pytest.raises(LoadError) as info:
        resave(E1000(get_release(dst)), 3, KEY, data)
    assert info.value.reason is Reason.INVALID_VALUE
    assert info.value.field == "dev/config" and "status (config 0x06)" in info.value.detail


def test_a_v1_section_has_the_old_instance_id():
    r = get_release("0.14")
    v2 = model_payloads(E1000(r), 3)[KEY]
    v1 = v2[:276] + b"\xde\xad\xbe\xef" + v2[276:]
    assert resave(E1000(r), 3, KEY, v1, version=1) == v2


@pytest.mark.parametrize("rctl,size", [(0, 2048), (0x10000, 1024), (0x20000, 512),
                                       (0x30000, 256), (0x02010000, 16384), (0x02020000, 8192),
                                       (0x02030000, 4096), (0x02000000, 2048)])  # fmt: skip
def test_rx_buffer_size(rctl, size):
    assert rxbufsize(rctl) == size


@pytest.mark.parametrize("seed", range(10))
def test_randomize_stays_within_what_a_driver_reaches(seed):
    dev = E1000(get_release("1.0"))
    dev.randomize(random.Random(seed))
    m = dev.mac_reg
    assert dev.eeprom_data == eeprom_image(DEFAULT_MAC)
    assert dev.dev.read_config(0x06, 2) == 0 and dev.dev.read_config(0x10, 4) % 0x20000 == 0
    assert dev.rxbuf_size == rxbufsize(m.RCTL) and m.RA[1] & 0x80000000
    assert dev.dev.irq_state[0] == int(bool(m.IMS & m.ICR))
    assert m.RDH < m.RDLEN // 16 and m.TDT < m.TDLEN // 16
    assert not any(dev.tx.data[dev.tx.size :]) and dev.tx.ip in (0, 1)


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("seed", [None, 1, 2])
def test_round_trip(name, fmt, seed):
    r = get_release(name)
    src = E1000(r)
    if seed is not None:
        src.randomize(random.Random(seed))
    assert state(load(r, fmt, stream(src, fmt))) == state(src)


def test_module_doctests():
    assert doctest.testmod(e1000_module).failed == 0


# -- against the real builds -----------------------------------------------------------


class TestRealBuilds(RealBuilds):
    device = E1000

    seed = 9  # BARs mapped, rings running, an interrupt pending


@pytest.mark.parametrize("src,dst", [("0.15", "1.0"), ("1.0", "0.15")])
def test_the_real_builds_refuse_each_others_status_byte(historic, src, dst):  # noqa: F811
    theirs = section_payload(historic.idle(src, "pc"), *KEY)
    with pytest.raises(RealRefused) as info:
        historic.through(dst, "pc", splice(historic.idle(dst, "pc"), {KEY: theirs}))
    assert "device '0000:00:03.0/e1000'" in info.value.log
    with pytest.raises(LoadError):
        resave(E1000(get_release(dst)), 3, KEY, theirs)
