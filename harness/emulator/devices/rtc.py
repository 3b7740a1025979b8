"""The MC146818 real-time clock and its CMOS (vmsd "mc146818rtc" v2, min 1).

Identical in every modelled release and flat (no embedded structs, no subsections); the
v2 fields ``irq_coalesced`` and ``period`` are absent from a v1 section. A qdev ISA
device: written as instance 0, with its I/O base 0x70 a load-only alias.

Power-on: the CMOS holds what pc_cmos_init writes for the machine (memory sizes from the
RAM size, boot order "cad", no floppy medium, the century), and the clock is the host's
time when QEMU started: the time registers, ``current_tm`` and the next update's time
depend on it. The model's clock starts at a fixed date.
"""

from __future__ import annotations

import datetime
import functools
import random

from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Buffer, Description, Timer, i32, i64, u8, u32
from . import Device, State, isa_instance_ids

__all__ = ["RTC", "IOBASE", "rtc_description", "to_bcd"]

IOBASE = 0x70
CMOS_SIZE = 128
TM_FIELDS = ("sec", "min", "hour", "wday", "mday", "mon", "year")

# CMOS register indexes.
REG_SECONDS, REG_MINUTES, REG_HOURS = 0x00, 0x02, 0x04
REG_WDAY, REG_MDAY, REG_MONTH, REG_YEAR = 0x06, 0x07, 0x08, 0x09
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
REG_CENTURY = 0x32
REG_B_PIE, REG_B_AIE, REG_B_UIE, REG_B_SQWE, REG_B_DM, REG_B_24H = (
    0x40, 0x20, 0x10, 0x08, 0x04, 0x02,
)  # fmt: skip

NS = 1_000_000_000


