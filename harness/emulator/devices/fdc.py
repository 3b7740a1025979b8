"""The ISA floppy controller (isa "fdc" v2 wrapping the inner "fdc" v2, instance 0x3f0).

The wire layout is byte-identical in 0.13, 0.14 and 0.15. What changes is the DIR
register's media-changed flag: the subsection "fdrive/media_changed" hangs off each
"fdrive" element, two struct levels below the section (isa "fdc" -> "fdc" ->
drives[i]), which is exactly where the 2011 loaders could not tell a subsection from
parent data. Releases that define it ("new", 1.0, RHEL 6.1 and 6.2) differ in where the
flag lives and whether it is sent (RHEL 6.2 accepts the subsection, ignores its byte and
never sends it); the table :data:`MEDIA_CHANGED_RULES` gives each variant its meaning.

>>> from harness.emulator.releases import get_release
>>> fdc = FDC(get_release("1.0"))
>>> desc = isa_fdc_description(fdc.release)
>>> [f.name for f in desc.fields], desc.fields[0].desc.name
(['state'], 'fdc')
>>> fdrive_description(fdc.release).subsections[0].desc.name
'fdrive/media_changed'
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any

from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import (
    Description,
    IntEqual,
    Struct,
    StructArray,
    Subsection,
    Unused,
    VBuffer,
    u8,
    u32,
)
from . import Device, State, isa_instance_ids

__all__ = [
    "FDC",
    "FIFO_SIZE",
    "IOBASE",
    "MAX_FD",
    "MEDIA_CHANGED_RULES",
    "MediaChangedRule",
    "fdc_description",
    "fdrive_description",
    "isa_fdc_description",
]

IOBASE = 0x3F0  # legacy instance id of the ISA controller
MAX_FD = 2  # drives per controller in every modelled build (num_floppies must equal it)
FIFO_SIZE = 512
DOR_SELMASK = 0x01  # drive-select bits of the DOR when MAX_FD == 2
MEDIA_CHANGED = "fdrive/media_changed"

# Inner "fdc" fields, in wire order (devices.md section 2).
_REGS = ("sra", "srb", "dor_vmstate", "tdr", "dsr", "msr", "status0", "status1", "status2")
_TAIL = ("data_state", "data_dir", "eot", "timer0", "timer1", "precomp_trk", "config",
         "lock", "pwrd")  # fmt: skip


# -- where the media-changed flag lives, per release variant ---------------------------


@dataclass(frozen=True)
class MediaChangedRule:
    """One variant of "fdrive/media_changed".

    ``in_block_layer``: the flag belongs to the block device (7d905f716: the drive's field
    is only a copy, refreshed by pre_save and written back by post_load); otherwise it is
    the drive's own field and the subsection has no hooks (8e49ca462, 1.0).
    """

    in_block_layer: bool
    sent: bool = True  # False: RHEL 6.2's needed() returns 0 "to maintain the compatibility"
    body: str = "flag"  # "unused": RHEL 6.2 reads (and would write) one ignored byte

    def flag(self, drive: State) -> int:
        return drive.bs.media_changed if self.in_block_layer else drive.media_changed

    def set_flag(self, drive: State, value: int) -> None:
        if self.in_block_layer:
            drive.bs.media_changed = value
        else:
            drive.media_changed = value

    def needed(self, drive: State) -> bool:
        return self.sent and drive.bs is not None and self.flag(drive) != 1

    def pre_save(self, drive: State) -> None:
        if drive.bs is not None:  # QEMU only ran it when needed, i.e. with a block device
            drive.media_changed = drive.bs.media_changed

    def post_load(self, drive: State, version: int) -> None:
        if drive.bs is not None:
            drive.bs.media_changed = drive.media_changed


MEDIA_CHANGED_RULES: dict[str, MediaChangedRule] = {
    "bs-flag": MediaChangedRule(in_block_layer=True),
    "drive-flag": MediaChangedRule(in_block_layer=False),
    "accepted-unused": MediaChangedRule(in_block_layer=True, sent=False, body="unused"),
}


def _media_rule(release: Release) -> MediaChangedRule:
    return MEDIA_CHANGED_RULES[release.variant("fdrive.media_changed")]


# -- descriptions ----------------------------------------------------------------------


@functools.cache
def fdrive_description(release: Release) -> Description:
    """"fdrive" v1: head, track, sect; plus the media-changed subsection where defined."""
    subsections: tuple[Subsection, ...] = ()
    if release.has(MEDIA_CHANGED):
        rule = _media_rule(release)
        hooks: dict[str, Any] = {}
        if rule.body == "unused":
            body: list[Any] = [Unused(1)]
        else:
            body = [u8("media_changed")]
            if rule.in_block_layer:
                hooks = {"pre_save": rule.pre_save, "post_load": rule.post_load}
        sub = Description(MEDIA_CHANGED, 1, body, minimum_version_id=1, **hooks)
        subsections = (Subsection(sub, rule.needed),)
    return Description(
        "fdrive", 1, [u8("head"), u8("track"), u8("sect")],
        minimum_version_id=1, subsections=subsections,
    )  # fmt: skip


def _fdc_pre_save(s: State) -> None:
    s.dor_vmstate = s.dor | s.cur_drv


def _fdc_post_load(s: State, version: int) -> None:
    s.cur_drv = s.dor_vmstate & DOR_SELMASK
    s.dor = s.dor_vmstate & ~DOR_SELMASK


@functools.cache
def fdc_description(release: Release) -> Description:
    """The inner "fdc" v2 (min 2): controller registers, FIFO, then the two drives."""
    fields = [
        *(u8(name) for name in _REGS),
        VBuffer("fifo", "fifo_size", FIFO_SIZE),
        u32("data_pos"),
        u32("data_len"),
        *(u8(name) for name in _TAIL),
        IntEqual("num_floppies", 1),
        StructArray("drives", fdrive_description(release), MAX_FD, version_id=1),
    ]
    return Description(
        "fdc", 2, fields, minimum_version_id=2,
        pre_save=_fdc_pre_save, post_load=_fdc_post_load,
    )  # fmt: skip


@functools.cache
def isa_fdc_description(release: Release) -> Description:
    """The section: isa "fdc" v2 (min 2) whose only field is the embedded controller."""
    return Description(
        "fdc", 2, [Struct("state", fdc_description(release))], minimum_version_id=2
    )


# -- the device ------------------------------------------------------------------------


# Variant "fdc.media_changed": the block layer's media-changed flag of the default,
# empty floppy drive at power-on. block.c sets it only when a medium is opened or closed,
# and the genstats series sends it from power-on (0 != 1: the subsection is needed). A
# floppy given on the command line (-fda, the board's "fda" medium) was opened: 1.
POWER_ON_FLAG = {"stays-set": 1, "open-clears": 0}


def _drive(block_device: bool, flag: int = 1) -> State:
    """A drive at track 0; ``bs`` is its block device (None: no drive behind it)."""
    bs = State(media_changed=flag) if block_device else None
    return State(head=0, track=0, sect=1, media_changed=1, bs=bs)


class FDC(Device):
    """ISA floppy controller; drive 0 is QEMU's default floppy drive (a block device, with
    a floppy only with ``-fda``), drive 1 has no block device.

    ``state`` is the controller (the inner "fdc"); its ``drives[i].bs.media_changed`` is
    the block layer's flag, which the "bs-flag" releases migrate through the drive's
    ``media_changed`` copy and the "drive-flag" release (1.0) does not use.
    """

    key = "fdc"

    def reset(self) -> None:
        self.state = State(
            sra=0x40,  # no second drive
            srb=0xC0,
            dor=0x0C,  # not in reset, DMA enabled
            cur_drv=0,
            dor_vmstate=0x0C,
            tdr=0,
            dsr=0,
            msr=0x80,  # ready for a request
            status0=0,
            status1=0,
            status2=0,
            fifo_size=FIFO_SIZE,
            fifo=bytes(FIFO_SIZE),
            data_pos=0,
            data_len=0,
            data_state=0,
            data_dir=0,
            eot=0,
            timer0=0,
            timer1=0,
            precomp_trk=0,
            config=0x60,  # implied seeks enabled, FIFO disabled (the reset value)
            lock=0,
            pwrd=0,
            num_floppies=MAX_FD,
            drives=[_drive(True, 1 if "fda" in self.board.media else
                           POWER_ON_FLAG[self.release.variant("fdc.media_changed")]),
                    _drive(False)],
        )

    def sections(self) -> list[DeviceSection]:
        desc = isa_fdc_description(self.release)
        instance, alias = isa_instance_ids(self.release, "fdc.ids", IOBASE)
        return [DeviceSection("fdc", instance, desc, self, alias_id=alias)]

    @property
    def _rule(self) -> MediaChangedRule:
        return _media_rule(self.release)

    def media_changed(self, drive: int = 0) -> int:
        """The drive's DIR media-changed flag where this release keeps it."""
        return self._rule.flag(self.state.drives[drive])

    def clear_media_changed(self, drive: int = 0) -> None:
        """The guest selects ``drive`` and seeks: with a medium present the flag clears."""
        d = self.state.drives[drive]
        self.state.cur_drv = drive
        if d.bs is not None:
            self._rule.set_flag(d, 0)

    def change_media(self, drive: int = 0) -> None:
        """The medium in ``drive`` is swapped: the flag is set again."""
        d = self.state.drives[drive]
        if d.bs is None:
            raise ValueError(f"floppy drive {drive} has no block device")
        self._rule.set_flag(d, 1)

    def randomize(self, rng: random.Random) -> None:
        s = self.state
        for name in ("sra", "srb", "tdr", "status0", "status1", "status2", "data_state",
                     "data_dir", "eot", "timer0", "timer1", "precomp_trk", "config", "lock",
                     "pwrd"):  # fmt: skip
            setattr(s, name, rng.randrange(256))
        s.dor = rng.randrange(256) & ~DOR_SELMASK
        s.cur_drv = rng.randrange(MAX_FD)
        s.dsr = rng.randrange(256)
        s.msr = rng.choice((0x80, 0x90, 0xC0, 0xD0, 0x10))
        s.fifo = rng.randbytes(FIFO_SIZE)
        s.data_len = rng.randrange(FIFO_SIZE + 1)
        s.data_pos = rng.randrange(s.data_len + 1)
        for d in s.drives:
            # Real geometry: the head byte is 0 or 1, so it never reads as a 0x05 marker.
            d.head, d.track, d.sect = rng.randrange(2), rng.randrange(80), rng.randrange(1, 19)
            if d.bs is not None:
                self._rule.set_flag(d, rng.randrange(2))
