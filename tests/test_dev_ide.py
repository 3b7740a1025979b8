"""The "ide" section of piix3-ide (devices.md sections 1, 5 and 6).

Golden bytes are packed here from the spec's field tables, from the device's attribute
values; the code under test only supplies the state. Round trips use each release's own
wire rules; the cross-release tests pin down the documented outcomes (silent misparse,
clean -ENOENT, spurious rejection, the always-peek sibling bug).
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.emulator.devices import Board
from harness.emulator.devices.ide import (
    IDE,
    IDSTR,
    bmdma_description,
    ide_bus_description,
    ide_description,
    ide_drive_description,
)
from harness.emulator.errors import ConfigError, LoadError, Reason
from harness.emulator.releases import RELEASES, get_release
from harness.emulator.savevm import HeaderPolicy, Saver, load_stream, wire_rules_for
from harness.emulator.stream import StreamReader, StreamWriter
from harness.emulator.vmstate import PeekPolicy, WireRules, dump_state, load_state, save_state

# (release, machine) endpoints with their own stream format.
ENDPOINTS = [("0.13", "pc"), ("0.14", "pc"), ("0.15", "pc"), ("new", "pc"), ("new", "pc-0.14"),
             ("1.0", "pc")]  # fmt: skip
RELEASE_NAMES = ["0.13", "0.14", "0.15", "new", "1.0", "rhel6.1", "rhel6.2"]


def rules_of(release_name: str, machine: str = "pc") -> WireRules:
    r = get_release(release_name)
    return wire_rules_for(r.machine(machine).stream_format, r.peek)


def save(ide: IDE, rules: WireRules) -> bytes:
    w = StreamWriter()
    ide.sections()[0].save(w, rules)
    return w.getvalue()


def load(release_name: str, data: bytes, rules: WireRules, version: int = 3) -> IDE:
    dst = IDE(get_release(release_name))
    r = StreamReader(data)
    dst.sections()[0].load(r, version, rules)
    assert r.at_eof(), f"{len(data) - r.offset} byte(s) left unread"
    return dst


def booted(release) -> IDE:
    """The IDE of a machine started with -hda and -cdrom, after the BIOS identified its
    drives."""
    ide = IDE(release, Board(media=frozenset({"hda", "cdrom"})))
    ide.bios_probe()
    return ide


def dump(ide: IDE) -> dict:
    return dump_state(ide_description(ide.release), ide)


def round_trip(ide: IDE, rules: WireRules) -> IDE:
    return load(ide.release.name, save(ide, rules), rules)


# -- golden layouts, packed from the spec -------------------------------------------------

DRIVE_U8 = ("sector", "lcyl", "hcyl", "hob_feature", "hob_sector", "hob_nsector", "hob_lcyl",
            "hob_hcyl", "select", "status", "lba48", "sense_key", "asc")  # fmt: skip


def pci_bytes(dev) -> bytes:
    return struct.pack(">i", 2) + dev.config + struct.pack(">4I", *dev.irq_state)


def drive_bytes(d) -> bytes:
    out = struct.pack(">ii", d.mult_sectors, d.identify_set)
    if d.identify_set:
        out += d.identify_data
    out += struct.pack(">BBI", d.feature, d.error, d.nsector)
    out += struct.pack(">13B", *(getattr(d, n) for n in DRIVE_U8))
    return out + struct.pack(">B", d.cdrom_changed)


def bmdma_bytes(bm, field2: int) -> bytes:
    return struct.pack(">BBIqIB", bm.cmd, field2, bm.addr, bm.sector_num, bm.nsector, bm.unit)


def sub_header(name: str, version: int = 1) -> bytes:
    raw = name.encode()
    return struct.pack(">BB", 0x05, len(raw)) + raw + struct.pack(">I", version)


def idle_payload(ide: IDE, sentinel: bool = False) -> bytes:
    end = b"\x06" if sentinel else b""
    out = pci_bytes(ide.dev) + end
    for bm in ide.bmdma:
        out += bmdma_bytes(bm, bm.status) + end
    for bus in ide.bus:
        out += struct.pack(">BB", bus.cmd, bus.unit) + end
    for bus in ide.bus:
        for d in bus.ifs:
            out += drive_bytes(d) + end
    return out


# -- layout ---------------------------------------------------------------------------------


def test_sizes_of_the_embedded_structs():
    ide = booted(get_release("0.14"))
    rules = rules_of("0.14")
    for (b, u), size in {(0, 0): 540, (0, 1): 28, (1, 0): 540, (1, 1): 28}.items():
        w = StreamWriter()
        save_state(w, ide_drive_description(ide.release), ide.drive(b, u), rules)
        assert len(w.getvalue()) == size
        assert w.getvalue() == drive_bytes(ide.drive(b, u))
    w = StreamWriter()
    save_state(w, bmdma_description(ide.release), ide.bmdma[0], rules)
    assert len(w.getvalue()) == 19


def test_empty_slot_golden_bytes():
    ide = IDE(get_release("0.15"))
    w = StreamWriter()
    save_state(w, ide_drive_description(ide.release), ide.drive(1, 1), rules_of("0.15"))
    # ide_reset: mult 16, no identify, feature 0, error 0, nsector 1, sector 1, signature
    # ff ff, hob 0 x5, select 20, status 50, lba48/sense/asc 0, cdrom_changed 0
    assert w.getvalue() == struct.pack(
        ">iiBBI13BB", 16, 0, 0, 0, 1, 1, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0x20, 0x50, 0, 0, 0, 0
    )


def test_power_on_a_bare_pc_has_only_an_empty_cdrom_drive():
    ide = IDE(get_release("0.14"))
    assert [d.kind for bus in ide.bus for d in bus.ifs] == [None, None, "cdrom", None]
    assert [(d.lcyl, d.hcyl) for bus in ide.bus for d in bus.ifs] == [
        (0xFF, 0xFF), (0xFF, 0xFF), (0x14, 0xEB), (0xFF, 0xFF)]  # the ATAPI signature
    assert not any(d.identify_set for bus in ide.bus for d in bus.ifs)  # no BIOS ran
    ide = IDE(get_release("0.14"), Board(media=frozenset({"hda"})))
    assert (ide.drive(0, 0).kind, ide.drive(0, 0).lcyl, ide.drive(0, 0).hcyl) == ("hd", 0, 0)
    ide.bios_probe()
    assert [d.identify_set for bus in ide.bus for d in bus.ifs] == [1, 0, 1, 0]


def test_hard_disk_carries_identify_data():
    ide = booted(get_release("0.14"))
    d = ide.drive(0, 0)
    w = StreamWriter()
    save_state(w, ide_drive_description(ide.release), d, rules_of("0.14"))
    data = w.getvalue()
    assert data[:8] == struct.pack(">ii", 16, 1)
    assert data[8:520] == d.identify_data and len(d.identify_data) == 512
    assert b"EQUMH RADDSI K" in d.identify_data  # "QEMU HARDDISK", byte-swapped words


def test_idle_014_payload_size_and_bytes():
    ide = IDE(get_release("0.14"))
    data = save(ide, rules_of("0.14"))
    assert len(data) == 276 + 2 * 19 + 2 * 2 + 4 * 28 == 430
    assert data == idle_payload(ide)
    booted_data = save(booted(get_release("0.14")), rules_of("0.14"))
    assert len(booted_data) == 430 + 2 * 512  # the disk's and the CD-ROM's IDENTIFY data


@pytest.mark.parametrize("name", RELEASE_NAMES)
def test_idle_payload_is_the_same_in_every_release(name):
    ide = IDE(get_release(name))
    format3 = wire_rules_for(3, ide.release.peek)
    assert save(ide, format3) == idle_payload(IDE(get_release("0.14")))


def test_format_4_puts_0x06_after_every_embedded_element():
    ide = IDE(get_release("new"))
    rules = WireRules(PeekPolicy.ALWAYS_PEEK, struct_sentinel=True)
    data = save(ide, rules)
    assert data == idle_payload(ide, sentinel=True)
    assert len(data) == 430 + 9
    assert rules_of("new", "pc") == rules
    assert load("new", data, rules) is not None


def test_format_4_sentinel_after_subsections():
    ide = booted(get_release("new"))
    ide.start_dma(0, 0)
    rules = rules_of("new", "pc")
    data = save(ide, rules)
    bm = ide.bmdma[0]
    element = (
        bmdma_bytes(bm, bm.migration_compat_status)
        + sub_header("ide bmdma_current")
        + struct.pack(">4I", bm.cur_addr, bm.cur_prd_last, bm.cur_prd_addr, bm.cur_prd_len)
        + b"\x06"
    )
    assert data[277 : 277 + len(element)] == element
    dst = load("new", data, rules)
    assert dump(dst) == dump(ide)
    broken = bytearray(data)
    broken[277 + len(element) - 1] = 0x00
    with pytest.raises(LoadError) as e:
        load("new", bytes(broken), rules)
    assert e.value.reason is Reason.BAD_SENTINEL and e.value.field == "bmdma[0]"


def test_section_identity():
    (sec,) = booted(get_release("0.14")).sections()
    assert (
        (sec.idstr, sec.instance_id, sec.version_id) == (IDSTR, 0, 3) == ("0000:00:01.1/ide", 0, 3)
    )
    d = sec.desc
    assert (d.name, d.minimum_version_id) == ("ide", 0)
    assert [f.name for f in d.fields] == ["dev", "bmdma", "bus", "bus[0].ifs", "bus[1].ifs"]
    assert [f.version_id for f in d.fields] == [0, 0, 1, 3, 3]


@pytest.mark.parametrize(
    "name, bmdma_subs, bus_subs, drive_subs, field2",
    [
        ("0.13", ["ide bmdma_current"], [], ["ide_drive/pio_state"], "status"),
        ("0.14", ["ide bmdma_current"], [], ["ide_drive/pio_state"], "status"),
        ("0.15", ["ide bmdma_current", "ide bmdma/status"], ["ide_bus/error"],
         ["ide_drive/pio_state", "ide_drive/atapi/gesn_state"], "migration_compat_status"),
        ("new", ["ide bmdma_current", "ide bmdma/status"], ["ide_bus/error"],
         ["ide_drive/pio_state", "ide_drive/atapi/gesn_state"], "migration_compat_status"),
        ("1.0", ["ide bmdma_current", "ide bmdma/status"], ["ide_bus/error"],
         ["ide_drive/pio_state", "ide_drive/tray_state", "ide_drive/atapi/gesn_state"],
         "migration_compat_status"),
    ],
)  # fmt: skip
def test_subsections_by_release(name, bmdma_subs, bus_subs, drive_subs, field2):
    r = get_release(name)
    assert [s.desc.name for s in bmdma_description(r).subsections] == bmdma_subs
    assert [s.desc.name for s in ide_bus_description(r).subsections] == bus_subs
    assert [s.desc.name for s in ide_drive_description(r).subsections] == drive_subs
    assert bmdma_description(r).fields[1].name == field2
    assert ide_description(r) is ide_description(r)  # cached per release


# -- subsection bytes -------------------------------------------------------------------------


def test_pio_state_bytes():
    ide = booted(get_release("0.14"))
    ide.start_pio_read(0, 0)
    d = ide.drive(0, 0)
    assert d.status & 0x08 and d.io_buffer[:512] != bytes(512)
    data = save(ide, rules_of("0.14"))
    start = 276 + 38 + 4
    body = (
        struct.pack(">i", d.req_nb_sectors) + d.io_buffer
        + struct.pack(">iiBii", 0, 512, 0, 0, 0)
    )  # fmt: skip
    assert len(d.io_buffer) == 131076 and len(body) == 131097
    expected = drive_bytes(d) + sub_header("ide_drive/pio_state") + body
    assert data[start : start + len(expected)] == expected
    assert len(data) == 1454 + len(sub_header("ide_drive/pio_state")) + 131097 == 1454 + 25 + 131097


def test_bmdma_current_bytes_014():
    ide = booted(get_release("0.14"))
    ide.start_dma(0, 0)
    bm = ide.bmdma[0]
    data = save(ide, rules_of("0.14"))
    expected = (
        bmdma_bytes(bm, 0x01)  # DMA active, field 2 is the real status
        + b"\x05\x11ide bmdma_current\x00\x00\x00\x01"
        + struct.pack(">4I", bm.cur_addr, bm.cur_prd_last, bm.cur_prd_addr, bm.cur_prd_len)
    )
    assert bm.cmd == 0x09 and bm.cur_prd_len != 0
    assert data[276 : 276 + len(expected)] == expected


def test_bus_error_bytes_015():
    ide = booted(get_release("0.15"))
    ide.fail_dma_for_retry(0)
    assert ide.bus[0].error_status == 0x08 and ide.bmdma[0].status == 0x01
    data = save(ide, rules_of("0.15"))
    bm = ide.bmdma[0]
    assert data[276:295] == bmdma_bytes(bm, 0x09)  # compat: status | retry flags
    bus0 = (
        struct.pack(">BB", 0, 0) + b"\x05\x0dide_bus/error\x00\x00\x00\x01" + struct.pack(">i", 8)
    )
    assert data[276 + 38 : 276 + 38 + len(bus0)] == bus0


def test_inline_release_keeps_retry_flags_in_status():
    ide = booted(get_release("0.14"))
    ide.fail_dma_for_retry(0)
    assert ide.bmdma[0].status == 0x09 and ide.bus[0].error_status == 0
    assert ide.retry_flags(0) == 0x08
    data = save(ide, rules_of("0.14"))
    assert data[277] == 0x09
    assert b"ide_bus/error" not in data


def test_dma_capable_bits_send_the_status_subsection_015():
    ide = booted(get_release("0.15"))
    ide.set_dma_capable(0, 0x60)
    assert ide.bmdma[0].status == 0x60
    data = save(ide, rules_of("0.15"))
    # 0x60 lies inside the compat mask, so field 2 drops it: only the subsection carries it.
    expected = bmdma_bytes(ide.bmdma[0], 0x00) + b"\x05\x10ide bmdma/status\x00\x00\x00\x01\x60"
    assert data[276 : 276 + len(expected)] == expected
    old = booted(get_release("0.14"))
    old.set_dma_capable(0, 0x60)
    assert save(old, rules_of("0.14"))[276:295] == bmdma_bytes(old.bmdma[0], 0x60)


def test_gesn_and_tray_bytes_and_order_10():
    ide = booted(get_release("1.0"))
    ide.raise_media_event(1, 0)
    ide.set_tray(1, 0, open=True, locked=False)
    ide.start_pio_read(1, 0)
    data = save(ide, rules_of("1.0"))
    pio = data.index(sub_header("ide_drive/pio_state"))
    tray = data.index(sub_header("ide_drive/tray_state") + b"\x01\x00")
    gesn = data.index(sub_header("ide_drive/atapi/gesn_state") + b"\x01\x00")
    assert pio < tray < gesn
    assert dump(round_trip(ide, rules_of("1.0"))) == dump(ide)


def test_media_event_without_gesn_sets_what_the_release_tracks():
    old = booted(get_release("0.14"))
    old.raise_media_event(1, 0)
    d = old.drive(1, 0)
    assert (d.sense_key, d.asc, d.cdrom_changed) == (6, 0x28, 1)
    assert not d.events.new_media
    new = booted(get_release("0.15"))
    new.raise_media_event(1, 0)
    assert new.drive(1, 0).events.new_media


def test_operations_refuse_the_wrong_drive_or_release():
    ide = booted(get_release("0.15"))
    with pytest.raises(ConfigError):
        ide.set_tray(1, 0)
    with pytest.raises(ConfigError):
        ide.raise_media_event(0, 0)
    with pytest.raises(ConfigError):
        ide.start_dma(1, 1)


def test_guest_status_write_keeps_only_capable_bits_and_drops_inline_retry_flags():
    ide = booted(get_release("0.14"))
    ide.fail_dma_for_retry(0)
    ide.set_dma_capable(0, 0xFF)
    assert ide.bmdma[0].status == 0x61  # active kept, 0x60 set, retry flag gone
    assert ide.retry_flags(0) == 0x60  # ...and 0x60 now reads as RETRY_READ | RETRY_FLUSH


# -- round trips ---------------------------------------------------------------------------------

OPERATIONS = {
    "idle": lambda ide: None,
    "start_pio_read": lambda ide: ide.start_pio_read(0, 0),
    "start_pio_read_cdrom": lambda ide: ide.start_pio_read(1, 0),
    "start_dma": lambda ide: ide.start_dma(0, 0),
    "fail_dma_for_retry": lambda ide: ide.fail_dma_for_retry(0),
    "set_dma_capable": lambda ide: ide.set_dma_capable(0, 0x60),
    "raise_media_event": lambda ide: ide.raise_media_event(1, 0),
    "write_device_control": lambda ide: ide.write_device_control(1, 0x02),
}


@pytest.mark.parametrize("op", sorted(OPERATIONS))
@pytest.mark.parametrize("name, machine", ENDPOINTS)
def test_round_trip_of_each_operation(name, machine, op):
    ide = booted(get_release(name))
    OPERATIONS[op](ide)
    rules = rules_of(name, machine)
    dst = round_trip(ide, rules)
    assert dump(dst) == dump(ide)


@pytest.mark.parametrize("name, machine", ENDPOINTS)
def test_round_trip_of_fail_pio_for_retry(name, machine):
    """0.15 added PIO_RETRY to pio_state's needed(): before it the buffer stays behind."""
    ide = booted(get_release(name))
    ide.fail_pio_for_retry(0)
    assert ide.retry_flags(0) == 0x10
    dst = round_trip(ide, rules_of(name, machine))
    src_state, dst_state = dump(ide), dump(dst)
    assert dst.retry_flags(0) == 0x10
    lost = {k for k in src_state if src_state[k] != dst_state[k]}
    if ide.saves_pio_retry:
        assert not lost
    else:
        assert "bus[0]/ifs[0]/io_buffer" in lost
        assert lost <= {f"bus[0]/ifs[0]/{n}" for n in (
            "io_buffer", "cur_io_buffer_offset", "cur_io_buffer_len", "end_transfer_fn_idx",
            "req_nb_sectors")}  # fmt: skip


