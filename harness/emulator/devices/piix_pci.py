"""The i440FX host bridge and its PCI bus, with the PIIX3 PCI-to-ISA bridge.

i440fx_init registers three sections back to back, the same in every modelled release:

- "PCIBUS" v1 (vmstate_register with instance -1, so 0): ``nirq`` (INT32_EQUAL: 4 PIRQ
  lines on a PIIX, refused otherwise) and one i32 count of asserting devices per line;
- "0000:00:00.0/I440FX" v3 (min 3, min_old 1): the embedded PCIDevice and ``smm_enabled``;
  v1 and v2 predate vmstate and are read by :func:`i440fx_load_old`, which in v2 also
  reads the PIIX3's four IRQ levels (they used to live in the host bridge);
- "0000:00:01.0/PIIX3" v3 (min 2): the embedded PCIDevice and (v3) four i32 PIRQ levels
  (0.15 renamed the array ``pci_irq_levels_vmstate`` and fills it in pre_save from the
  bus; the wire is the same).

Both PCI functions are qdev devices on a bus with device paths: each also answers to its
bare name ("I440FX", "PIIX3") on load. Power-on config: ids, revision and class; the
i440FX's SMRAM register (0x72) 0x02 and its DRAM row boundary (0x57) RAM size / 8 MiB;
the PIIX3's reset values of its ISA routing registers. piix3_reset also sets the command
register to 0x07 (I/O, memory, master); whether that survives power-on depends on when
the PCI bus reset runs (the release variant ``pci.bus_reset``): 0.13 resets the bus first
and keeps 0x07, 0.14 and later clear the writable command bits after the device's reset.
"""

from __future__ import annotations

import functools
import random
from typing import Any

from ..errors import ConfigError
from ..releases import Release
from ..savevm import DeviceSection
from ..stream import StreamReader
from ..vmstate import (
    Description,
    IntArray,
    IntEqual,
    PeekPolicy,
    WireRules,
    load_state,
    u8,
)
from . import Device, State
from .pci import PCIState, build_config_space, pci_device_description, pci_device_field

__all__ = [
    "I440FX_IDSTR",
    "PIIX3_IDSTR",
    "PCIHost",
    "i440fx_description",
    "i440fx_load_old",
    "pcibus_description",
    "piix3_description",
]

I440FX_IDSTR = "0000:00:00.0/I440FX"
PIIX3_IDSTR = "0000:00:01.0/PIIX3"
PIIX_NUM_PIRQS = 4
I440FX_SMRAM = 0x72
I440FX_DRB = 0x57  # DRAM row boundary: RAM size in 8 MiB units

# piix3_reset: the ISA bridge's registers after reset (offset -> value).
PIIX3_RESET = {
    0x07: 0x02,  # status: DEVSEL medium
    0x4C: 0x4D, 0x4E: 0x03,
    0x60: 0x80, 0x61: 0x80, 0x62: 0x80, 0x63: 0x80,  # PIRQ routing: disabled
    0x69: 0x02, 0x70: 0x80, 0x76: 0x0C, 0x77: 0x0C, 0x78: 0x02,
    0xA0: 0x08, 0xA8: 0x0F,
}  # fmt: skip
PIIX3_RESET_COMMAND = 0x07

# Variant "pci.bus_reset": does the bus reset's clearing of the writable command bits run
# after the device's own reset handler?
_BUS_RESET_AFTER_DEVICE = {"before-device": False, "after-device": True}


@functools.cache
def pcibus_description(release: Release) -> Description:
    return Description(
        "PCIBUS", 1,
        [IntEqual("nirq", 4, True),
         IntArray("irq_count", 4, PIIX_NUM_PIRQS, signed=True)],
        minimum_version_id=1,
    )  # fmt: skip


