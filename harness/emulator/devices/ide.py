"""PCI IDE (piix3-ide): the "ide" section with bus-master DMA, two buses, four drives.

The section embeds five kinds of struct, three of which carry subsections: the drive
("ide_drive/pio_state", 1.0's "ide_drive/tray_state", 0.15's "ide_drive/atapi/gesn_state"),
the bus-master engine ("ide bmdma_current", 0.15's "ide bmdma/status") and the bus (0.15's
"ide_bus/error"). Those embedded subsections are where the releases disagree on the wire
(wire-format.md section 3), so this module is the main subject of the matrix.

Release differences are data: which subsections exist comes from ``release.has``, and
the variants (``bmdma.status``, ``pio_state.needed``, ``pio_state.end_fn``,
``gesn_state.fields``) select rows of the tables below; RHEL 6.1's gesn_state list has no
end marker, and its save and load walk on into the data after it, where they die. The retry flags of a stopped request live in ``bmdma.status`` ("inline", 0.13 and
0.14) or in ``bus.error_status`` ("compat", 0.15 on, which keeps sending the old layout
in field 2, ``migration_compat_status``).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import (
    Bool,
    Buffer,
    Description,
    PastEndOfList,
    PeekPolicy,
    StructArray,
    Subsection,
    VBuffer,
    i32,
    i64,
    invalid,
    u8,
    u32,
)
from . import Device, State
from .pci import Bar, build_config_space, pci_device_field

__all__ = [
    "IDE",
    "IDSTR",
    "IO_BUFFER_TOTAL_LEN",
    "TRANSFER_END_TABLE",
    "bmdma_description",
    "ide_bus_description",
    "ide_description",
    "ide_drive_description",
]

IDSTR = "0000:00:01.1/ide"

# Drive status register.
ERR_STAT, DRQ_STAT, SEEK_STAT, READY_STAT, BUSY_STAT = 0x01, 0x08, 0x10, 0x40, 0x80
# Device control register.
IDE_CMD_NIEN, IDE_CMD_RESET = 0x02, 0x04
# Bus-master command and status registers; the retry flags of a stopped request.
BM_CMD_START, BM_CMD_READ = 0x01, 0x08
BM_STATUS_DMAING, BM_STATUS_ERROR, BM_STATUS_INT = 0x01, 0x02, 0x04
DMA_RETRY, PIO_RETRY, RETRY_READ, RETRY_FLUSH = 0x08, 0x10, 0x20, 0x40
RETRY_BITS = 0x78  # BM_MIGRATION_COMPAT_STATUS_BITS
DMA_CAPABLE_BITS = 0x60  # drive 0/1 DMA capable: kept across guest writes
# ATAPI sense.
SENSE_UNIT_ATTENTION, ASC_MEDIUM_MAY_HAVE_CHANGED = 0x06, 0x28
ATAPI_INT_REASON_IO = 0x02

IO_BUFFER_TOTAL_LEN = 256 * 512 + 4  # IDE_DMA_BUF_SECTORS sectors + 4
MAX_MULT_SECTORS = 16
# The end-of-transfer callbacks, in the order their index travels on the wire.
TRANSFER_END_TABLE = (
    "ide_sector_read",
    "ide_sector_write",
    "ide_transfer_stop",
    "ide_atapi_cmd_reply_end",
    "ide_atapi_cmd",
    "ide_dummy_transfer_stop",
)
UNKNOWN_END_FN_IDX = 2  # pre_save's substitute for a callback not in the table

HARD_DISK, CDROM = "hd", "cdrom"
# The drives of a bare `-M pc`: (bus, unit) -> kind (None: no drive, the slot still saves).
# QEMU adds an empty CD-ROM drive (ide1-cd0) by default; a hard disk needs -hda (the
# board's "hda" medium), a disc in the CD-ROM -cdrom ("cdrom").
DRIVE_KINDS: dict[tuple[int, int], str | None] = {
    (0, 0): None,
    (0, 1): None,
    (1, 0): CDROM,
    (1, 1): None,
}
HDA, CDROM_SLOT = (0, 0), (1, 0)
POWER_ON_SELECT = 0x20


# -- ide_drive and its subsections -------------------------------------------------------


def _pio_pre_save(s: Any) -> None:
    s.cur_io_buffer_offset = s.data_ptr
    s.cur_io_buffer_len = s.data_end - s.data_ptr
    fn = s.end_transfer_func
    s.end_transfer_fn_idx = (
        TRANSFER_END_TABLE.index(fn) if fn in TRANSFER_END_TABLE else UNKNOWN_END_FN_IDX
    )


# Variant "pio_state.end_fn" -> the largest end-function index post_load accepts. Up to
# genstats the check is ">" not ">=": index 6 passes and names one slot past the table
# (a wild pointer QEMU calls when the transfer ends); 1.0 refuses it.
PIO_END_FN_LIMIT = {"table-size-ok": len(TRANSFER_END_TABLE),
                    "below-table-size": len(TRANSFER_END_TABLE) - 1}  # fmt: skip


def _pio_post_load(limit: int) -> Callable[[Any, int], None]:
    def post_load(s: Any, version: int) -> None:
        idx = s.end_transfer_fn_idx
        if idx > limit:
            op = ">" if limit == len(TRANSFER_END_TABLE) else ">="
            err = invalid(f"end_transfer_fn_idx {idx} {op} table size {len(TRANSFER_END_TABLE)}")
            err.add_path("end_transfer_fn_idx")
            raise err
        s.end_transfer_func = TRANSFER_END_TABLE[idx] if idx < len(TRANSFER_END_TABLE) else None
        s.data_ptr = s.cur_io_buffer_offset
        s.data_end = s.data_ptr + s.cur_io_buffer_len

    return post_load


@functools.cache
def _pio_state_description(limit: int) -> Description:
    return Description(
        "ide_drive/pio_state",
        1,
        [
            i32("req_nb_sectors"),
            VBuffer("io_buffer", "io_buffer_total_len", IO_BUFFER_TOTAL_LEN, version_id=1),
            i32("cur_io_buffer_offset"),
            i32("cur_io_buffer_len"),
            u8("end_transfer_fn_idx"),
            i32("elementary_transfer_size"),
            i32("packet_transfer_size"),
        ],
        minimum_version_id=1,
        pre_save=_pio_pre_save,
        post_load=_pio_post_load(limit),
    )


@functools.cache
def _tray_state_description() -> Description:
    return Description(
        "ide_drive/tray_state", 1, [Bool("tray_open"), Bool("tray_locked")], minimum_version_id=1
    )


# gesn_state.fields variant -> what the engine walks after the two booleans. RHEL 6.1's
# list lacks VMSTATE_END_OF_LIST (fixed in 2.172), and its build keeps walking through the
# data that follows the list (read off the build's binary and its running process):
# - the ide_drive subsection table: an entry that reads as an array of zero elements;
# - the ide-drive qdev info: an entry whose address is the drive's plus its property
#   table's, read through as an array of pointers: a non-canonical address. The save takes
#   it (SIGSEGV); the load takes it only when the entry's version, the low half of a
#   function's address, is <= 1, i.e. in the half of the runs where ASLR put the binary so
#   that that half is negative (SIGBUS), and otherwise reads both booleans right and goes
#   on (the next save then dies). Measured: saves 10 of 10 SIGSEGV; loads of a 6.2 media
#   event 16 of 30 SIGBUS, 14 loaded (predicted from the load address in 30 of 30). The
#   model dies on the load: the more frequent outcome, and the cell's in every run;
# - zeros: the end of the walk.
_GESN_PAST_END: dict[str, tuple[PastEndOfList, ...]] = {
    "terminated": (),
    "unterminated": (
        PastEndOfList("the ide_drive subsection table (an array of zero elements)"),
        PastEndOfList(
            "the ide-drive device info (an array of pointers at a non-canonical address)",
            save_dies="SIGSEGV",
            load_dies="SIGBUS, in about half the runs; in the others it loads and the next "
                      "save dies"),
    ),
}


@functools.cache
def _gesn_state_description(fields: str) -> Description:
    try:
        past_end = _GESN_PAST_END[fields]
    except KeyError:
        raise ConfigError(f"gesn_state.fields variant {fields!r} is not modelled") from None
    return Description(
        "ide_drive/atapi/gesn_state",
        1,
        [Bool("events.new_media"), Bool("events.eject_request"), *past_end],
        minimum_version_id=1,
    )


def _pio_needed_drq(s: Any) -> bool:
    return bool(s.status & DRQ_STAT)


def _pio_needed_drq_or_retry(s: Any) -> bool:
    return bool(s.status & DRQ_STAT) or bool(s._bus.error_status & PIO_RETRY)


# pio_state.needed variant -> needed()
PIO_STATE_NEEDED: dict[str, Callable[[Any], bool]] = {
    "drq": _pio_needed_drq,
    "drq-or-pio-retry": _pio_needed_drq_or_retry,
}

# The drive's later subsections, in save order, each present where the release has it.
_SubsectionRow = tuple[str, Callable[[Release], Description], Callable[[Any], bool]]
_DRIVE_OPTIONAL_SUBSECTIONS: tuple[_SubsectionRow, ...] = (
    ("ide_drive/tray_state", lambda release: _tray_state_description(),
     lambda s: bool(s.tray_open or s.tray_locked)),
    ("ide_drive/atapi/gesn_state",
     lambda release: _gesn_state_description(release.variant("gesn_state.fields")),
     lambda s: bool(s.events.new_media or s.events.eject_request)),
)  # fmt: skip


def _drive_post_load(s: Any, version: int) -> None:
    # Streams before v3 had no cdrom_changed: derive it from the sense data.
    if version < 3:
        s.cdrom_changed = int(
            s.sense_key == SENSE_UNIT_ATTENTION and s.asc == ASC_MEDIUM_MAY_HAVE_CHANGED
        )


_DRIVE_REGISTERS = (
    "sector", "lcyl", "hcyl", "hob_feature", "hob_sector", "hob_nsector", "hob_lcyl",
    "hob_hcyl", "select", "status", "lba48", "sense_key", "asc",
)  # fmt: skip


@functools.cache
def ide_drive_description(release: Release) -> Description:
    """ "ide_drive" v3: 28 bytes, 540 with identify data, then the release's subsections."""
    subs = [
        Subsection(_pio_state_description(PIO_END_FN_LIMIT[release.variant("pio_state.end_fn")]),
                   PIO_STATE_NEEDED[release.variant("pio_state.needed")])
    ]
    subs += [
        Subsection(make(release), needed)
        for name, make, needed in _DRIVE_OPTIONAL_SUBSECTIONS
        if release.has(name)
    ]
    return Description(
        "ide_drive",
        3,
        [
            i32("mult_sectors"),
            i32("identify_set"),
            Buffer("identify_data", 512, exists=lambda s, v: s.identify_set != 0),
            u8("feature"),
            u8("error"),
            u32("nsector"),
            *(u8(name) for name in _DRIVE_REGISTERS),
            u8("cdrom_changed", version_id=3),
        ],
        minimum_version_id=0,
        subsections=tuple(subs),
        post_load=_drive_post_load,
    )


