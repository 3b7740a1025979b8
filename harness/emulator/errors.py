"""Errors of the emulator core.

Every failure of the core is an :class:`EmulatorError`::

    EmulatorError
     +-- ConfigError          unknown release, machine type, scenario or option
     +-- SaveError            the state cannot be written (a value out of its field's range)
     +-- SaveCrash            the release's save would have died: the modelled QEMU process
     |                        dereferenced a wild pointer while writing its state
     +-- LoadError            the destination refused the stream: a closed ``Reason``,
     |    |                   the byte offset, the section idstr and the field path
     |    +-- TruncatedInput  a read ran past the end of the input (QEMU's -EIO)
     +-- LoadCrash            the release's loader would have died, not refused: QEMU
                              dereferenced NULL, aborted or wrote outside guest memory

A harness classifies outcomes from ``LoadError.reason`` and never from message text; a
``LoadCrash`` is the verdict ``crashed``, and so is a ``SaveCrash`` of the source.
"""

from __future__ import annotations

import enum

__all__ = [
    "ConfigError",
    "EmulatorError",
    "LoadCrash",
    "LoadError",
    "Reason",
    "SaveCrash",
    "SaveError",
    "TruncatedInput",
]


class Reason(enum.Enum):
    """Why a load failed, with the errno QEMU returned for it."""

    BAD_MAGIC = ("bad magic", "EINVAL")
    OBSOLETE_VERSION = ("obsolete stream version", "ENOTSUP")
    UNSUPPORTED_VERSION = ("unsupported stream version", "ENOTSUP")
    FORMAT_MISMATCH = ("mismatching savevm format", "ENOTSUP")
    UNKNOWN_SECTION_TYPE = ("unknown section type", "EINVAL")
    UNKNOWN_SECTION = ("unknown section", "EINVAL")
    UNKNOWN_SECTION_ID = ("unknown section id", "EINVAL")
    DUPLICATE_SECTION = ("section sent twice", "EINVAL")
    VERSION_TOO_NEW = ("version too new", "EINVAL")
    VERSION_TOO_OLD = ("version too old", "EINVAL")
    UNKNOWN_SUBSECTION = ("unknown subsection", "ENOENT")
    BAD_SENTINEL = ("bad sentinel", "EINVAL")
    EQUAL_MISMATCH = ("value differs from the destination's", "EINVAL")
    INVALID_VALUE = ("invalid value", "EINVAL")
    LIMIT_EXCEEDED = ("length or count beyond its bound", "EINVAL")
    TRUNCATED = ("truncated input", "EIO")
    UNKNOWN_RAM_BLOCK = ("unknown RAM block", "EINVAL")
    RAM_SIZE_MISMATCH = ("RAM size mismatch", "EINVAL")
    BAD_RAM_FLAGS = ("unknown RAM record flags", "EINVAL")

    def __init__(self, text: str, errno: str) -> None:
        self.text = text
        self.errno = errno


class EmulatorError(Exception):
    """Root of every error the emulator core raises."""


class ConfigError(EmulatorError):
    """A machine was asked for something that does not exist (release, machine, option)."""


class _SaveFailure(EmulatorError):
    """A save that stopped: what happened, in which section, at which field path (built
    from the inside out as the error travels up through the descriptions)."""

    def __init__(self, detail: str, *, section: str | None = None,
                 field: str | None = None) -> None:
        self.detail = detail
        self.section = section
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        where = "/".join(p for p in (self.section, self.field) if p)
        return f"{where}: {self.detail}" if where else self.detail

    def add_path(self, component: str) -> None:
        self.field = f"{component}/{self.field}" if self.field else component
        self.args = (self._format(),)

    def set_section(self, section: str) -> None:
        self.section = section
        self.args = (self._format(),)


class SaveError(_SaveFailure):
    """The machine's state cannot be written, e.g. a value outside its field's width."""


class SaveCrash(_SaveFailure):
    """The modelled QEMU process dies while writing its state, as the real one did.

    RHEL 6.1's save walks past a field list without its end marker into whatever data
    follows it and dereferences an address built from it. The model stops there and says
    what the real process died of; a harness reports ``crashed``. What was written before
    is not a stream: the real process left a truncated one behind.
    """


class LoadError(EmulatorError):
    """The stream was refused: reason, byte offset, section idstr and field path.

    ``field`` is built from the inside out as the error travels up through the
    descriptions (``bus[1]/ifs[0]/mult_sectors``); ``section`` is set by the section loader.
    """

    def __init__(
        self,
        reason: Reason,
        detail: str = "",
        *,
        offset: int | None = None,
        section: str | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.offset = offset
        self.section = section
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        text = self.reason.text
        if self.detail:
            text = f"{text}: {self.detail}"
        where = []
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        if self.section:
            where.append(f"section {self.section}")
        if self.field:
            where.append(f"field {self.field}")
        return f"{text} ({', '.join(where)})" if where else text

    def add_path(self, component: str) -> None:
        """Prepend one level of the field path (called while unwinding)."""
        self.field = f"{component}/{self.field}" if self.field else component
        self.args = (self._format(),)

    def set_section(self, section: str) -> None:
        if self.section is None:
            self.section = section
            self.args = (self._format(),)

    def to_dict(self) -> dict[str, object]:
        return {
            "reason": self.reason.name.lower(),
            "errno": self.reason.errno,
            "message": str(self),
            "offset": self.offset,
            "section": self.section,
            "field": self.field,
        }


class TruncatedInput(LoadError):
    """A read needed more bytes than the input holds."""

    def __init__(self, offset: int, wanted: int, available: int) -> None:
        self.wanted = wanted
        self.available = available
        super().__init__(
            Reason.TRUNCATED,
            f"needed {wanted} byte(s), {available} left",
            offset=offset,
        )


class LoadCrash(EmulatorError):
    """The modelled QEMU process dies on this input instead of refusing it.

    QEMU of 2010-2011 trusted parts of the stream: a RAM page for a block it does not have
    is written through a NULL pointer, a page offset beyond its block is written outside
    the block's memory, a v3 address beyond RAM aborts. The model stops where QEMU would
    have died and says what it would have done; a harness reports ``crashed``.
    """

    def __init__(self, detail: str, *, offset: int | None = None,
                 section: str | None = None, field: str | None = None) -> None:
        self.detail = detail
        self.offset = offset
        self.section = section
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        where = [f"offset {self.offset}"] if self.offset is not None else []
        if self.section:
            where.append(f"section {self.section}")
        if self.field:
            where.append(f"field {self.field}")
        return f"{self.detail} ({', '.join(where)})" if where else self.detail

    def add_path(self, component: str) -> None:
        """Prepend one level of the field path (a crash inside a description)."""
        self.field = f"{component}/{self.field}" if self.field else component
        self.args = (self._format(),)

    def set_section(self, section: str) -> None:
        if self.section is None:
            self.section = section
            self.args = (self._format(),)

    def to_dict(self) -> dict[str, object]:
        return {"message": str(self), "offset": self.offset, "section": self.section}
