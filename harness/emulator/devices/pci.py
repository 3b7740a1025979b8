"""The embedded "PCIDevice" description and the PCI configuration space behind it.

Every PCI device (piix3-ide, rtl8139) embeds ``vmstate_pci_device`` as its first field:
v2, min 1, 276 bytes, no subsections, identical in every modelled release. Loading it
refuses a config space whose read-only bits differ from the destination's (the guest
cannot have changed them, so the two machines are not the same hardware), and an
``irq_state`` entry other than 0 or 1.

The masks follow QEMU's model (pci_init_cmask, pci_init_wmask, pci_init_w1cmask, the same
from 0.13 to 1.0): ``cmask`` marks the bytes a load compares (ids, the status register's
capability-list bit, revision and class, header type, capability pointer, BARs: not the
interrupt pin), ``wmask`` the bits a guest may write, ``w1cmask`` the status bits a guest
clears by writing 1. A change is refused where ``cmask & ~wmask & ~w1cmask``.

>>> s = build_config_space(0x8086, 0x7010, 0x0101, bars=[Bar(4, 0x10, io=True)])
>>> s.write_config(0x20, 0xFFFFFFFF, 4)   # the guest sizes BAR4
>>> hex(s.read_config(0x20, 4))
'0xfffffff1'
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..stream import StreamReader
from ..vmstate import Buffer, Description, IntArray, IntLocalLE, Struct, WireRules, invalid

__all__ = [
    "CONFIG_SIZE",
    "Bar",
    "PCIConfig",
    "PCIState",
    "build_config_space",
    "read_only_difference",
    "pci_device_description",
    "pci_device_field",
]

CONFIG_SIZE = 256
HEADER_SIZE = 0x40

# Standard header offsets.
VENDOR_ID, DEVICE_ID, COMMAND, STATUS = 0x00, 0x02, 0x04, 0x06
REVISION_ID, CLASS_PROG, CLASS_DEVICE = 0x08, 0x09, 0x0A
CACHE_LINE_SIZE, LATENCY_TIMER, HEADER_TYPE = 0x0C, 0x0D, 0x0E
BAR0, SUBSYSTEM_VENDOR_ID, SUBSYSTEM_ID = 0x10, 0x2C, 0x2E
CAPABILITY_LIST, INTERRUPT_LINE, INTERRUPT_PIN = 0x34, 0x3C, 0x3D

COMMAND_IO, COMMAND_MEMORY, COMMAND_MASTER, COMMAND_INTX_DISABLE = 0x1, 0x2, 0x4, 0x400
STATUS_CAP_LIST = 0x0010
STATUS_W1C = 0xF900  # parity, signalled/received aborts, system error, detected parity
BAR_SPACE_IO = 0x1

# Names for error messages: first byte of each register -> (name, width).
_REGISTERS = {
    VENDOR_ID: ("vendor id", 2), DEVICE_ID: ("device id", 2), COMMAND: ("command", 2),
    STATUS: ("status", 2), REVISION_ID: ("revision", 1), CLASS_PROG: ("prog-if", 1),
    CLASS_DEVICE: ("class", 2), HEADER_TYPE: ("header type", 1),
    CAPABILITY_LIST: ("capability list", 1), INTERRUPT_PIN: ("interrupt pin", 1),
    **{BAR0 + 4 * i: (f"BAR{i}", 4) for i in range(6)},
}  # fmt: skip


@dataclass(frozen=True)
class Bar:
    """One base address register: its index (0-5), size (a power of two) and space."""

    index: int
    size: int
    io: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.index < 6 or self.size & (self.size - 1) or self.size < 4:
            raise ValueError(f"bad BAR {self}")


class PCIState:
    """A PCI function's saved state plus the masks that say what the guest may change.

    ``config`` (256 bytes), ``irq_state`` (4 INTx levels) and ``version_id`` (the
    destination's own value, 2) are the described fields; the masks and ``bars`` are the
    device's fixed hardware and never travel.
    """

    version_id = 2

    def __init__(
        self, config: bytes, cmask: bytes, wmask: bytes, w1cmask: bytes, bars: Iterable[Bar]
    ) -> None:
        self.config = bytes(config)
        self.cmask = bytes(cmask)
        self.wmask = bytes(wmask)
        self.w1cmask = bytes(w1cmask)
        self.bars = tuple(bars)
        self.irq_state = [0, 0, 0, 0]
        self.mappings: dict[int, int] = {}
        self.update_mappings()

    # -- guest accesses --------------------------------------------------------------

    def read_config(self, addr: int, width: int = 1) -> int:
        return int.from_bytes(self.config[addr : addr + width], "little")

    def write_config(self, addr: int, value: int, width: int = 1) -> None:
        """A guest config write: writable bits take the value, W1C bits clear on 1."""
        cfg = bytearray(self.config)
        for i in range(width):
            a, v = addr + i, (value >> (8 * i)) & 0xFF
            wm, w1c = self.wmask[a], self.w1cmask[a]
            cfg[a] = ((cfg[a] & ~wm) | (v & wm)) & ~(v & w1c) & 0xFF
        self.config = bytes(cfg)
        self.update_mappings()

    def set_irq(self, pin: int, level: int) -> None:
        """The device drives INTx ``pin`` (0 = INTA) to ``level`` (0 or 1)."""
        self.irq_state[pin] = 1 if level else 0

    # -- derived state ---------------------------------------------------------------

    def bar_address(self, index: int) -> int:
        raw = self.read_config(BAR0 + 4 * index, 4)
        return raw & ~0x3 if raw & BAR_SPACE_IO else raw & ~0xF

    def update_mappings(self) -> None:
        """Recompute where each BAR is decoded (after a config write or a load)."""
        cmd = self.read_config(COMMAND, 2)
        self.mappings = {}
        for bar in self.bars:
            enabled = cmd & (COMMAND_IO if bar.io else COMMAND_MEMORY)
            addr = self.bar_address(bar.index)
            if enabled and addr:
                self.mappings[bar.index] = addr

    def read_only_change(self, new: bytes) -> str | None:
        """Why ``new`` cannot replace this config space, or None if it can."""
        return read_only_difference(new, self.config, self.cmask, self.wmask, self.w1cmask)


def read_only_difference(new: bytes, config: bytes, cmask: bytes, wmask: bytes,
                         w1cmask: bytes) -> str | None:
    """Why a loaded config space ``new`` cannot replace ``config`` (QEMU's
    ``pci_device_load``: a compared byte differs outside the writable and write-1-to-clear
    bits), naming the first register where it does; None if it can."""
    ro = (int.from_bytes(cmask, "big") & ~int.from_bytes(wmask, "big")
          & ~int.from_bytes(w1cmask, "big"))
    if not (int.from_bytes(new, "big") ^ int.from_bytes(config, "big")) & ro:
        return None  # the common case, in one big-integer operation
    for a in range(CONFIG_SIZE):
        ro = cmask[a] & ~wmask[a] & ~w1cmask[a]
        if (new[a] ^ config[a]) & ro:
            base = max((r for r in _REGISTERS if r <= a), default=a)
            name, width = _REGISTERS.get(base, (None, 1))
            if name is None or a >= base + width:
                name = f"byte 0x{a:02x}"
            return (
                f"read-only bits of {name} (config 0x{a:02x}) differ: stream 0x{new[a]:02x},"
                f" destination 0x{config[a]:02x}"
            )
    return None


def build_config_space(
    vendor_id: int,
    device_id: int,
    class_code: int,
    *,
    prog_if: int = 0,
    revision: int = 0,
    header_type: int = 0,
    subsystem_vendor_id: int = 0x1AF4,
    subsystem_id: int = 0x1100,
    interrupt_pin: int = 0,
    bars: Iterable[Bar] = (),
    command: int = 0,
    status: int = 0,
    capability_pointer: int = 0,
    extra: Mapping[int, int] | None = None,
) -> PCIState:
    """A freshly reset type-0 function with its masks.

    Ids, the capability-list status bit, revision, class, header type, capability pointer
    and every declared BAR are compared on load; command (I/O, memory, master, INTx
    disable), cache line size, interrupt line, BAR address bits above the size and the
    device-specific bytes 0x40-0xff are writable; the status error bits are W1C. The
    subsystem ids default to QEMU's (1af4:1100, set for every device since 0.13);
    ``extra`` sets device-specific bytes (offset -> value).
    """
    bars = tuple(bars)
    spaces = _config_spaces(vendor_id, device_id, class_code, prog_if, revision, header_type,
                            subsystem_vendor_id, subsystem_id, interrupt_pin, bars, command,
                            status, capability_pointer, tuple(sorted((extra or {}).items())))
    return PCIState(*spaces, bars)


@functools.lru_cache(maxsize=256)
def _config_spaces(vendor_id: int, device_id: int, class_code: int, prog_if: int,
                   revision: int, header_type: int, subsystem_vendor_id: int,
                   subsystem_id: int, interrupt_pin: int, bars: tuple[Bar, ...], command: int,
                   status: int, capability_pointer: int, extra: tuple[tuple[int, int], ...]
                   ) -> tuple[bytes, bytes, bytes, bytes]:
    """The config space and its three masks (immutable: made once per function kind)."""
    cfg, cmask, wmask, w1c = (bytearray(CONFIG_SIZE) for _ in range(4))

    def put(buf: bytearray, addr: int, value: int, width: int) -> None:
        buf[addr : addr + width] = value.to_bytes(width, "little")

    put(cfg, VENDOR_ID, vendor_id, 2)
    put(cfg, DEVICE_ID, device_id, 2)
    cfg[REVISION_ID] = revision
    cfg[CLASS_PROG] = prog_if
    put(cfg, CLASS_DEVICE, class_code, 2)
    cfg[HEADER_TYPE] = header_type
    put(cfg, SUBSYSTEM_VENDOR_ID, subsystem_vendor_id, 2)
    put(cfg, SUBSYSTEM_ID, subsystem_id, 2)
    cfg[INTERRUPT_PIN] = interrupt_pin
    put(cfg, COMMAND, command, 2)
    put(cfg, STATUS, status, 2)
    cfg[CAPABILITY_LIST] = capability_pointer
    for addr, value in extra:
        cfg[addr] = value

    put(cmask, VENDOR_ID, 0xFFFF, 2)
    put(cmask, DEVICE_ID, 0xFFFF, 2)
    cmask[STATUS] = STATUS_CAP_LIST
    for a in (REVISION_ID, CLASS_PROG, HEADER_TYPE, CAPABILITY_LIST):
        cmask[a] = 0xFF
    put(cmask, CLASS_DEVICE, 0xFFFF, 2)

    put(wmask, COMMAND, COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER | COMMAND_INTX_DISABLE, 2)
    wmask[CACHE_LINE_SIZE] = 0xFF
    wmask[INTERRUPT_LINE] = 0xFF
    wmask[HEADER_SIZE:] = b"\xff" * (CONFIG_SIZE - HEADER_SIZE)
    put(w1c, STATUS, STATUS_W1C, 2)

    for bar in bars:
        addr = BAR0 + 4 * bar.index
        put(cfg, addr, BAR_SPACE_IO if bar.io else 0, 4)
        put(wmask, addr, ~(bar.size - 1) & 0xFFFFFFFF, 4)
        put(cmask, addr, 0xFFFFFFFF, 4)
    return bytes(cfg), bytes(cmask), bytes(wmask), bytes(w1c)


class PCIConfig(Buffer):
    """The 256-byte config space: refused when read-only bits differ, then BARs remap.

    The comparison needs the destination's config before it is overwritten, which a
    plain ``check`` (run after the store) cannot see.
    """

    kind = "pci_config"

    def __init__(self, name: str = "config", **kw: Any) -> None:
        super().__init__(name, CONFIG_SIZE, **kw)

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        value = r.read_bytes(self.size)
        problem = obj.read_only_change(value)
        if problem:
            raise invalid(problem)
        obj.config = value
        obj.update_mappings()
        return None


def _irq_levels(obj: Any, value: list[int]) -> str | None:
    for pin, level in enumerate(value):
        if level not in (0, 1):
            return f"irq_state[{pin}] = {level}, must be 0 or 1"
    return None


@functools.cache
def pci_device_description() -> Description:
    """``vmstate_pci_device``: the same in every modelled release."""
    return Description(
        "PCIDevice",
        2,
        [
            IntLocalLE("version_id", 4, True),
            PCIConfig("config"),
            IntArray("irq_state", 4, 4, version_id=2, check=_irq_levels),
        ],
        minimum_version_id=1,
    )


def pci_device_field(name: str = "dev", **kw: Any) -> Struct:
    """VMSTATE_PCI_DEVICE: the embedded struct, field v0."""
    return Struct(name, pci_device_description(), **kw)
