"""RHEL 6's qemu-kvm (releases ``rhel6.1`` and ``rhel6.2``) as rows of data, held against
the real builds (../shared/qemu-historic, ../shared/spec/rhel6.md).

* the rows: machine types, loaders, subsections, the device variants (the idle streams of
  every RHEL endpoint against the real ones, and the analyzer on those, are in
  tests/test_conformance.py with the upstream releases');
* the loaders: the model accepts, refuses or half-loads the real streams exactly where
  the real programs do, RHEL <-> RHEL and RHEL <-> upstream (the half-load at the same
  offset as the real destination stopped reading);
* 6.1's gesn_state without an end marker: the model's 6.1 dies saving a pending media
  event and loading one, and the real build dies where its binary's data says it does.
"""

from __future__ import annotations

import random
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from harness.emulator.devices.cirrus_vga import IDSTR, CirrusVGA
from harness.emulator.errors import LoadCrash, LoadError, SaveCrash
from harness.emulator.machine import Machine
from harness.emulator.releases import RELEASES, get_release
from harness.emulator.vmstate import PeekPolicy
from harness.qemu.historic import find_build
from harness.scenarios import SCENARIOS, apply_scenario

from .devtools import SAVE_DIES
from .realqemu import _argv, full_sections, model_payloads, resave, section_payload, splice
from .realqemu import historic as historic  # noqa: F401 - the fixture

RAM = 64 << 20


def test_the_rows_say_what_rhel6_md_says() -> None:
    r61, r62 = RELEASES["rhel6.1"], RELEASES["rhel6.2"]
    assert r61.peek is PeekPolicy.PEEK_IF_DEFINED and r62.peek is PeekPolicy.PREFIX_MATCH
    assert [m.name for m in r61.machines] == ["rhel6.1.0", "rhel6.0.0", "rhel5.5.0",
                                              "rhel5.4.4", "rhel5.4.0"]
    assert [m.name for m in r62.machines][:2] == ["rhel6.2.0", "rhel6.1.0"]
    assert r61.machine("pc").name == "rhel6.1.0" and r62.machine("pc").name == "rhel6.2.0"
    assert r62.subsections - r61.subsections == {
        "ide_drive/tray_state", "ide_bus/error", "ide bmdma/status", "ps2kbd/ledstate", "xsave"}
    assert "cpu/async_pf_msr" not in r62.subsections | r61.subsections
    assert (r61.default_nic, r61.vram_size) == ("rtl8139", 16 << 20)


def _sections(data: bytes) -> list[tuple[str, int, int, int]]:
    return [(s.idstr, s.instance_id, s.version_id, len(s.payload)) for s in full_sections(data)]


def test_the_machine_is_rhel6_mds_stream() -> None:
    """rhel6.md's section list (-M rhel6.x.0 -m 64, default devices)."""
    m = Machine("rhel6.2", "rhel6.2.0", RAM)
    got = [(idstr, inst, ver) for idstr, inst, ver, _ in _sections(m.save())]
    assert got == [
        ("slirp", 0, 3), ("timer", 0, 2), ("cpu_common", 0, 1), ("cpu", 0, 12), ("apic", 0, 3),
        ("fw_cfg", 0, 2), ("i8259", 0x20, 1), ("i8259", 0xA0, 1), ("PCIBUS", 0, 1),
        ("0000:00:00.0/I440FX", 0, 3), ("0000:00:01.0/PIIX3", 0, 3),
        ("0000:00:02.0/cirrus_vga", 0, 2), ("mc146818rtc", 0x70, 2), ("ioapic", 0, 2),
        ("i8254", 0x40, 2), ("serial", 0x3F8, 3), ("0000:00:03.0/rtl8139", 0, 4),
        ("0000:00:01.1/ide", 0, 3), ("ps2kbd", 0, 3), ("ps2mouse", 0, 2), ("vmmouse", 0, 0),
        ("pckbd", 0, 3), ("dma", 0, 1), ("dma", 1, 1), ("fdc", 0x3F0, 2), ("piix4_pm", 0, 2),
        ("i2c_bus", 0, 1),
    ]  # fmt: skip
    assert m.ram.layout() == [
        ("pc.bios", 128 << 10), ("0000:00:03.0/rtl8139.rom", 64 << 10),
        ("0000:00:02.0/cirrus_vga.rom", 64 << 10), ("vga.vram", 16 << 20),
        ("pc.rom", 128 << 10), ("pc.ram", RAM)]  # fmt: skip


