"""How a cell is executed.

A driver runs one cell (source endpoint, destination endpoint, scenario, seed) and reports
an :class:`~harness.verdict.Outcome`; it never decides the verdict. ``inprocess`` runs both
endpoints as objects in this process (the default, and the fake the other drivers are
checked against); ``subprocess`` and ``docker`` run each endpoint as a process (locally, or
in a container) and drive it over QMP (:mod:`harness.drivers.qmp`); ``qemu`` runs real QEMU
binaries (locally or in containers) through the same QMP driver core.
"""

from __future__ import annotations

import abc
import importlib
from typing import Any, ClassVar

from ..matrix import Cell
from ..verdict import Outcome

__all__ = ["DRIVERS", "Driver", "diff_entry", "get_driver"]

DRIVERS = {
    "inprocess": "harness.drivers.inprocess:InProcessDriver",
    "subprocess": "harness.drivers.processes:SubprocessDriver",
    "docker": "harness.drivers.containers:DockerDriver",
    "qemu": "harness.drivers.qemu:QemuDriver",
    "historic": "harness.drivers.historic:HistoricDriver",
}


_LONG = 48  # hex digits (or list items) beyond which a diff value is shown as an excerpt


def diff_entry(path: str, source: Any, destination: Any) -> dict[str, Any]:
    """One field difference for the results, with long buffers cut to where they differ.

    Buffers arrive as bytes or as hex strings (from an endpoint's JSON state); a 512-byte
    identify block is shown as its length and the bytes from the first difference on.
    """
    from ..emulator.machine import jsonable

    a, b = jsonable(source), jsonable(destination)
    if isinstance(a, str) and isinstance(b, str) and max(len(a), len(b)) > _LONG:
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                     min(len(a), len(b))) // 2
        a, b = (_excerpt(v, first) for v in (a, b))
    elif isinstance(a, list) and isinstance(b, list) and max(len(a), len(b)) > _LONG // 4:
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                     min(len(a), len(b)))
        a, b = (f"{len(v)} items; from [{first}]: {v[first:first + 4]}..." for v in (a, b))
    return {"path": path, "source": a, "destination": b}


def _excerpt(hexstr: str, first: int) -> str:
    return f"{len(hexstr) // 2} bytes; from byte {first}: {hexstr[2 * first:2 * first + 32]}..."


class Driver(abc.ABC):
    name: ClassVar[str]

    @abc.abstractmethod
    def run_cell(self, cell: Cell) -> Outcome:
        """Run one cell within ``cell.time_limit`` and report what happened."""

    def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release whatever the driver holds (processes, containers)."""

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get_driver(name: str) -> Driver:
    try:
        target = DRIVERS[name]
    except KeyError:
        raise ValueError(f"unknown driver {name!r} (known: {', '.join(DRIVERS)})") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)()