def test_round_trip_of_set_tray_10():
    ide = booted(get_release("1.0"))
    ide.set_tray(1, 0, open=False, locked=True)
    dst = round_trip(ide, rules_of("1.0"))
    assert dump(dst) == dump(ide) and dst.drive(1, 0).tray_locked


def test_compat_post_load_moves_retry_flags_to_the_bus():
    """A 0.14 stream (retry flags in field 2) read by 0.15: status and error_status split."""
    ide = booted(get_release("0.14"))
    ide.fail_dma_for_retry(0)
    rules = rules_of("0.15")
    dst = load("0.15", save(ide, rules), rules)
    assert dst.bmdma[0].status == 0x01 and dst.bus[0].error_status == 0x08


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), endpoint=st.sampled_from(ENDPOINTS))
def test_randomize_round_trips(seed, endpoint):
    name, machine = endpoint
    ide = booted(get_release(name))
    ide.randomize(random.Random(seed))
    assert dump(round_trip(ide, rules_of(name, machine))) == dump(ide)


@pytest.mark.parametrize("name", RELEASE_NAMES)
def test_randomize_is_deterministic_and_guest_reachable(name):
    for seed in range(30):
        a, b = booted(get_release(name)), booted(get_release(name))
        a.randomize(random.Random(seed))
        b.randomize(random.Random(seed))
        assert dump(a) == dump(b)
        for bm in a.bmdma:
            assert bm.cmd & ~0x09 == 0 and bm.unit in (0, 1)
        for bus in a.bus:
            assert bus.cmd not in (0x05,)
        assert a.dev.irq_state == [0, 0, 0, 0]


