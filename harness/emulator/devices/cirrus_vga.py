"""The Cirrus CLGD 5446 PCI VGA at 00:02.0 (qdev vmsd "cirrus_vga" v2, min 2; instance 0).

The section ``0000:00:02.0/cirrus_vga`` is 1870 bytes: the embedded "PCIDevice" (276)
and the embedded inner "cirrus_vga" v2 (min 1), 1594 bytes of VGA and Cirrus registers.
Format 4 ends each of the two with 0x06 (1872). The same layout in every modelled release;
no subsections, no old-format loader.

RHEL 6's qemu-kvm also gives the outer description the inner's post_load, which then runs
on the PCI wrapper as if it were the inner state: its ``vga.graphic_mode = -1`` lands 232
bytes into the palette, so every load on RHEL 6 leaves palette bytes 232-235 at 0xff
(release variant ``cirrus_vga.outer_post_load``; measured on both builds, whatever the
palette held; its other misplaced writes change nothing a stream carries).

The inner description saves graphics registers 2-255 (VMSTATE_BUFFER_START_MIDDLE) and
the full background/foreground colours in their shadow registers; post_load rebuilds
GR0 and GR1 as the shadows' low nibbles. The blitter's state is not saved (QEMU assumes
no save happens while it runs), nor are the hidden DAC palette and the VBE registers.

RAM blocks the device brings (the machine lists them, see :mod:`..ram`): the video
memory :data:`VRAM_BLOCK` of :data:`VRAM_SIZE` bytes, of which the 5446's
:data:`REAL_VRAM_SIZE` are filled with 0xff by every reset ("Win2K seems to assume that
the pattern buffer is at 0xff"), the rest zero; and the VGA BIOS :data:`ROM_FILE` as the
option ROM :data:`ROM_BLOCK` of :data:`ROM_SIZE` bytes. The ROM BAR (config 0x30) is not
modelled by :mod:`.pci`, which leaves its 4 zero bytes unchecked.

A guest reaches register states only through the I/O ports; :meth:`CirrusVGA.write_port`
and :meth:`CirrusVGA.read_port` are those ports (what changes saved state), and
:meth:`CirrusVGA.randomize` is a driver's random sequence of accesses.

>>> from harness.emulator.releases import get_release
>>> vga = CirrusVGA(get_release("0.14"))
>>> vga.write_port(0x3CE, 0x01); vga.write_port(0x3CF, 0xA7)
>>> vga.cirrus_vga.cirrus_shadow_gr1, vga.cirrus_vga.vga.gr[1]
(167, 7)
"""

from __future__ import annotations

import functools
import random

from ..errors import ConfigError
from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Buffer, Description, Struct, i32, u8, u32
from . import Device, State
from .pci import BAR0, Bar, PCIState, build_config_space, pci_device_field

__all__ = [
    "IDSTR",
    "REAL_VRAM_SIZE",
    "ROM_BLOCK",
    "ROM_FILE",
    "ROM_SIZE",
    "VRAM_BLOCK",
    "VRAM_RESET_FILL",
    "VRAM_SIZE",
    "CirrusVGA",
    "VGARegisters",
    "cirrus_vga_description",
    "pci_cirrus_vga_description",
]

IDSTR = "0000:00:02.0/cirrus_vga"
ROM_FILE = "vgabios-cirrus.bin"
ROM_BLOCK = "0000:00:02.0/cirrus_vga.rom"
ROM_SIZE = 0x10000
VRAM_BLOCK = "vga.vram"
VRAM_SIZE = 8 << 20  # VGA_RAM_SIZE
REAL_VRAM_SIZE = 4 << 20  # the 5446's memory: what cirrus_reset fills
VRAM_RESET_FILL = 0xFF
LFB_SIZE, MMIO_SIZE = 0x2000000, 0x1000
VENDOR_CIRRUS, DEVICE_CLGD5446, CLASS_VGA = 0x1013, 0x00B8, 0x0300
BAR_MEM_PREFETCH = 0x08

