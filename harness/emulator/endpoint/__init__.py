"""The endpoint process: a machine behind a QMP monitor, with migration transports.

``python -m harness.emulator`` runs one endpoint. It speaks QMP as QEMU does
(:mod:`.qmp`: greeting, capabilities negotiation, replies, errors, events), moves
migration streams over TCP, unix sockets, ``exec:`` pipes and files, incrementally in
both directions (:mod:`.transport`), and keeps the run state and migration state of one
:class:`~harness.emulator.machine.Machine` (:mod:`.server`).

Errors::

    QMPError            a command failed: QEMU's error class and description
    TransportError      a migration URI that cannot be used (bad syntax, connect/listen)
"""

from __future__ import annotations

from .qmp import QMPError
from .transport import TransportError

__all__ = ["QMPError", "TransportError"]
