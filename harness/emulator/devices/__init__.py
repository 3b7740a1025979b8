"""Device models of the PC of QEMU 0.13 to 1.0.

Each module builds its descriptions from a release row (:mod:`..releases`) and defines a
:class:`Device` whose attributes are the state those descriptions save, plus the
operations scenarios use (start a DMA, change a floppy, ...).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ConfigError
from ..releases import Release
from ..savevm import DeviceSection

__all__ = ["ISA_IDS", "MEDIA", "NIC_SLOT", "Board", "Device", "State", "isa_instance_ids",
           "nic_slot"]

DEFAULT_BOARD_RAM = 64 << 20
NIC_SLOT = 3  # 00:03.0, the first free slot after the VGA (00:02.0 with -vga none)


def nic_slot(vga: str) -> int:
    """The NIC's PCI slot: the first free one, after the VGA's 00:02.0 if there is one."""
    return NIC_SLOT - 1 if vga == "none" else NIC_SLOT


MEDIA = frozenset({"hda", "fda", "cdrom"})

# How a release registers an ISA device's section (variants "rtc.ids", "serial.ids",
# "fdc.ids", "pit.ids"): as a qdev device with instance 0 and its I/O base accepted as a
# legacy alias on load, or with vmstate_register(base) as before qdev (the I/O base
# written, nothing else accepted).
ISA_IDS = ("iobase", "qdev")


def isa_instance_ids(release: Release, key: str, iobase: int) -> tuple[int, int | None]:
    """(written instance id, load-only alias) of an ISA device at ``iobase``."""
    variant = release.variant(key)
    if variant == "iobase":
        return iobase, None
    if variant == "qdev":
        return 0, iobase
    raise ConfigError(f"{key} variant {variant!r} is not modelled (known: {', '.join(ISA_IDS)})")


@dataclass(frozen=True)
class Board:
    """What the command line chose for the whole machine, as devices see it at power-on:
    the RAM size (in the CMOS and the host bridge), the NIC, and the media (``hda``: a
    disk image at ide0-hd0; ``fda``: a floppy image in floppy0; ``cdrom``: a disc in
    ide1-cd0). A migration's destination is started with the same options."""

    ram_size: int = DEFAULT_BOARD_RAM
    nic: str = "e1000"  # e1000 | rtl8139 | none
    user_net: bool = True  # -net user: the slirp stack exists
    media: frozenset[str] = frozenset()
    # The host's clock (ns since the epoch) when the machine is created: the RTC runs on
    # it. Fixed by default, so that a stream is the same on every run; an endpoint that
    # faces a real QEMU takes the real host's, as a source on this host would.
    host_time_ns: int = 1_313_143_200 * 1_000_000_000  # 2011-08-12 10:00 UTC
    vga: str = "cirrus"  # -vga: cirrus | none
    cpu_model: str = ""  # the machine type's default CPU model ("": the release's)

    @property
    def nic_slot(self) -> int:
        return nic_slot(self.vga)

    def nic_idstr(self, name: str) -> str:
        """The NIC's qdev path and vmsd name, e.g. ``0000:00:03.0/rtl8139``."""
        return f"0000:00:{self.nic_slot:02x}.0/{name}"


class State:
    """A plain attribute bag for nested device state (a bus, a drive, a register set)."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"State({inner})"


class Device:
    """A device model bound to one release.

    ``key`` names the device in a machine (``machine.devices["ide"]``). ``sections()``
    returns the savevm sections it registers, in registration order.
    """

    key: ClassVar[str]

    def __init__(self, release: Release, board: Board | None = None) -> None:
        self.release = release
        self.board = board or Board()
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def sections(self) -> list[DeviceSection]:
        raise NotImplementedError

    def randomize(self, rng: random.Random) -> None:
        """Put the device in a random state the release can express and a guest can reach."""
        raise NotImplementedError

    def machine_modified(self) -> None:
        """A device was hot-added or hot-removed in the machine (qdev_machine_modified())."""

    def guest_view(self, section: DeviceSection, fields: dict[str, Any]) -> dict[str, Any]:
        """The guest-visible state of one of this device's sections.

        ``fields`` is the section's saved state by field path. A device whose releases keep
        the same guest state in different fields (a flag moved to another register, a
        wire-only mirror) rewrites it here into one form, so that states compare across
        releases by meaning rather than by layout. The view depends on the fields (and the
        release) only: two devices of one release with equal fields have equal views
        (:func:`~harness.emulator.machine.same_device_state` relies on it).
        """
        return fields