def test_the_cpu_is_v11_plus_two_msrs_and_each_side_misreads_the_other() -> None:
    sizes = {r: dict((s[0], s[3]) for s in _sections(Machine(r, "pc", RAM).save()))["cpu"]
             for r in ("rhel6.1", "rhel6.2", "0.14")}
    assert sizes == {"rhel6.1": 1545, "rhel6.2": 1545, "0.14": 1817}


def test_6_1_sends_media_changed_from_power_on_and_6_2_never() -> None:
    fdc = {r: dict((s[0], s[3]) for s in _sections(Machine(r, "pc", RAM).save()))["fdc"]
           for r in ("rhel6.1", "rhel6.2")}
    assert fdc == {"rhel6.1": 545 + 27, "rhel6.2": 545}


def _model_outcome(release: str, machine: str, stream: bytes, vga: str) -> str:
    try:
        _, report = Machine.load(release, machine, stream, ram_size=RAM, nic="rtl8139", vga=vga)
    except LoadError as e:
        return f"refused: {e.section}"
    if report.half_loaded:
        return f"half-loaded at {report.bytes_consumed - 1}"
    return "loaded"


# (writer, reader) -> what the real reader does with the writer's real idle stream, with
# each side's default devices ("cirrus") or the RAM blocks matched ("none": -vga none and
# the rtl8139 with user networking on both). Measured with the matrix (matrix/rhel6.toml).
LOADS = [
    (("rhel6.1", "rhel6.1.0"), ("rhel6.2", "rhel6.2.0"), "cirrus", "loaded"),
    (("rhel6.2", "rhel6.2.0"), ("rhel6.1", "rhel6.1.0"), "cirrus", "loaded"),
    (("rhel6.2", "rhel6.0.0"), ("rhel6.1", "rhel6.0.0"), "cirrus", "loaded"),
    (("rhel6.1", "rhel6.1.0"), ("rhel6.1", "rhel5.4.0"), "cirrus", "refused: ram"),
    (("rhel6.1", "rhel6.1.0"), ("0.14", "pc"), "cirrus", "refused: ram"),
    (("0.13", "pc"), ("rhel6.2", "rhel6.2.0"), "cirrus", "refused: ram"),
    (("rhel6.1", "rhel6.1.0"), ("0.13", "pc"), "none", "half-loaded at 285616"),
    (("rhel6.2", "rhel6.2.0"), ("0.14", "pc"), "none", "half-loaded at 285616"),
    (("0.13", "pc"), ("rhel6.1", "rhel6.1.0"), "none", "half-loaded at 305819"),
    (("0.14", "pc"), ("rhel6.2", "rhel6.2.0"), "none", "half-loaded at 318104"),
]


@pytest.mark.parametrize(("writer", "reader", "vga", "outcome"), LOADS,
                         ids=[f"{w[0]}/{w[1]}->{r[0]}/{r[1]}[vga={v}]" for w, r, v, _ in LOADS])
def test_the_model_loads_real_streams_as_the_real_programs_do(historic, writer, reader, vga,
                                                              outcome):
    nic = "rtl8139"
    real = historic.idle(*writer, nic, vga)
    assert _model_outcome(*reader, real, vga) == outcome
    refusal = historic.accepts(*reader, real, nic, vga)
    if outcome.startswith("refused"):
        assert refusal is not None  # the real reader refused it too (its words, no offset)
    else:
        assert refusal is None  # loaded, or "success" after a 0x00 read as EOF


@pytest.mark.parametrize(("release", "machine"), [("rhel6.1", "rhel6.1.0"),
                                                  ("rhel6.2", "rhel6.2.0")])
