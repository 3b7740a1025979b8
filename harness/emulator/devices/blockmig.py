"""Block migration's live section ("block" v1; instance 0), registered in every release.

block-migration.c registers it live, before ``ram``, whether or not block migration is
asked for. Without ``migrate -b`` (the only way the model migrates) every stage writes a
single be64 record with the EOS flag, so START, PART and END each carry 8 bytes.

The loader reads records until EOS, each a be64 whose low 9 bits (below the 512-byte
sector) are flags: DEVICE_BLOCK 0x01 is a disk chunk for the named drive, PROGRESS 0x04 a
percentage (ignored), EOS 0x02 ends the stage. The model's drives hold no image the stream
could write, so a disk chunk is refused, as QEMU refuses one for a drive it cannot find or
that has no medium (-EINVAL); any other record without EOS is refused ("Unknown flags").
"""

from __future__ import annotations

import random

from ..errors import LoadError, Reason
from ..savevm import LiveStage
from ..stream import StreamReader, StreamWriter
from ..vmstate import WireRules
from . import Device

__all__ = ["BlockMigration", "BlockSection", "FLAG_DEVICE_BLOCK", "FLAG_EOS", "FLAG_PROGRESS"]

FLAG_DEVICE_BLOCK = 0x01
FLAG_EOS = 0x02
FLAG_PROGRESS = 0x04
SECTOR_MASK = 0x1FF


class BlockSection:
    """The live handler: writes EOS-only stages, reads any stage."""

    idstr = "block"
    instance_id = 0
    version_id = 1
    live = True
    alias_id = None
    compat = None

    def save_stage(self, w: StreamWriter, stage: LiveStage) -> None:
        w.u64(FLAG_EOS)

    def load(self, r: StreamReader, version: int, rules: WireRules | None = None) -> None:
        while True:
            at = r.offset
            flags = r.read_u64() & SECTOR_MASK
            if flags & FLAG_DEVICE_BLOCK:
                name = r.read_bytes(r.read_u8()).decode("latin-1")
                raise LoadError(Reason.INVALID_VALUE, f"a disk chunk for drive {name!r}: "
                                "no such drive with a medium on this machine", offset=at)
            if not flags & (FLAG_PROGRESS | FLAG_EOS):
                raise LoadError(Reason.INVALID_VALUE, f"unknown block flags 0x{flags:03x}",
                                offset=at)
            if flags & FLAG_EOS:
                return


class BlockMigration(Device):
    """Block migration, switched off: its section says only "end of stage"."""

    key = "block"

    def reset(self) -> None:
        self.section = BlockSection()

    def sections(self) -> list[BlockSection]:  # type: ignore[override]
        return [self.section]

    def randomize(self, rng: random.Random) -> None:
        pass
