"""The i440FX host bridge with its PCI bus and the PIIX3, and the PIIX4 PM function with
its I2C bus: layouts by release (0.15's GPE arrays), config spaces at power-on, the old
I440FX loader, compat names, hot-plug events."""

from __future__ import annotations

import struct

import pytest

from harness.emulator.devices.piix4_pm import PIIX4PM, piix4_pm_description
from harness.emulator.devices.piix_pci import PCIHost
from harness.emulator.errors import LoadError, Reason
from harness.emulator.releases import get_release
from harness.emulator.savevm import wire_rules_for
from harness.emulator.stream import StreamReader, StreamWriter
from harness.emulator.vmstate import dump_state

from . import devtools
from .devtools import payload

RELEASES = ["0.13", "0.14", "0.15", "new", "1.0"]
RUNS = [("0.13", 3), ("0.14", 3), ("0.15", 3), ("new", 3), ("new", 4), ("1.0", 3)]
RUN_IDS = [f"{r}-f{f}" for r, f in RUNS]


def config(values: dict[int, int]) -> bytes:
    cfg = bytearray(256)
    cfg[0x2C:0x30] = bytes.fromhex("f41a0011")  # QEMU's subsystem ids
    for addr, value in values.items():
        cfg[addr] = value
    return bytes(cfg)


def pci_device(cfg: bytes) -> bytes:
    return struct.pack(">i", 2) + cfg + bytes(16)


def sections(dev) -> dict[str, bytes]:
    out = {}
    for section in dev.sections():
        w = StreamWriter()
        section.save(w, wire_rules_for(3, dev.release.peek))
        out[section.idstr] = w.getvalue()
    return out


# -- the host bridge, its bus and the ISA bridge --------------------------------------


I440FX_CONFIG = config({0x00: 0x86, 0x01: 0x80, 0x02: 0x37, 0x03: 0x12, 0x08: 0x02,
                        0x0B: 0x06, 0x57: 0x08, 0x72: 0x02})  # fmt: skip
PIIX3_RESET = {0x00: 0x86, 0x01: 0x80, 0x02: 0x00, 0x03: 0x70, 0x07: 0x02, 0x0A: 0x01,
               0x0B: 0x06, 0x0E: 0x80, 0x4C: 0x4D, 0x4E: 0x03, 0x60: 0x80, 0x61: 0x80,
               0x62: 0x80, 0x63: 0x80, 0x69: 0x02, 0x70: 0x80, 0x76: 0x0C, 0x77: 0x0C,
               0x78: 0x02, 0xA0: 0x08, 0xA8: 0x0F}  # fmt: skip


@pytest.mark.parametrize("name", RELEASES)
def test_pci_host_power_on_golden_bytes(name):
    """64 MiB of RAM: DRB (0x57) = 8 units of 8 MiB. 0.13 keeps the command register 0x07
    that piix3_reset sets; later releases clear it in the bus reset that runs after."""
    dev = PCIHost(get_release(name))
    out = sections(dev)
    assert list(out) == ["PCIBUS", "0000:00:00.0/I440FX", "0000:00:01.0/PIIX3"]
    assert out["PCIBUS"] == struct.pack(">i4i", 4, 0, 0, 0, 0)
    assert out["0000:00:00.0/I440FX"] == pci_device(I440FX_CONFIG) + b"\x00"
    piix3 = {**PIIX3_RESET, 0x04: 0x07} if name == "0.13" else PIIX3_RESET
    assert out["0000:00:01.0/PIIX3"] == pci_device(config(piix3)) + bytes(16)


def test_pci_host_sections_answer_to_their_bare_names():
    ids = [(s.idstr, s.instance_id, s.compat) for s in PCIHost(get_release("0.14")).sections()]
    assert ids == [("PCIBUS", 0, None), ("0000:00:00.0/I440FX", 0, ("I440FX", 0)),
                   ("0000:00:01.0/PIIX3", 0, ("PIIX3", 0))]  # fmt: skip