def test_a_real_load_sets_the_same_palette_bytes_as_the_models(historic, release, machine):
    """The model's randomized cirrus state in a real idle stream: the stopped real
    destination saves back what the model's own load keeps (palette bytes 232-235 0xff)."""
    dev = CirrusVGA(get_release(release))
    dev.randomize(random.Random(2))
    ours = model_payloads(dev, 3)
    key = (IDSTR, 0)
    back = historic.through(release, machine, splice(historic.idle(release, machine,
                                                                   "rtl8139"), ours))
    expected = resave(CirrusVGA(get_release(release)), 3, key, ours[key])
    assert expected != ours[key]
    assert section_payload(back, *key) == expected



# -- 6.1's gesn_state without an end marker ------------------------------------------------

GESN = b"\x1aide_drive/atapi/gesn_state\x00\x00\x00\x01"


def _media_event(release: str, machine: str, **kw: object) -> Machine:
    m = Machine(release, machine, RAM, media=["cdrom"], **kw)
    apply_scenario(m, "atapi-media-event")
    return m


def test_6_1_dies_saving_a_pending_media_event_and_6_2_saves_it() -> None:
    with pytest.raises(SaveCrash, match=r"ide/bus\[1\]/ifs\[0\]/past_end_of_list: .*SIGSEGV"):
        _media_event("rhel6.1", "rhel6.1.0").save()
    stream = _media_event("rhel6.2", "rhel6.2.0").save()
    _, report = Machine.load("rhel6.2", "rhel6.2.0", stream, ram_size=RAM, media=["cdrom"])
    assert not report.half_loaded


def test_6_1_dies_loading_6_2s_media_event_after_reading_its_two_flags() -> None:
    stream = _media_event("rhel6.2", "rhel6.2.0").save()
    flags = stream.index(GESN) + len(GESN)
    with pytest.raises(LoadCrash, match="SIGBUS") as info:
        Machine.load("rhel6.1", "rhel6.1.0", stream, ram_size=RAM, media=["cdrom"])
    assert (info.value.offset, info.value.section, info.value.field) == (
        flags + 2, "0000:00:01.1/ide", "bus[1]/ifs[0]/past_end_of_list")


def test_a_save_dies_on_exactly_the_scenarios_listed_as_dying() -> None:
    """Every release on its default machine type in every scenario it expresses: only 6.1
    with a media event pending dies. Its random states poll the event the guest was sent."""
    dies = set()
    for release in RELEASES.values():
        for name, scenario in SCENARIOS.items():
            if not scenario.expressible_on(release):
                continue
            m = Machine(release, release.machines[0].name, 1 << 20, media=scenario.media)
            sc = apply_scenario(m, name, 1)
            try:
                m.save(passes=sc.live_passes, workload=sc.workload)
            except SaveCrash:
                dies.add((release.name, name))
    assert dies == SAVE_DIES


# The real 6.1 walks on into its binary's data: entry 3 past the list is the ide-drive
# device info, whose bytes at the field's version_id hold a function's address. The load
# takes the entry (and dies) when the low half of that address, as an int, is <= 1.
# hw/hw.h on x86-64: VMStateDescription.fields at 64, 96-byte VMStateField, version_id at 80.
_FIELDS_AT, _FIELD_SIZE, _VERSION_AT, _R_X86_64_RELATIVE = 64, 96, 80, 8


def _walk_version_address(binary: Path) -> int:
    """The link-time value the load reads as the version_id of the fourth entry of
    gesn_state's field list, from the binary's sections and relocations."""
    data = binary.read_bytes()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, shstrndx = struct.unpack_from("<HH", data, 0x3C)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + 64 * i) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    sections = {data[names_at + h[0]:data.index(b"\0", names_at + h[0])].decode(): h
                for h in headers}
    _, _, _, ro_addr, ro_off, ro_size = sections[".rodata"]
    name = ro_addr + data.index(b"ide_drive/atapi/gesn_state\0", ro_off, ro_off + ro_size) - ro_off
    _, _, _, _, rela_off, rela_size = sections[".rela.dyn"]
    relocated = {}
    for at in range(rela_off, rela_off + rela_size, 24):
        where, info, addend = struct.unpack_from("<QQq", data, at)
        if info & 0xFFFFFFFF == _R_X86_64_RELATIVE:
            relocated[where] = addend
    desc = next(where for where, value in relocated.items() if value == name)
    fields = relocated[desc + _FIELDS_AT]
    return relocated[fields + 3 * _FIELD_SIZE + _VERSION_AT]