# -- validation -------------------------------------------------------------------------------------


def test_bad_pci_config_is_refused_with_its_path():
    rules = rules_of("0.14")
    data = bytearray(save(booted(get_release("0.14")), rules))
    data[4 + 0x0A] = 0x02  # class: storage -> network
    with pytest.raises(LoadError) as e:
        load("0.14", bytes(data), rules)
    assert (e.value.reason, e.value.field) == (Reason.INVALID_VALUE, "dev/config")
    data = bytearray(save(booted(get_release("0.14")), rules))
    data[263] = 3  # irq_state[0]
    with pytest.raises(LoadError) as e:
        load("0.14", bytes(data), rules)
    assert (e.value.reason, e.value.field) == (Reason.INVALID_VALUE, "dev/irq_state")


def _pio_index_offset(data: bytes) -> int:
    hdr = sub_header("ide_drive/pio_state")
    return data.index(hdr) + len(hdr) + 4 + 131076 + 8


@pytest.mark.parametrize("name", RELEASE_NAMES)
def test_pio_end_function_index_beyond_the_table_is_refused(name):
    rules = wire_rules_for(3, get_release(name).peek)
    ide = booted(get_release(name))
    ide.start_pio_read(0, 0)
    data = bytearray(save(ide, rules))
    at = _pio_index_offset(bytes(data))
    assert data[at] == 0  # ide_sector_read
    data[at] = 7
    with pytest.raises(LoadError) as e:
        load(name, bytes(data), rules)
    assert e.value.reason is Reason.INVALID_VALUE
    assert e.value.field == "bus[0]/ifs[0]/end_transfer_fn_idx"
    data[at] = 6  # one past the table: ">" lets it through up to genstats, 1.0's ">=" not
    if name == "1.0":
        with pytest.raises(LoadError) as e:
            load(name, bytes(data), rules)
        assert "end_transfer_fn_idx 6 >= table size 6" in e.value.detail
    else:
        assert load(name, bytes(data), rules).drive(0, 0).end_transfer_func is None


