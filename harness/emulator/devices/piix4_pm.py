"""The PIIX4 power management function at 00:01.3, with its SMBus's I2C bus.

piix4_pm_initfn creates the SMBus, whose "i2c_bus" (v1; vmstate_register with instance
-1, so 0) is registered before the function's own qdev vmsd:

- "i2c_bus": ``saved_address``, the address of the device in a transfer (pre_save: 0xff,
  i.e. -1, when none);
- "0000:00:01.3/piix4_pm" v2 (min 1; also answers to "piix4_pm"): the embedded PCIDevice;
  the PM1 status, enable and control registers; the embedded "APM State" (apmc, apms);
  the PM timer's overflow timer and time; (v2) the embedded "gpe" (general purpose event
  status and enable) and "pci_status" (PCI hotplug: slots going up and down).

The GPE block is where releases differ (variant ``piix4_pm.gpe``). 0.13 and 0.14 save
``sts`` and ``en`` as one u16 each (312 bytes). 0.15 made the block generic: the vmstate
saves ``GPE_LEN`` = 4 u16 from each of two 2-byte buffers (324 bytes), i.e. the register
and 6 bytes of whatever follows it on the heap (zero in practice). A 0.14 destination reads
12 bytes of a 0.15+ stream as the next section type (a 0 there ends the load early); a
0.15+ destination reads 12 bytes past a 0.14 piix4_pm.

RHEL 6's qemu-kvm (variant ``piix4_pm.registration`` = "legacy") registers the function's
state with vmstate_register(NULL, 0) from its init, before the SMBus exists: a bare
"piix4_pm" (no device path, kept "to maintain migration compatibility"), then "i2c_bus".
Its destinations answer to "piix4_pm" only; upstream ones accept the bare name as the
qdev section's compat name. Upstream ("qdev"): "i2c_bus", then the path-named section.

A hot-add or hot-remove of a PCI device sets the GPE's PCI-hotplug status bit and the slot
in ``pci_status.up`` or ``.down`` (piix4_device_hotplug).
"""

from __future__ import annotations

import functools
import random
from typing import Any

from ..errors import ConfigError
from ..releases import Release
from ..savevm import DeviceSection
from ..vmstate import Description, Field, IntArray, Struct, Timer, i64, u8, u16, u32
from . import Device, State
from .pci import build_config_space, pci_device_field

__all__ = [
    "GPE_LAYOUTS",
    "IDSTR",
    "PIIX4PM",
    "i2c_bus_description",
    "piix4_pm_description",
]

IDSTR = "0000:00:01.3/piix4_pm"
BARE_IDSTR = "piix4_pm"
SMB_IO_BASE = 0xB100
GPE_LEN = 4  # bytes of the GPE0 block: 2 status, 2 enable
PCI_HOTPLUG_STATUS = 0x02
NO_I2C_DEVICE = 0xFF


def _gpe_u16() -> list[Field]:
    return [u16("sts"), u16("en")]


def _gpe_array() -> list[Field]:
    return [IntArray("sts", 2, GPE_LEN), IntArray("en", 2, GPE_LEN)]


# Variant "piix4_pm.gpe" -> the fields of the embedded "gpe" and how many u16 each holds.
GPE_LAYOUTS = {"u16": (_gpe_u16, 1), "gpe-array": (_gpe_array, GPE_LEN)}


def _gpe_layout(release: Release) -> tuple[Any, int]:
    variant = release.variant("piix4_pm.gpe")
    try:
        return GPE_LAYOUTS[variant]
    except KeyError:
        raise ConfigError(f"piix4_pm.gpe variant {variant!r} is not modelled") from None


def _i2c_pre_save(bus: Any) -> None:
    bus.saved_address = NO_I2C_DEVICE if bus.current_dev is None else bus.current_dev


def _i2c_post_load(bus: Any, version: int) -> None:
    bus.current_dev = None  # devices attach themselves again as they load


@functools.cache
def i2c_bus_description(release: Release) -> Description:
    return Description("i2c_bus", 1, [u8("saved_address")], minimum_version_id=1,
                       pre_save=_i2c_pre_save, post_load=_i2c_post_load)


@functools.cache
def piix4_pm_description(release: Release) -> Description:
    fields, _ = _gpe_layout(release)
    apm = Description("APM State", 1, [u8("apmc"), u8("apms")], minimum_version_id=1)
    gpe = Description("gpe", 1, fields(), minimum_version_id=1)
    pci_status = Description("pci_status", 1, [u32("up"), u32("down")], minimum_version_id=1)
    return Description(
        "piix4_pm", 2,
        [
            pci_device_field("dev"),
            u16("pmsts"), u16("pmen"), u16("pmcntrl"),
            Struct("apm", apm),
            Timer("tmr_timer"), i64("tmr_overflow_time"),
            Struct("gpe", gpe, version_id=2),
            Struct("pci0_status", pci_status, version_id=2),
        ],
        minimum_version_id=1,
    )  # fmt: skip


