"""The PC's small devices: timer, slirp, block, apic, fw_cfg, ioapic, port92.

Golden bytes are written out with struct.pack from each release's source (the vmsd or
the old-style save function), not produced by the engine. The idle payloads of the real
builds are checked for the whole machine in test_conformance.py.
"""

from __future__ import annotations

import struct

import pytest

from harness.emulator.devices.apic import APIC, apic_description
from harness.emulator.devices.blockmig import BlockMigration, BlockSection
from harness.emulator.devices.fw_cfg import FwCfg, fw_cfg_description
from harness.emulator.devices.ioapic import IOAPIC, ioapic_description
from harness.emulator.devices.port92 import Port92
from harness.emulator.devices.slirp import Slirp
from harness.emulator.devices.timer import Timers
from harness.emulator.errors import LoadError, Reason
from harness.emulator.releases import get_release
from harness.emulator.savevm import LiveStage, wire_rules_for
from harness.emulator.stream import StreamReader, StreamWriter
from harness.emulator.vmstate import load_state

from . import devtools
from .devtools import payload

RELEASES = ["0.13", "0.14", "0.15", "new", "1.0"]
RUNS = [("0.13", 3), ("0.14", 3), ("0.15", 3), ("new", 3), ("new", 4), ("1.0", 3)]
RUN_IDS = [f"{r}-f{f}" for r, f in RUNS]


def load_payload(dev, data: bytes, version: int, fmt: int = 3):
    (section,) = dev.sections()
    r = StreamReader(data)
    section.load(r, version, wire_rules_for(fmt, dev.release.peek))
    assert r.offset == len(data)
    return dev


def round_trip(cls, name: str, fmt: int, seed: int | None):
    devtools.round_trip(cls, get_release(name), fmt, seed)


# -- timer -----------------------------------------------------------------------------


def test_timer_power_on_is_24_zero_bytes_in_every_release():
    for name in RELEASES:
        assert payload(Timers(get_release(name)), 3) == bytes(24)


def test_timer_v1_has_no_cpu_clock_offset():
    dev = load_payload(Timers(get_release("0.14")), struct.pack(">qq", 5, 6), version=1)
    assert (dev.cpu_ticks_offset, dev.dummy, dev.cpu_clock_offset) == (5, 6, 0)


# -- slirp -----------------------------------------------------------------------------


def test_slirp_idle_is_131_bytes_the_socket_list_end_ip_id_and_16_leases():
    dev = Slirp(get_release("0.14"))
    assert payload(dev, 3) == b"\x00" + bytes(2) + bytes(16 * 8)
    dev.ip_id = 0x1234
    dev.lease(bytes.fromhex("525400123456"))
    assert payload(dev, 4) == (b"\x00" + b"\x12\x34" + b"\x00\x01" + bytes.fromhex("525400123456")
                               + bytes(15 * 8))  # old-style: no sentinel in format 4


def test_slirp_versions_gate_ip_id_and_the_leases():
    assert load_payload(Slirp(get_release("0.14")), b"\x00", version=1).ip_id == 0
    dev = load_payload(Slirp(get_release("0.14")), b"\x00\x00\x07", version=2)
    assert dev.ip_id == 7 and dev.bootp_clients[0].allocated == 0


def test_slirp_refuses_a_guestfwd_socket_it_has_no_rule_for():
    with pytest.raises(LoadError) as info:
        load_payload(Slirp(get_release("1.0")), b"\x2a" + bytes(200), version=3)
    assert (info.value.reason, info.value.offset, info.value.field) == (
        Reason.INVALID_VALUE, 0, "sockets")


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
def test_slirp_round_trip(name, fmt):
    round_trip(Slirp, name, fmt, 3)


# -- block -----------------------------------------------------------------------------


def test_block_stages_are_one_eos_record_each():
    w = StreamWriter()
    section = BlockSection()
    for stage in LiveStage:
        section.save_stage(w, stage)
    assert w.getvalue() == struct.pack(">QQQ", 2, 2, 2)
    (only,) = BlockMigration(get_release("0.13")).sections()
    assert (only.idstr, only.instance_id, only.version_id, only.live) == ("block", 0, 1, True)


def test_block_load_skips_progress_and_stops_at_eos():
    r = StreamReader(struct.pack(">QQ", (50 << 9) | 0x04, 0x02) + b"rest")
    BlockSection().load(r, 1)
    assert r.offset == 16