# -- ide_bus -----------------------------------------------------------------------------


@functools.cache
def _bus_error_description() -> Description:
    return Description("ide_bus/error", 1, [i32("error_status")], minimum_version_id=1)


@functools.cache
def ide_bus_description(release: Release) -> Description:
    """ "ide_bus" v1: cmd and unit; 0.15 adds "ide_bus/error"."""
    subs = []
    if release.has("ide_bus/error"):
        subs.append(Subsection(_bus_error_description(), lambda b: b.error_status != 0))
    return Description(
        "ide_bus", 1, [u8("cmd"), u8("unit")], minimum_version_id=1, subsections=tuple(subs)
    )


# -- ide bmdma ---------------------------------------------------------------------------


def _compat_pre_save(bm: Any) -> None:
    bm.migration_compat_status = (bm.status & ~RETRY_BITS) | (bm._bus.error_status & RETRY_BITS)


def _compat_post_load(bm: Any) -> None:
    # A status of 0 means no "ide bmdma/status" arrived: take the old layout from field 2.
    if bm.status == 0:
        bm.status = bm.migration_compat_status & ~RETRY_BITS
        bm._bus.error_status |= bm.migration_compat_status & RETRY_BITS


def _retry_in_status(bm: Any, bus: Any, op: int) -> None:
    bm.status |= op