def test_pio_pre_save_forces_unknown_end_function_to_2():
    ide = booted(get_release("0.15"))
    ide.start_pio_read(0, 0)
    ide.drive(0, 0).end_transfer_func = "ide_something_else"
    data = save(ide, rules_of("0.15"))
    assert data[_pio_index_offset(data)] == 2


def test_ide_post_load_masks_bmdma_unit():
    rules = rules_of("0.14")
    data = bytearray(save(booted(get_release("0.14")), rules))
    data[276 + 18] = 0x03  # bmdma[0].unit
    assert load("0.14", bytes(data), rules).bmdma[0].unit == 1


@pytest.mark.parametrize("version, size", [(0, 276 + 38), (1, 276 + 38 + 4), (2, 318), (3, 1454)])
def test_section_version_gates_bus_and_drives(version, size):
    rules = rules_of("0.14")
    data = save(booted(get_release("0.14")), rules)
    dst = booted(get_release("0.14"))
    r = StreamReader(data[:size])
    dst.sections()[0].load(r, version, rules)
    assert r.offset == size


def test_drive_post_load_derives_cdrom_changed_from_old_streams():
    r14 = get_release("0.14")
    ide = booted(r14)
    ide.drive(1, 0).sense_key, ide.drive(1, 0).asc = 6, 0x28
    w = StreamWriter()
    save_state(w, ide_drive_description(r14), ide.drive(1, 0), rules_of("0.14"))
    dst = booted(r14)
    r = StreamReader(w.getvalue()[:-1])  # a v2 drive has no cdrom_changed byte
    load_state(r, ide_drive_description(r14), dst.drive(1, 0), 2, rules_of("0.14"))
    assert r.at_eof() and dst.drive(1, 0).cdrom_changed == 1


