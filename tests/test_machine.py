"""The whole machine: every release's round trip, stream formats, and the seed's findings."""

from __future__ import annotations

import io
import random

import pytest

from harness.emulator.errors import ConfigError, LoadError, Reason
from harness.emulator.guest import run_program
from harness.emulator.machine import Machine, compare_machines, parse_size
from harness.emulator.releases import RELEASES
from harness.emulator.vmstate import Tracer

RAM = "1M"
ENDPOINTS = [(r.name, m.name) for r in RELEASES.values() for m in r.machines]


def save(release: str, machine: str = "pc", program: str = "idle", seed: int = 0) -> tuple[Machine, bytes]:
    m = Machine(release, machine, RAM)
    p = run_program(m, program, seed)
    return m, m.save(passes=p.live_passes, workload=p.workload)


@pytest.mark.parametrize(("release", "machine"), ENDPOINTS)
def test_every_endpoint_round_trips_idle_and_random(release: str, machine: str) -> None:
    for program, seed in (("idle", 0), ("random", 1), ("random", 2), ("live-ram", 0)):
        src, stream = save(release, machine, program, seed)
        dest, report = Machine.load(release, machine, stream, ram_size=RAM)
        assert not report.half_loaded
        assert report.bytes_consumed == len(stream)
        assert compare_machines(src, dest) == [], (program, seed)


def test_stream_starts_with_magic_and_the_machine_format() -> None:
    _, v3 = save("new", "pc-0.14")
    _, v4 = save("new", "pc")
    assert v3[:8] == bytes.fromhex("5145564d00000003")
    assert v4[:8] == bytes.fromhex("5145564d00000004")
    assert v3[-1] == v4[-1] == 0x00


def test_format_4_is_format_3_plus_one_sentinel_after_every_struct_element() -> None:
    """Removing the traced sentinels from a format-4 stream gives the format-3 stream of
    the same state: a 0x06 after every embedded element and nowhere else."""
    _, v3 = save("new", "pc-0.14", "random", 3)
    _, v4 = save("new", "pc", "random", 3)
    tracer = Tracer()
    Machine.load("new", "pc", v4, ram_size=RAM, tracer=tracer)
    sentinels = [m.offset for m in tracer.marks if m.kind == "sentinel"]
    elements = [m for m in tracer.marks if m.kind == "struct"]
    # cpu 6+4+16+8+16, ide 1+2+2+4, fdc 1+2, pit 3, serial 1, rtl8139 2
    assert len(sentinels) == len(elements) == 68
    assert all(v4[o] == 0x06 for o in sentinels)
    stripped = bytearray(v4)
    for o in reversed(sentinels):
        del stripped[o]
    stripped[7] = 3
    assert bytes(stripped) == v3


def test_014_refuses_format_4() -> None:
    _, v4 = save("new", "pc")
    with pytest.raises(LoadError) as e:
        Machine.load("0.14", "pc", v4, ram_size=RAM)
    assert e.value.reason is Reason.UNSUPPORTED_VERSION and e.value.offset == 4


def test_new_pc_refuses_a_format_3_stream() -> None:
    _, v3 = save("0.14", "pc")
    with pytest.raises(LoadError) as e:
        Machine.load("new", "pc", v3, ram_size=RAM)
    assert e.value.reason is Reason.FORMAT_MISMATCH
    assert "mismatching savevm format v3" in str(e.value)


def test_obsolete_version_2_is_reported_first() -> None:
    _, v3 = save("new", "pc-0.14")
    with pytest.raises(LoadError) as e:
        Machine.load("new", "pc", v3[:7] + b"\x02" + v3[8:], ram_size=RAM)
    assert e.value.reason is Reason.OBSOLETE_VERSION


def test_pending_ide_bus_error_from_new_is_not_a_clean_load_on_014() -> None:
    """wire-format.md §4: 0.14's ide_bus defines no subsections, never peeks, and reads the
    ide_bus/error subsection as parent data."""
    src, stream = save("new", "pc-0.14", "ide-bus-error")
    try:
        dest, report = Machine.load("0.14", "pc", stream, ram_size=RAM)
    except LoadError as e:
        pytest.fail(f"expected a silent misparse, got a clean refusal: {e}")
    assert report.half_loaded or compare_machines(src, dest)
    assert report.bytes_unread > 0  # here the misread ends on a 0x00: half-loaded


def test_two_cpu_subsections_fail_on_the_second_under_always_peek() -> None:
    _, stream = save("new", "pc", "cpu-two-subsections")
    with pytest.raises(LoadError) as e:
        Machine.load("new", "pc", stream, ram_size=RAM)
    assert e.value.reason is Reason.UNKNOWN_SUBSECTION
    assert "cpu/fpop_ip_dp" in e.value.detail and e.value.section == "cpu"
    # the same stream loads on a release whose subsection bodies never peek
    _, v3 = save("0.15", "pc", "cpu-two-subsections")
    Machine.load("0.15", "pc", v3, ram_size=RAM)
    Machine.load("1.0", "pc", v3, ram_size=RAM)


