"""The firmware configuration interface ("fw_cfg" v2, min 1; instance 0).

A qdev sysbus device, the same in every modelled release: the selected entry (u16) and
the read offset into it, a u32 since v2 (a v1 section held it as a u16, the
VMSTATE_UINT16_HACK). Reset selects entry 0 (the signature) at offset 0.
"""

from __future__ import annotations

import functools
import random
from typing import Any

from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Description, u16, u32
from . import Device

__all__ = ["FwCfg", "fw_cfg_description"]

FW_CFG_SIGNATURE, FW_CFG_ID, FW_CFG_RAM_SIZE = 0x00, 0x01, 0x03


def _is_version_1(obj: Any, version: int) -> bool:
    return version == 1


@functools.cache
def fw_cfg_description(release: Release) -> Description:
    return Description(
        "fw_cfg", 2,
        [u16("cur_entry"), u16("cur_offset_v1", attr="cur_offset", exists=_is_version_1),
         u32("cur_offset", version_id=2)],
        minimum_version_id=1,
    )  # fmt: skip


class FwCfg(Device):
    key = "fw_cfg"

    def reset(self) -> None:
        self.cur_entry = FW_CFG_SIGNATURE
        self.cur_offset = 0

    def sections(self) -> list[DeviceSection]:
        return [DeviceSection("fw_cfg", 0, fw_cfg_description(self.release), self)]

    def randomize(self, rng: random.Random) -> None:
        """The BIOS has read part of an entry."""
        self.cur_entry = rng.choice((FW_CFG_SIGNATURE, FW_CFG_ID, FW_CFG_RAM_SIZE, 0x19))
        self.cur_offset = rng.randrange(4)
