"""The VMDESCRIPTION trailer of a QEMU >= 2.3 stream: found, parsed, and checked.

After its EOF byte QEMU writes ``0x06``, a be32 length and that many bytes of JSON that
describe every device section it saved (``{"page_size", "devices": [{"name",
"instance_id", "vmsd_name", "version", "fields": [{"name", "type", "size", "array_len",
"index", "struct"}], "subsections": [...]}]}``).

The JSON comes from the stream, so it is input like any other: :func:`find_trailer` finds
it in one backward search (JSON holds no raw control byte, so the trailer's ``0x06`` is
within four bytes of the last ``0x06`` of the file), refuses one larger than
:data:`MAX_JSON_BYTES`, and parses it without letting ``RecursionError`` or
``MemoryError`` out. :func:`parse_devices` turns it into :class:`Vmsd` objects, checking
every member's type and range and the nesting depth; a device whose description is
malformed is kept with its error, which the decoder reports (with the JSON path) when the
stream reaches that device.
"""

from __future__ import annotations

import json
import struct

from .source import Input

# typing.TYPE_CHECKING without importing typing, which the analyzer's start pays for
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MAX_DEPTH", "MAX_JSON_BYTES", "DescriptionError", "Device", "FieldDesc",
           "Trailer", "Vmsd", "find_trailer", "parse_devices"]

MAX_JSON_BYTES = 16 << 20  # QEMU 7.2 writes about 40 KB for a pc; -dump-vmstate 790 KB
MAX_DEPTH = 32  # structs and subsections nested in each other (QEMU: a handful)
MAX_SIZE = 1 << 32  # one element's declared size
MAX_ARRAY = 1 << 40  # declared element count (still checked against the stream's bytes)
PAGE_SIZES = frozenset(1 << k for k in range(9, 17))  # 512 B .. 64 KiB