# -- across releases and peek policies ---------------------------------------------------------------


def full_stream(ide: IDE, fmt: int) -> bytes:
    w = StreamWriter()
    saver = Saver(w, ide.sections(), fmt, ide.release.peek)
    saver.begin()
    saver.complete()
    return w.getvalue()


def load_full(name: str, data: bytes, fmt: int) -> IDE:
    r = get_release(name)
    dst = booted(r)
    load_stream(
        StreamReader(data), dst.sections(),
        HeaderPolicy(r.accepted_versions, fmt, r.format_per_machine), r.peek,
    )  # fmt: skip
    return dst


def test_014_misparses_015_bus_error_subsection():
    """0.14's ide_bus has no subsections, so it never peeks: 'ide_bus/error' is read as data."""
    src = booted(get_release("0.15"))
    src.fail_dma_for_retry(0)
    data = full_stream(src, 3)
    assert load_full("0.15", data, 3) is not None  # the 0.15 stream is fine for 0.15
    reference = booted(get_release("0.14"))
    reference.fail_dma_for_retry(0)
    try:
        dst = load_full("0.14", data, 3)
    except LoadError:
        return  # a misparse that ran into something unloadable
    assert dump(dst) != dump(reference)
    assert dst.bus[1].cmd == 0x05  # the subsection marker became bus 1's device control