def _config() -> Any:
    """piix4_pm_initfn's config space, for a machine with a COM1 backend and no parallel
    port (``-serial null -parallel none``: 0x5f and 0x67 describe them)."""
    return build_config_space(
        0x8086, 0x7113, 0x0680, revision=0x03, interrupt_pin=1, status=0x0280,
        extra={
            0x40: 0x01,  # PM I/O base: the read-only I/O space bit
            0x5F: 0x10, 0x63: 0x60,
            0x67: 0x08,  # COM1 has a backend
            0x90: SMB_IO_BASE & 0xFF | 1, 0x91: SMB_IO_BASE >> 8,
            0xD2: 0x09,
        },
    )  # fmt: skip


class PIIX4PM(Device):
    """ACPI power management as the machine is created: nothing enabled, no event."""

    key = "piix4_pm"

    def reset(self) -> None:
        _, gpe_words = _gpe_layout(self.release)
        zero: Any = 0 if gpe_words == 1 else [0] * gpe_words
        self.smbus = State(saved_address=NO_I2C_DEVICE, current_dev=None)
        self.dev = _config()
        self.pmsts = self.pmen = self.pmcntrl = 0
        self.apm = State(apmc=0, apms=0)
        self.tmr_timer = -1
        self.tmr_overflow_time = 0
        self.gpe = State(sts=zero, en=zero if gpe_words == 1 else list(zero))
        self.pci0_status = State(up=0, down=0)

    def sections(self) -> list[DeviceSection]:
        r = self.release
        i2c = DeviceSection("i2c_bus", 0, i2c_bus_description(r), self.smbus)
        registration = r.variant("piix4_pm.registration")
        if registration == "qdev":
            return [i2c, DeviceSection(IDSTR, 0, piix4_pm_description(r), self,
                                       compat=(BARE_IDSTR, 0))]
        if registration == "legacy":
            return [DeviceSection(BARE_IDSTR, 0, piix4_pm_description(r), self), i2c]
        raise ConfigError(f"piix4_pm.registration variant {registration!r} is not modelled")

    # The GPE status/enable register as the guest sees it (word 0 of the 0.15 arrays).

    def gpe_register(self, name: str) -> int:
        value = getattr(self.gpe, name)
        return value[0] if isinstance(value, list) else value

    def _set_gpe(self, name: str, value: int) -> None:
        current = getattr(self.gpe, name)
        if isinstance(current, list):
            current[0] = value
        else:
            setattr(self.gpe, name, value)

    def hotplug(self, slot: int, added: bool = True) -> None:
        """A PCI device was hot-added (or removed) in ``slot`` (piix4_device_hotplug)."""
        self.pci0_status.up = self.pci0_status.down = 0
        self._set_gpe("sts", self.gpe_register("sts") | PCI_HOTPLUG_STATUS)
        if added:
            self.pci0_status.up |= 1 << slot
        else:
            self.pci0_status.down |= 1 << slot

    def guest_view(self, section: DeviceSection, fields: dict[str, Any]) -> dict[str, Any]:
        """The GPE registers as one value each, whichever layout saved them."""
        out = dict(fields)
        for name in ("sts", "en"):
            value = out.get(f"gpe/{name}")
            if isinstance(value, list):
                out[f"gpe/{name}"] = value[0]
        return out

    def randomize(self, rng: random.Random) -> None:
        """An ACPI guest: SCI enabled, the PM timer armed, GPE enables set."""
        self.dev.write_config(0x80, 0x01)  # PMREGMISC: I/O space on
        self.pmcntrl = 0x0001  # SCI_EN
        self.pmen = rng.choice((0x0100, 0x0121, 0x0000))  # bit 0: PM timer overflow
        self.pmsts = rng.choice((0, 0x0001))
        self.apm.apmc, self.apm.apms = rng.choice((0, 0xF1)), rng.randrange(256)
        self.tmr_overflow_time = rng.randrange(1 << 40)
        self.tmr_timer = self.tmr_overflow_time if self.pmen & 0x0001 else -1
        self._set_gpe("en", rng.choice((0, PCI_HOTPLUG_STATUS, 0x000F)))
        if rng.randrange(4) == 0:
            self.hotplug(rng.randrange(4, 8), added=bool(rng.randrange(2)))
