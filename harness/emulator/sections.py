"""What a stream's sections are called outside the loader: the file magic, the record of
one section as read, and the key of a section in a state dump.

Kept apart from :mod:`.savevm` and :mod:`.machine` (which re-export them) because
readers of streams that never load one, such as the analyzer on a QEMU stream, need these
names and nothing of the engine: importing them costs nothing.
"""

from __future__ import annotations

# typing.TYPE_CHECKING without importing typing, which the analyzer's start pays for
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["FILE_MAGIC", "SectionRecord", "section_key"]

FILE_MAGIC = 0x5145564D  # "QEVM"


class SectionRecord:
    """One section as the destination read it.

    A plain class rather than a dataclass: importing :mod:`dataclasses` (and with it
    :mod:`inspect`) would cost the analyzer's start more than it decodes in a QEMU
    stream's device sections.
    """

    def __init__(self, kind: str, section_id: int, idstr: str, instance_id: int,
                 version_id: int, offset: int, end: int = 0) -> None:
        self.kind = kind
        self.section_id = section_id
        self.idstr = idstr
        self.instance_id = instance_id
        self.version_id = version_id
        self.offset = offset
        self.end = end

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: Any) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq


def section_key(idstr: str, instance_id: int) -> str:
    """The key of a section in :meth:`Machine.state`: idstr, plus the instance when not 0."""
    return idstr if instance_id == 0 else f"{idstr}@{instance_id:#x}"