def test_a_refused_stream_leaves_no_machine_and_names_where() -> None:
    _, stream = save("new", "pc-0.14", "atapi-media-event")
    with pytest.raises(LoadError) as e:
        Machine.load("0.14", "pc", stream, ram_size=RAM)
    err = e.value
    assert err.reason is Reason.UNKNOWN_SUBSECTION
    assert err.section == "0000:00:01.1/ide" and err.field == "bus[1]/ifs[0]"
    assert stream[err.offset] == 0x05


def test_load_streams_from_a_file_object() -> None:
    src, stream = save("0.15", "pc", "live-ram")
    dest, report = Machine.load("0.15", "pc", io.BufferedReader(io.BytesIO(stream)), ram_size=RAM)
    assert compare_machines(src, dest) == []


def test_save_to_a_sink_equals_save_to_memory() -> None:
    m1, m2 = Machine("1.0", "pc", RAM), Machine("1.0", "pc", RAM)
    run_program(m1, "random", 5)
    run_program(m2, "random", 5)
    sink = io.BytesIO()
    m1.save(sink)
    assert sink.getvalue() == m2.save()


def test_ram_size_mismatch_is_refused() -> None:
    _, stream = save("0.14", "pc")
    with pytest.raises(LoadError) as e:
        Machine.load("0.14", "pc", stream, ram_size="2M")
    assert e.value.reason is Reason.RAM_SIZE_MISMATCH and e.value.section == "ram"


def test_state_is_plain_data_keyed_by_section_and_path() -> None:
    m = Machine("0.15", "pc", RAM)
    state = m.state()
    assert state["0000:00:01.1/ide"]["bus[1]/ifs[0]/mult_sectors"] == m["ide"].drive(1, 0).mult_sectors
    assert "i8259@0x20" in state and "i8259@0xa0" in state
    assert set(m.state_json()["ram"]) == {"pc.ram", "pc.bios", "pc.rom", "vga.vram"}


def test_compare_reports_field_and_ram_differences() -> None:
    a, b = Machine("0.14", "pc", RAM), Machine("0.14", "pc", RAM)
    b["serial"].state.scr = a["serial"].state.scr ^ 0xFF
    b.ram["pc.ram"].write(4096 * 3, b"x")
    paths = [d.path for d in compare_machines(a, b)]
    assert "serial@0x3f8/state/scr" in paths and "ram/pc.ram" in paths


def test_randomize_is_deterministic_per_seed() -> None:
    assert save("new", "pc", "random", 7)[1] == save("new", "pc", "random", 7)[1]
    assert save("new", "pc", "random", 7)[1] != save("new", "pc", "random", 8)[1]


@pytest.mark.parametrize("text", ["0", "4095", "1X", "-4K", ""])
def test_bad_ram_sizes(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_size(text)


def test_parse_size() -> None:
    assert parse_size("8M") == 8 << 20 and parse_size("1G") == 1 << 30 and parse_size("64KiB") == 65536


def test_unknown_release_and_machine() -> None:
    with pytest.raises(ConfigError, match="unknown release"):
        Machine("9.9")
    with pytest.raises(ConfigError, match="has no machine type"):
        Machine("0.14", "pc-1.0")


def test_release_differences_are_data() -> None:
    assert {r.name for r in RELEASES.values()} == {"0.13", "0.14", "0.15", "new", "1.0"}
    new = RELEASES["new"]
    assert {m.name: m.stream_format for m in new.machines} == {"pc": 4, "pc-0.14": 3, "pc-0.13": 3}
    assert new.machine("pc-0.15").name == "pc-0.14" and new.machine("pc-1.0").name == "pc"
    assert RELEASES["0.15"].subsections - RELEASES["0.14"].subsections == {
        "ide_bus/error", "ide bmdma/status", "ide_drive/atapi/gesn_state", "cpu/fpop_ip_dp"
    }
    assert RELEASES["1.0"].subsections - RELEASES["new"].subsections == {"ide_drive/tray_state"}


def test_live_migration_resends_dirtied_pages() -> None:
    src = Machine("0.14", "pc", RAM)
    rng = random.Random(3)
    writes: list[int] = []

    def workload(m: Machine, i: int) -> None:
        page = rng.randrange(256)
        writes.append(page)
        m.ram["pc.ram"].write(page * 4096, bytes([i + 1]) * 4096)

    stream = src.save(passes=3, workload=workload)
    dest, _ = Machine.load("0.14", "pc", stream, ram_size=RAM)
    assert compare_machines(src, dest) == []
    assert len(writes) == 3