MSR_COLOR_EMULATION = 0x01
ST01_V_RETRACE, ST01_DISP_ENABLE = 0x08, 0x01
CURSOR_HIDDENPEL = 0x02  # SR12: palette writes go to the (unsaved) hidden palette
# vga.c's masks of the standard sequencer and graphics registers.
SR_MASK = (0x03, 0x3D, 0x0F, 0x3F, 0x0E)
GR_MASK = (0x0F, 0x0F, 0x0F, 0x1F, 0x03, 0x7B, 0x0F, 0x0F, 0xFF)
# Graphics registers of the blitter and the bank offsets, stored as written.
GR_RAW = (0x09, 0x0A, 0x0B, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x20, 0x22, 0x24, 0x26,
          0x28, 0x29, 0x2C, 0x2D, 0x2F, 0x30, 0x32, 0x33, 0x34, 0x35, 0x38, 0x39)  # fmt: skip
GR_LOW5 = (0x21, 0x23, 0x25, 0x27)
GR_LOW6 = (0x2A, 0x2E)
SR_RAW = (*range(0x07, 0x10), *range(0x12, 0x17), *range(0x18, 0x20))
AR_MASKS = {**{i: 0x3F for i in range(16)}, 0x10: 0xEF, 0x11: 0xFF, 0x12: 0x3F, 0x13: 0x0F,
            0x14: 0x0F}  # fmt: skip


class VGARegisters(State):
    """The VGA core registers (VGACommonState). ``gr_from_2`` is the saved part of ``gr``:
    registers 2-255."""

    @property
    def gr_from_2(self) -> bytes:
        return bytes(self.gr[2:])

    @gr_from_2.setter
    def gr_from_2(self, value: bytes) -> None:
        self.gr = bytes(self.gr[:2]) + bytes(value)


_VGA_BYTES = ("msr", "fcr", "st00", "st01", "dac_state", "dac_sub_index", "dac_read_index",
              "dac_write_index")  # fmt: skip


def _post_load(s: State, version: int) -> None:
    gr = bytearray(s.vga.gr)
    gr[0], gr[1] = s.cirrus_shadow_gr0 & 0x0F, s.cirrus_shadow_gr1 & 0x0F
    s.vga.gr = bytes(gr)


@functools.cache
def cirrus_vga_description(release: Release) -> Description:
    """The inner "cirrus_vga" v2 (min 1): 1594 bytes."""
    return Description(
        "cirrus_vga", 2,
        [u32("vga.latch"), u8("vga.sr_index"), Buffer("vga.sr", 256), u8("vga.gr_index"),
         u8("cirrus_shadow_gr0"), u8("cirrus_shadow_gr1"),
         Buffer("vga.gr", 254, attr="vga.gr_from_2"),
         u8("vga.ar_index"), Buffer("vga.ar", 21), i32("vga.ar_flip_flop"),
         u8("vga.cr_index"), Buffer("vga.cr", 256),
         *(u8(f"vga.{name}") for name in _VGA_BYTES),
         Buffer("vga.dac_cache", 3), Buffer("vga.palette", 768), i32("vga.bank_offset"),
         u8("cirrus_hidden_dac_lockindex"), u8("cirrus_hidden_dac_data"),
         u32("hw_cursor_x"), u32("hw_cursor_y")],
        minimum_version_id=1, post_load=_post_load,
    )  # fmt: skip


# Where RHEL 6's misplaced ``graphic_mode = -1`` lands: palette bytes, in the saved state.
_MISPLACED_GRAPHIC_MODE = slice(232, 236)


def _misplaced_post_load(s: State, version: int) -> None:
    vga = s.cirrus_vga.vga
    palette = bytearray(vga.palette)
    palette[_MISPLACED_GRAPHIC_MODE] = b"\xff" * 4
    vga.palette = bytes(palette)