def _retry_in_bus(bm: Any, bus: Any, op: int) -> None:
    bus.error_status = op


def _retry_from_status(bm: Any, bus: Any) -> int:
    return bm.status & RETRY_BITS


def _retry_from_bus(bm: Any, bus: Any) -> int:
    return bus.error_status & RETRY_BITS


@dataclass(frozen=True)
class BmdmaStatusVariant:
    """One value of the ``bmdma.status`` variant: how field 2 and the retry flags work."""

    field_name: str  # name (and attribute) of the bmdma's second field
    pre_save: Callable[[Any], None] | None  # the bmdma's pre_save
    post_load: Callable[[Any], None] | None  # called from the "ide" post_load
    record_retry: Callable[[Any, Any, int], None]  # where a stopped request's op goes
    read_retry: Callable[[Any, Any], int]  # ...and where it is read back


BMDMA_STATUS: dict[str, BmdmaStatusVariant] = {
    "inline": BmdmaStatusVariant("status", None, None, _retry_in_status, _retry_from_status),
    "compat": BmdmaStatusVariant(
        "migration_compat_status",
        _compat_pre_save,
        _compat_post_load,
        _retry_in_bus,
        _retry_from_bus,
    ),
}


@functools.cache
def _bmdma_current_description() -> Description:
    return Description(
        "ide bmdma_current",
        1,
        [u32("cur_addr"), u32("cur_prd_last"), u32("cur_prd_addr"), u32("cur_prd_len")],
        minimum_version_id=1,
    )


