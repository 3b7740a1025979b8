"""The i8042 keyboard controller (isa-i8042, qdev vmsd "pckbd" v3, min 3; instance 0)
with the PS/2 keyboard and mouse it creates (:mod:`.ps2`).

Its sections, in registration order: "ps2kbd" and "ps2mouse" (registered by its init
function), then "pckbd" (registered by qdev once init returns). The "pckbd" section's only
field is the embedded inner "pckbd" v3 (min 3): ``write_cmd``, ``status``, ``mode``,
``pending``, 4 bytes (format 4: 5). The output port (A20, reset) is not migrated. The
same in every modelled release.

RHEL 6's qemu-kvm creates the vmmouse inside the controller's init (variant
``i8042.vmmouse`` = "inside"): its "vmmouse" section comes between "ps2mouse" and
"pckbd", and the machine has no separate vmmouse. Upstream ("separate") registers the
vmmouse on its own, after the controller.

``pending`` says which PS/2 device has bytes waiting (bit 0 keyboard, bit 1 mouse); the
status register's output-buffer-full bits follow it (kbd_update_irq).

>>> from harness.emulator.releases import get_release
>>> [(s.idstr, s.instance_id) for s in I8042(get_release("1.0")).sections()]
[('ps2kbd', 0), ('ps2mouse', 0), ('pckbd', 0)]
"""

from __future__ import annotations

import functools
import random

from ..errors import ConfigError
from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Description, Struct, u8
from . import Device, State, ps2
from .ps2 import keyboard, mouse, ps2kbd_description, ps2mouse_description
from .vmmouse import VMMouse

__all__ = ["I8042", "isa_kbd_description", "kbd_description"]

STAT_OBF, STAT_SELFTEST, STAT_CMD, STAT_UNLOCKED, STAT_MOUSE_OBF = 0x01, 0x04, 0x08, 0x10, 0x20
MODE_KBD_INT, MODE_MOUSE_INT, MODE_DISABLE_KBD, MODE_KCC = 0x01, 0x02, 0x10, 0x40
PENDING_KBD, PENDING_AUX = 1, 2
OUT_RESET, OUT_A20 = 0x01, 0x02
KBD_REPLY_ACK = 0xFA
# Controller commands that wait for a data byte (write mode, output buffer, aux output
# buffer, output port, write to mouse): the only non-zero values of ``write_cmd``.
_DATA_COMMANDS = (0x60, 0xD1, 0xD2, 0xD3, 0xD4)


@functools.cache
def kbd_description(release: Release) -> Description:
    """The inner "pckbd" v3 (min 3): 4 bytes."""
    return Description(
        "pckbd", 3, [u8("write_cmd"), u8("status"), u8("mode"), u8("pending")],
        minimum_version_id=3,
    )  # fmt: skip


@functools.cache
def isa_kbd_description(release: Release) -> Description:
    """The section: isa "pckbd" v3 (min 3) embedding the controller."""
    return Description("pckbd", 3, [Struct("kbd", kbd_description(release))], minimum_version_id=3)


def _status(base: int, pending: int) -> int:
    """kbd_update_irq: output buffer full while anything is pending, the mouse flag when
    only the mouse is (keyboard data wins)."""
    status = base & ~(STAT_OBF | STAT_MOUSE_OBF)
    if pending:
        status |= STAT_OBF
        if pending == PENDING_AUX:
            status |= STAT_MOUSE_OBF
    return status


class I8042(Device):
    """The controller (``kbd``, QEMU's KBDState) and its two PS/2 devices."""

    key = "pckbd"

    def reset(self) -> None:
        self.kbd = State(
            write_cmd=0,
            status=STAT_CMD | STAT_UNLOCKED,
            mode=MODE_KBD_INT | MODE_MOUSE_INT,
            pending=0,  # never reset: no byte has been queued since power-on
            outport=OUT_RESET | OUT_A20,
        )
        self.ps2kbd = keyboard()
        self.ps2mouse = mouse()
        self.vmmouse = VMMouse(self.release, self.board) if self._vmmouse_inside() else None

    def _vmmouse_inside(self) -> bool:
        variant = self.release.variant("i8042.vmmouse")
        if variant not in ("inside", "separate"):
            raise ConfigError(f"i8042.vmmouse variant {variant!r} is not modelled")
        return variant == "inside"

    def sections(self) -> list[DeviceSection]:
        r = self.release
        return [
            DeviceSection("ps2kbd", 0, ps2kbd_description(r), self.ps2kbd),
            DeviceSection("ps2mouse", 0, ps2mouse_description(r), self.ps2mouse),
            *(self.vmmouse.sections() if self.vmmouse is not None else ()),
            DeviceSection("pckbd", 0, isa_kbd_description(r), self),
        ]

    def set_leds(self, leds: int) -> None:
        """The guest sends SET LEDS and the LED byte, reading each acknowledgement (what
        SeaBIOS does after a lock key). 1.0 then sends "ps2kbd/ledstate"."""
        for _ in range(2):
            ps2.queue(self.ps2kbd, bytes([KBD_REPLY_ACK]))
            ps2.read(self.ps2kbd)
        self.ps2kbd.common.write_cmd = ps2.NO_COMMAND
        self.ps2kbd.ledstate = leds & 0xFF
        self._update_pending()

    def _update_pending(self) -> None:
        k = self.kbd
        k.pending = (PENDING_KBD if self.ps2kbd.common.queue.count else 0) | (
            PENDING_AUX if self.ps2mouse.common.queue.count else 0
        )
        k.status = _status(k.status, k.pending)

    def randomize(self, rng: random.Random) -> None:
        """A controller and devices a guest driver has programmed: a mode byte (the
        keyboard's translation follows its KCC bit), perhaps a controller command waiting
        for its data byte, the self-test flag, and queues with bytes waiting; ``pending``
        and the status flags follow the queues."""
        self.reset()
        k = self.kbd
        k.mode = rng.choice((MODE_KBD_INT | MODE_MOUSE_INT, 0x61, 0x47, 0x65, rng.randrange(256)))
        k.write_cmd = rng.choice((0, 0, 0, *_DATA_COMMANDS))
        k.status = (
            (STAT_CMD if rng.randrange(2) else 0)
            | STAT_UNLOCKED
            | (STAT_SELFTEST if rng.randrange(4) else 0)
        )
        ps2.randomize_keyboard(self.ps2kbd, rng, translate=int(bool(k.mode & MODE_KCC)))
        ps2.randomize_mouse(self.ps2mouse, rng)
        self._update_pending()
        if self.vmmouse is not None:
            self.vmmouse.randomize(rng)