def to_bcd(value: int) -> int:
    """Binary to packed BCD, as the CMOS keeps time unless register B's DM bit is set.

    >>> hex(to_bcd(59))
    '0x59'
    """
    return ((value // 10) << 4) | (value % 10)


@functools.cache
def rtc_description(release: Release) -> Description:
    fields = [
        Buffer("cmos_data", CMOS_SIZE),
        u8("cmos_index"),
        *(i32(f"current_tm.{name}") for name in TM_FIELDS),
        Timer("periodic_timer"),
        i64("next_periodic_time"),
        i64("next_second_time"),
        Timer("second_timer"),
        Timer("second_timer2"),
        u32("irq_coalesced", version_id=2),
        u32("period", version_id=2),
    ]
    return Description("mc146818rtc", 2, fields, minimum_version_id=1)


class RTC(Device):
    """The RTC at power-on: BCD, 24-hour mode, no interrupt, the update cycle armed."""

    key = "rtc"

    def reset(self) -> None:
        self.cmos_index = 0
        self.current_tm = State()
        cmos = bytearray(CMOS_SIZE)
        cmos[REG_A] = 0x26  # 32.768 kHz divider, 1024 Hz rate select
        cmos[REG_B] = REG_B_24H  # BCD, 24-hour, no interrupts
        cmos[REG_D] = 0x80  # valid RAM and time
        # -rtc base=utc (the default): the date of the host's clock.
        now = self.board.host_time_ns
        date = datetime.datetime.fromtimestamp(now // NS, datetime.UTC).replace(tzinfo=None)
        self._pc_config(cmos, self.board.ram_size, date.year)
        self.cmos_data = bytes(cmos)
        self.set_time(date)
        self.periodic_timer = -1
        self.next_periodic_time = 0
        # At init the update cycle is armed on the second timer's partner.
        self.next_second_time = now + NS * 99 // 100
        self.second_timer = -1
        self.second_timer2 = self.next_second_time
        self.irq_coalesced = 0
        self.period = 0

    @staticmethod
    def _pc_config(cmos: bytearray, ram_size: int, year: int) -> None:
        """What pc_cmos_init writes (the BIOS computes the checksum later)."""
        cmos[0x15], cmos[0x16] = 0x80, 0x02  # 640 KiB base memory
        ext = min(ram_size // 1024 - 1024, 0xFFFF)  # KiB above 1 MiB (negative below it:
        cmos[0x17], cmos[0x18] = ext & 0xFF, (ext >> 8) & 0xFF  # stored as bytes, as QEMU)
        cmos[0x30], cmos[0x31] = ext & 0xFF, (ext >> 8) & 0xFF
        above16 = min(max(ram_size - (16 << 20), 0) // 65536, 0xFFFF)  # 64 KiB units
        cmos[0x34], cmos[0x35] = above16 & 0xFF, above16 >> 8
        cmos[0x3D] = 0x12  # boot order "cad": hard disk, then floppy ...
        cmos[0x38] = 0x30  # ... then CD-ROM; floppy signature check on
        cmos[0x10] = 0x00  # no floppy medium at power-on: drive types "none"
        cmos[0x14] = 0x06  # no floppy drive ready, FPU, PS/2 mouse
        cmos[REG_CENTURY] = cmos[0x37] = to_bcd(year // 100)

    def sections(self) -> list[DeviceSection]:
        desc = rtc_description(self.release)
        instance, alias = isa_instance_ids(self.release, "rtc.ids", IOBASE)
        return [DeviceSection("mc146818rtc", instance, desc, self, alias_id=alias)]

    def _encode(self, value: int) -> int:
        binary = self.cmos_data[REG_B] & REG_B_DM
        return value if binary else to_bcd(value)

    def set_time(self, when: datetime.datetime) -> None:
        """Set the clock (current_tm and the CMOS time registers, in the current mode)."""
        tm = self.current_tm
        tm.sec, tm.min, tm.hour = when.second, when.minute, when.hour
        tm.wday = (when.weekday() + 1) % 7  # 0 = Sunday
        tm.mday, tm.mon, tm.year = when.day, when.month - 1, when.year - 1900
        cmos = bytearray(self.cmos_data)
        enc = self._encode
        cmos[REG_SECONDS], cmos[REG_MINUTES], cmos[REG_HOURS] = (
            enc(tm.sec), enc(tm.min), enc(tm.hour),
        )  # fmt: skip
        cmos[REG_WDAY] = enc(tm.wday + 1)
        cmos[REG_MDAY], cmos[REG_MONTH] = enc(tm.mday), enc(tm.mon + 1)
        cmos[REG_YEAR] = enc(when.year % 100)
        cmos[REG_CENTURY] = enc(when.year // 100)
        self.cmos_data = bytes(cmos)

    def randomize(self, rng: random.Random) -> None:
        cmos = bytearray(self.cmos_data)
        rate = rng.randrange(16)
        cmos[REG_A] = 0x20 | rate
        mode = rng.choice((0, REG_B_DM)) | REG_B_24H
        cmos[REG_B] = mode | rng.choice((0, REG_B_PIE, REG_B_UIE, REG_B_AIE | REG_B_UIE))
        cmos[REG_C] = rng.choice((0x00, 0x10, 0x90, 0xC0))
        for reg in (0x01, 0x03, 0x05):  # alarm seconds, minutes, hours
            cmos[reg] = rng.choice((0xC0, self._bcd_or_bin(cmos, rng.randrange(24))))
        cmos[0x50:0x80] = rng.randbytes(0x30)  # free NVRAM
        self.cmos_data = bytes(cmos)
        start = datetime.datetime(1990, 1, 1)
        self.set_time(start + datetime.timedelta(seconds=rng.randrange(47 * 365 * 86400)))
        self.cmos_index = rng.randrange(CMOS_SIZE)
        now = self.board.host_time_ns + rng.randrange(1 << 44)
        self.next_second_time = now + rng.randrange(NS)
        if rng.randrange(2):
            self.second_timer, self.second_timer2 = self.next_second_time, -1
        else:
            self.second_timer, self.second_timer2 = -1, self.next_second_time
        periodic = cmos[REG_B] & REG_B_PIE and rate
        if periodic:
            code = rate + 7 if rate <= 2 else rate
            self.period = 1 << (code - 1)  # in 32.768 kHz ticks
            self.next_periodic_time = now + rng.randrange(NS // 2)
            self.periodic_timer = self.next_periodic_time
            self.irq_coalesced = rng.randrange(8)
        else:
            self.period = 0
            self.next_periodic_time = 0
            self.periodic_timer = -1
            self.irq_coalesced = 0

    @staticmethod
    def _bcd_or_bin(cmos: bytearray, value: int) -> int:
        return value if cmos[REG_B] & REG_B_DM else to_bcd(value)
