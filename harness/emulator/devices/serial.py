"""The 16550A UART behind isa-serial (qdev vmsd "serial" v3, min 2; instance 0x3f8).

The section's only field is the embedded inner "serial" v3 (11 bytes), so a format-4
stream ends it with 0x06. Because an embedded struct always loads at its own version,
the inner post_load's "version < 3" branch never runs for isa-serial.

>>> from harness.emulator.releases import get_release
>>> [f.name for f in serial_description(get_release("0.14")).fields]
['divider', 'rbr', 'ier', 'iir', 'lcr', 'mcr', 'lsr', 'msr', 'scr', 'fcr_vmstate']
"""

from __future__ import annotations

import functools
import random

from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Description, Struct, u8, u16
from . import Device, State, isa_instance_ids

__all__ = ["IOBASE", "Serial", "isa_serial_description", "serial_description", "write_fcr"]

IOBASE = 0x3F8
FCR_FE = 0x01  # FIFO enable
FCR_RFR, FCR_XFR = 0x02, 0x04  # self-clearing FIFO resets
FCR_KEPT = 0xC9  # trigger level, DMA mode and enable: the bits the chip remembers
IIR_NO_INT, IIR_FE = 0x01, 0xC0
LSR_THRE, LSR_TEMT, LSR_DR = 0x20, 0x40, 0x01
MSR_CTS, MSR_DSR, MSR_DCD = 0x10, 0x20, 0x80
MCR_OUT2 = 0x08

_REGS = ("rbr", "ier", "iir", "lcr", "mcr", "lsr", "msr", "scr")


def write_fcr(s: State, value: int) -> None:
    """A guest write to the FIFO control register (only its register effects are modelled:
    the FIFOs themselves and the IRQ line are not part of the migrated state)."""
    value &= 0xFF
    if s.fcr == value:
        return
    if (value ^ s.fcr) & FCR_FE:
        value |= FCR_RFR | FCR_XFR  # toggling the enable flushes both FIFOs (not modelled)
    s.iir = (s.iir | IIR_FE) if value & FCR_FE else (s.iir & ~IIR_FE)
    s.fcr = value & FCR_KEPT


def _pre_save(s: State) -> None:
    s.fcr_vmstate = s.fcr


def _post_load(s: State, version: int) -> None:
    if version < 3:  # unreachable for isa-serial: embedded, it always loads at v3
        s.fcr_vmstate = 0
    write_fcr(s, s.fcr_vmstate)


@functools.cache
def serial_description(release: Release) -> Description:
    """The inner "serial" v3 (min 2)."""
    fields = [
        u16("divider", version_id=2),
        *(u8(name) for name in _REGS),
        u8("fcr_vmstate", version_id=3),
    ]
    return Description(
        "serial", 3, fields, minimum_version_id=2, pre_save=_pre_save, post_load=_post_load
    )


@functools.cache
def isa_serial_description(release: Release) -> Description:
    """The section: qdev "serial" v3 (min 2) whose only field is the embedded UART."""
    return Description(
        "serial", 3, [Struct("state", serial_description(release))], minimum_version_id=2
    )


class Serial(Device):
    """COM1 at power-on (serial_reset): divisor 12 (9600 baud), line control 0, OUT2
    set, FIFOs off, the transmitter empty."""

    key = "serial"

    def reset(self) -> None:
        self.state = State(
            divider=12,  # 115200 / 12 = 9600 baud
            rbr=0,
            ier=0,
            iir=IIR_NO_INT,
            lcr=0,
            mcr=MCR_OUT2,
            lsr=LSR_TEMT | LSR_THRE,
            msr=MSR_DCD | MSR_DSR | MSR_CTS,
            scr=0,
            fcr=0,
            fcr_vmstate=0,
        )

    def sections(self) -> list[DeviceSection]:
        desc = isa_serial_description(self.release)
        instance, alias = isa_instance_ids(self.release, "serial.ids", IOBASE)
        return [DeviceSection("serial", instance, desc, self, alias_id=alias)]

    def receive(self, byte: int) -> None:
        """A byte arrives on the line: data ready, and an interrupt if enabled."""
        s = self.state
        s.rbr = byte & 0xFF
        s.lsr |= LSR_DR
        if s.ier & 0x01:
            s.iir = (s.iir & IIR_FE) | 0x04

    def randomize(self, rng: random.Random) -> None:
        s = self.state
        s.divider = rng.randrange(1, 0x10000)
        s.lcr = rng.randrange(256)
        s.ier = rng.randrange(16)
        s.mcr = rng.randrange(32)
        s.rbr = rng.randrange(256)
        s.scr = rng.randrange(256)
        s.lsr = rng.choice((0x60, 0x61, 0x20, 0x00, 0x01, 0x63, 0x71))
        s.msr = (rng.randrange(16) << 4) | rng.randrange(16)
        s.fcr = rng.choice((0, 0x01, 0x41, 0x81, 0xC1, 0x09, 0xC9))
        s.iir = rng.choice((0x01, 0x02, 0x04, 0x06, 0x00)) | (IIR_FE if s.fcr & FCR_FE else 0)
        s.fcr_vmstate = s.fcr
