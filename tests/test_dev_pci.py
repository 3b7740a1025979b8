"""The embedded "PCIDevice" description (devices.md section 1): 276 bytes, v2, min 1.

Golden bytes are packed here from the spec's layout, not by the code under test.
"""

from __future__ import annotations

import doctest
import struct

import pytest

from harness.emulator.devices import pci
from harness.emulator.devices.pci import Bar, build_config_space, pci_device_description
from harness.emulator.errors import LoadError, Reason
from harness.emulator.stream import StreamReader, StreamWriter
from harness.emulator.vmstate import (
    Description,
    PeekPolicy,
    WireRules,
    dump_state,
    load_state,
    save_state,
)

RULES = WireRules(PeekPolicy.PEEK_IF_DEFINED)


def nic():
    return build_config_space(
        0x10EC, 0x8139, 0x0200, revision=0x20, interrupt_pin=1,
        bars=[Bar(0, 0x100, io=True), Bar(1, 0x100)],
    )  # fmt: skip


def golden(state) -> bytes:
    return struct.pack(">i", 2) + state.config + struct.pack(">4I", *state.irq_state)


def save(state, rules=RULES) -> bytes:
    w = StreamWriter()
    save_state(w, pci_device_description(), state, rules)
    return w.getvalue()


def load(data: bytes, target=None, rules=RULES):
    target = target or nic()
    r = StreamReader(data)
    load_state(r, pci_device_description(), target, 2, rules)
    assert r.at_eof()
    return target


def test_module_doctests():
    assert doctest.testmod(pci).failed == 0


def test_description_shape():
    d = pci_device_description()
    assert (d.name, d.version_id, d.minimum_version_id, d.subsections) == ("PCIDevice", 2, 1, ())
    assert sum(f["size"] for f in d.describe()["fields"]) == 276


def test_golden_bytes_of_a_programmed_nic():
    s = nic()
    s.write_config(0x10, 0xC001, 4)
    s.write_config(0x04, 0x0007, 2)
    s.write_config(0x3C, 11)
    s.set_irq(0, 1)
    data = save(s)
    assert len(data) == 276
    assert data == golden(s)
    assert data[:4] == b"\x00\x00\x00\x02"
    assert data[4:8] == b"\xec\x10\x39\x81"  # vendor and device id, little-endian in config
    assert data[-16:] == struct.pack(">4I", 1, 0, 0, 0)


def test_config_reads_back_as_a_pc_would_see_it():
    s = nic()
    assert s.read_config(0x00, 2) == 0x10EC and s.read_config(0x0A, 2) == 0x0200
    assert s.read_config(0x3D) == 1 and s.read_config(0x2C, 2) == 0x1AF4


def test_round_trip_restores_config_and_remaps_bars():
    s = nic()
    s.write_config(0x10, 0xC100, 4)
    s.write_config(0x14, 0xFEBF1000, 4)
    s.write_config(0x04, 0x0003, 2)
    got = load(save(s))
    assert got.config == s.config
    assert got.mappings == {0: 0xC100, 1: 0xFEBF1000}
    assert dump_state(pci_device_description(), got) == dump_state(pci_device_description(), s)


def test_guest_writes_follow_the_masks():
    s = nic()
    s.write_config(0x10, 0xFFFFFFFF, 4)  # sizing: the type bit and size bits stay
    assert s.read_config(0x10, 4) == 0xFFFFFF01
    s.write_config(0x00, 0x1234, 2)  # vendor id is read-only
    assert s.read_config(0x00, 2) == 0x10EC
    s.write_config(0x04, 0xFFFF, 2)  # only io, memory, master, intx-disable stick
    assert s.read_config(0x04, 2) == 0x0407
    s.config = s.config[:6] + b"\x00\x28" + s.config[8:]  # device set target/master abort
    s.write_config(0x06, 0x0800, 2)  # guest clears one W1C bit
    assert s.read_config(0x06, 2) == 0x2000