def test_014_refuses_015_gesn_cleanly():
    """0.14's ide_drive defines pio_state, so it peeks and does not know gesn: -ENOENT."""
    src = booted(get_release("0.15"))
    src.raise_media_event(1, 0)
    rules = rules_of("0.14")
    with pytest.raises(LoadError) as e:
        load("0.14", save(src, rules), rules)
    assert e.value.reason is Reason.UNKNOWN_SUBSECTION
    assert e.value.field == "bus[1]/ifs[0]"
    assert "ide_drive/atapi/gesn_state" in e.value.detail


def sentinel_cause(err: LoadError, rules: WireRules) -> LoadError:
    """Format 4 reads the element's 0x06 before the child's result: a bad sentinel wraps it."""
    if rules.struct_sentinel:
        assert err.reason is Reason.BAD_SENTINEL
        assert isinstance(err.__cause__, LoadError)
        return err.__cause__
    return err


@pytest.mark.parametrize("machine", ["pc", "pc-0.14"])
def test_new_fails_on_two_sibling_subsections_of_a_drive(machine):
    ide = booted(get_release("new"))
    ide.raise_media_event(1, 0)
    ide.start_pio_read(1, 0)
    rules = rules_of("new", machine)
    data = save(ide, rules)
    assert b"ide_drive/pio_state" in data and b"ide_drive/atapi/gesn_state" in data
    with pytest.raises(LoadError) as e:
        load("new", data, rules)
    unknown = sentinel_cause(e.value, rules)
    assert unknown.reason is Reason.UNKNOWN_SUBSECTION
    assert "'ide_drive/atapi/gesn_state' after ide_drive/pio_state" in unknown.detail
    assert e.value.field == "bus[1]/ifs[0]"
    # The same state is fine where siblings are understood.
    for name in ("0.15", "1.0"):
        other = booted(get_release(name))
        other.raise_media_event(1, 0)
        other.start_pio_read(1, 0)
        assert dump(round_trip(other, rules_of(name))) == dump(other)