def _load_address(pid: int, binary: Path) -> int:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.endswith(str(binary.resolve())):
            return int(line.split("-")[0], 16)
    raise AssertionError(f"{binary} is not mapped in process {pid}")


def _start_real(workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = [*_argv("rhel6.1", "rhel6.1.0", workdir / "qmp.sock", stopped=True, nic="rtl8139"),
            "-monitor", f"unix:{workdir / 'mon.sock'},server,nowait", *extra]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_path(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, f"no {path.name}"
        time.sleep(0.01)


def _hmp(workdir: Path, line: str) -> bool:
    """One human-monitor command; False when the process died under it."""
    with socket.socket(socket.AF_UNIX) as mon:
        mon.settimeout(20)
        mon.connect(str(workdir / "mon.sock"))
        mon.sendall(line.encode() + b"\n")
        reply = b""
        while reply.count(b"(qemu) ") < 2:  # the banner's prompt, then the command's
            chunk = mon.recv(4096)
            if not chunk:
                return False
            reply += chunk
        return True


def _send(path: Path, data: bytes) -> None:
    """Send ``data`` into a real destination's ``-incoming unix:`` socket."""
    with socket.socket(socket.AF_UNIX) as conn:
        deadline = time.monotonic() + 20
        while True:  # the socket file appears at bind(), a moment before listen()
            try:
                conn.connect(str(path))
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        try:
            conn.sendall(data)
        except OSError:
            pass  # it died reading


def test_the_real_6_1_dies_saving_a_pending_media_event(historic, tmp_path) -> None:
    (tmp_path / "first.iso").write_bytes(bytes(1 << 20))
    (tmp_path / "second.iso").write_bytes(bytes(1 << 20))
    proc = _start_real(tmp_path, "-drive", f"file={tmp_path / 'first.iso'},if=ide,index=2,"
                       "media=cdrom")
    try:
        _wait_path(tmp_path / "mon.sock", proc)
        assert _hmp(tmp_path, f"change ide1-cd0 {tmp_path / 'second.iso'}")
        assert not _hmp(tmp_path, f"migrate exec:cat>{tmp_path / 'out.bin'}")
        assert proc.wait(20) == -signal.SIGSEGV
    finally:
        proc.kill()
        proc.wait()


def test_the_real_6_1_dies_loading_a_media_event_where_its_load_address_says(historic,
                                                                          tmp_path) -> None:
    """Measured over 30 runs: 16 died (SIGBUS), 14 loaded; this prediction held in all."""
    binary = find_build("rhel6.1").binary
    version_at = _walk_version_address(binary)
    stream = _media_event("rhel6.2", "rhel6.2.0", host_time_ns=time.time_ns()).save()
    (tmp_path / "medium.iso").write_bytes(bytes(1 << 20))
    for run in range(4):
        workdir = tmp_path / f"run{run}"
        workdir.mkdir()
        incoming = workdir / "in.sock"
        proc = _start_real(workdir, "-drive", f"file={tmp_path / 'medium.iso'},if=ide,"
                           "index=2,media=cdrom", "-incoming", f"unix:{incoming}")
        try:
            _wait_path(incoming, proc)
            version = struct.unpack("<i", struct.pack(
                "<I", (_load_address(proc.pid, binary) + version_at) & 0xFFFFFFFF))[0]
            _send(incoming, stream)
            if version <= 1:
                assert proc.wait(20) == -signal.SIGBUS, run
            else:
                _wait_path(workdir / "mon.sock", proc)
                assert _hmp(workdir, "info status"), run  # it answers: the load returned
        finally:
            proc.kill()
            proc.wait()
