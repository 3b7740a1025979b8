"""The whole machine: every release's round trip, stream formats, and the seed's findings."""

from __future__ import annotations

import io
import random

import pytest

from harness.emulator.errors import ConfigError, LoadError, Reason
from harness.emulator.guest import PROGRAMS, run_program
from harness.emulator.machine import Machine, compare_machines, parse_size
from harness.emulator.releases import RELEASES, get_release
from harness.emulator.vmstate import Tracer

RAM = "1M"
ENDPOINTS = [(r.name, m.name) for r in RELEASES.values() for m in r.machines]
NICS = ["e1000", "rtl8139", "none"]


def save(release: str, machine: str = "pc", program: str = "idle", seed: int = 0,
         nic: str = "e1000") -> tuple[Machine, bytes]:
    """A machine started with the program's media, in the program's state, and its stream."""
    m = Machine(release, machine, RAM, nic, PROGRAMS[program].media)
    p = run_program(m, program, seed)
    return m, m.save(passes=p.live_passes, workload=p.workload)


def load(release: str, machine: str, stream: bytes, src: Machine) -> tuple[Machine, object]:
    """The destination, started with the source's NIC and media."""
    return Machine.load(release, machine, stream, ram_size=RAM, nic=src.nic, media=src.media)


@pytest.mark.parametrize(("release", "machine"), ENDPOINTS)
@pytest.mark.parametrize("nic", NICS)
def test_every_endpoint_round_trips_idle_and_random(release: str, machine: str, nic: str) -> None:
    for program, seed in (("idle", 0), ("random", 1), ("random", 2), ("live-ram", 0)):
        src, stream = save(release, machine, program, seed, nic)
        dest, report = load(release, machine, stream, src)
        assert not report.half_loaded and report.not_loaded == []
        assert report.bytes_consumed == len(stream)
        # RHEL 6's load sets palette bytes 232-235 (the cirrus post_load on the wrapper)
        misplaced = get_release(release).variant("cirrus_vga.outer_post_load") != "none"
        assert [d.path for d in compare_machines(src, dest)] == (
            ["0000:00:02.0/cirrus_vga/cirrus_vga/vga/palette"] if misplaced else []
        ), (program, seed)


@pytest.mark.parametrize("release", [r for r in RELEASES if not r.startswith("rhel")])
def test_sections_are_a_real_pc_in_registration_order(release: str) -> None:
    """Live sections first (block, ram: START, PART, END), then one FULL per device in
    registration order; the section id is the position in that order."""
    m = Machine(release, "pc", RAM)
    names = [h.idstr for h in m.handlers()]
    assert names[:4] == ["timer", "slirp", "block", "ram"]
    assert names[-3:] == ["0000:00:01.1/ide", "i2c_bus", "0000:00:01.3/piix4_pm"]
    assert ("port92" in names) == (release != "0.13")
    pic, ioapic, piix3 = (names.index(n) for n in ("i8259", "ioapic", "0000:00:01.0/PIIX3"))
    assert (pic > piix3) == (release == "1.0") and ioapic == pic + 2
    tracer = Tracer()
    Machine.load(release, "pc", m.save(), ram_size=RAM, tracer=tracer)
    kinds = [m.value.split()[0] for m in tracer.marks if m.kind == "section"]
    assert kinds[:6] == ["START", "START", "PART", "PART", "END", "END"]
    assert set(kinds[6:]) == {"FULL"} and len(kinds[6:]) == len(names) - 2


@pytest.mark.parametrize("nic, slirp, device", [("e1000", True, "0000:00:03.0/e1000"),
                                                ("rtl8139", True, "0000:00:03.0/rtl8139"),
                                                ("none", False, None)])  # fmt: skip
def test_the_nic_option_mirrors_qemus_command_line(nic: str, slirp: bool, device: str | None):
    m = Machine("0.14", "pc", RAM, nic)
    names = [h.idstr for h in m.handlers()]
    assert ("slirp" in names) == slirp
    nics = [n for n in names if n.startswith("0000:00:03.0/")]
    assert nics == ([device] if device else [])
    roms = [b for b in m.ram.blocks if b.startswith("0000:00:03.0/")]
    assert roms == ([f"{device}.rom"] if device else [])