def test_pcibus_refuses_another_irq_count():
    r = get_release("0.14")
    bus = PCIHost(r).sections()[0]
    with pytest.raises(LoadError) as info:
        bus.load(StreamReader(struct.pack(">i", 8) + bytes(32)), 1, wire_rules_for(3, r.peek))
    assert (info.value.reason, info.value.field) == (Reason.EQUAL_MISMATCH, "nirq")


@pytest.mark.parametrize("version", [1, 2])
def test_i440fx_old_loader_reads_the_piix3_levels_in_v2(version):
    dev = PCIHost(get_release("0.14"))
    section = dev.sections()[1]
    body = pci_device(I440FX_CONFIG) + b"\x01"
    if version == 2:
        body += struct.pack(">4i", 1, 0, 1, 1)
    r = StreamReader(body)
    section.load(r, version, wire_rules_for(3, dev.release.peek))
    assert r.offset == len(body) and dev.i440fx.smm_enabled == 1
    assert dev.piix3.pci_irq_levels == ([1, 0, 1, 1] if version == 2 else [0, 0, 0, 0])


# -- PIIX4 PM and its I2C bus ------------------------------------------------------------


PIIX4_CONFIG = config({0x00: 0x86, 0x01: 0x80, 0x02: 0x13, 0x03: 0x71, 0x06: 0x80, 0x07: 0x02,
                       0x08: 0x03, 0x0A: 0x80, 0x0B: 0x06, 0x3D: 0x01, 0x40: 0x01, 0x5F: 0x10,
                       0x63: 0x60, 0x67: 0x08, 0x90: 0x01, 0x91: 0xB1, 0xD2: 0x09})  # fmt: skip


@pytest.mark.parametrize("name, gpe", [("0.13", 4), ("0.14", 4), ("0.15", 16), ("new", 16),
                                       ("1.0", 16)])  # fmt: skip
def test_piix4_pm_power_on_golden_bytes_and_gpe_layout(name, gpe):
    """0.15 made the GPE block generic: 4 x u16 of status and of enable (324 bytes)."""
    out = sections(PIIX4PM(get_release(name)))
    assert out["i2c_bus"] == b"\xff"  # no device in a transfer
    tail = struct.pack(">HHH", 0, 0, 0) + b"\x00\x00" + struct.pack(">qq", -1, 0)
    assert out["0000:00:01.3/piix4_pm"] == pci_device(PIIX4_CONFIG) + tail + bytes(gpe) + bytes(8)
    assert len(out["0000:00:01.3/piix4_pm"]) == 308 + gpe  # 312 or 324


def test_piix4_pm_gpe_and_pci_status_are_v2_fields():
    desc = piix4_pm_description(get_release("0.14"))
    assert [(f.name, f.version_id) for f in desc.fields[-2:]] == [("gpe", 2), ("pci0_status", 2)]


@pytest.mark.parametrize("name", RELEASES)
def test_hotplug_sets_the_gpe_status_bit_and_the_slot(name):
    dev = PIIX4PM(get_release(name))
    dev.hotplug(3)
    assert dev.gpe_register("sts") == 0x02 and (dev.pci0_status.up, dev.pci0_status.down) == (8, 0)
    dev.hotplug(4, added=False)
    assert (dev.pci0_status.up, dev.pci0_status.down) == (0, 16)
    (_, pm) = dev.sections()
    view = dev.guest_view(pm, dump_state(pm.desc, pm.obj))
    assert view["gpe/sts"] == 0x02  # one register value, whichever layout saved it


def test_a_015_piix4_pm_is_12_bytes_longer_than_a_014_one():
    """0.14 reads 12 bytes of a 0.15 section as the next section type; 0.15 reads 12 bytes
    past a 0.14 section."""
    old, new = (payload(PIIX4PM(get_release(n)), 3) for n in ("0.14", "0.15"))
    assert len(new) - len(old) == 12


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_round_trips(name, fmt, seed):
    for cls in (PCIHost, PIIX4PM):
        devtools.round_trip(cls, get_release(name), fmt, seed)
