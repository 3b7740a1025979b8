"""A tiny x86 boot image, assembled here byte by byte, that keeps changing memory and a
device while a migration runs.

The boot sector (loaded by the BIOS at 0x7c00 in real mode):

1. enables A20 (port 0x92), reads the I/O ports it was given once each (a driver
   probing a device), loads a flat GDT and enters 32-bit protected mode;
2. writes ``A`` to COM1 once (the "booted" mark) and sets the first byte of every page
   in the range to 0 (the BIOS may have left data there);
3. loops forever: one pass adds 1 to the first byte of every 4 KiB page from 1 MiB up to
   ``top`` (exclusive), then writes the first page's counter to CMOS register 0x40 (so
   the RTC's device state changes every pass) and ``B`` to COM1.

After a migration the counters must form at most one step: every page ``N``, or a prefix
of pages at ``N+1`` and the rest at ``N`` (modulo 256), exactly as the guest leaves them
when it is stopped in the middle of a pass (:func:`check_counters`). A page that missed
its last dirty copy shows as a second step.

The bytes are written out below with their mnemonics; nothing is copied from elsewhere.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BOOTED", "PASS", "START", "PAGE", "boot_sector", "check_counters", "top_for",
           "write_image"]

START = 1 << 20  # the first page the guest counts in
PAGE = 4096
BOOTED = b"A"  # written once to COM1 after entering protected mode
PASS = b"B"  # written to COM1 after every pass over memory
CMOS_REGISTER = 0x40  # CMOS byte (in the user area) that holds the first page's counter
_ORIGIN = 0x7C00


def top_for(ram_bytes: int) -> int:
    """The end of the counted range: 1 MiB below the top of RAM, where the BIOS keeps
    its tables (the guest never needs them, but leaving them alone costs nothing)."""
    top = ram_bytes - (1 << 20)
    if top <= START + PAGE:
        raise ValueError(f"RAM of {ram_bytes} bytes is too small for the guest (>= 3 MiB)")
    return top


def boot_sector(top: int, probes: Sequence[int] = ()) -> bytes:
    """The 512-byte boot sector counting pages in ``[START, top)``; first it reads each
    I/O port in ``probes`` once, as a driver probing a device does (reading the floppy
    controller's 0x3f7 clears its media-changed flag)."""
    if top % PAGE or not START < top < (1 << 32):
        raise ValueError(f"top {top:#x}: a page-aligned address above 1 MiB")
    code = bytearray()

    def emit(*parts: int | bytes) -> int:
        at = len(code)
        for p in parts:
            code.extend(p if isinstance(p, bytes) else bytes([p]))
        return at

    le16 = lambda v: struct.pack("<H", v)  # noqa: E731
    le32 = lambda v: struct.pack("<I", v)  # noqa: E731

    # --- 16-bit real mode ---
    emit(0xFA)                              # cli
    emit(0x31, 0xC0)                        # xor ax, ax
    emit(0x8E, 0xD8)                        # mov ds, ax
    emit(0xE4, 0x92)                        # in al, 0x92
    emit(0x0C, 0x02)                        # or al, 2            (A20 on)
    emit(0xE6, 0x92)                        # out 0x92, al
    for port in probes:
        emit(0xBA, le16(port))              # mov dx, port
        emit(0xEC)                          # in al, dx
    lgdt = emit(0x0F, 0x01, 0x16, le16(0))  # lgdt [gdt_descriptor] (patched below)
    emit(0x0F, 0x20, 0xC0)                  # mov eax, cr0
    emit(0x0C, 0x01)                        # or al, 1            (PE)
    emit(0x0F, 0x22, 0xC0)                  # mov cr0, eax
    far = emit(0xEA, le16(0), le16(0x08))   # jmp 0x08:protected  (patched below)
    # --- 32-bit protected mode, flat segments ---
    protected = emit(0x66, 0xB8, le16(0x10))  # mov ax, 0x10
    emit(0x8E, 0xD8)                        # mov ds, ax
    emit(0x8E, 0xC0)                        # mov es, ax
    emit(0x8E, 0xD0)                        # mov ss, ax
    emit(0xBC, le32(_ORIGIN))               # mov esp, 0x7c00
    emit(0x66, 0xBA, le16(0x3F8))           # mov dx, 0x3f8       (COM1 data)
    emit(0xB0, BOOTED[0])                   # mov al, 'A'
    emit(0xEE)                              # out dx, al
    emit(0xB8, le32(START))                 # mov eax, START
    clear = emit(0xC6, 0x00, 0x00)          # clear: mov byte [eax], 0
    emit(0x05, le32(PAGE))                  # add eax, PAGE
    emit(0x3D, le32(top))                   # cmp eax, top
    jb_clear = emit(0x72, 0)                # jb clear            (patched below)
    outer = emit(0xB8, le32(START))         # outer: mov eax, START
    inner = emit(0xFE, 0x00)                # inner: inc byte [eax]
    emit(0x05, le32(PAGE))                  # add eax, PAGE
    emit(0x3D, le32(top))                   # cmp eax, top
    jb = emit(0x72, 0)                      # jb inner            (patched below)
    emit(0xB0, CMOS_REGISTER)               # mov al, 0x40
    emit(0xE6, 0x70)                        # out 0x70, al        (CMOS index)
    emit(0xA0, le32(START))                 # mov al, [START]
    emit(0xE6, 0x71)                        # out 0x71, al        (CMOS data)
    emit(0xB0, PASS[0])                     # mov al, 'B'
    emit(0xEE)                              # out dx, al
    jmp = emit(0xEB, 0)                     # jmp outer           (patched below)
    while len(code) % 8:
        emit(0x90)                          # nop (align the GDT)
    gdt = emit(bytes(8))                    # null descriptor
    emit(le32(0x0000FFFF), le32(0x00CF9A00))  # 0x08: code, base 0, limit 4 GiB, 32-bit
    emit(le32(0x0000FFFF), le32(0x00CF9200))  # 0x10: data, base 0, limit 4 GiB
    gdt_descriptor = emit(le16(3 * 8 - 1), le32(_ORIGIN + gdt))

    code[lgdt + 3 : lgdt + 5] = le16(_ORIGIN + gdt_descriptor)
    code[far + 1 : far + 3] = le16(_ORIGIN + protected)
    code[jb_clear + 1] = _rel8(jb_clear + 2, clear)
    code[jb + 1] = _rel8(jb + 2, inner)
    code[jmp + 1] = _rel8(jmp + 2, outer)
    if len(code) > 510:
        raise AssertionError("boot sector code too long")
    return bytes(code) + bytes(510 - len(code)) + b"\x55\xAA"


def _rel8(after: int, target: int) -> int:
    delta = target - after
    if not -128 <= delta <= 127:
        raise AssertionError(f"short jump out of range ({delta})")
    return delta & 0xFF


def write_image(path: str | Path, ram_bytes: int, *, size: int = 1 << 20,
                probes: Sequence[int] = (), top: int | None = None) -> Path:
    """A raw disk image of ``size`` bytes whose first sector is :func:`boot_sector`
    (SeaBIOS boots a 64 KiB disk over IDE but not over q35's AHCI; 1 MiB boots both).
    ``top`` ends the counted range lower than :func:`top_for` would."""
    path = Path(path)
    sector = boot_sector(top_for(ram_bytes) if top is None else top, probes)
    path.write_bytes(sector + bytes(size - len(sector)))
    return path


def check_counters(counters: Sequence[int]) -> str | None:
    """``None`` when the per-page counters form at most one step down (mod 256) from
    the first page to the last, else what is wrong (the pages where the steps are).

    >>> check_counters([5, 5, 4, 4]) is None
    True
    >>> check_counters([0, 255, 255]) is None
    True
    >>> check_counters([5, 4, 4, 3])
    '2 steps in the page counters (at pages 1, 3); a stopped guest leaves at most 1'
    """
    if not counters:
        return "no pages to check"
    steps = []
    for i in range(1, len(counters)):
        prev, cur = counters[i - 1], counters[i]
        if cur == prev:
            continue
        if (prev - cur) % 256 == 1:
            steps.append(i)
            continue
        return (f"page {i} has counter {cur} after {prev} on page {i - 1}: only equal or "
                "one less is possible")
    if len(steps) > 1:
        at = ", ".join(map(str, steps[:8])) + (", ..." if len(steps) > 8 else "")
        return (f"{len(steps)} steps in the page counters (at pages {at}); a stopped guest "
                "leaves at most 1")
    return None
