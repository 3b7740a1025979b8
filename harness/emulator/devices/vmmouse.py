"""The VMware mouse behind the vmport (vmsd "vmmouse" v0, min 0; instance 0).

0.13 and 0.14 register it from vmmouse_init with ``vmstate_register(NULL, 0, ...)``;
from 0.15 on it is an ISA qdev device with the same vmsd, whose first instance is also
0. Right after "pckbd" in the stream (pc_basic_device_init creates it after the i8042).

Fields: ``queue_size`` (INT32_EQUAL: a stream whose queue is not 1024 entries is
refused), the 1024-word event queue, ``nb_queue``, ``status`` (0 once the guest driver
has read the id, 0xffff while disabled), ``absolute``: 4105 bytes, flat, in every
modelled release and format.

>>> from harness.emulator.releases import get_release
>>> sum(f.size for f in vmmouse_description(get_release("0.14")).fields)
4105
"""

from __future__ import annotations

import functools
import random

from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Description, IntArray, IntEqual, u8, u16
from . import Device

__all__ = ["QUEUE_SIZE", "VMMouse", "vmmouse_description"]

QUEUE_SIZE = 1024
STATUS_DISABLED = 0xFFFF
VERSION = 0x3442554A  # what VMMOUSE_READ_ID queues
EVENT_WORDS = 4  # buttons/flags, x, y, z
LEFT, RIGHT, MIDDLE = 0x20, 0x10, 0x08


@functools.cache
def vmmouse_description(release: Release) -> Description:
    """ "vmmouse" v0 (min 0): 4105 bytes."""
    return Description(
        "vmmouse", 0,
        [IntEqual("queue_size", 4, True), IntArray("queue", 4, QUEUE_SIZE), u16("nb_queue"),
         u16("status"), u8("absolute")],
    )  # fmt: skip


class VMMouse(Device):
    """The vmmouse as vmmouse_init (or its qdev reset) leaves it: disabled, queue empty."""

    key = "vmmouse"

    def reset(self) -> None:
        self.queue_size = QUEUE_SIZE
        self.queue = [0] * QUEUE_SIZE
        self.nb_queue = 0
        self.status = STATUS_DISABLED
        self.absolute = 0

    def sections(self) -> list[DeviceSection]:
        return [DeviceSection("vmmouse", 0, vmmouse_description(self.release), self)]

    def randomize(self, rng: random.Random) -> None:
        """A guest driver that read the id (which enables the mouse and queues the
        version) and chose relative or absolute mode, with mouse events queued (the host
        stops queueing within four words of the end); or one that disabled it again.
        Words the driver has read stay behind the queue's end."""
        self.reset()
        self.absolute = rng.randrange(2)
        self.queue = [rng.randrange(1 << 32) for _ in range(QUEUE_SIZE)]
        if rng.randrange(4) == 0:
            self.status = STATUS_DISABLED
            return
        self.status = 0
        events = rng.choice((0, 1, rng.randrange(QUEUE_SIZE // EVENT_WORDS)))
        words = []
        if rng.randrange(2):
            words.append(VERSION)
        for _ in range(events):
            buttons = rng.choice((0, LEFT, RIGHT, MIDDLE, LEFT | RIGHT))
            if self.absolute:
                x, y = rng.randrange(0x8000), rng.randrange(0x8000)
            else:
                x, y = rng.randrange(-64, 64) & 0xFFFFFFFF, rng.randrange(-64, 64) & 0xFFFFFFFF
            words += [buttons, x, y, rng.randrange(-3, 4) & 0xFFFFFFFF]
        words = words[:QUEUE_SIZE]
        self.queue[: len(words)] = words
        self.nb_queue = len(words)