class DescriptionError(ValueError):
    """A member of the JSON is missing, of the wrong type or out of range: ``path`` says
    which (``devices[3].fields[2].size``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


# Plain classes, not dataclasses or NamedTuples: importing dataclasses or typing costs the
# analyzer's start more than reading the description does.


class _Record:
    """Attributes named in ``__slots__``, set in order from the arguments."""

    __slots__: tuple[str, ...] = ()

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: Any) -> bool:
        return type(other) is type(self) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


class Trailer(_Record):
    """Where the trailer is (the offset of its 0x06), its length, and its JSON or why
    that could not be read."""

    __slots__ = ("offset", "length", "doc", "error")

    def __init__(self, offset: int, length: int, doc: Any = None,
                 error: str | None = None) -> None:
        self.offset, self.length, self.doc, self.error = offset, length, doc, error


class FieldDesc(_Record):
    __slots__ = ("name", "type", "size", "array_len", "index", "struct")

    def __init__(self, name: str, type: str, size: int, array_len: int | None,
                 index: int | None, struct: Vmsd | None) -> None:
        self.name, self.type, self.size = name, type, size
        self.array_len, self.index, self.struct = array_len, index, struct


class Vmsd(_Record):
    __slots__ = ("name", "version", "fields", "subsections")

    def __init__(self, name: str, version: int | None, fields: list[FieldDesc],
                 subsections: list[Vmsd]) -> None:
        self.name, self.version = name, version
        self.fields, self.subsections = fields, subsections


class Device(_Record):
    """One entry of ``devices``: its section name and instance, and its description
    (``None`` with ``error`` set when the description is malformed)."""

    __slots__ = ("index", "name", "instance_id", "vmsd", "error")

    def __init__(self, index: int, name: str, instance_id: int, vmsd: Vmsd | None,
                 error: DescriptionError | None = None) -> None:
        self.index, self.name, self.instance_id = index, name, instance_id
        self.vmsd, self.error = vmsd, error


def find_trailer(inp: Input, *, max_tail: int = 64 << 20) -> Trailer | None:
    """The VMDESCRIPTION trailer at the end of ``inp``, or ``None`` when there is none.

    Linear whatever the bytes: one backward search for the last 0x06 in the last
    ``max_tail`` bytes, then at most five candidate positions are checked. The result is
    kept on ``inp`` (detection and decoding both ask).
    """
    key = ("trailer", max_tail)
    if key not in inp.cache:
        inp.cache[key] = _find_trailer(inp, max_tail)
    return inp.cache[key]  # type: ignore[no-any-return]


def _find_trailer(inp: Input, max_tail: int) -> Trailer | None:
    size = inp.size()
    lo = max(0, size - max_tail)
    last = inp.rfind(b"\x06", lo, size)
    if last < 0:
        return None
    for at in range(last, max(lo, last - 4) - 1, -1):
        head = inp.read_at(at, 6)
        if len(head) < 6 or head[0] != 0x06:
            continue
        (length,) = struct.unpack(">I", head[1:5])
        if length != size - at - 5 or head[5:6] != b"{":
            continue
        if length > MAX_JSON_BYTES:
            return Trailer(at, length, error=f"{length} bytes of JSON, more than the "
                                             f"{MAX_JSON_BYTES} this analyzer reads")
        try:
            return Trailer(at, length, json.loads(inp.read_at(at + 5, length)))
        except RecursionError:
            return Trailer(at, length, error="JSON nested too deeply")
        except MemoryError:
            return Trailer(at, length, error="JSON too large to parse")
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            return Trailer(at, length, error=f"not valid JSON ({e})")
    return None


# -- checking the JSON ---------------------------------------------------------------------


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DescriptionError(path, f"expected an object, found {_kind(value)}")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise DescriptionError(path, f"expected an array, found {_kind(value)}")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise DescriptionError(path, f"expected a string, found {_kind(value)}")
    return value


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DescriptionError(path, f"expected an integer, found {_kind(value)}")
    if not lo <= value <= hi:
        raise DescriptionError(path, f"{value} is outside {lo}..{hi}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _opt_int(obj: dict[str, Any], key: str, path: str, lo: int, hi: int) -> int | None:
    value = obj.get(key)
    return None if value is None else _int(value, f"{path}.{key}", lo, hi)


def _vmsd(obj: Any, path: str, depth: int) -> Vmsd:
    if depth > MAX_DEPTH:
        raise DescriptionError(path, f"structs and subsections nested more than {MAX_DEPTH} "
                                     "deep")
    d = _obj(obj, path)
    name = d.get("vmsd_name", "")
    vmsd = Vmsd(_str(name, f"{path}.vmsd_name"), _opt_int(d, "version", path, 0, 2**32 - 1),
                [], [])
    for i, f in enumerate(_list(d.get("fields", []), f"{path}.fields")):
        fp = f"{path}.fields[{i}]"
        fo = _obj(f, fp)
        struct_desc = None
        if "struct" in fo:
            struct_desc = _vmsd(fo["struct"], f"{fp}.struct", depth + 1)
        vmsd.fields.append(FieldDesc(
            name=_str(fo.get("name"), f"{fp}.name"),
            type=_str(fo.get("type", ""), f"{fp}.type"),
            size=_opt_int(fo, "size", fp, 0, MAX_SIZE) or 0,
            array_len=_opt_int(fo, "array_len", fp, 0, MAX_ARRAY),
            index=_opt_int(fo, "index", fp, 0, MAX_ARRAY),
            struct=struct_desc,
        ))
    for i, s in enumerate(_list(d.get("subsections", []), f"{path}.subsections")):
        vmsd.subsections.append(_vmsd(s, f"{path}.subsections[{i}]", depth + 1))
    return vmsd


def parse_devices(doc: Any) -> tuple[int | None, list[Device], list[DescriptionError]]:
    """``(page size, devices, problems)`` of a parsed VMDESCRIPTION.

    Raises :class:`DescriptionError` only when the document itself is not an object with
    a ``devices`` array. A device whose description is malformed comes back with its
    ``error`` set (or, without a usable name, not at all); a bad ``page_size`` is
    ignored. Each is also listed in ``problems``.
    """
    top = _obj(doc, "VMDESCRIPTION")
    problems: list[DescriptionError] = []
    page_size = None
    if top.get("page_size") is not None:
        try:
            page_size = _int(top["page_size"], "page_size", 0, 1 << 30)
            if page_size not in PAGE_SIZES:
                raise DescriptionError("page_size", f"{page_size} is not a power of two in "
                                                    "512..65536")
        except DescriptionError as e:
            problems.append(e)
            page_size = None
    devices = []
    for i, dev in enumerate(_list(top.get("devices", []), "devices")):
        path = f"devices[{i}]"
        try:
            d = _obj(dev, path)
            name = _str(d.get("name"), f"{path}.name")
            instance = _int(d.get("instance_id", 0), f"{path}.instance_id", 0, 2**32 - 1)
        except DescriptionError as e:
            problems.append(e)
            continue
        try:
            devices.append(Device(i, name, instance, _vmsd(d, path, 0)))
        except DescriptionError as e:
            problems.append(e)
            devices.append(Device(i, name, instance, None, e))
    return page_size, devices, problems
