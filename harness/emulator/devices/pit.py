"""The i8254 programmable interval timer ("i8254" v2, min 2, min_old 1).

Instance ids differ by release (variant ``pit.ids``): 0.13 and 0.14 register it with its
I/O base, 0x40, and accept nothing else; from 0.15 on it is the qdev ISA device "isa-pit",
written as instance 0 with 0x40 a load-only alias. So 0.15 and later read older streams'
PIT, and 0.13/0.14 refuse every newer one ("Unknown savevm section or instance 'i8254' 0").

qemu-kvm (RHEL 6, variant ``pit.flags`` = "u32") puts a be32 ``flags`` word (its HPET
legacy-mode bit) before the channels, in the v2 fields and in its old loader alike: 108
bytes instead of 104, read by an upstream destination as a misaligned PIT.

Three "pit channel" v2 elements (32 bytes each, embedded: a format-4 stream ends each
with 0x06), then channel 0's IRQ timer. A v1 section predates vmstate and is read by
:func:`load_old`, which reproduces pit_load_old: per channel the 24 bytes from ``count``
to ``count_load_time``, and, only for the channel that owns an IRQ timer (channel 0 on
the PC), ``next_transition_time`` and the timer right after it. Channels 1 and 2 keep
the destination's ``next_transition_time``.
"""

from __future__ import annotations

import functools
import random
from typing import Any

from ..errors import ConfigError, LoadError, Reason
from ..releases import Release
from ..savevm import DeviceSection
from ..stream import StreamReader
from ..vmstate import Description, StructArray, Timer, i32, i64, u8, u16, u32
from . import Device, State, isa_instance_ids

__all__ = ["PIT", "IOBASE", "load_old", "pit_channel_description", "pit_description"]

IOBASE = 0x40
PIT_FREQ = 1_193_182
NS = 1_000_000_000
TIMER_CHANNEL = 0  # the only channel wired to an IRQ, hence the only one with a timer

# Access modes (rw_mode) and the read/write state machine values.
RW_LSB, RW_MSB, RW_WORD0, RW_WORD1 = 1, 2, 3, 4

_BYTES = ("count_latched", "status_latched", "status", "read_state", "write_state",
          "write_latch", "rw_mode", "mode", "bcd", "gate")  # fmt: skip


@functools.cache
def pit_channel_description(release: Release) -> Description:
    """"pit channel" v2 (min 2): 32 bytes, no subsections."""
    fields = [
        i32("count"),
        u16("latched_count"),
        *(u8(name) for name in _BYTES),
        i64("count_load_time"),
        i64("next_transition_time"),
    ]
    return Description("pit channel", 2, fields, minimum_version_id=2)


def _load_old(with_flags: bool) -> Any:
    def load_old(r: StreamReader, pit: Any, version: int) -> None:
        """Read a v1 "i8254" section (pit_load_old)."""
        if version != 1:
            raise LoadError(Reason.VERSION_TOO_OLD, f"i8254 v{version} has no old loader",
                            offset=r.offset)  # fmt: skip
        if with_flags:
            pit.flags = r.read_u32()
        _load_old_channels(r, pit)

    return load_old


load_old = _load_old(with_flags=False)


def _load_old_channels(r: StreamReader, pit: Any) -> None:
    for i, ch in enumerate(pit.channels):
        try:
            ch.count = r.read_i32()
            ch.latched_count = r.read_u16()
            for name in _BYTES:
                setattr(ch, name, r.read_u8())
            ch.count_load_time = r.read_i64()
            if i == TIMER_CHANNEL:
                ch.next_transition_time = r.read_i64()
                ch.irq_timer = r.read_i64()
        except LoadError as e:
            e.add_path(f"channels[{i}]")
            raise


# Variant "pit.flags": whether a u32 flags word leads the section (qemu-kvm).
_FLAGS = {"none": False, "u32": True}


@functools.cache
def pit_description(release: Release) -> Description:
    variant = release.variant("pit.flags")
    if variant not in _FLAGS:
        raise ConfigError(f"pit.flags variant {variant!r} is not modelled")
    with_flags = _FLAGS[variant]
    fields = [
        *([u32("flags")] if with_flags else []),
        StructArray("channels", pit_channel_description(release), 3, version_id=2),
        Timer(f"channels[{TIMER_CHANNEL}].irq_timer"),
    ]
    return Description(
        "i8254", 2, fields, minimum_version_id=2, minimum_version_id_old=1,
        load_state_old=_load_old(with_flags),
    )  # fmt: skip


def _period_ns(count: int) -> int:
    return count * NS // PIT_FREQ


def _power_on_channel(gate: int) -> State:
    return State(
        count=0x10000, latched_count=0, count_latched=0, status_latched=0, status=0,
        read_state=0, write_state=0, write_latch=0, rw_mode=0, mode=3, bcd=0, gate=gate,
        count_load_time=0, next_transition_time=0,
    )  # fmt: skip


class PIT(Device):
    """The PIT as pit_reset leaves it at power-on (virtual time 0): every channel in mode 3
    (square wave) with count 0 (65536) loaded, no access mode programmed; the speaker's
    gate (channel 2) is low. Channel 0's output first changes half a period later."""

    key = "pit"

    def reset(self) -> None:
        self.flags = 0  # qemu-kvm: not in HPET legacy mode
        self.channels = [_power_on_channel(gate=int(i != 2)) for i in range(3)]
        ch0 = self.channels[TIMER_CHANNEL]
        ch0.next_transition_time = _period_ns(0x8000)  # (count + 1) >> 1 ticks into mode 3
        ch0.irq_timer = ch0.next_transition_time

    def sections(self) -> list[DeviceSection]:
        instance, alias = isa_instance_ids(self.release, "pit.ids", IOBASE)
        return [DeviceSection("i8254", instance, pit_description(self.release), self,
                              alias_id=alias)]

    def randomize(self, rng: random.Random) -> None:
        for i, ch in enumerate(self.channels):
            ch.mode = rng.randrange(6)
            ch.rw_mode = rng.randrange(1, 4)
            ch.bcd = rng.choice((0, 0, 0, 1))
            # Counts are at most 65536, so the first byte of a channel is always 0.
            ch.count = rng.randrange(1, 0x10001)
            ch.write_state = ch.rw_mode if ch.rw_mode != RW_WORD0 else rng.choice((3, 4))
            ch.read_state = ch.rw_mode if ch.rw_mode != RW_WORD0 else rng.choice((3, 4))
            ch.write_latch = rng.randrange(256)
            ch.count_latched = rng.choice((0, ch.rw_mode))
            ch.latched_count = rng.randrange(0x10000) if ch.count_latched else 0
            ch.status_latched = rng.randrange(2)
            out = rng.randrange(2)
            ch.status = (out << 7) | (ch.rw_mode << 4) | (ch.mode << 1) | ch.bcd
            ch.gate = rng.randrange(2) if i != TIMER_CHANNEL else 1
            ch.count_load_time = rng.randrange(1 << 50)
            if i == TIMER_CHANNEL:
                ch.next_transition_time = ch.count_load_time + _period_ns(ch.count)
                ch.irq_timer = rng.choice((ch.next_transition_time, -1))
            else:
                ch.next_transition_time = 0