def test_ram_blocks_of_the_real_machine_in_each_releases_list_order() -> None:
    blocks = ["pc.ram", "pc.bios", "pc.rom", "vga.vram", "0000:00:02.0/cirrus_vga.rom",
              "0000:00:03.0/e1000.rom"]  # fmt: skip
    for release in ("0.14", "0.15", "new", "1.0"):
        assert list(Machine(release, "pc", RAM).ram.blocks) == blocks  # sorted by offset
    # 0.13's move-to-front list: newest first, the BIOS (looked up last) in front
    assert list(Machine("0.13", "pc", RAM).ram.blocks) == [
        "pc.bios", "0000:00:03.0/e1000.rom", "0000:00:02.0/cirrus_vga.rom", "vga.vram", "pc.rom",
        "pc.ram"]  # fmt: skip
    sizes = {b.idstr: len(b) for b in Machine("0.14", "pc", RAM).ram}
    assert sizes == {"pc.ram": 1 << 20, "pc.bios": 128 << 10, "pc.rom": 128 << 10,
                     "vga.vram": 8 << 20, "0000:00:02.0/cirrus_vga.rom": 64 << 10,
                     "0000:00:03.0/e1000.rom": 128 << 10}  # fmt: skip


def test_a_013_stream_loads_on_014_whose_port92_keeps_its_reset_state() -> None:
    src, stream = save("0.13", "pc")
    dest, report = load("0.14", "pc", stream, src)
    assert not report.half_loaded and report.not_loaded == ["port92/0"]


def test_genstats_floppy_flag_from_power_on_desyncs_0_15() -> None:
    """fidelity.md section 2: an idle genstats pc-0.14 stream carries fdrive/media_changed,
    which 0.15 (no fdc subsections) reads as data: "Unknown savevm section type 100"."""
    src, stream = save("new", "pc-0.14", nic="rtl8139")
    with pytest.raises(LoadError) as e:
        load("0.15", "pc", stream, src)
    assert e.value.reason is Reason.UNKNOWN_SECTION_TYPE and "0x64" in e.value.detail


def test_instance_ids_as_qemu_wrote_them_refuse_across_releases() -> None:
    """fidelity.md section 1: 0.15+ writes the i8254 as instance 0, which 0.14 does not
    know; 1.0 writes the i8259s as 0 and 1, which no older release knows."""
    src, stream = save("new", "pc-0.14")
    with pytest.raises(LoadError) as e:
        load("0.14", "pc", stream, src)
    assert (e.value.reason, e.value.section) == (Reason.UNKNOWN_SECTION, "i8254")
    assert "'i8254' 0" in e.value.detail
    src, stream = save("1.0", "pc-0.14")
    with pytest.raises(LoadError) as e:
        load("new", "pc-0.14", stream, src)
    assert (e.value.section, "'i8259' 0" in e.value.detail) == ("i8259", True)
    src, stream = save("0.15", "pc", nic="rtl8139")
    load("1.0", "pc-0.14", stream, src)  # the aliases read the legacy ids (0x20, 0xa0)
    src, stream = save("0.15", "pc")  # ... but 1.0's e1000 refuses the older status byte
    with pytest.raises(LoadError) as e:
        load("1.0", "pc-0.14", stream, src)
    assert (e.value.section, e.value.field) == ("0000:00:03.0/e1000", "dev/config")


def test_stream_starts_with_magic_and_the_machine_format() -> None:
    _, v3 = save("new", "pc-0.14")
    _, v4 = save("new", "pc")
    assert v3[:8] == bytes.fromhex("5145564d00000003")
    assert v4[:8] == bytes.fromhex("5145564d00000004")
    assert v3[-1] == v4[-1] == 0x00


def test_format_4_is_format_3_plus_one_sentinel_after_every_struct_element() -> None:
    """Removing the traced sentinels from a format-4 stream gives the format-3 stream of
    the same state: a 0x06 after every embedded element and nowhere else."""
    src, v3 = save("new", "pc-0.14", "random", 3)
    _, v4 = save("new", "pc", "random", 3)
    tracer = Tracer()
    load("new", "pc", v4, src)
    sentinels = [m.offset for m in tracer.marks if m.kind == "sentinel"]
    tracer = Tracer()
    Machine.load("new", "pc", v4, ram_size=RAM, media=src.media, tracer=tracer)
    sentinels = [m.offset for m in tracer.marks if m.kind == "sentinel"]
    elements = [m for m in tracer.marks if m.kind == "struct"]
    assert len(sentinels) == len(elements) > 68  # every embedded element of every device
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


