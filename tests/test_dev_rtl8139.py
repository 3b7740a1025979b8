"""The RTL8139 NIC (devices.md section 4): "rtl8139" v4, min 3, and hotplug_ready.

Golden bytes are packed here from the spec's field list and the device's attributes.
"""

from __future__ import annotations

import random
import struct

import pytest

from harness.emulator.devices.rtl8139 import (
    IDSTR,
    RTL8139,
    rtl8139_description,
    tally_counters_description,
)
from harness.emulator.errors import LoadError, Reason
from harness.emulator.releases import get_release
from harness.emulator.savevm import HeaderPolicy, Saver, load_stream, wire_rules_for
from harness.emulator.stream import StreamReader, StreamWriter
from harness.emulator.vmstate import PeekPolicy, WireRules, dump_state

ENDPOINTS = [("0.13", "pc"), ("0.14", "pc"), ("0.15", "pc"), ("new", "pc"), ("new", "pc-0.14"),
             ("1.0", "pc")]  # fmt: skip
HOTPLUG_HEADER = b"\x05\x15rtl8139/hotplug_ready\x00\x00\x00\x01"
TALLY = (("TxOk", "Q"), ("RxOk", "Q"), ("TxERR", "Q"), ("RxERR", "I"), ("MissPkt", "H"),
         ("FAE", "H"), ("Tx1Col", "I"), ("TxMCol", "I"), ("RxOkPhy", "Q"), ("RxOkBrd", "Q"),
         ("TxAbt", "H"), ("TxUndrn", "H"))  # fmt: skip


def rules_of(name: str, machine: str = "pc") -> WireRules:
    r = get_release(name)
    return wire_rules_for(r.machine(machine).stream_format, r.peek)


def golden(n: RTL8139, version: int = 4, sentinel: bool = False) -> bytes:
    end = b"\x06" if sentinel else b""
    out = struct.pack(">i", 2) + n.dev.config + struct.pack(">4I", *n.dev.irq_state) + end
    out += n.phys + n.mult
    out += struct.pack(">4I", *n.TxStatus) + struct.pack(">4I", *n.TxAddr)
    out += struct.pack(">4I", n.RxBuf, n.RxBufferSize, n.RxBufPtr, n.RxBufAddr)
    out += struct.pack(">HH", n.IntrStatus, n.IntrMask)
    out += struct.pack(">III", n.TxConfig, n.RxConfig, n.RxMissed)
    out += struct.pack(">H", n.CSCR)
    out += struct.pack(">8B", n.Cfg9346, n.Config0, n.Config1, n.Config3, n.Config4, n.Config5,
                       n.clock_enabled, n.bChipCmdState)  # fmt: skip
    out += struct.pack(">7H", n.MultiIntr, n.BasicModeCtrl, n.BasicModeStatus, n.NWayAdvert,
                       n.NWayLPAR, n.NWayExpansion, n.CpCmd)  # fmt: skip
    out += struct.pack(">B", n.TxThresh) + bytes(4) + n.conf.macaddr
    out += struct.pack(">i", n.rtl8139_mmio_io_addr_dummy)
    out += struct.pack(">5I", n.currTxDesc, n.currCPlusRxDesc, n.currCPlusTxDesc,
                       n.RxRingAddrLO, n.RxRingAddrHI)  # fmt: skip
    e = n.eeprom
    out += struct.pack(">64H", *e.contents)
    out += struct.pack(">iIBHH", e.mode, e.tick, e.address, e.input, e.output)
    out += struct.pack(">4B", n.eecs, n.eesk, n.eedi, n.eedo)
    out += struct.pack(">IIq", n.TCTR, n.TimerInt, n.TCTR_base)
    t = n.tally_counters
    out += struct.pack(">" + "".join(f for _, f in TALLY), *(getattr(t, k) for k, _ in TALLY))
    out += end
    if version >= 4:
        out += struct.pack(">I", n.cplus_enabled)
    return out


def save(n: RTL8139, rules: WireRules) -> bytes:
    w = StreamWriter()
    n.sections()[0].save(w, rules)
    return w.getvalue()


def load(name: str, data: bytes, rules: WireRules, version: int = 4) -> RTL8139:
    dst = RTL8139(get_release(name))
    r = StreamReader(data)
    dst.sections()[0].load(r, version, rules)
    assert r.at_eof(), f"{len(data) - r.offset} byte(s) left unread"
    return dst


def dump(n: RTL8139) -> dict:
    return dump_state(rtl8139_description(n.release), n)


def test_section_identity():
    (sec,) = RTL8139(get_release("0.14")).sections()
    assert (sec.idstr, sec.instance_id, sec.version_id) == (IDSTR, 0, 4)
    assert IDSTR == "0000:00:03.0/rtl8139"
    assert (sec.desc.name, sec.desc.minimum_version_id) == ("rtl8139", 3)


def test_tally_counters_are_60_bytes():
    d = tally_counters_description()
    assert d.name == "tally_counters" and d.version_id == 1
    assert sum(f["size"] for f in d.describe()["fields"]) == 60
    assert struct.calcsize(">" + "".join(f for _, f in TALLY)) == 60


@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_golden_bytes(seed):
    n = RTL8139(get_release("0.14"))
    if seed is not None:
        n.randomize(random.Random(seed))
    data = save(n, rules_of("0.14"))
    assert len(data) == 638
    assert data == golden(n)


