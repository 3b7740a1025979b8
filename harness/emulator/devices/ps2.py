"""The PS/2 keyboard and mouse behind the i8042 (vmsds "ps2kbd" v3 and "ps2mouse" v2).

ps2_kbd_init and ps2_mouse_init register them with ``vmstate_register(NULL, 0, ...)``
from inside the i8042's init, so both come before "pckbd" in the stream (see
:mod:`.pckbd`, which owns them). Each embeds a "PS2 Common State" v3 (min 2): the
pending command and the 256-byte output queue, 272 bytes (format 4 ends it with 0x06).

* "ps2kbd" v3, min 2: common, ``scan_enabled``, ``translate``, ``scancode_set`` (v3; a
  v2 section leaves it to post_load, which sets set 2): 284 bytes. 1.0 adds the
  subsection "ps2kbd/ledstate" v3 (``ledstate``, i32), sent once the guest has set any
  keyboard LED (``ledstate != 0``); older releases keep the LED state only on the host
  side and cannot load it.
* "ps2mouse" v2, min 2: common, six u8 registers, the accumulated deltas, the buttons:
  291 bytes.

Power-on: the init functions leave the queues zeroed, then the machine reset clears the
pending command to -1 and the keyboard's scan, translation and scan-code-set state to 0.
The queue bytes are never cleared: what a guest read stays in the buffer.

>>> from harness.emulator.releases import get_release
>>> [s.desc.name for s in ps2kbd_description(get_release("1.0")).subsections]
['ps2kbd/ledstate']
>>> ps2kbd_description(get_release("0.15")).subsections
()
"""

from __future__ import annotations

import functools
import random

from ..releases import Release
from ..vmstate import Buffer, Description, Struct, Subsection, i32, u8
from . import State

__all__ = [
    "LEDSTATE",
    "NO_COMMAND",
    "QUEUE_SIZE",
    "keyboard",
    "mouse",
    "ps2_common_description",
    "ps2kbd_description",
    "ps2mouse_description",
    "queue",
    "random_queue",
    "randomize_keyboard",
    "randomize_mouse",
    "read",
]

QUEUE_SIZE = 256
LEDSTATE = "ps2kbd/ledstate"
NO_COMMAND = -1

# Commands that wait for a data byte (the only values ``write_cmd`` holds besides -1).
KBD_CMD_SET_LEDS, KBD_CMD_SCANCODE, KBD_CMD_SET_RATE = 0xED, 0xF0, 0xF3
AUX_SET_RES, AUX_SET_SAMPLE = 0xE8, 0xF3
MOUSE_STATUS_REMOTE, MOUSE_STATUS_ENABLED, MOUSE_STATUS_SCALE21 = 0x40, 0x20, 0x10

_MOUSE_BYTES = ("mouse_status", "mouse_resolution", "mouse_sample_rate", "mouse_wrap",
                "mouse_type", "mouse_detect_state")  # fmt: skip


@functools.cache
def ps2_common_description(release: Release) -> Description:
    """ "PS2 Common State" v3 (min 2): 272 bytes."""
    return Description(
        "PS2 Common State", 3,
        [i32("write_cmd"), i32("queue.rptr"), i32("queue.wptr"), i32("queue.count"),
         Buffer("queue.data", QUEUE_SIZE)],
        minimum_version_id=2,
    )  # fmt: skip


def _kbd_post_load(s: State, version: int) -> None:
    if version == 2:
        s.scancode_set = 2


def _ledstate_needed(s: State) -> bool:
    return s.ledstate != 0  # 0 is the power-on state


@functools.cache
def ps2kbd_description(release: Release) -> Description:
    """ "ps2kbd" v3 (min 2), with 1.0's ledstate subsection where the release has it."""
    subsections: tuple[Subsection, ...] = ()
    if release.has(LEDSTATE):
        ledstate = Description(LEDSTATE, 3, [i32("ledstate")], minimum_version_id=2)
        subsections = (Subsection(ledstate, _ledstate_needed),)
    return Description(
        "ps2kbd", 3,
        [Struct("common", ps2_common_description(release)), i32("scan_enabled"),
         i32("translate"), i32("scancode_set", version_id=3)],
        minimum_version_id=2, post_load=_kbd_post_load, subsections=subsections,
    )  # fmt: skip