@functools.cache
def _bmdma_status_description() -> Description:
    return Description("ide bmdma/status", 1, [u8("status")], minimum_version_id=1)


_BMDMA_SUBSECTIONS: tuple[_SubsectionRow, ...] = (
    ("ide bmdma_current", _bmdma_current_description, lambda bm: bm.cur_prd_len != 0),
    ("ide bmdma/status", _bmdma_status_description, lambda bm: bool(bm.status & RETRY_BITS)),
)


@functools.cache
def bmdma_description(release: Release) -> Description:
    """ "ide bmdma" v3: 19 bytes; field 2 per the ``bmdma.status`` variant."""
    variant = BMDMA_STATUS[release.variant("bmdma.status")]
    return Description(
        "ide bmdma",
        3,
        [
            u8("cmd"),
            u8(variant.field_name),
            u32("addr"),
            i64("sector_num"),
            u32("nsector"),
            u8("unit"),
        ],
        minimum_version_id=0,
        subsections=tuple(
            Subsection(make(), needed)
            for name, make, needed in _BMDMA_SUBSECTIONS
            if release.has(name)
        ),
        pre_save=variant.pre_save,
    )


# -- the "ide" section -------------------------------------------------------------------


@functools.cache
def ide_description(release: Release) -> Description:
    """ "ide" v3, min 0: dev, bmdma[2] (v0), bus[2] (v1), bus[0].ifs[2], bus[1].ifs[2] (v3)."""
    bmdma_post_load = BMDMA_STATUS[release.variant("bmdma.status")].post_load
    drive = ide_drive_description(release)

    def post_load(ide: Any, version: int) -> None:
        for bm in ide.bmdma:
            bm.unit &= 1  # older versions stored larger values; only the last bit counts
            if bmdma_post_load is not None:
                bmdma_post_load(bm)

    return Description(
        "ide",
        3,
        [
            pci_device_field("dev"),
            StructArray("bmdma", bmdma_description(release), 2),
            StructArray("bus", ide_bus_description(release), 2, version_id=1),
            StructArray("bus[0].ifs", drive, 2, version_id=3),
            StructArray("bus[1].ifs", drive, 2, version_id=3),
        ],
        minimum_version_id=0,
        post_load=post_load,
    )


# -- the device --------------------------------------------------------------------------


def _ascii_words(text: str, nbytes: int) -> bytes:
    """An ATA identify string: space padded, bytes swapped within each 16-bit word."""
    raw = text.ljust(nbytes).encode("ascii")[:nbytes]
    return bytes(raw[i ^ 1] for i in range(nbytes))


def _identify_data(kind: str, serial: int) -> bytes:
    """The 512-byte IDENTIFY (PACKET) DEVICE reply the BIOS probe left behind."""
    words = [0] * 256
    if kind == HARD_DISK:
        words[0] = 0x0040  # fixed disk
        words[1], words[3], words[6] = 1024, 16, 63  # cylinders, heads, sectors
        words[47] = 0x8000 | MAX_MULT_SECTORS
        words[49] = 0x0300  # LBA and DMA
        words[60], words[61] = 0xFC00, 0x000F  # LBA sectors
        model = "QEMU HARDDISK"
    else:
        words[0] = 0x85C0  # ATAPI, CD-ROM, removable, 12-byte packets
        words[49] = 0x0300
        model = "QEMU DVD-ROM"
    data = bytearray(b"".join(w.to_bytes(2, "little") for w in words))
    data[20:40] = _ascii_words(f"QM{serial:05d}", 20)
    data[46:54] = _ascii_words("0.14", 8)
    data[54:94] = _ascii_words(model, 40)
    return bytes(data)


def _sector_data(lba: int, size: int) -> bytes:
    """Deterministic disk content for ``size`` bytes starting at sector ``lba``."""
    return bytes((lba * 131 + i * 7 + (i >> 9)) & 0xFF for i in range(size))


# A fresh drive's buffer (immutable: operations build new ones), shared by every drive.
_POWER_ON_IO_BUFFER = b"\xff" * 4 + bytes(IO_BUFFER_TOTAL_LEN - 4)


def _signature(kind: str | None) -> tuple[int, int]:
    """lcyl, hcyl after a reset: the ATAPI signature, 0 for a disk, 0xff for no drive."""
    return (0x14, 0xEB) if kind == CDROM else ((0, 0) if kind else (0xFF, 0xFF))


