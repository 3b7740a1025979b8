"""The scenario catalogue: every scenario builds, deterministically, and the collide
scenarios really put the bytes they name where they name them."""

from __future__ import annotations

import contextlib

import pytest

from harness.emulator.devices import MEDIA
from harness.emulator.errors import LoadError
from harness.emulator.guest import PROGRAMS
from harness.emulator.machine import Machine
from harness.emulator.releases import RELEASES
from harness.emulator.vmstate import Tracer
from harness.scenarios import SCENARIOS, apply_scenario

from .devtools import SAVE_DIES

RAM = "1M"


def stream_of(release: str, machine: str, scenario: str, seed: int = 0, nic: str = "rtl8139"
              ) -> bytes:
    m = Machine(release, machine, RAM, nic, SCENARIOS[scenario].media)
    s = apply_scenario(m, scenario, seed)
    return m.save(passes=s.live_passes, workload=s.workload)


def load(release: str, machine: str, stream: bytes, nic: str = "rtl8139", **kw):
    return Machine.load(release, machine, stream, ram_size=RAM, nic=nic, media=MEDIA, **kw)


def writer_marks(release: str, machine: str, stream: bytes) -> dict[str, object]:
    """Where each field is, as ``release`` reads ``stream``: up to where it gives up (a
    reader of another release may refuse a later section: 1.0 reads past 0.14's
    piix4_pm), which is after everything these tests look at."""
    tracer = Tracer()
    with contextlib.suppress(LoadError):
        load(release, machine, stream, nic="rtl8139", tracer=tracer)
    return {m.path: m for m in tracer.marks if m.kind in ("field", "struct")}


def test_the_catalogue_matches_releases_md() -> None:
    assert [s for s in SCENARIOS if not s.startswith("found-")] == [
        "idle", "ide-pio", "ide-dma", "ide-bus-error", "ide-dma-capable",
        "atapi-media-event", "atapi-two-subsections", "fdc-media-changed", "cpu-async-pf", "cpu-fpu-ip",
        "cpu-two-subsections", "cpu-misc-enable", "nic-hotplug", "collide-0x05", "collide-eof",
        "live-ram", "random", "serial-configured", "pit-half-written",
    ]
    assert set(PROGRAMS) == set(SCENARIOS)


def test_scenarios_are_started_with_the_images_they_need() -> None:
    media = {name: s.media for name, s in SCENARIOS.items() if s.media}
    assert media == {
        "ide-pio": {"hda"}, "ide-dma": {"hda"}, "ide-bus-error": {"hda"},
        "ide-dma-capable": {"hda"}, "fdc-media-changed": {"fda"}, "collide-eof": {"hda"},
        "random": {"hda", "fda", "cdrom"},
    }
    with pytest.raises(ValueError, match="needs a machine started with the media hda"):
        apply_scenario(Machine("0.14", "pc", RAM), "ide-pio")
    kvm = {name for name, s in SCENARIOS.items() if s.kvm_only}
    assert kvm == {"cpu-async-pf", "cpu-fpu-ip", "cpu-two-subsections"}  # model-only


def test_idle_is_the_power_on_state_of_a_stopped_guest() -> None:
    m = Machine("0.14", "pc", RAM)
    apply_scenario(m, "idle")
    assert m.state() == Machine("0.14", "pc", RAM).state()
    assert not any(d.identify_set for bus in m["ide"].bus for d in bus.ifs)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_scenario_is_deterministic_on_every_release_that_can_express_it(scenario: str) -> None:
    for release in RELEASES.values():
        if not SCENARIOS[scenario].expressible_on(release) or (release.name, scenario) in SAVE_DIES:
            continue
        machine = release.machines[0].name
        assert stream_of(release.name, machine, scenario, 1) == stream_of(
            release.name, machine, scenario, 1
        )


def test_scenarios_declare_what_a_release_cannot_express() -> None:
    assert not SCENARIOS["atapi-media-event"].expressible_on(RELEASES["0.14"])
    assert SCENARIOS["atapi-media-event"].expressible_on(RELEASES["0.15"])
    assert SCENARIOS["cpu-async-pf"].missing_on(RELEASES["0.13"]) == {"cpu/async_pf_msr"}
    assert SCENARIOS["ide-bus-error"].expressible_on(RELEASES["0.14"])  # retry flags inline


@pytest.mark.parametrize(("release", "machine"), [("0.14", "pc"), ("new", "pc-0.14"), ("new", "pc")])
def test_collide_0x05_puts_0x05_right_after_embedded_structs(release: str, machine: str) -> None:
    stream = stream_of(release, machine, "collide-0x05")
    # Decode as the writer meant it: the writer's own release may misread its stream, but
    # 1.0's prefix heuristic reads these format-3 bytes right (format 4 is unambiguous).
    fmt4 = stream[7] == 4
    marks = writer_marks("new" if fmt4 else "1.0", "pc", stream)
    # bus[0].cmd is the parent's next field after the embedded bmdma[1] ...
    cmd = marks["0000:00:01.1/ide/bus[0]/cmd"]
    assert stream[cmd.offset] == 0x05
    # ... right after bmdma[1] (whose element ends with the 0x06 in format 4)
    assert marks["0000:00:01.1/ide/bmdma[1]"].end == marks["0000:00:01.1/ide/bus[0]"].offset
    assert (stream[cmd.offset - 1] == 0x06) == fmt4
    # xmm_regs[1] begins with 0x05 right after the embedded xmm_regs[0]
    xmm1 = marks["cpu/xmm_regs[1]"]
    assert stream[xmm1.offset] == 0x05
    assert marks["cpu/xmm_regs[0]"].end == xmm1.offset
    # no subsection is sent there: the "length" byte is bus[0].unit (0 or 1)
    assert stream[cmd.offset + 1] in (0, 1)


def test_collide_eof_puts_0x00_on_the_misreader_s_type_byte_position() -> None:
    stream = stream_of("0.15", "pc", "collide-eof")
    # 0.14 refuses the whole stream at its i8254 (instance 0): the misread shows from the
    # IDE section on, where 0.14 would read it.
    tracer = Tracer()
    load("0.15", "pc", stream, tracer=tracer)
    ide_at = next(m.offset for m in tracer.marks if m.value == "FULL 0000:00:01.1/ide")
    _, report = load("0.14", "pc", stream[:8] + stream[ide_at:])
    eof_at = ide_at - 8 + report.bytes_consumed - 1
    assert stream[eof_at] == 0x00 and report.bytes_unread > 0
    # For the writer that byte is inside a field of the ide section, not a type byte.
    type_bytes = {m.offset for m in tracer.marks if m.kind in ("section", "eof")}
    assert eof_at not in type_bytes
    inside = [m for m in tracer.marks if m.kind == "field" and m.offset <= eof_at < m.end]
    assert inside and inside[0].path.startswith("0000:00:01.1/ide/")


def test_collide_eof_carries_the_bus_error_on_every_release_that_can_express_it() -> None:
    for release in ("0.15", "new", "1.0"):
        m = Machine(release, "pc", RAM, media={"hda"})
        apply_scenario(m, "collide-eof")
        assert m["ide"].retry_flags(0) != 0


def test_live_ram_sends_several_passes() -> None:
    stream = stream_of("0.14", "pc", "live-ram")
    tracer = Tracer()
    load("0.14", "pc", stream, tracer=tracer)
    kinds = [m.value.split()[0] for m in tracer.marks if m.kind == "section" and "ram" in m.value]
    assert kinds == ["START", "PART", "PART", "PART", "END"]