@functools.cache
def ps2mouse_description(release: Release) -> Description:
    """ "ps2mouse" v2 (min 2): 291 bytes."""
    return Description(
        "ps2mouse", 2,
        [Struct("common", ps2_common_description(release)),
         *(u8(name) for name in _MOUSE_BYTES),
         i32("mouse_dx"), i32("mouse_dy"), i32("mouse_dz"), u8("mouse_buttons")],
        minimum_version_id=2,
    )  # fmt: skip


def _common() -> State:
    """After ps2_common_reset: no command pending, an empty queue."""
    return State(
        write_cmd=NO_COMMAND,
        queue=State(rptr=0, wptr=0, count=0, data=bytes(QUEUE_SIZE)),
    )


def keyboard() -> State:
    """The keyboard at power-on (ps2_kbd_reset; ``ledstate`` is zeroed by allocation)."""
    return State(common=_common(), scan_enabled=0, translate=0, scancode_set=0, ledstate=0)


def mouse() -> State:
    """The mouse at power-on (ps2_mouse_reset)."""
    return State(
        common=_common(), **{name: 0 for name in _MOUSE_BYTES},
        mouse_dx=0, mouse_dy=0, mouse_dz=0, mouse_buttons=0,
    )  # fmt: skip


def queue(device: State, data: bytes) -> None:
    """The device answers: bytes go into its queue (ps2_queue; a full queue drops them)."""
    q = device.common.queue
    buf = bytearray(q.data)
    for b in data:
        if q.count >= QUEUE_SIZE:
            break
        buf[q.wptr] = b
        q.wptr = (q.wptr + 1) % QUEUE_SIZE
        q.count += 1
    q.data = bytes(buf)


def read(device: State) -> int:
    """The guest reads the data port (ps2_read_data): the next queued byte, or the last
    one again when the queue is empty."""
    q = device.common.queue
    if q.count == 0:
        return q.data[(q.rptr - 1) % QUEUE_SIZE]
    value = q.data[q.rptr]
    q.rptr = (q.rptr + 1) % QUEUE_SIZE
    q.count -= 1
    return value


def random_queue(device: State, rng: random.Random) -> None:
    """A queue a guest reaches: old bytes in the buffer, read and write pointers anywhere,
    ``count`` the bytes between them (a full queue has them equal)."""
    q = device.common.queue
    q.data = rng.randbytes(QUEUE_SIZE)
    q.rptr = rng.randrange(QUEUE_SIZE)
    q.count = rng.choice((0, 0, rng.randrange(1, 8), rng.randrange(QUEUE_SIZE + 1)))
    q.wptr = (q.rptr + q.count) % QUEUE_SIZE


def randomize_keyboard(kbd: State, rng: random.Random, translate: int) -> None:
    """Commands a driver sends: scanning on or off, a scan-code set, LEDs, a command
    waiting for its data byte. ``translate`` follows the controller's KCC mode bit."""
    random_queue(kbd, rng)
    kbd.common.write_cmd = rng.choice((NO_COMMAND, NO_COMMAND, KBD_CMD_SET_LEDS,
                                       KBD_CMD_SCANCODE, KBD_CMD_SET_RATE))  # fmt: skip
    kbd.scan_enabled = rng.randrange(2)
    kbd.translate = translate
    kbd.scancode_set = rng.choice((0, 1, 2, 2, 3))
    kbd.ledstate = rng.choice((0, rng.randrange(8)))  # scroll 1, num 2, caps 4


def randomize_mouse(m: State, rng: random.Random) -> None:
    """A mouse a driver has set up (stream or remote mode, scaling, resolution, sample
    rate, the IntelliMouse detection sequence) with deltas and buttons accumulated."""
    random_queue(m, rng)
    m.common.write_cmd = rng.choice((NO_COMMAND, NO_COMMAND, AUX_SET_RES, AUX_SET_SAMPLE))
    m.mouse_status = rng.randrange(8) << 4
    m.mouse_resolution = rng.choice((0, 1, 2, 3, rng.randrange(256)))
    m.mouse_sample_rate = rng.choice((10, 20, 40, 60, 80, 100, 200, rng.randrange(256)))
    m.mouse_wrap = rng.randrange(2)
    m.mouse_type = rng.choice((0, 3, 4))
    m.mouse_detect_state = rng.randrange(4)
    m.mouse_dx, m.mouse_dy = rng.randrange(-300, 300), rng.randrange(-300, 300)
    m.mouse_dz = rng.randrange(-20, 20)
    m.mouse_buttons = rng.randrange(32)
