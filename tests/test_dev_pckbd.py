"""The i8042 and its PS/2 devices: "ps2kbd" v3 (1.0: subsection ps2kbd/ledstate),
"ps2mouse" v2, "pckbd" v3, held against the real builds' payloads."""

from __future__ import annotations

import doctest
import random
import struct

import pytest

from harness.emulator.devices import pckbd, ps2
from harness.emulator.devices.pckbd import I8042, isa_kbd_description, kbd_description
from harness.emulator.devices.ps2 import (
    ps2_common_description,
    ps2kbd_description,
    ps2mouse_description,
)
from harness.emulator.errors import LoadError, Reason
from harness.emulator.releases import Release, get_release
from harness.emulator.vmstate import dump_state

from . import devtools
from .devtools import RUN_IDS, RUNS, stream
from .realqemu import (
    ENDPOINT_IDS,
    ENDPOINTS,
    RealBuilds,
    historic,  # noqa: F401 - the fixture
    model_payloads,
    resave,
    section_payload,
)

KEYS = [("ps2kbd", 0), ("ps2mouse", 0), ("pckbd", 0)]
LEDSTATE_HEADER = b"\x05\x0fps2kbd/ledstate\x00\x00\x00\x03"
QUEUE = bytes(range(256))


def load(release: Release, fmt: int, data: bytes) -> I8042:
    return devtools.load(I8042, release, fmt, data)


def state(dev: I8042) -> list[dict]:
    return [dump_state(s.desc, s.obj) for s in dev.sections()]


def distinct(dev: I8042) -> I8042:
    for n, d in enumerate((dev.ps2kbd, dev.ps2mouse)):
        d.common.write_cmd = 0xED + n
        q = d.common.queue
        q.rptr, q.wptr, q.count, q.data = 1 + n, 4 + n, 3, QUEUE
    k = dev.ps2kbd
    k.scan_enabled, k.translate, k.scancode_set = 1, 1, 2
    m = dev.ps2mouse
    m.mouse_status, m.mouse_resolution, m.mouse_sample_rate = 0x20, 3, 100
    m.mouse_wrap, m.mouse_type, m.mouse_detect_state = 1, 4, 2
    m.mouse_dx, m.mouse_dy, m.mouse_dz, m.mouse_buttons = -5, 7, -1, 0x11
    dev.kbd.write_cmd, dev.kbd.status, dev.kbd.mode, dev.kbd.pending = 0xD4, 0x1D, 0x61, 1
    return dev


def common_bytes(n: int) -> bytes:
    return struct.pack(">iiii", 0xED + n, 1 + n, 4 + n, 3) + QUEUE


def distinct_bytes(fmt: int) -> dict:
    end = b"\x06" if fmt == 4 else b""
    return {
        ("ps2kbd", 0): common_bytes(0) + end + struct.pack(">iii", 1, 1, 2),
        ("ps2mouse", 0): common_bytes(1) + end + bytes([0x20, 3, 100, 1, 4, 2])
        + struct.pack(">iiiB", -5, 7, -1, 0x11),
        ("pckbd", 0): bytes([0xD4, 0x1D, 0x61, 1]) + end,
    }  # fmt: skip


def test_descriptions():
    r = get_release("1.0")
    common = ps2_common_description(r)
    assert (common.name, common.version_id, common.minimum_version_id) == ("PS2 Common State", 3, 2)
    assert sum(f.size for f in common.fields) == 272
    kbd = ps2kbd_description(r)
    assert (kbd.name, kbd.version_id, kbd.minimum_version_id) == ("ps2kbd", 3, 2)
    assert kbd.fields[0].desc is common and kbd.fields[-1].version_id == 3
    (sub,) = kbd.subsections
    assert (sub.desc.name, sub.desc.version_id, sub.desc.minimum_version_id) == (
        "ps2kbd/ledstate", 3, 2)  # fmt: skip
    mouse = ps2mouse_description(r)
    assert (mouse.name, mouse.version_id, mouse.minimum_version_id) == ("ps2mouse", 2, 2)
    outer, inner = isa_kbd_description(r), kbd_description(r)
    assert (outer.name, outer.version_id, outer.minimum_version_id) == ("pckbd", 3, 3)
    assert outer.fields[0].desc is inner and (inner.name, inner.version_id) == ("pckbd", 3)
    sections = I8042(r).sections()
    assert [(s.idstr, s.instance_id, s.version_id) for s in sections] == [
        ("ps2kbd", 0, 3), ("ps2mouse", 0, 2), ("pckbd", 0, 3)]  # fmt: skip


@pytest.mark.parametrize("name", ["0.13", "0.14", "0.15", "new"])
def test_ledstate_is_a_1_0_subsection(name):
    assert ps2kbd_description(get_release(name)).subsections == ()


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
def test_golden_bytes(name, fmt):
    """284, 291 and 4 bytes; format 4 adds 0x06 after each embedded struct (the PS/2
    common state, the inner controller)."""
    data = model_payloads(distinct(I8042(get_release(name))), fmt)
    assert data == distinct_bytes(fmt)
    sizes = {3: [284, 291, 4], 4: [285, 292, 5]}[fmt]
    assert [len(data[k]) for k in KEYS] == sizes