# release variant "cirrus_vga.outer_post_load" -> the outer description's post_load
_OUTER_POST_LOAD = {"none": None, "inner-on-wrapper": _misplaced_post_load}


@functools.cache
def pci_cirrus_vga_description(release: Release) -> Description:
    """The section: "cirrus_vga" v2 (min 2), PCIDevice then the inner state."""
    variant = release.variant("cirrus_vga.outer_post_load")
    try:
        post_load = _OUTER_POST_LOAD[variant]
    except KeyError:
        raise ConfigError(f"cirrus_vga.outer_post_load variant {variant!r} is not modelled"
                          ) from None
    return Description(
        "cirrus_vga", 2,
        [pci_device_field("dev"), Struct("cirrus_vga", cirrus_vga_description(release))],
        minimum_version_id=2, post_load=post_load,
    )  # fmt: skip


def _config_space() -> PCIState:
    """BAR0 is the 32 MiB prefetchable linear frame buffer, BAR1 the 4 KiB MMIO window."""
    dev = build_config_space(
        VENDOR_CIRRUS, DEVICE_CLGD5446, CLASS_VGA, bars=[Bar(0, LFB_SIZE), Bar(1, MMIO_SIZE)]
    )
    config = bytearray(dev.config)
    config[BAR0] |= BAR_MEM_PREFETCH  # a read-only type bit
    dev.config = bytes(config)
    return dev


def _registers() -> VGARegisters:
    """vga_common_reset: every saved VGA register 0 (the latch is never reset)."""
    return VGARegisters(
        latch=0, sr_index=0, sr=bytes(256), gr_index=0, gr=bytes(256), ar_index=0,
        ar=bytes(21), ar_flip_flop=0, cr_index=0, cr=bytes(256),
        **{name: 0 for name in _VGA_BYTES}, dac_cache=bytes(3), palette=bytes(768),
        bank_offset=0,
    )  # fmt: skip


def _set(buf: bytes, index: int, value: int) -> bytes:
    out = bytearray(buf)
    out[index] = value & 0xFF
    return bytes(out)