def _new_drive(bus: State, unit: int, kind: str | None, serial: int) -> State:
    """A drive slot at power-on (ide_reset): nothing identified yet."""
    lcyl, hcyl = _signature(kind)
    drive = State(
        unit=unit,
        kind=kind,
        serial=serial,
        medium=False,  # a CD-ROM's disc (a disk's image is always there)
        mult_sectors=MAX_MULT_SECTORS,
        identify_set=0,
        identify_data=bytes(512),
        feature=0,
        error=0,
        nsector=1,
        sector=1,
        lcyl=lcyl,
        hcyl=hcyl,
        hob_feature=0,
        hob_sector=0,
        hob_nsector=0,
        hob_lcyl=0,
        hob_hcyl=0,
        select=POWER_ON_SELECT,
        status=READY_STAT | SEEK_STAT,
        lba48=0,
        sense_key=0,
        asc=0,
        cdrom_changed=0,
        # PIO transfer state (sent in "ide_drive/pio_state").
        req_nb_sectors=0,
        io_buffer_total_len=IO_BUFFER_TOTAL_LEN,
        io_buffer=_POWER_ON_IO_BUFFER,
        cur_io_buffer_offset=0,
        cur_io_buffer_len=0,
        end_transfer_fn_idx=TRANSFER_END_TABLE.index("ide_dummy_transfer_stop"),
        elementary_transfer_size=0,
        packet_transfer_size=0,
        data_ptr=0,
        data_end=0,
        end_transfer_func="ide_dummy_transfer_stop",
        tray_open=False,
        tray_locked=False,
        events=State(new_media=False, eject_request=False),
    )
    drive._bus = bus  # back-reference, never described
    return drive