@pytest.mark.parametrize("record, offset", [
    (struct.pack(">QB", 0x01, 4) + b"hda0", 0),  # a disk chunk: no such drive with a medium
    (struct.pack(">Q", 0x100), 0),  # no known flag: "Unknown flags"
])  # fmt: skip
def test_block_load_refuses_disk_chunks_and_unknown_flags(record, offset):
    with pytest.raises(LoadError) as info:
        BlockSection().load(StreamReader(record), 1)
    assert (info.value.reason, info.value.offset) == (Reason.INVALID_VALUE, offset)


# -- apic ------------------------------------------------------------------------------


APIC_POWER_ON = (
    struct.pack(">IBBBIBB", 0xFEE00900, 0, 0, 0, 0xFF, 0, 0x0F)
    + bytes(3 * 32)  # isr, tmr, irr
    + struct.pack(">6I", 0x10000, 0x10000, 0x10000, 0x700, 0x10000, 0x10000)
    + struct.pack(">I2IIiIqqq", 0, 0, 0, 0, 0, 0, 0, 0, -1)
)


def test_apic_power_on_golden_bytes():
    """apic_reset of the BSP: base 0xfee00000 | BSP | enable, LVTs masked but LINT0 (ExtINT)."""
    for name in RELEASES:
        data = payload(APIC(get_release(name)), 3)
        assert data == APIC_POWER_ON and len(data) == 181


@pytest.mark.parametrize("version", [1, 2])
def test_apic_old_versions_interleave_isr_tmr_irr(version):
    words = list(range(100, 124))
    body = struct.pack(">IBBBIBB", 0xFEE00800, 1, 2, 3, 0x1FF, 4, 5)
    body += struct.pack(">24I", *words)  # isr[i], tmr[i], irr[i] per i
    body += struct.pack(">6I", *range(200, 206)) + struct.pack(">IIIIiIqq", 9, 10, 11, 12, 13,
                                                                 14, 15, 16)
    if version == 2:
        body += struct.pack(">q", 77)
    dev = load_payload(APIC(get_release("0.14")), body, version)
    assert dev.isr == words[0::3] and dev.tmr == words[1::3] and dev.irr == words[2::3]
    assert (dev.lvt[5], dev.icr, dev.count_shift, dev.next_time) == (205, [10, 11], 13, 16)
    assert dev.timer == (77 if version == 2 else -1)
    assert apic_description(get_release("0.14")).minimum_version_id == 3


# -- fw_cfg ----------------------------------------------------------------------------


def test_fw_cfg_v2_offset_is_u32_v1_a_u16():
    dev = FwCfg(get_release("0.14"))
    assert payload(dev, 3) == bytes(6)
    assert load_payload(FwCfg(get_release("0.14")), b"\x00\x19\x00\x05", 1).cur_offset == 5
    assert fw_cfg_description(get_release("0.14")).version_id == 2


# -- ioapic ----------------------------------------------------------------------------


def test_ioapic_is_v1_in_013_and_v3_after():
    masked = struct.pack(">24Q", *[1 << 16] * 24)
    assert payload(IOAPIC(get_release("0.13")), 3) == b"\x00\x00" + masked  # 194 bytes
    for name in RELEASES[1:]:
        assert payload(IOAPIC(get_release(name)), 3) == b"\x00\x00" + bytes(8 + 4) + masked
    assert [ioapic_description(get_release(n)).version_id for n in RELEASES] == [1, 3, 3, 3, 3]


def test_ioapic_v3_reads_a_v1_section_and_clears_irr():
    dev = IOAPIC(get_release("0.14"))
    dev.irr = 0xFF0000
    load_payload(dev, b"\x01\x10" + struct.pack(">24Q", *range(24)), version=1)
    assert (dev.id, dev.ioregsel, dev.irr, dev.ioredtbl[23]) == (1, 0x10, 0, 23)


def test_013_refuses_a_v3_ioapic_section():
    (section,) = IOAPIC(get_release("0.13")).sections()
    with pytest.raises(LoadError) as info:
        load_state(StreamReader(bytes(206)), section.desc, section.obj, 3,
                   wire_rules_for(3, get_release("0.13").peek))
    assert info.value.reason is Reason.VERSION_TOO_NEW


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
def test_ioapic_apic_fw_cfg_round_trip(name, fmt):
    for cls in (IOAPIC, APIC, FwCfg, Timers, Port92):
        round_trip(cls, name, fmt, 5)


# -- port92 ----------------------------------------------------------------------------


def test_port92_is_one_byte():
    dev = Port92(get_release("0.14"))
    dev.outport = 0x02
    assert payload(dev, 3) == b"\x02"
    (section,) = dev.sections()
    assert (section.idstr, section.instance_id, section.version_id) == ("port92", 0, 1)