def test_power_on_state():
    """The machine reset after init: no command pending, empty queues, the keyboard with
    scanning, translation and scan-code set all 0, the controller's command-mode and
    unlocked status flags and both interrupts enabled."""
    dev = I8042(get_release("0.15"))
    k, m = dev.ps2kbd, dev.ps2mouse
    assert (k.common.write_cmd, k.common.queue.count, k.scan_enabled, k.translate,
            k.scancode_set, k.ledstate) == (-1, 0, 0, 0, 0, 0)  # fmt: skip
    assert m.common.write_cmd == -1 and m.mouse_status == m.mouse_sample_rate == 0
    assert (dev.kbd.write_cmd, dev.kbd.status, dev.kbd.mode, dev.kbd.pending) == (0, 0x18, 3, 0)


def test_set_leds_sends_the_subsection_in_1_0():
    dev = I8042(get_release("1.0"))
    assert len(model_payloads(dev, 3)[("ps2kbd", 0)]) == 284
    dev.set_leds(0x02)
    after = model_payloads(dev, 3)[("ps2kbd", 0)]
    assert len(after) == 284 + 25 and after[284:] == LEDSTATE_HEADER + struct.pack(">i", 2)
    q = dev.ps2kbd.common.queue
    assert (q.rptr, q.wptr, q.count, q.data[:2]) == (2, 2, 0, b"\xfa\xfa")  # both ACKs read
    assert dev.kbd.pending == 0


@pytest.mark.parametrize("name", ["0.13", "0.14", "0.15", "new"])
def test_set_leds_changes_no_saved_led_state_before_1_0(name):
    dev = I8042(get_release(name))
    dev.set_leds(0x07)
    assert len(model_payloads(dev, 3)[("ps2kbd", 0)]) == 284


@pytest.mark.parametrize(
    "name,reason",
    [("0.13", Reason.UNKNOWN_SUBSECTION), ("0.14", Reason.UNKNOWN_SECTION_TYPE),
     ("0.15", Reason.UNKNOWN_SECTION_TYPE), ("new", Reason.UNKNOWN_SUBSECTION)],
)  # fmt: skip
def test_older_releases_refuse_1_0_led_state(name, reason):
    """Always-peek loaders look the name up and miss it; peek-if-defined loaders never
    look (ps2kbd defines no subsection there) and read 0x05 as a section type."""
    src = I8042(get_release("1.0"))
    src.set_leds(0x04)
    with pytest.raises(LoadError) as info:
        load(get_release(name), 3, stream(src, 3))
    assert info.value.reason is reason


def test_a_v2_keyboard_section_selects_scan_code_set_2():
    r = get_release("0.14")
    v3 = model_payloads(I8042(r), 3)[("ps2kbd", 0)]
    dev = I8042(r)
    resave(dev, 3, ("ps2kbd", 0), v3[:-4], version=2)
    assert dev.ps2kbd.scancode_set == 2


def test_read_returns_the_last_byte_when_the_queue_is_empty():
    kbd = ps2.keyboard()
    ps2.queue(kbd, b"\x55\xaa")
    assert [ps2.read(kbd) for _ in range(3)] == [0x55, 0xAA, 0xAA]
    assert kbd.common.queue.count == 0


@pytest.mark.parametrize("seed", range(20))
def test_randomize_stays_within_what_a_driver_reaches(seed):
    dev = I8042(get_release("1.0"))
    dev.randomize(random.Random(seed))
    for d in (dev.ps2kbd, dev.ps2mouse):
        q = d.common.queue
        assert 0 <= q.count <= 256 and q.wptr == (q.rptr + q.count) % 256
    assert dev.ps2kbd.translate == bool(dev.kbd.mode & 0x40)
    assert dev.kbd.pending == (dev.ps2kbd.common.queue.count > 0) | (
        (dev.ps2mouse.common.queue.count > 0) << 1)  # fmt: skip
    assert bool(dev.kbd.status & 1) == bool(dev.kbd.pending)
    assert dev.ps2mouse.mouse_status & ~0x70 == 0 and dev.ps2mouse.mouse_type in (0, 3, 4)


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("seed", [None, *range(6)])
def test_round_trip(name, fmt, seed):
    r = get_release(name)
    src = I8042(r)
    if seed is not None:
        src.randomize(random.Random(seed))
    dst = load(r, fmt, stream(src, fmt))
    assert state(dst) == state(src)
    if r.has(ps2.LEDSTATE):
        assert dst.ps2kbd.ledstate == src.ps2kbd.ledstate


def test_module_doctests():
    assert doctest.testmod(ps2).failed == 0
    assert doctest.testmod(pckbd).failed == 0


# -- against the real builds -----------------------------------------------------------


class TestRealBuilds(RealBuilds):
    device = I8042

    def randomized(self, release: str) -> I8042:
        dev = super().randomized(release)
        dev.ps2kbd.ledstate = 6  # num and caps lock: 1.0 sends the subsection
        return dev


@pytest.mark.parametrize("release,machine,fmt", ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_booted_guest_with_num_lock_has_led_state_only_in_1_0(historic, release, machine, fmt):  # noqa: F811
    """After ``sendkey num_lock`` the BIOS of 0.15, genstats and 1.0 sets the num lock LED;
    only 1.0 saves it (ledstate = 2)."""
    data = section_payload(historic.booted(release, machine), "ps2kbd", 0)
    dev = I8042(get_release(release))
    resave(dev, fmt, ("ps2kbd", 0), data)
    if release == "1.0":
        assert data.endswith(LEDSTATE_HEADER + struct.pack(">i", 2))
        assert dev.ps2kbd.ledstate == 2
    else:
        assert len(data) == (284 if fmt == 3 else 285)