class CirrusVGA(Device):
    """The adapter after cirrus_reset, before the VGA BIOS runs: sequencer unlock value,
    the 4 MiB 64-bit memory configuration, the part id in CR27, the hidden DAC lock at 5.
    The machine's video memory is the RAM block :data:`VRAM_BLOCK`."""

    key = "cirrus_vga"

    def reset(self) -> None:
        self.dev = _config_space()
        v = _registers()
        sr = bytearray(v.sr)
        sr[0x06] = 0x0F
        sr[0x1F] = 0x2D  # MCLK
        sr[0x0F] = 0x98
        sr[0x17] = 0x20  # always PCI
        sr[0x15] = 0x04  # 4 MiB
        v.sr = bytes(sr)
        v.gr = _set(v.gr, 0x18, 0x0F)  # fastest memory configuration
        v.cr = _set(v.cr, 0x27, DEVICE_CLGD5446)
        self.cirrus_vga = State(
            vga=v, cirrus_shadow_gr0=0, cirrus_shadow_gr1=0, cirrus_hidden_dac_lockindex=5,
            cirrus_hidden_dac_data=0, hw_cursor_x=0, hw_cursor_y=0,
        )  # fmt: skip

    def sections(self) -> list[DeviceSection]:
        return [DeviceSection(IDSTR, 0, pci_cirrus_vga_description(self.release), self)]

    # -- the guest's port accesses (cirrus_vga_ioport_write/read) ---------------------

    def _port_invalid(self, port: int) -> bool:
        color = self.cirrus_vga.vga.msr & MSR_COLOR_EMULATION
        return 0x3B0 <= port <= 0x3BF if color else 0x3D0 <= port <= 0x3DF

    def write_port(self, port: int, value: int) -> None:
        """A guest OUT to a VGA port, with its effect on the saved registers."""
        c, v, value = self.cirrus_vga, self.cirrus_vga.vga, value & 0xFF
        if self._port_invalid(port):
            return
        if port == 0x3C0:
            if v.ar_flip_flop == 0:
                v.ar_index = value & 0x3F
            elif (index := v.ar_index & 0x1F) in AR_MASKS:
                v.ar = _set(v.ar, index, value & AR_MASKS[index])
            v.ar_flip_flop ^= 1
        elif port == 0x3C2:
            v.msr = value & ~0x10
        elif port == 0x3C4:
            v.sr_index = value
        elif port == 0x3C5:
            self._write_sr(value)
        elif port == 0x3C6:
            if c.cirrus_hidden_dac_lockindex == 4:
                c.cirrus_hidden_dac_data = value
            c.cirrus_hidden_dac_lockindex = 0
        elif port in (0x3C7, 0x3C8):
            if port == 0x3C7:
                v.dac_read_index, v.dac_state = value, 3
            else:
                v.dac_write_index, v.dac_state = value, 0
            v.dac_sub_index = 0
        elif port == 0x3C9:
            v.dac_cache = _set(v.dac_cache, v.dac_sub_index, value)
            v.dac_sub_index += 1
            if v.dac_sub_index == 3:
                if not v.sr[0x12] & CURSOR_HIDDENPEL:
                    at = v.dac_write_index * 3
                    v.palette = v.palette[:at] + v.dac_cache + v.palette[at + 3 :]
                v.dac_sub_index = 0
                v.dac_write_index = (v.dac_write_index + 1) & 0xFF
        elif port == 0x3CE:
            v.gr_index = value
        elif port == 0x3CF:
            self._write_gr(v.gr_index, value)
        elif port in (0x3B4, 0x3D4):
            v.cr_index = value
        elif port in (0x3B5, 0x3D5):
            self._write_cr(value)
        elif port in (0x3BA, 0x3DA):
            v.fcr = value & 0x10

    def read_port(self, port: int) -> None:
        """A guest IN where the read itself changes saved state."""
        c, v = self.cirrus_vga, self.cirrus_vga.vga
        if self._port_invalid(port):
            return
        if port == 0x3C6:
            c.cirrus_hidden_dac_lockindex = (c.cirrus_hidden_dac_lockindex + 1) & 0xFF
            if c.cirrus_hidden_dac_lockindex == 5:
                c.cirrus_hidden_dac_lockindex = 0
        elif port == 0x3C9:
            v.dac_sub_index += 1
            if v.dac_sub_index == 3:
                v.dac_sub_index = 0
                v.dac_read_index = (v.dac_read_index + 1) & 0xFF
        elif port in (0x3BA, 0x3DA):
            v.st01 ^= ST01_V_RETRACE | ST01_DISP_ENABLE  # the "dumb" retrace toggle
            v.ar_flip_flop = 0

    def _write_sr(self, value: int) -> None:
        c, v = self.cirrus_vga, self.cirrus_vga.vga
        index = v.sr_index
        if index < len(SR_MASK):
            v.sr = _set(v.sr, index, value & SR_MASK[index])
        elif index == 0x06:
            v.sr = _set(v.sr, index, 0x12 if value & 0x17 == 0x12 else 0x0F)
        elif index & 0x1F == 0x10:
            v.sr = _set(v.sr, 0x10, value)
            c.hw_cursor_x = (value << 3) | (index >> 5)
        elif index & 0x1F == 0x11:
            v.sr = _set(v.sr, 0x11, value)
            c.hw_cursor_y = (value << 3) | (index >> 5)
        elif index in SR_RAW:
            v.sr = _set(v.sr, index, value)
        elif index == 0x17:
            v.sr = _set(v.sr, index, (v.sr[index] & 0x38) | (value & 0xC7))

    def _write_gr(self, index: int, value: int) -> None:
        """Graphics register writes; GR31 (start a blit) is not modelled."""
        c, v = self.cirrus_vga, self.cirrus_vga.vga
        if index == 0x00:
            c.cirrus_shadow_gr0 = value
        elif index == 0x01:
            c.cirrus_shadow_gr1 = value
        if index == 0x05:
            v.gr = _set(v.gr, index, value & 0x7F)
        elif index < len(GR_MASK):
            v.gr = _set(v.gr, index, value & GR_MASK[index])
        elif index in GR_RAW:
            v.gr = _set(v.gr, index, value)
        elif index in GR_LOW5:
            v.gr = _set(v.gr, index, value & 0x1F)
        elif index in GR_LOW6:
            v.gr = _set(v.gr, index, value & 0x3F)

    def _write_cr(self, value: int) -> None:
        v = self.cirrus_vga.vga
        index = v.cr_index
        if index <= 0x18:
            if v.cr[0x11] & 0x80 and index <= 7:  # CR0-7 write protection
                if index == 7:
                    v.cr = _set(v.cr, 7, (v.cr[7] & ~0x10) | (value & 0x10))
                return
            v.cr = _set(v.cr, index, value)
        elif index <= 0x1D:
            v.cr = _set(v.cr, index, value)

    def randomize(self, rng: random.Random) -> None:
        """A driver at work: BARs assigned and decoding, colour emulation chosen, then a
        few hundred random register accesses (sequencer, graphics, CRTC, attribute
        controller, DAC reads and writes, the hidden DAC unlock dance, status reads), and
        the data latches holding whatever the last planar read fetched."""
        self.reset()
        dev = self.dev
        dev.write_config(0x10, rng.randrange(0xE000_0000, 0xFC00_0000, LFB_SIZE), 4)
        dev.write_config(0x14, rng.randrange(0xFEB0_0000, 0xFEC0_0000, MMIO_SIZE), 4)
        dev.write_config(0x04, rng.choice((0x0, 0x3, 0x2)), 2)
        self.write_port(0x3C2, rng.choice((0x67, 0x63, 0xE3, rng.randrange(256))))
        crtc = 0x3D4 if self.cirrus_vga.vga.msr & MSR_COLOR_EMULATION else 0x3B4
        for _ in range(rng.randrange(50, 400)):
            op = rng.randrange(9)
            if op == 0:
                self.write_port(0x3C4, rng.choice((rng.randrange(0x20), rng.randrange(256))))
                self.write_port(0x3C5, rng.randrange(256))
            elif op == 1:
                self.write_port(0x3CE, rng.choice((rng.randrange(0x3A), rng.randrange(256))))
                if self.cirrus_vga.vga.gr_index != 0x31:
                    self.write_port(0x3CF, rng.randrange(256))
            elif op == 2:
                self.write_port(crtc, rng.choice((rng.randrange(0x28), rng.randrange(256))))
                self.write_port(crtc + 1, rng.randrange(256))
            elif op == 3:
                self.write_port(0x3C0, rng.randrange(256))
            elif op == 4:
                self.write_port(0x3C8, rng.randrange(256))
                for _ in range(rng.randrange(1, 8)):
                    self.write_port(0x3C9, rng.randrange(64))
            elif op == 5:
                self.write_port(0x3C7, rng.randrange(256))
                for _ in range(rng.randrange(4)):
                    self.read_port(0x3C9)
            elif op == 6:
                for _ in range(rng.choice((4, rng.randrange(8)))):
                    self.read_port(0x3C6)
                self.write_port(0x3C6, rng.randrange(256))
            elif op == 7:
                self.read_port(crtc + 6)
            else:
                self.write_port(crtc + 6, rng.randrange(256))
        for _ in range(rng.randrange(3)):
            self.read_port(0x3C6)
        self.cirrus_vga.vga.latch = rng.choice((0, rng.randrange(1 << 32)))