def test_stream_version_id_must_be_at_least_2():
    data = bytearray(save(nic()))
    data[0:4] = struct.pack(">i", 1)
    with pytest.raises(LoadError) as e:
        load(bytes(data))
    assert e.value.reason is Reason.INVALID_VALUE and e.value.field == "version_id"
    data[0:4] = struct.pack(">i", 7)  # a larger stream value is accepted
    load(bytes(data))


@pytest.mark.parametrize(
    "offset, value, what",
    [
        (0x00, 0x34, "vendor id"),
        (0x03, 0x80, "device id"),
        (0x08, 0x21, "revision"),
        (0x0B, 0x01, "class"),
        (0x0E, 0x80, "header type"),
        (0x34, 0xDC, "capability list"),
        (0x10, 0x00, "BAR0"),  # the I/O space bit
        (0x14, 0x80, "BAR1"),  # an address bit below the 256-byte size
        (0x06, 0x10, "status"),  # capability-list bit
    ],
)
def test_changed_read_only_bits_are_refused(offset, value, what):
    data = bytearray(save(nic()))
    data[4 + offset] = value
    with pytest.raises(LoadError) as e:
        load(bytes(data))
    assert e.value.reason is Reason.INVALID_VALUE
    assert e.value.field == "config"
    assert e.value.offset == 4
    assert what in e.value.detail


@pytest.mark.parametrize(
    "offset, value",
    [
        (0x04, 0x07),  # command
        (0x07, 0xF9),  # W1C status bits
        (0x0C, 0x10),  # cache line size
        (0x3C, 0x0B),  # interrupt line
        (0x11, 0xC0),  # BAR0 address bits
        (0x2C, 0x00),  # subsystem vendor: not compared
        (0x3D, 0x02),  # interrupt pin: not in QEMU's cmask (read-only, yet not compared)
        (0x40, 0xAA),  # device-specific
    ],
)
def test_changed_writable_bits_are_accepted(offset, value):
    data = bytearray(save(nic()))
    data[4 + offset] = value
    assert load(bytes(data)).config[offset] == value


def test_irq_state_must_be_0_or_1():
    data = bytearray(save(nic()))
    data[260 + 8 : 264 + 8] = struct.pack(">I", 2)
    with pytest.raises(LoadError) as e:
        load(bytes(data))
    assert e.value.reason is Reason.INVALID_VALUE
    assert e.value.field == "irq_state" and e.value.offset == 260
    assert "irq_state[2] = 2" in e.value.detail


def test_embedded_paths_and_sentinel():
    outer = Description("outer", 1, [pci.pci_device_field("dev")])

    class Holder:
        pass

    src, dst = Holder(), Holder()
    src.dev, dst.dev = nic(), nic()
    rules = WireRules(PeekPolicy.ALWAYS_PEEK, struct_sentinel=True)
    w = StreamWriter()
    save_state(w, outer, src, rules)
    data = w.getvalue()
    assert data == golden(src.dev) + b"\x06"
    bad = bytearray(data)
    bad[4] ^= 0xFF
    with pytest.raises(LoadError) as e:
        load_state(StreamReader(bytes(bad)), outer, dst, 1, WireRules(PeekPolicy.ALWAYS_PEEK))
    assert e.value.field == "dev/config" and e.value.reason is Reason.INVALID_VALUE
    # Format 4 reads the next byte (irq_state's first) as the sentinel before the result.
    with pytest.raises(LoadError) as e:
        load_state(StreamReader(bytes(bad)), outer, dst, 1, rules)
    assert e.value.field == "dev/config" and e.value.reason is Reason.BAD_SENTINEL
    assert e.value.__cause__.reason is Reason.INVALID_VALUE


def test_bar_must_be_a_power_of_two():
    with pytest.raises(ValueError):
        Bar(0, 0x30)