def i440fx_load_old(r: StreamReader, host: Any, version: int) -> None:
    """Read a v1 or v2 "I440FX" section (i440fx_load_old): the PCI device at the
    destination's own PCIDevice version, ``smm_enabled``, and in v2 the PIIX3's levels."""
    pci = pci_device_description()
    # pci_device_load: a plain vmstate_load_state of the PCIDevice at its version 2 (an
    # old-format loader gets no wire rules; the PCIDevice has no subsections to peek for).
    load_state(r, pci, host.i440fx.dev, pci.version_id, WireRules(PeekPolicy.PEEK_IF_DEFINED))
    host.i440fx.smm_enabled = r.read_u8()
    if version == 2:
        host.piix3.pci_irq_levels = [r.read_i32() for _ in range(PIIX_NUM_PIRQS)]


@functools.cache
def i440fx_description(release: Release) -> Description:
    return Description(
        "I440FX", 3, [pci_device_field("i440fx.dev"), u8("i440fx.smm_enabled")],
        minimum_version_id=3, minimum_version_id_old=1, load_state_old=i440fx_load_old,
    )  # fmt: skip


@functools.cache
def piix3_description(release: Release) -> Description:
    return Description(
        "PIIX3", 3,
        [pci_device_field("piix3.dev"),
         IntArray("piix3.pci_irq_levels", 4, PIIX_NUM_PIRQS, signed=True, version_id=3)],
        minimum_version_id=2,
    )  # fmt: skip


# Variant "i440fx.drb": whether i440fx_init writes the DRAM row boundary (RHEL 6's
# qemu-kvm does not: 0).
_DRB = {"ram-size": True, "unset": False}


def _i440fx_config(ram_size: int, drb: bool = True) -> PCIState:
    return build_config_space(
        0x8086, 0x1237, 0x0600, revision=0x02,
        extra={I440FX_SMRAM: 0x02, **({I440FX_DRB: min(ram_size // (8 << 20), 255)} if drb else {})},
    )  # fmt: skip


def _piix3_config(release: Release) -> PCIState:
    try:
        bus_reset_after = _BUS_RESET_AFTER_DEVICE[release.variant("pci.bus_reset")]
    except KeyError:
        raise ConfigError(f"pci.bus_reset variant {release.variant('pci.bus_reset')!r} is "
                          "not modelled") from None
    command = 0 if bus_reset_after else PIIX3_RESET_COMMAND
    return build_config_space(0x8086, 0x7000, 0x0601, header_type=0x80, command=command,
                              extra=PIIX3_RESET)


class PCIHost(Device):
    """The PCI bus with its host bridge (``i440fx``) and ISA bridge (``piix3``)."""

    key = "i440fx"

    def reset(self) -> None:
        self.nirq = PIIX_NUM_PIRQS
        self.irq_count = [0] * PIIX_NUM_PIRQS
        drb = self.release.variant("i440fx.drb")
        if drb not in _DRB:
            raise ConfigError(f"i440fx.drb variant {drb!r} is not modelled")
        self.i440fx = State(dev=_i440fx_config(self.board.ram_size, _DRB[drb]), smm_enabled=0)
        self.piix3 = State(dev=_piix3_config(self.release), pci_irq_levels=[0] * PIIX_NUM_PIRQS)

    def sections(self) -> list[DeviceSection]:
        r = self.release
        return [
            DeviceSection("PCIBUS", 0, pcibus_description(r), self),
            DeviceSection(I440FX_IDSTR, 0, i440fx_description(r), self, compat=("I440FX", 0)),
            DeviceSection(PIIX3_IDSTR, 0, piix3_description(r), self, compat=("PIIX3", 0)),
        ]

    def randomize(self, rng: random.Random) -> None:
        """The BIOS routed the PIRQs to IRQs 10/11, a device or two asserts its line."""
        cfg = self.piix3.dev
        for pirq in range(PIIX_NUM_PIRQS):
            cfg.write_config(0x60 + pirq, rng.choice((10, 10, 11, 11, 0x80)))
        cfg.write_config(0x04, 0x07, 2)
        self.i440fx.dev.write_config(0x59, rng.choice((0x30, 0x10, 0x00)))  # PAM0: BIOS shadow
        self.i440fx.smm_enabled = rng.randrange(2)
        levels = [int(rng.random() < 0.2) for _ in range(PIIX_NUM_PIRQS)]
        self.irq_count = list(levels)
        self.piix3.pci_irq_levels = list(levels)
