"""How a cell is executed.

A driver runs one cell (source endpoint, destination endpoint, scenario, seed) and reports
an :class:`~harness.verdict.Outcome`; it never decides the verdict. ``inprocess`` runs both
endpoints as objects in this process (the default, and the fake the other drivers are
checked against); ``subprocess`` and ``docker`` run each endpoint as a process (locally, or
in a container) and drive it over QMP (:mod:`harness.drivers.qmp`).
"""

from __future__ import annotations

import abc
import importlib
from typing import ClassVar

from ..matrix import Cell
from ..verdict import Outcome

__all__ = ["DRIVERS", "Driver", "get_driver"]

DRIVERS = {
    "inprocess": "harness.drivers.inprocess:InProcessDriver",
    "subprocess": "harness.drivers.processes:SubprocessDriver",
    "docker": "harness.drivers.containers:DockerDriver",
}


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