@pytest.mark.parametrize("machine", ["pc", "pc-0.14"])
def test_new_fails_on_bmdma_current_and_status(machine):
    ide = booted(get_release("new"))
    ide.set_dma_capable(0, 0x60)
    ide.start_dma(0, 0)
    rules = rules_of("new", machine)
    with pytest.raises(LoadError) as e:
        load("new", save(ide, rules), rules)
    assert sentinel_cause(e.value, rules).reason is Reason.UNKNOWN_SUBSECTION
    assert e.value.field == "bmdma[0]"


# Device control 0x05 right after an embedded struct: who mistakes it for a subsection.
COLLIDE = {
    # bus 0: the byte follows bmdma[1], whose description has subsections everywhere
    (0, "0.13", "pc"): False, (0, "0.14", "pc"): False, (0, "0.15", "pc"): False,
    (0, "new", "pc-0.14"): False, (0, "new", "pc"): True, (0, "1.0", "pc"): True,
    # bus 1: the byte follows bus[0]; 0.14's ide_bus has no subsections and never peeks
    (1, "0.13", "pc"): False, (1, "0.14", "pc"): True, (1, "0.15", "pc"): False,
    (1, "new", "pc-0.14"): False, (1, "new", "pc"): True, (1, "1.0", "pc"): True,
}  # fmt: skip


@pytest.mark.parametrize("bus, name, machine", sorted(COLLIDE))
def test_device_control_0x05_after_an_embedded_struct(bus, name, machine):
    ide = booted(get_release(name))
    ide.write_device_control(bus, 0x05)
    assert ide.bus[bus].cmd == 0x05
    assert all(d.status == 0x90 for d in ide.bus[bus].ifs)  # SRST edge
    rules = rules_of(name, machine)
    data = save(ide, rules)
    if COLLIDE[(bus, name, machine)]:
        assert dump(load(name, data, rules)) == dump(ide)
    else:
        with pytest.raises(LoadError) as e:
            load(name, data, rules)
        assert e.value.reason is Reason.UNKNOWN_SUBSECTION
        assert e.value.field == ("bmdma[1]" if bus == 0 else "bus[0]")


def test_device_control_reset_release_restores_signatures():
    ide = booted(get_release("0.15"))
    ide.write_device_control(1, 0x04)
    ide.write_device_control(1, 0x00)
    cd, empty = ide.drive(1, 0), ide.drive(1, 1)
    assert (cd.status, cd.lcyl, cd.hcyl) == (0x00, 0x14, 0xEB)
    assert (empty.status, empty.lcyl, empty.hcyl) == (0x50, 0xFF, 0xFF)


def test_all_releases_are_covered():
    assert set(RELEASE_NAMES) == set(RELEASES)