def test_reset_state_facts():
    n = RTL8139(get_release("0.15"))
    data = save(n, rules_of("0.15"))
    assert data[4:8] == b"\xec\x10\x39\x81"  # 10ec:8139 in config space
    assert data[4 + 0x34] == 0xDC and data[4 + 0x06] == 0  # capability pointer, no cap bit
    assert data[276:282] == bytes.fromhex("525400123456")  # phys after the embedded PCIDevice
    assert n.eeprom.contents[:10] == [0x8129, 0x10EC, 0x8139, 0, 0, 0, 0,
                                      0x5452, 0x1200, 0x5634]  # fmt: skip
    assert (n.RxBufferSize, n.CSCR, n.Config3, n.bChipCmdState) == (8192, 0x340, 1, 0x10)


@pytest.mark.parametrize("name, dummy", [("0.13", 128), ("0.14", 128), ("0.15", 128),
                                         ("new", 0), ("1.0", 0)])  # fmt: skip
def test_mmio_dummy_by_release_and_not_guest_state(name, dummy):
    n = RTL8139(get_release(name))
    assert n.rtl8139_mmio_io_addr_dummy == dummy
    (sec,) = n.sections()
    assert "rtl8139_mmio_io_addr_dummy" not in n.guest_view(sec, dump(n))


def test_format_4_sentinels_after_pcidevice_and_tally_counters():
    n = RTL8139(get_release("new"))
    n.randomize(random.Random(5))
    rules = WireRules(PeekPolicy.ALWAYS_PEEK, struct_sentinel=True)
    assert rules_of("new", "pc") == rules
    data = save(n, rules)
    assert data == golden(n, sentinel=True) and len(data) == 640
    assert data[276] == 0x06 and data[-5] == 0x06
    assert dump(load("new", data, rules)) == dump(n)


@pytest.mark.parametrize("name", ["0.14", "0.15", "new", "1.0"])
def test_hotplug_ready_is_a_bare_27_byte_header(name):
    n = RTL8139(get_release(name))
    n.machine_modified()
    data = save(n, rules_of(name, "pc-0.13"))
    assert len(HOTPLUG_HEADER) == 27
    assert data == golden(n) + HOTPLUG_HEADER
    assert dump(load(name, data, rules_of(name, "pc-0.13"))) == dump(n)


def test_013_has_no_hotplug_ready():
    n = RTL8139(get_release("0.13"))
    n.machine_modified()
    assert rtl8139_description(n.release).subsections == ()
    assert save(n, rules_of("0.13")) == golden(n)


def test_not_hotplugged_sends_no_subsection():
    n = RTL8139(get_release("0.15"))
    assert save(n, rules_of("0.15")) == golden(n)


def _stream(n: RTL8139, fmt: int) -> bytes:
    w = StreamWriter()
    s = Saver(w, n.sections(), fmt, n.release.peek)
    s.begin()
    s.complete()
    return w.getvalue()


def test_013_refuses_a_hotplugged_014_stream():
    """The marker's purpose: a receiver without it fails cleanly (always-peek, -ENOENT)."""
    src = RTL8139(get_release("0.14"))
    src.machine_modified()
    data = _stream(src, 3)
    r13 = get_release("0.13")
    with pytest.raises(LoadError) as e:
        load_stream(
            StreamReader(data), RTL8139(r13).sections(),
            HeaderPolicy(r13.accepted_versions, 3), r13.peek,
        )  # fmt: skip
    assert e.value.reason is Reason.UNKNOWN_SUBSECTION
    assert e.value.section == IDSTR and "rtl8139/hotplug_ready" in e.value.detail


def test_version_3_stream_has_no_cplus_enabled():
    n = RTL8139(get_release("0.14"))
    n.cplus_enabled = 1
    rules = rules_of("0.14")
    dst = load("0.14", golden(n, version=3), rules, version=3)
    assert dst.cplus_enabled == 0 and dst.TxConfig == n.TxConfig


@pytest.mark.parametrize("version, reason", [(2, Reason.VERSION_TOO_OLD),
                                             (5, Reason.VERSION_TOO_NEW)])  # fmt: skip
def test_versions_outside_3_to_4_are_refused(version, reason):
    n = RTL8139(get_release("0.14"))
    with pytest.raises(LoadError) as e:
        load("0.14", save(n, rules_of("0.14")), rules_of("0.14"), version=version)
    assert e.value.reason is reason


def test_validation_paths():
    rules = rules_of("0.15")
    data = bytearray(save(RTL8139(get_release("0.15")), rules))
    data[4 + 0x03] = 0x80  # device id 8139 -> 8039
    with pytest.raises(LoadError) as e:
        load("0.15", bytes(data), rules)
    assert (e.value.reason, e.value.field, e.value.offset) == (
        Reason.INVALID_VALUE,
        "dev/config",
        4,
    )
    data = bytearray(save(RTL8139(get_release("0.15")), rules))
    data[263] = 0xFF  # irq_state[0]
    with pytest.raises(LoadError) as e:
        load("0.15", bytes(data), rules)
    assert (e.value.reason, e.value.field) == (Reason.INVALID_VALUE, "dev/irq_state")


@pytest.mark.parametrize("hotplugged", [False, True])
@pytest.mark.parametrize("name, machine", ENDPOINTS)
def test_round_trips(name, machine, hotplugged):
    rules = rules_of(name, machine)
    for seed in (None, *range(8)):
        n = RTL8139(get_release(name))
        if seed is not None:
            n.randomize(random.Random(seed))
        if hotplugged:
            n.machine_modified()
        assert dump(load(name, save(n, rules), rules)) == dump(n)


def test_randomize_keeps_a_unicast_address():
    for seed in range(200):
        n = RTL8139(get_release("0.13"))
        n.randomize(random.Random(seed))
        assert n.phys[0] & 1 == 0 and n.phys[0] != 0x05
        assert n.dev.irq_state[1:] == [0, 0, 0]
        assert not n.qdev_modified