def _pit_as(stream: bytes, instance: int) -> bytes:
    """``stream`` with its i8254 header's instance id changed (the one thing that makes
    0.14 refuse every newer stream before it reaches the IDE)."""
    at = stream.index(b"\x05i8254") + 6
    return stream[:at] + instance.to_bytes(4, "big") + stream[at + 4 :]


def test_pending_ide_bus_error_from_015_is_not_a_clean_load_on_014() -> None:
    """wire-format.md §4: 0.14's ide_bus defines no subsections, never peeks, and reads the
    ide_bus/error subsection as parent data (shown with the PIT's instance id patched to
    0.14's: unpatched, 0.14 refuses the stream at the i8254, before the IDE; a genstats
    stream fails even earlier, at the floppy flag it sends from power-on)."""
    src, stream = save("0.15", "pc", "ide-bus-error")
    stream = _pit_as(stream, 0x40)
    try:
        dest, report = load("0.14", "pc", stream, src)
    except LoadError as e:
        pytest.fail(f"expected a silent misparse, got a clean refusal: {e}")
    assert report.half_loaded or compare_machines(src, dest)
    assert report.bytes_unread > 0  # here the misread ends on a 0x00: half-loaded


def test_two_cpu_subsections_fail_on_the_second_under_always_peek() -> None:
    src, stream = save("new", "pc", "cpu-two-subsections")
    with pytest.raises(LoadError) as e:
        load("new", "pc", stream, src)
    assert e.value.reason is Reason.UNKNOWN_SUBSECTION
    assert "cpu/fpop_ip_dp" in e.value.detail and e.value.section == "cpu"
    # the same stream loads on a release whose subsection bodies never peek
    src, v3 = save("0.15", "pc", "cpu-two-subsections", nic="rtl8139")
    load("0.15", "pc", v3, src)
    load("1.0", "pc", v3, src)


def test_a_refused_stream_leaves_no_machine_and_names_where() -> None:
    src, stream = save("0.15", "pc", "atapi-media-event")
    with pytest.raises(LoadError) as e:
        load("0.14", "pc", _pit_as(stream, 0x40), src)
    err = e.value
    assert err.reason is Reason.UNKNOWN_SUBSECTION
    assert err.section == "0000:00:01.1/ide" and err.field == "bus[1]/ifs[0]"
    assert stream[err.offset] == 0x05


def test_load_streams_from_a_file_object() -> None:
    src, stream = save("0.15", "pc", "live-ram")
    dest, report = load("0.15", "pc", io.BufferedReader(io.BytesIO(stream)), src)
    assert compare_machines(src, dest) == []


def test_save_to_a_sink_equals_save_to_memory() -> None:
    media = PROGRAMS["random"].media
    m1, m2 = Machine("1.0", "pc", RAM, media=media), Machine("1.0", "pc", RAM, media=media)
    run_program(m1, "random", 5)
    run_program(m2, "random", 5)
    sink = io.BytesIO()
    m1.save(sink)
    assert sink.getvalue() == m2.save()


def test_ram_size_mismatch_is_refused_at_pc_ram() -> None:
    _, stream = save("0.14", "pc")
    with pytest.raises(LoadError) as e:
        Machine.load("0.14", "pc", stream, ram_size="2M")
    assert e.value.reason is Reason.RAM_SIZE_MISMATCH and e.value.section == "ram"
    assert e.value.field == "pc.ram"  # v4 checks each block's length, not the total


def test_a_stream_without_the_nic_loads_on_a_machine_with_one_but_not_the_reverse() -> None:
    src, stream = save("0.14", "pc", nic="none")
    load("0.14", "pc", stream, Machine("0.14", "pc", RAM, "e1000"))  # the ROM is not listed
    src, stream = save("0.14", "pc", nic="e1000")
    with pytest.raises(LoadError) as e:
        Machine.load("0.14", "pc", stream, ram_size=RAM, nic="none")
    assert e.value.reason is Reason.UNKNOWN_RAM_BLOCK  # "Unknown ramblock" (slirp is later)


