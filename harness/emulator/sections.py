"""What a stream's sections are called outside the loader: the file magic, the record of
one section as read, and the key of a section in a state dump.

Kept apart from :mod:`.savevm` and :mod:`.machine` (which re-export them) because
readers of streams that never load one, such as the analyzer on a QEMU stream, need these
names and nothing of the engine: importing them costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FILE_MAGIC", "SectionRecord", "section_key"]

FILE_MAGIC = 0x5145564D  # "QEVM"


@dataclass
class SectionRecord:
    """One section as the destination read it."""

    kind: str
    section_id: int
    idstr: str
    instance_id: int
    version_id: int
    offset: int
    end: int = 0


def section_key(idstr: str, instance_id: int) -> str:
    """The key of a section in :meth:`Machine.state`: idstr, plus the instance when not 0."""
    return idstr if instance_id == 0 else f"{idstr}@{instance_id:#x}"
