"""The virtual clocks ("timer" v2, min 1; instance 0): the offsets that keep guest time.

vmstate_timers (qemu-timer.c up to 0.15, cpus.c in 1.0) is registered first of all, by
configure_icount, the same in every modelled release: ``cpu_ticks_offset`` (the TSC's
offset from the host's), a ``dummy`` that once held the tick rate, and (v2)
``cpu_clock_offset``. Both offsets are taken from the host clock when the guest stops, so
a guest that has run saves host-dependent values; a guest started with ``-S`` that never
ran saves zeros, which is the model's power-on state.
"""

from __future__ import annotations

import functools
import random

from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Description, i64
from . import Device

__all__ = ["Timers", "timers_description"]


@functools.cache
def timers_description(release: Release) -> Description:
    """ "timer" v2 (min 1): 24 bytes; a v1 section lacks ``cpu_clock_offset``."""
    return Description(
        "timer", 2,
        [i64("cpu_ticks_offset"), i64("dummy"), i64("cpu_clock_offset", version_id=2)],
        minimum_version_id=1,
    )  # fmt: skip


class Timers(Device):
    """The guest clocks' offsets: zero until the guest has run."""

    key = "timer"

    def reset(self) -> None:
        self.cpu_ticks_offset = 0
        self.dummy = 0
        self.cpu_clock_offset = 0

    def sections(self) -> list[DeviceSection]:
        return [DeviceSection("timer", 0, timers_description(self.release), self)]

    def randomize(self, rng: random.Random) -> None:
        """The offsets of a guest that ran and stopped: host clock readings (ns, ticks)."""
        self.cpu_ticks_offset = rng.randrange(1 << 40, 1 << 50)
        self.cpu_clock_offset = rng.randrange(1 << 40, 1 << 50)