class IDE(Device):
    """piix3-ide at 00:01.1. ``bus[b].ifs[u]`` are the drives, ``bmdma[b]`` the engines.

    At power-on (a bare `-M pc` started with -S) bus 1 unit 0 is an empty CD-ROM drive and
    the other slots have no drive; no IDENTIFY has been answered. The board's media add a
    disk at ide0-hd0 (``hda``) and a disc in the CD-ROM (``cdrom``); :meth:`bios_probe`
    is the BIOS's IDENTIFY of every drive as a guest boots; :meth:`raise_media_event` is a
    disc inserted with ``change ide1-cd0``. Operations change the state the way the guest
    (or a failing host disk) would.
    """

    key = "ide"

    def reset(self) -> None:
        self.dev = build_config_space(
            0x8086, 0x7010, 0x0101, prog_if=0x80, status=0x0280,  # DEVSEL medium, fast b2b
            bars=[Bar(4, 0x10, io=True)],
        )
        self.bus: list[State] = []
        self.bmdma: list[State] = []
        media = self.board.media
        for b in range(2):
            bus = State(cmd=0, unit=0, error_status=0)
            bm = State(
                cmd=0, status=0, migration_compat_status=0, addr=0, sector_num=0, nsector=0,
                unit=0, cur_addr=0, cur_prd_last=0, cur_prd_addr=0, cur_prd_len=0,
            )  # fmt: skip
            bm._bus = bus
            bus.ifs = [_new_drive(bus, u, self._kind(b, u), 2 * b + u + 1) for u in range(2)]
            self.bus.append(bus)
            self.bmdma.append(bm)
        self.drive(*CDROM_SLOT).medium = "cdrom" in media

    def _kind(self, bus: int, unit: int) -> str | None:
        if (bus, unit) == HDA and "hda" in self.board.media:
            return HARD_DISK
        return DRIVE_KINDS[(bus, unit)]

    def sections(self) -> list[DeviceSection]:
        return [DeviceSection(IDSTR, 0, ide_description(self.release), self)]

    # -- release facts (data, not names) ---------------------------------------------

    @property
    def _retry(self) -> BmdmaStatusVariant:
        return BMDMA_STATUS[self.release.variant("bmdma.status")]

    @property
    def has_gesn(self) -> bool:
        return self.release.has("ide_drive/atapi/gesn_state")

    @property
    def dies_saving_media_events(self) -> bool:
        """Whether a pending GESN media event kills the save (RHEL 6.1's does)."""
        past_end = _GESN_PAST_END[self.release.variant("gesn_state.fields")]
        return self.has_gesn and any(f.save_dies for f in past_end)

    @property
    def has_tray_state(self) -> bool:
        return self.release.has("ide_drive/tray_state")

    @property
    def saves_pio_retry(self) -> bool:
        """Whether pio_state is sent for a stopped PIO request (0.14 drops its buffer)."""
        needed = PIO_STATE_NEEDED[self.release.variant("pio_state.needed")]
        return needed(State(status=0, _bus=State(error_status=PIO_RETRY)))

    def retry_flags(self, bus: int = 0) -> int:
        """The retry flags of a stopped request on ``bus``, wherever this release keeps them."""
        return self._retry.read_retry(self.bmdma[bus], self.bus[bus])

    def guest_view(self, section: DeviceSection, fields: dict[str, Any]) -> dict[str, Any]:
        """Compare bmdma status as the guest reads it, and pending retries wherever kept.

        0.14 keeps a stopped request's retry flags inside ``status``; 0.15 moves them to
        ``bus.error_status`` and saves a ``migration_compat_status`` mirror. Bits 3-4 of
        the status register are reserved (the guest never relies on them), bits 5-6 are
        the drive-DMA-capable bits the guest wrote: those stay in the comparison.
        """
        view = dict(fields)
        for b, bm in enumerate(self.bmdma):
            view.pop(f"bmdma[{b}]/migration_compat_status", None)
            view[f"bmdma[{b}]/status"] = bm.status & ~(DMA_RETRY | PIO_RETRY)
            view[f"bus[{b}]/retry_flags"] = self.retry_flags(b)
        return view

    # -- helpers ---------------------------------------------------------------------

    def drive(self, bus: int, unit: int) -> State:
        return self.bus[bus].ifs[unit]

    def _need(self, bus: int, unit: int, *kinds: str) -> State:
        d = self.drive(bus, unit)
        if d.kind not in kinds:
            hint = " (a disk needs the medium 'hda': -hda)" if HARD_DISK in kinds else ""
            raise ConfigError(f"ide bus {bus} unit {unit} is {d.kind or 'empty'}, not "
                              f"{' or '.join(kinds)}{hint}")
        return d

    def write_select(self, bus: int, unit: int, head: int = 0, lba: bool = True) -> None:
        """Guest write to the drive/head register: both drives latch it."""
        value = 0xA0 | (0x40 if lba else 0) | (unit << 4) | (head & 0x0F)
        b = self.bus[bus]
        b.ifs[0].select = (value & ~0x10) | 0xA0
        b.ifs[1].select = value | 0x10 | 0xA0
        b.unit = unit

    def _set_lba(self, d: State, lba: int, count: int) -> None:
        d.sector, d.lcyl, d.hcyl = lba & 0xFF, (lba >> 8) & 0xFF, (lba >> 16) & 0xFF
        d.select = (d.select & 0xF0) | ((lba >> 24) & 0x0F)
        d.nsector = count

    def write_device_control(self, bus: int, value: int) -> None:
        """Guest write to the device control register (SRST edges reset both drives)."""
        b = self.bus[bus]
        if not b.cmd & IDE_CMD_RESET and value & IDE_CMD_RESET:
            for d in b.ifs:
                d.status = BUSY_STAT | SEEK_STAT
                d.error = 0x01
        elif b.cmd & IDE_CMD_RESET and not value & IDE_CMD_RESET:
            for d in b.ifs:
                d.status = 0x00 if d.kind == CDROM else READY_STAT | SEEK_STAT
                d.select &= 0xF0
                d.nsector, d.sector = 1, 1
                d.lcyl, d.hcyl = _signature(d.kind)
        b.cmd = value & 0xFF

    def write_bmdma_cmd(self, bus: int, value: int) -> None:
        """Guest write to the bus-master command register (only START and READ stick)."""
        bm = self.bmdma[bus]
        if value & BM_CMD_START:
            bm.status |= BM_STATUS_DMAING
        else:
            bm.status &= ~BM_STATUS_DMAING & 0xFF
        bm.cmd = value & (BM_CMD_START | BM_CMD_READ)

    def write_bmdma_status(self, bus: int, value: int) -> None:
        """Guest write to the bus-master status register: 0x60 kept, 0x06 write-1-clear."""
        bm = self.bmdma[bus]
        bm.status = (
            (value & DMA_CAPABLE_BITS) | (bm.status & BM_STATUS_DMAING)
            | (bm.status & ~value & (BM_STATUS_ERROR | BM_STATUS_INT))
        )  # fmt: skip

    # -- operations used by scenarios ------------------------------------------------

    def start_pio_read(self, bus: int = 0, unit: int = 0, lba: int = 0x123, count: int = 4) -> None:
        """A PIO data-in transfer in flight (DRQ set, a sector's data in the buffer).

        On a hard disk: READ SECTORS, first sector delivered. On the CD-ROM: an ATAPI
        READ(10) with the first 2048-byte block in the buffer and one more to come.
        """
        d = self._need(bus, unit, HARD_DISK, CDROM)
        if d.kind == CDROM and not d.medium:
            raise ConfigError(f"ide bus {bus} unit {unit}: no disc in the CD-ROM drive "
                              "(the medium 'cdrom', or a media event)")
        self.write_select(bus, unit)
        buf = bytearray(d.io_buffer)
        if d.kind == HARD_DISK:
            self._set_lba(d, lba + 1, count - 1)  # the first sector has been read
            d.req_nb_sectors = 1
            buf[0:512] = _sector_data(lba, 512)
            d.data_ptr, d.data_end = 0, 512
            d.end_transfer_func = "ide_sector_read"
        else:
            buf[0:2048] = _sector_data(lba * 4, 2048)
            d.data_ptr, d.data_end = 0, 2048
            d.end_transfer_func = "ide_atapi_cmd_reply_end"
            d.nsector = ATAPI_INT_REASON_IO
            d.lcyl, d.hcyl = 0x00, 0x08  # byte count of this chunk: 2048
            d.packet_transfer_size = 2048 * (count - 1)
            d.elementary_transfer_size = 0
        d.io_buffer = bytes(buf)
        d.error = 0
        d.status = READY_STAT | SEEK_STAT | DRQ_STAT

    def start_dma(
        self, bus: int = 0, unit: int = 0, lba: int = 0x200, count: int = 8, write: bool = False
    ) -> None:
        """A bus-master DMA in flight: the first PRD half done (``cur_prd_len`` != 0)."""
        d = self._need(bus, unit, HARD_DISK)
        bm = self.bmdma[bus]
        self.write_select(bus, unit)
        self._set_lba(d, lba, count)
        d.error = 0
        d.status = READY_STAT | SEEK_STAT | DRQ_STAT | BUSY_STAT
        bm.addr = 0x0009_F000  # the guest's PRD table
        self.write_bmdma_cmd(bus, BM_CMD_START | (0 if write else BM_CMD_READ))
        bm.unit, bm.sector_num, bm.nsector = unit, lba, count
        bm.cur_addr = bm.addr + 8  # first PRD fetched; one more follows
        bm.cur_prd_last = 0
        bm.cur_prd_addr = 0x0010_0800
        bm.cur_prd_len = 0x0800

    def fail_dma_for_retry(self, bus: int = 0, unit: int = 0) -> None:
        """A DMA write failed with werror=stop: the request waits for a retry (DMA_RETRY)."""
        self.start_dma(bus, unit, write=True)
        bm = self.bmdma[bus]
        # The PRDs went into the failed request; the restart walks the table afresh.
        bm.cur_addr = bm.cur_prd_last = bm.cur_prd_addr = bm.cur_prd_len = 0
        bm.unit = unit
        self._retry.record_retry(bm, self.bus[bus], DMA_RETRY)

    def fail_pio_for_retry(self, bus: int = 0, unit: int = 0, lba: int = 0x40) -> None:
        """A PIO WRITE SECTORS failed with werror=stop after the guest filled the buffer."""
        d = self._need(bus, unit, HARD_DISK)
        self.write_select(bus, unit)
        self._set_lba(d, lba, 1)
        d.req_nb_sectors = 1
        buf = bytearray(d.io_buffer)
        buf[0:512] = _sector_data(lba ^ 0x5A5A, 512)
        d.io_buffer = bytes(buf)
        d.data_ptr = d.data_end = 512
        d.end_transfer_func = "ide_sector_write"
        d.error = 0
        d.status = READY_STAT | SEEK_STAT  # DRQ dropped before the write was issued
        self.bmdma[bus].unit = unit
        self._retry.record_retry(self.bmdma[bus], self.bus[bus], PIO_RETRY)

    def set_dma_capable(self, bus: int = 0, bits: int = DMA_CAPABLE_BITS) -> None:
        """The guest marks its drives DMA capable (bits 0x20/0x40 of the bmdma status)."""
        self.write_bmdma_status(bus, bits & DMA_CAPABLE_BITS)

    def raise_media_event(self, bus: int = 1, unit: int = 0) -> None:
        """A disc is inserted in the CD-ROM (``change ide1-cd0 FILE`` on the monitor):
        unit attention, and a GESN event where tracked."""
        d = self._need(bus, unit, CDROM)
        d.medium = True
        d.sense_key, d.asc, d.cdrom_changed = SENSE_UNIT_ATTENTION, ASC_MEDIUM_MAY_HAVE_CHANGED, 1
        if self.has_gesn:
            d.events.new_media = True

    def poll_media_event(self, bus: int = 1, unit: int = 0) -> None:
        """The guest polls GET EVENT STATUS NOTIFICATION: the CD-ROM reports its pending
        new-media event and clears it."""
        self._need(bus, unit, CDROM).events.new_media = False

    def bios_probe(self) -> None:
        """The BIOS identifies every drive as the guest boots (IDENTIFY DEVICE, or IDENTIFY
        PACKET DEVICE for the CD-ROM): each drive keeps its reply."""
        for bus_state in self.bus:
            for drive in bus_state.ifs:
                if drive.kind is not None:
                    drive.identify_set = 1
                    drive.identify_data = _identify_data(drive.kind, drive.serial)

    def set_tray(
        self, bus: int = 1, unit: int = 0, open: bool = True, locked: bool = False
    ) -> None:
        """Open/close and lock/unlock the CD-ROM tray (only releases that save it)."""
        d = self._need(bus, unit, CDROM)
        if not self.has_tray_state:
            raise ConfigError(f"release {self.release.name} does not model the CD-ROM tray")
        d.tray_open, d.tray_locked = bool(open), bool(locked)

    def randomize(self, rng: random.Random) -> None:
        """A random state a guest can reach and this release can round-trip.

        Where the release peeks after subsection bodies (always-peek), no description gets
        two subsections at once, and no parent byte after an embedded struct is 0x05.
        """
        self.reset()
        if "hda" not in self.board.media:
            raise ConfigError("a random IDE state needs the media 'hda' (and 'cdrom')")
        self.bios_probe()  # a booted guest
        one_sub_each = self.release.peek is PeekPolicy.ALWAYS_PEEK
        dev = self.dev
        dev.write_config(0x20, rng.randrange(0x1000, 0x10000, 0x10), 4)  # BAR4
        dev.write_config(0x04, rng.choice((0x0, 0x1, 0x5, 0x405)), 2)
        dev.write_config(0x0C, rng.choice((0, 8, 16)))
        dev.write_config(0x3C, rng.randrange(16))
        for a in range(0x40, 0x48):  # IDE timing registers
            dev.write_config(a, rng.randrange(256))
        for b, bus in enumerate(self.bus):
            self.write_device_control(b, rng.choice((0x00, IDE_CMD_NIEN, 0x08, 0x0A)))
            bm = self.bmdma[b]
            bm.addr = rng.randrange(0, 1 << 32, 4)
            bm.sector_num = rng.randrange(1 << 24)
            bm.nsector = rng.randrange(257)
            bm.unit = rng.randrange(2)
            self.write_bmdma_cmd(b, rng.choice((0, BM_CMD_READ)))
            for d in bus.ifs:
                d.mult_sectors = rng.choice((0, 1, 2, 4, 8, 16))
                d.feature, d.error = rng.randrange(256), rng.choice((0, 1, 4))
                d.nsector = rng.randrange(257)
                for name in ("sector", "lcyl", "hcyl", "hob_feature", "hob_sector",
                             "hob_nsector", "hob_lcyl", "hob_hcyl"):  # fmt: skip
                    setattr(d, name, rng.randrange(256))
                d.select = 0xA0 | (d.unit << 4) | rng.choice((0, 0x40)) | rng.randrange(16)
                d.status = rng.choice((0x50, 0x51, 0x41, 0x00))
                d.lba48 = rng.randrange(2)
                if d.kind == CDROM:
                    d.sense_key, d.asc = rng.choice(((0, 0), (2, 0x3A), (5, 0x24), (6, 0x29)))
            capable = rng.random() < 0.5
            activity = rng.choice(("none", "pio", "dma", "dma-retry", "pio-retry"))
            if b == 1:
                activity = rng.choice(("none", "pio"))
            if one_sub_each and activity == "dma":
                capable = False  # bmdma_current + bmdma/status would be siblings
            if capable:
                self.set_dma_capable(b, DMA_CAPABLE_BITS)
            unit = 0
            if activity == "pio":
                self.start_pio_read(b, unit, rng.randrange(1 << 20), rng.randrange(2, 9))
            elif activity == "dma":
                self.start_dma(b, unit, rng.randrange(1 << 20), rng.randrange(1, 257),
                               rng.random() < 0.5)  # fmt: skip
            elif activity == "dma-retry":
                self.fail_dma_for_retry(b, unit)
            elif activity == "pio-retry" and self.saves_pio_retry:
                self.fail_pio_for_retry(b, unit, rng.randrange(1 << 20))
            if b == 1:
                busy = activity == "pio" and one_sub_each
                if not busy and rng.random() < 0.5:
                    self.raise_media_event(1, 0)
                    if self.dies_saving_media_events:
                        self.poll_media_event(1, 0)  # the guest took it: a state it saves
                if not busy and self.has_tray_state and rng.random() < 0.5:
                    self.set_tray(1, 0, rng.random() < 0.5, rng.random() < 0.5)