def test_state_is_plain_data_keyed_by_section_and_path() -> None:
    m = Machine("0.15", "pc", RAM, "none")
    state = m.state()
    assert state["0000:00:01.1/ide"]["bus[1]/ifs[0]/mult_sectors"] == m["ide"].drive(1, 0).mult_sectors
    # keyed by the legacy id where there is one, so that releases compare
    assert {"i8259@0x20", "i8259@0xa0", "i8254@0x40", "mc146818rtc@0x70"} <= set(state)
    assert "i8259@0x20" in Machine("1.0", "pc", RAM).state()
    assert set(m.state_json()["ram"]) == {"pc.ram", "pc.bios", "pc.rom", "vga.vram",
                                          "0000:00:02.0/cirrus_vga.rom"}


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
    assert {r.name for r in RELEASES.values()} == {"0.13", "0.14", "0.15", "new", "1.0",
                                                   "rhel6.1", "rhel6.2"}
    new = RELEASES["new"]
    assert {m.name: m.stream_format for m in new.machines} == {"pc": 4, "pc-0.14": 3, "pc-0.13": 3}
    assert new.machine("pc-0.15").name == "pc-0.14" and new.machine("pc-1.0").name == "pc"
    assert RELEASES["0.15"].subsections - RELEASES["0.14"].subsections == {
        "ide_bus/error", "ide bmdma/status", "ide_drive/atapi/gesn_state", "cpu/fpop_ip_dp"
    }
    assert RELEASES["1.0"].subsections - RELEASES["new"].subsections == {
        "ide_drive/tray_state", "ps2kbd/ledstate", "cpu/msr_tscdeadline",
        "cpu/msr_ia32_misc_enable"}
    assert [m.name for m in RELEASES["1.0"].machines] == ["pc", "pc-0.14", "pc-0.13"]


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


def _int_fields(m: Machine) -> list[tuple[str, object, object]]:
    """(section, object, Int field) of every top-level plain integer a dump reads."""
    from harness.emulator.vmstate import Int

    out = []
    for _, section in m.device_sections():
        for f in section.desc.fields:
            if type(f) is Int and f.attr.isidentifier() and f.exists is None \
                    and f.version_id <= section.desc.version_id:
                out.append((section.idstr, section.obj, f))
    return out


@pytest.mark.parametrize("release", ["0.14", "0.15", "new", "1.0", "rhel6.2"])
def test_alike_machines_compare_by_walking_as_by_their_states(release: str) -> None:
    """``same_device_state`` (the walk a passing cell takes) agrees with comparing the two
    states: after a round trip, after any one integer field changes, between seeds, and
    between machines that are not alike (another NIC)."""
    from harness.emulator.machine import same_device_state

    src, stream = save(release, "pc", "random", 3)
    dest, _ = load(release, "pc", stream, src)
    assert same_device_state(src, dest) is (src.state() == dest.state())
    fields = _int_fields(dest)
    assert len(fields) > 40
    changed = 0
    unchanged = dest.state()
    for idstr, obj, f in fields:
        before = f.get(obj)
        f.set(obj, (before + 1) % (1 << (8 * f.size)))
        try:
            now = dest.state()
            assert same_device_state(src, dest) is (src.state() == now), (idstr, f.name)
            if now != unchanged:  # (a pre_save may recompute the field)
                changed += 1
                paths = [d.path for d in compare_machines(src, dest)]
                assert any(p.endswith("/" + f.path) for p in paths), (idstr, f.name, paths)
        finally:
            f.set(obj, before)
    assert changed > 40
    other, _ = save(release, "pc", "random", 4)
    assert not same_device_state(src, other)
    rtl, _ = save(release, "pc", "random", 3, nic="rtl8139")
    assert not same_device_state(src, rtl)
    assert compare_machines(src, rtl) == compare_machines(src, rtl, states=(src.state(),
                                                                            rtl.state()))


def test_a_save_copies_the_guests_pages_before_the_guest_runs_again() -> None:
    """Machine.save keeps the pages it sends as views until the workload runs between
    passes: the stream is byte for byte the one a writer that copies every piece makes."""
    from harness.emulator.savevm import Saver
    from harness.emulator.stream import StreamWriter

    def workload(m: Machine, i: int) -> None:  # rewrites pages the first pass sent
        m.ram["pc.ram"].fill(0, 64 * 4096, 0x11 + i)
        m.ram["pc.ram"].write(70 * 4096 + 5, bytes(range(200)))

    def machine() -> Machine:
        m = Machine("0.14", "pc", RAM, "e1000", PROGRAMS["random"].media)
        run_program(m, "random", 5)
        m.ram["pc.ram"].write(0, random.Random(5).randbytes(80 * 4096))  # sent as they are
        return m

    kept = machine().save(passes=3, workload=workload)
    m, w = machine(), StreamWriter()
    saver = Saver(w, m.handlers(), m.stream_format, m.release.peek)
    saver.begin()
    for i in range(3):
        workload(m, i)
        saver.iterate()
    m.running = False
    saver.complete()
    assert kept == w.getvalue()
