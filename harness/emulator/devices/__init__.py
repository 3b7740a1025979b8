"""Device models of the PC of QEMU 0.13 to 1.0.

Each module builds its descriptions from a release row (:mod:`..releases`) and defines a
:class:`Device` whose attributes are the state those descriptions save, plus the
operations scenarios use (start a DMA, change a floppy, ...).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from ..releases import Release
from ..savevm import DeviceSection

__all__ = ["Device", "State"]


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

    def __init__(self, release: Release) -> None:
        self.release = release
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def sections(self) -> list[DeviceSection]:
        raise NotImplementedError

    def randomize(self, rng: random.Random) -> None:
        """Put the device in a random state the release can express and a guest can reach."""
        raise NotImplementedError

    def guest_view(self, section: DeviceSection, fields: dict[str, Any]) -> dict[str, Any]:
        """The guest-visible state of one of this device's sections.

        ``fields`` is the section's saved state by field path. A device whose releases keep
        the same guest state in different fields (a flag moved to another register, a
        wire-only mirror) rewrites it here into one form, so that states compare across
        releases by meaning rather than by layout.
        """
        return fields
