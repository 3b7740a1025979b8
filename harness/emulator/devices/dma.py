"""The two i8257 DMA controllers (vmsd "dma" v1, min 1; instances 0 and 1).

DMA_init registers one "dma" section per controller with ``vmstate_register``: the 8-bit
controller (ports 0x00-0x0f, ``dshift`` 0) as instance 0, the 16-bit one (ports
0xc0-0xdf, ``dshift`` 1) as instance 1. Each is 75 bytes: command, mask, flip-flop,
``dshift``, then four embedded "dma_regs" v1 channels of 17 bytes (format 4 ends each
channel with 0x06: 79 bytes). The layout is the same in every modelled release; no
subsections, no old-format loader. The status register is not migrated.

``dshift`` is a plain INT32, not an "equal" field: a destination takes whatever width
the stream says, as QEMU did.

>>> from harness.emulator.releases import get_release
>>> [(s.idstr, s.instance_id) for s in DMA(get_release("0.14")).sections()]
[('dma', 0), ('dma', 1)]
"""

from __future__ import annotations

import functools
import random

from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Description, IntArray, StructArray, i32, u8
from . import Device, State

__all__ = ["CHANNELS", "DMA", "dma_description", "dma_regs_description"]

CHANNELS = 4  # per controller
ADDR, COUNT = 0, 1  # indexes of ``now`` and ``base``
MASK_ALL = 0xFF  # the master clear (dma_reset) masks every channel
CMD_BLOCK_CONTROLLER = 0x04  # the only command bit write_cont accepts besides 0

_CHANNEL_BYTES = ("mode", "page", "pageh", "dack", "eop")


@functools.cache
def dma_regs_description(release: Release) -> Description:
    """ "dma_regs" v1 (min 1): one channel, 17 bytes."""
    return Description(
        "dma_regs", 1,
        [IntArray("now", 4, 2, signed=True), IntArray("base", 2, 2),
         *(u8(name) for name in _CHANNEL_BYTES)],
        minimum_version_id=1,
    )  # fmt: skip


@functools.cache
def dma_description(release: Release) -> Description:
    """ "dma" v1 (min 1): one controller, 75 bytes in format 3."""
    return Description(
        "dma", 1,
        [u8("command"), u8("mask"), u8("flip_flop"), i32("dshift"),
         StructArray("regs", dma_regs_description(release), CHANNELS, version_id=1)],
        minimum_version_id=1,
    )  # fmt: skip


def _channel() -> State:
    return State(now=[0, 0], base=[0, 0], mode=0, page=0, pageh=0, dack=0, eop=0)


def _controller(dshift: int) -> State:
    """A controller after dma_init2: zeroed channels, then dma_reset's master clear."""
    return State(
        command=0, mask=MASK_ALL, flip_flop=0, dshift=dshift,
        regs=[_channel() for _ in range(CHANNELS)],
    )  # fmt: skip


class DMA(Device):
    """Both controllers; ``controllers[i]`` is saved as instance ``i``."""

    key = "dma"

    def reset(self) -> None:
        self.controllers = [_controller(0), _controller(1)]

    def sections(self) -> list[DeviceSection]:
        desc = dma_description(self.release)
        return [DeviceSection("dma", i, desc, c) for i, c in enumerate(self.controllers)]

    def randomize(self, rng: random.Random) -> None:
        """Registers as port writes leave them.

        Only a command of 0 or block-controller mode is accepted; the mode register keeps
        its channel number in bits 0-1; the PC has no high page registers (``pageh`` stays
        0) and nothing ever sets ``dack`` or ``eop``. A write of the high address or count
        byte reloads ``now`` (address = base << dshift, count = 0); a transfer advances the
        count up to the channel's length.
        """
        self.reset()
        for ncont, c in enumerate(self.controllers):
            c.command = rng.choice((0, CMD_BLOCK_CONTROLLER))
            c.mask = rng.choice((MASK_ALL, rng.randrange(16), rng.randrange(256)))
            c.flip_flop = rng.randrange(2)
            for ichan, ch in enumerate(c.regs):
                ch.base = [rng.randrange(0x10000), rng.randrange(0x10000)]
                ch.mode = (rng.randrange(64) << 2) | ichan
                ch.page = rng.randrange(256)
                length = (ch.base[COUNT] + 1) << ncont
                ch.now = [ch.base[ADDR] << c.dshift, rng.choice((0, rng.randrange(length + 1)))]
