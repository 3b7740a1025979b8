"""Declarative device-state descriptions and the one engine that saves and loads them.

A :class:`Description` is QEMU's ``VMStateDescription``: a name, a version, minimum
versions, hooks, an ordered list of fields and a list of subsections sent only when
``needed``. Field kinds are small classes with symmetric ``save``/``load``. Device objects
are plain Python objects; a field's ``attr`` (default: its name) addresses the value inside
the object, e.g. ``"bus[0].ifs"`` or ``"current_tm.sec"``.

How a destination reads what follows a description's fields is not a property of the
description but of the release doing the reading: :class:`WireRules` carries the peek
policy and whether embedded struct elements end with the format-4 sentinel (0x06). A
release is a row of data that selects these; the engine has no release branches.

>>> from harness.emulator.stream import StreamWriter, StreamReader
>>> class Obj: pass
>>> d = Description("demo", 1, [u8("a"), u16("b")])
>>> o = Obj(); o.a, o.b = 1, 0x0203
>>> w = StreamWriter(); save_state(w, d, o, WireRules(PeekPolicy.ALWAYS_PEEK))
>>> w.getvalue().hex()
'010203'
"""

from __future__ import annotations

import enum
import operator
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import faults as _faults
from .errors import LoadCrash, LoadError, Reason, SaveCrash, SaveError
from .stream import StreamReader, StreamWriter

__all__ = [
    "SUBSECTION",
    "SUBSECTIONS_END",
    "Bool",
    "TraceMark",
    "Tracer",
    "Buffer",
    "Description",
    "Field",
    "Int",
    "IntArray",
    "IntEqual",
    "IntLocalLE",
    "PastEndOfList",
    "PeekPolicy",
    "Struct",
    "StructArray",
    "Subsection",
    "Timer",
    "Unused",
    "VBuffer",
    "WireRules",
    "dump_state",
    "same_state",
    "invalid",
    "load_state",
    "save_state",
    "i8",
    "i16",
    "i32",
    "i64",
    "u8",
    "u16",
    "u32",
    "u64",
]

SUBSECTION = 0x05
SUBSECTIONS_END = 0x06


class PeekPolicy(enum.Enum):
    """How a release decides whether a 0x05 after a description starts a subsection."""

    ALWAYS_PEEK = "always-peek"
    PEEK_IF_DEFINED = "peek-if-defined"
    PREFIX_MATCH = "prefix-match"


@dataclass(frozen=True)
class WireRules:
    """What the reading (or writing) release does beyond the descriptions themselves.

    ``tracer``, when set, is told where every element of a load starts and ends (the
    analyzer and the report's annotated hex view are built on it).
    """

    peek: PeekPolicy
    struct_sentinel: bool = False  # format 4: 0x06 after every embedded struct element
    tracer: Tracer | None = field(default=None, compare=False)


@dataclass(slots=True)
class TraceMark:
    kind: str  # section | field | struct | subsection | sentinel
    offset: int
    end: int
    path: str
    value: Any = None


class Tracer:
    """Collects :class:`TraceMark` records with full paths while a stream is loaded."""

    def __init__(self) -> None:
        self.marks: list[TraceMark] = []
        # The path of each level entered, joined once: a mark's path is one concatenation.
        self._paths: list[str] = [""]

    def enter(self, component: str) -> None:
        here = self._paths[-1]
        self._paths.append(f"{here}/{component}" if here else component)

    def leave(self) -> None:
        self._paths.pop()

    def path(self, component: str = "") -> str:
        here = self._paths[-1]
        if not component:
            return here
        return f"{here}/{component}" if here else component

    def mark(self, kind: str, offset: int, end: int, component: str = "", value: Any = None):
        self.marks.append(TraceMark(kind, offset, end, self.path(component), value))


Hook = Callable[[Any], None]
LoadHook = Callable[[Any, int], None]
Exists = Callable[[Any, int], bool]
Check = Callable[[Any, Any], "str | None"]


def invalid(detail: str) -> LoadError:
    """The error a hook or check raises when a loaded value is not acceptable."""
    return LoadError(Reason.INVALID_VALUE, detail)


# -- addressing values inside objects --------------------------------------------------

_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\.")


def _parse_attr(attr: str) -> list[str | int]:
    steps: list[str | int] = []
    pos = 0
    while pos < len(attr):
        m = _STEP.match(attr, pos)
        if not m:
            raise ValueError(f"bad attribute path {attr!r}")
        if m.group(1):
            steps.append(m.group(1))
        elif m.group(2):
            steps.append(int(m.group(2)))
        pos = m.end()
    return steps


def _accessors(attr: str) -> tuple[Callable[[Any], Any], Callable[[Any, Any], None]]:
    steps = _parse_attr(attr)
    if len(steps) == 1 and isinstance(steps[0], str):
        name = steps[0]
        return (lambda o: getattr(o, name)), (lambda o, v: setattr(o, name, v))

    def walk(o: Any, path: Sequence[str | int]) -> Any:
        for s in path:
            o = o[s] if isinstance(s, int) else getattr(o, s)
        return o

    head, last = steps[:-1], steps[-1]

    def get(o: Any) -> Any:
        return walk(o, steps)

    def set_(o: Any, v: Any) -> None:
        target = walk(o, head)
        if isinstance(last, int):
            target[last] = v
        else:
            setattr(target, last, v)

    return get, set_


# -- field kinds -----------------------------------------------------------------------


class Field:
    """One entry of a description. Subclasses implement ``_save``/``_load``.

    ``version_id``: loaded only when the version being loaded is >= it. ``exists``: a
    predicate ``(obj, version) -> bool`` that replaces the version test. ``check``: returns
    an error text for an unacceptable loaded value (``INVALID_VALUE``).
    """

    kind = "field"
    size: int | None = None

    def __init__(
        self,
        name: str,
        *,
        version_id: int = 0,
        exists: Exists | None = None,
        attr: str | None = None,
        check: Check | None = None,
    ) -> None:
        self.name = name
        self.version_id = version_id
        self.exists = exists
        self.attr = attr or name
        self.check = check
        self.path = name.replace(".", "/")
        self.get, self.set = _accessors(self.attr)

    def present(self, obj: Any, version: int) -> bool:
        if self.exists is not None:
            return bool(self.exists(obj, version))
        return self.version_id <= version

    def save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        try:
            self._save(w, obj, rules)
        except (SaveError, SaveCrash) as e:
            e.add_path(self.path)
            raise
        except (struct.error, TypeError, ValueError, OverflowError, AttributeError) as e:
            raise SaveError(f"cannot write {self.kind}: {e}", field=self.path) from e

    def load(self, r: StreamReader, obj: Any, rules: WireRules) -> None:
        start = r.offset
        tracer = rules.tracer
        if tracer is not None:
            tracer.enter(self.path)
        try:
            value = self._load(r, obj, rules)
            if self.check is not None and value is not None:
                problem = self.check(obj, value)
                if problem:
                    raise LoadError(Reason.INVALID_VALUE, problem, offset=start)
            if tracer is not None:
                tracer.leave()
                tracer.mark(self.kind if self.kind == "struct" else "field", start, r.offset,
                            self.path, value)
        except (LoadError, LoadCrash) as e:
            if tracer is not None:
                tracer.leave()
            if e.offset is None:
                e.offset = start
            e.add_path(self.path)
            raise

    def _save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        raise NotImplementedError

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        """Read the value, store it, and return it for ``check`` (None: nothing to check)."""
        raise NotImplementedError

    def dump(self, obj: Any, prefix: str, out: dict[str, Any]) -> None:
        out[prefix + self.path] = self.get(obj)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "kind": self.kind, "size": self.size}
        if self.version_id:
            info["version_id"] = self.version_id
        if self.exists is not None:
            info["conditional"] = True
        return info


_INT_FORMATS = {
    (1, False): "B", (2, False): "H", (4, False): "I", (8, False): "Q",
    (1, True): "b", (2, True): "h", (4, True): "i", (8, True): "q",
}  # fmt: skip


class Int(Field):
    """A fixed-width big-endian integer."""

    def __init__(self, name: str, width: int, signed: bool = False, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.size = width
        self.signed = signed
        self.kind = f"{'i' if signed else 'u'}{width * 8}"
        self._st = struct.Struct(">" + _INT_FORMATS[(width, signed)])

    def _save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        w.raw(self._st.pack(self.get(obj)))

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        value = r.unpack(self._st)[0]
        self.set(obj, value)
        return value


class IntEqual(Int):
    """Must equal the destination's own value (UINT8_EQUAL, INT32_EQUAL); not stored."""

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        start = r.offset
        value = r.unpack(self._st)[0]
        local = self.get(obj)
        if value != local:
            raise LoadError(
                Reason.EQUAL_MISMATCH, f"stream has {value}, destination {local}", offset=start
            )
        return value


class IntLocalLE(Int):
    """The destination's own value must be <= the stream's (INT32_LE); not stored."""

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        start = r.offset
        value = r.unpack(self._st)[0]
        local = self.get(obj)
        if not local <= value:
            raise LoadError(
                Reason.INVALID_VALUE, f"stream has {value}, destination needs >= {local}",
                offset=start,
            )
        return value


class Timer(Int):
    """A timer: be64 expiry time, -1 when not pending."""

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name, 8, True, **kw)
        self.kind = "timer"


class Bool(Field):
    """One byte; any non-zero byte loads as true (QEMU's get_bool)."""

    kind = "bool"
    size = 1

    def _save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        w.u8(1 if self.get(obj) else 0)

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        value = r.read_u8() != 0
        self.set(obj, value)
        return value


class Buffer(Field):
    """A fixed number of raw bytes."""

    kind = "buffer"

    def __init__(self, name: str, size: int, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.size = size

    def _save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        data = self.get(obj)
        if len(data) != self.size:
            raise SaveError(f"buffer holds {len(data)} bytes, field has {self.size}")
        w.raw(data)

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        value = r.read_bytes(self.size)
        self.set(obj, value)
        return value


class VBuffer(Field):
    """Raw bytes whose length is another value of the same object (``size_attr``).

    The length is checked against ``max_size`` before anything is read, so a hostile
    length cannot make the destination allocate or read without bound.
    """

    kind = "vbuffer"

    def __init__(self, name: str, size_attr: str, max_size: int, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.size_attr = size_attr
        self.max_size = max_size
        self._size_of, _ = _accessors(size_attr)

    def _save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        data = self.get(obj)
        n = self._size_of(obj)
        if len(data) != n:
            raise SaveError(f"buffer holds {len(data)} bytes, {self.size_attr} says {n}")
        w.raw(data)

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        n = self._size_of(obj)
        if not 0 <= n <= self.max_size:
            raise LoadError(
                Reason.LIMIT_EXCEEDED, f"{self.size_attr} = {n}, at most {self.max_size}",
                offset=r.offset,
            )
        value = r.read_bytes(n)
        self.set(obj, value)
        return value

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "size_from": self.size_attr, "max_size": self.max_size}


class IntArray(Field):
    """``count`` integers of one width, stored as a list."""

    kind = "array"

    def __init__(self, name: str, width: int, count: int, signed: bool = False, **kw: Any):
        super().__init__(name, **kw)
        self.count = count
        self.width = width
        self.size = width * count
        self.kind = f"{'i' if signed else 'u'}{width * 8}[{count}]"
        self._st = struct.Struct(f">{count}{_INT_FORMATS[(width, signed)]}")

    def _save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        w.raw(self._st.pack(*self.get(obj)))

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        value = list(r.unpack(self._st))
        self.set(obj, value)
        return value


class Unused(Field):
    """Padding: zeros on save, skipped on load."""

    kind = "unused"

    def __init__(self, size: int, name: str = "unused", **kw: Any) -> None:
        super().__init__(name, attr="__unused__", **kw)
        self.size = size

    def _save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        w.raw(bytes(self.size))

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        r.skip(self.size)
        return None

    def dump(self, obj: Any, prefix: str, out: dict[str, Any]) -> None:
        pass


class PastEndOfList(Field):
    """Data the engine walks as one more field after a list that lacks its end marker.

    QEMU walks a field list until an entry with no name (VMSTATE_END_OF_LIST). A list
    without that entry goes on into whatever the binary's data holds after it, read as
    entries: ``what`` names those bytes. What such an entry does depends on those bytes:
    ``save_dies`` / ``load_dies`` say how the process dies when the save or the load takes
    the entry (a wild address dereferenced), ``None`` that it reads and writes nothing (an
    entry that reads as an array of zero elements, or one the walk skips).

    >>> from harness.emulator.stream import StreamWriter
    >>> d = Description("demo", 1, [u8("a"), PastEndOfList("a table", save_dies="SIGSEGV")])
    >>> class Obj: a = 1
    >>> save_state(StreamWriter(), d, Obj(), WireRules(PeekPolicy.ALWAYS_PEEK))
    Traceback (most recent call last):
    ...
    harness.emulator.errors.SaveCrash: past_end_of_list: the field list has no end marker: the save takes a table past it as a field and dies (SIGSEGV)
    """

    kind = "past_end_of_list"
    size = 0

    def __init__(self, what: str, *, save_dies: str | None = None,
                 load_dies: str | None = None) -> None:
        super().__init__("past_end_of_list", attr="__past_end__")
        self.what = what
        self.save_dies = save_dies
        self.load_dies = load_dies

    def _save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        if self.save_dies is not None:
            raise SaveCrash(f"the field list has no end marker: the save takes {self.what} "
                            f"past it as a field and dies ({self.save_dies})")

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        if self.load_dies is not None:
            raise LoadCrash(f"the field list has no end marker: the load takes {self.what} "
                            f"past it as a field and dies ({self.load_dies})", offset=r.offset)
        return None

    def dump(self, obj: Any, prefix: str, out: dict[str, Any]) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "what": self.what, "save_dies": self.save_dies,
                "load_dies": self.load_dies}


class Struct(Field):
    """An embedded description (VMS_STRUCT), loaded at the child's own version."""

    kind = "struct"

    def __init__(self, name: str, desc: Description, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.desc = desc

    def _save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        _save_element(w, self.desc, self.get(obj), rules)

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        _load_element(r, self.desc, self.get(obj), rules)
        return None

    def dump(self, obj: Any, prefix: str, out: dict[str, Any]) -> None:
        _dump(self.desc, self.get(obj), f"{prefix}{self.path}/", out)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "struct": self.desc.name}


class StructArray(Field):
    """``count`` embedded descriptions (STRUCT_ARRAY); the object holds a list."""

    kind = "struct_array"

    def __init__(self, name: str, desc: Description, count: int, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.desc = desc
        self.count = count

    def save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        items = self.get(obj)
        for i in range(self.count):
            try:
                _save_element(w, self.desc, items[i], rules)
            except (SaveError, SaveCrash) as e:
                e.add_path(f"{self.path}[{i}]")
                raise

    def load(self, r: StreamReader, obj: Any, rules: WireRules) -> None:
        items = self.get(obj)
        tracer = rules.tracer
        for i in range(self.count):
            start = r.offset
            component = f"{self.path}[{i}]"
            if tracer is not None:
                tracer.enter(component)
            try:
                _load_element(r, self.desc, items[i], rules)
            except (LoadError, LoadCrash) as e:
                if e.offset is None:
                    e.offset = start
                e.add_path(component)
                raise
            finally:
                if tracer is not None:
                    tracer.leave()
            if tracer is not None:
                tracer.mark("struct", start, r.offset, component)

    def dump(self, obj: Any, prefix: str, out: dict[str, Any]) -> None:
        items = self.get(obj)
        for i in range(self.count):
            _dump(self.desc, items[i], f"{prefix}{self.path}[{i}]/", out)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "struct": self.desc.name, "count": self.count}


def u8(name: str, **kw: Any) -> Int:
    return Int(name, 1, **kw)


def u16(name: str, **kw: Any) -> Int:
    return Int(name, 2, **kw)


def u32(name: str, **kw: Any) -> Int:
    return Int(name, 4, **kw)


def u64(name: str, **kw: Any) -> Int:
    return Int(name, 8, **kw)


def i8(name: str, **kw: Any) -> Int:
    return Int(name, 1, True, **kw)


def i16(name: str, **kw: Any) -> Int:
    return Int(name, 2, True, **kw)


def i32(name: str, **kw: Any) -> Int:
    return Int(name, 4, True, **kw)


def i64(name: str, **kw: Any) -> Int:
    return Int(name, 8, True, **kw)


# -- descriptions ----------------------------------------------------------------------


@dataclass(eq=False)
class Subsection:
    desc: Description
    needed: Callable[[Any], bool]


@dataclass(eq=False)
class Description:
    """QEMU's VMStateDescription. ``minimum_version_id_old`` defaults to the minimum."""

    name: str
    version_id: int
    fields: Sequence[Field] = ()
    minimum_version_id: int = 0
    minimum_version_id_old: int | None = None
    subsections: Sequence[Subsection] = field(default_factory=tuple)
    pre_save: Hook | None = None
    pre_load: Hook | None = None
    post_load: LoadHook | None = None
    load_state_old: Callable[[StreamReader, Any, int], None] | None = None

    def subsection(self, name: bytes | str) -> Subsection | None:
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        for sub in self.subsections:
            if sub.desc.name == name:
                return sub
        return None

    def describe(self) -> dict[str, Any]:
        """The schema as plain data (versions, fields with sizes, subsections)."""
        return {
            "name": self.name,
            "version_id": self.version_id,
            "minimum_version_id": self.minimum_version_id,
            "minimum_version_id_old": self._min_old,
            "fields": [f.describe() for f in self.fields],
            "subsections": [s.desc.describe() for s in self.subsections],
        }

    @property
    def _min_old(self) -> int:
        if self.minimum_version_id_old is None:
            return self.minimum_version_id
        return self.minimum_version_id_old


# -- the engine ------------------------------------------------------------------------


def save_state(w: StreamWriter, desc: Description, obj: Any, rules: WireRules) -> None:
    """pre_save, the fields at the description's version, then each needed subsection."""
    desc = _faults.patched(desc, "save")
    if desc.pre_save is not None:
        desc.pre_save(obj)
    version = desc.version_id
    for step in _plan(desc, version):
        if step.__class__ is _IntRun or step.present(obj, version):
            step.save(w, obj, rules)
    for sub in desc.subsections:
        if sub.needed(obj):
            name = sub.desc.name.encode("latin-1")
            w.u8(SUBSECTION)
            w.u8(len(name))
            w.raw(name)
            w.u32(sub.desc.version_id)
            save_state(w, sub.desc, obj, rules)


def load_state(
    r: StreamReader, desc: Description, obj: Any, version: int, rules: WireRules
) -> None:
    """Version checks, pre_load, fields, the release's subsection loader, post_load."""
    desc = _faults.patched(desc, "load")
    start = r.offset
    if version > desc.version_id:
        raise LoadError(
            Reason.VERSION_TOO_NEW, f"{desc.name} v{version} > v{desc.version_id}", offset=start
        )
    if version < desc._min_old:
        raise LoadError(
            Reason.VERSION_TOO_OLD, f"{desc.name} v{version} < v{desc._min_old}", offset=start
        )
    if version < desc.minimum_version_id:
        if desc.load_state_old is None:
            raise LoadError(
                Reason.VERSION_TOO_OLD,
                f"{desc.name} v{version} < v{desc.minimum_version_id}",
                offset=start,
            )
        _run_hook(r, start, desc.load_state_old, r, obj, version)
        return
    if desc.pre_load is not None:
        _run_hook(r, start, desc.pre_load, obj)
    for step in _plan(desc, version):
        if step.__class__ is _IntRun or step.present(obj, version):
            step.load(r, obj, rules)
    _load_subsections(r, desc, obj, rules)
    if desc.post_load is not None:
        _run_hook(r, r.offset, desc.post_load, obj, version)


class _IntRun:
    """Consecutive plain integer fields of one description at one version, read or
    written with one struct call: the engine's hot path (most of a PC's ~700 fields).

    Only fields whose presence is fixed by the version and that have no check qualify, so
    the run is exactly the bytes the fields would have been one by one. Whatever goes
    wrong (a truncated stream, a value that does not fit) is handed to the fields one by
    one, which raise the error they always did, at the same offset and field.
    """

    __slots__ = ("fields", "_st", "_set", "_get", "_values", "_keys", "_names", "_direct")

    def __init__(self, fields: list[Int]) -> None:
        self.fields = fields
        self._st = struct.Struct(">" + "".join(f._st.format.lstrip(">") for f in fields))
        self._set = [f.set for f in fields]
        self._get = [f.get for f in fields]
        # The fields' values in one call where each is a plain attribute (most are).
        self._values: Callable[[Any], Sequence[Any]]
        self._names: tuple[str, ...] | None = None
        if all(f.attr.isidentifier() for f in fields):
            self._names = tuple(f.attr for f in fields)
            self._values = operator.attrgetter(*self._names)
        else:
            getters = self._get
            self._values = lambda obj: [get(obj) for get in getters]
        self._keys: dict[str, tuple[str, ...]] = {}  # state keys of the fields, by prefix
        self._direct: dict[type, bool] = {}  # see _stores_directly

    def _stores_directly(self, cls: type) -> bool:
        """Whether setting the fields on a ``cls`` is updating its instance dictionary:
        plain attribute names, no ``__setattr__`` of its own, none of them a property or
        a slot (then one ``dict.update`` stores the whole run)."""
        direct = self._direct.get(cls)
        if direct is None:
            direct = self._direct[cls] = (
                self._names is not None and cls.__setattr__ is object.__setattr__
                and "__dict__" in dir(cls)
                and not any(hasattr(type(getattr(cls, n, None)), "__set__")
                            for n in self._names))
        return direct

    def load(self, r: StreamReader, obj: Any, rules: WireRules) -> None:
        start = r.offset
        try:
            values = r.unpack(self._st)
        except LoadError:  # short of bytes: the field that runs out says where
            for f in self.fields:
                f.load(r, obj, rules)
            return
        if self._stores_directly(obj.__class__):
            obj.__dict__.update(zip(self._names, values, strict=True))  # type: ignore[arg-type]
        else:
            for set_, value in zip(self._set, values, strict=True):
                set_(obj, value)
        tracer = rules.tracer
        if tracer is not None:
            for f, value in zip(self.fields, values, strict=True):
                end = start + f.size  # type: ignore[operator]
                tracer.mark("field", start, end, f.path, value)
                start = end

    def dump(self, obj: Any, prefix: str, out: dict[str, Any]) -> None:
        keys = self._keys.get(prefix)
        if keys is None:
            keys = self._keys[prefix] = tuple(prefix + f.path for f in self.fields)
        out.update(zip(keys, self._values(obj), strict=True))

    def save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        try:
            packed = self._st.pack(*self._values(obj))
        except (struct.error, TypeError, ValueError, OverflowError, AttributeError):
            for f in self.fields:  # the field that cannot be written says why
                f.save(w, obj, rules)
            return
        w.raw(packed)


def _plain_int(f: Field) -> bool:
    """A field whose bytes are its integer and nothing else: an :class:`Int` none of whose
    reading, writing or presence is specialised. (A description copied with
    ``copy.copy`` would share its plans: descriptions are made anew, never copied.)"""
    cls = type(f)
    return (isinstance(f, Int) and cls._load is Int._load and cls._save is Int._save
            and cls.load is Field.load and cls.save is Field.save and cls.dump is Field.dump
            and cls.present is Field.present and f.exists is None and f.check is None)


def _plan(desc: Description, version: int) -> tuple[Any, ...]:
    """The steps that save or load ``desc``'s fields at ``version``: runs of plain
    integers (:class:`_IntRun`) and the other fields as they are. Built once per
    description and version; fields absent at the version are left out."""
    plans = desc.__dict__.setdefault("_plans", {})
    plan = plans.get(version)
    if plan is not None:
        return plan
    steps: list[Any] = []
    run: list[Int] = []

    def close() -> None:
        if len(run) > 1:
            steps.append(_IntRun(list(run)))
        else:
            steps.extend(run)
        run.clear()

    for f in desc.fields:
        if f.exists is None and f.version_id > version and type(f).present is Field.present:
            continue  # never on the wire at this version
        if _plain_int(f):
            run.append(f)  # type: ignore[arg-type]
            continue
        close()
        steps.append(f)
    close()
    plan = plans[version] = tuple(steps)
    return plan


def _run_hook(r: StreamReader, offset: int, hook: Callable[..., Any], *args: Any) -> None:
    """Run a hook; a LoadError it raises without an offset gets ``offset``."""
    try:
        hook(*args)
    except LoadError as e:
        if e.offset is None:
            e.offset = offset
        raise


def _load_subsections(r: StreamReader, desc: Description, obj: Any, rules: WireRules) -> None:
    policy = rules.peek
    if policy is PeekPolicy.PEEK_IF_DEFINED and not desc.subsections:
        return  # eb60260: a description without subsections never looks
    prefix = desc.name.encode("latin-1")
    while True:
        if r.peek_u8() != SUBSECTION:
            return
        if policy is PeekPolicy.PREFIX_MATCH:
            head = r.peek(2)
            # 1.0's heuristic: only a plausible "<name>..." is taken as a subsection.
            if len(head) < 2 or head[1] < len(prefix) + 1:
                return
            peeked = r.peek(2 + head[1])
            if len(peeked) < 2 + head[1] or not peeked[2:].startswith(prefix):
                return
        start = r.offset
        r.read_u8()
        name = r.read_bytes(r.read_u8())
        version = r.read_u32() & 0xFF  # QEMU kept the subsection version in a u8
        if rules.tracer is not None:
            rules.tracer.mark("subsection", start, r.offset, "", name.decode("latin-1"))
        sub = desc.subsection(name)
        if sub is None:
            known = ", ".join(s.desc.name for s in desc.subsections) or "none"
            raise LoadError(
                Reason.UNKNOWN_SUBSECTION,
                f"{name.decode('latin-1')!r} after {desc.name} (knows: {known})",
                offset=start,
            )
        load_state(r, sub.desc, obj, version, rules)


def _save_element(w: StreamWriter, desc: Description, obj: Any, rules: WireRules) -> None:
    save_state(w, desc, obj, rules)
    if rules.struct_sentinel:
        w.u8(SUBSECTIONS_END)


def _load_element(r: StreamReader, desc: Description, obj: Any, rules: WireRules) -> None:
    if not rules.struct_sentinel:
        load_state(r, desc, obj, desc.version_id, rules)
        return
    try:
        load_state(r, desc, obj, desc.version_id, rules)
    except LoadError as child:
        # The sentinel series reads the element's 0x06 before it looks at the child's
        # result, so a failed child usually surfaces as a bad sentinel (-EINVAL).
        if child.reason is Reason.TRUNCATED:
            raise
        start = r.offset
        byte = r.read_u8()
        if byte == SUBSECTIONS_END:
            raise
        raise LoadError(
            Reason.BAD_SENTINEL,
            f"expected 0x06 after {desc.name}, found 0x{byte:02x} (the element had failed: "
            f"{child.reason.text}{': ' + child.detail if child.detail else ''})",
            offset=start,
            field=child.field,  # keep where inside the element it went wrong
        ) from child
    _expect_sentinel(r, desc, rules)


def _expect_sentinel(r: StreamReader, desc: Description, rules: WireRules) -> None:
    start = r.offset
    byte = r.read_u8()
    if rules.tracer is not None:
        rules.tracer.mark("sentinel", start, r.offset, "", byte)
    if byte != SUBSECTIONS_END:
        raise LoadError(
            Reason.BAD_SENTINEL,
            f"expected 0x06 after {desc.name}, found 0x{byte:02x}",
            offset=start,
        )


def dump_state(desc: Description, obj: Any) -> dict[str, Any]:
    """The state as ``{field path: value}``: every field and subsection field the
    description defines, as a save would see it (pre_save hooks run, needed ignored)."""
    out: dict[str, Any] = {}
    _dump(desc, obj, "", out)
    return out


def same_state(desc: Description, a: Any, b: Any) -> bool:
    """``dump_state(desc, a) == dump_state(desc, b)``, found by walking both objects field
    by field (no dictionary built, the first difference ends the walk)."""
    if desc.pre_save is not None:
        desc.pre_save(a)
        desc.pre_save(b)
    version = desc.version_id
    for step in _plan(desc, version):
        if step.__class__ is _IntRun:
            if step._values(a) != step._values(b):
                return False
            continue
        present = step.present(a, version)
        if present != step.present(b, version):
            return False
        if not present:
            continue
        kind = step.__class__
        if kind is StructArray:
            items_a, items_b = step.get(a), step.get(b)
            for i in range(step.count):
                if not same_state(step.desc, items_a[i], items_b[i]):
                    return False
        elif kind is Struct:
            if not same_state(step.desc, step.get(a), step.get(b)):
                return False
        elif kind.dump is Field.dump:
            if step.get(a) != step.get(b):
                return False
        else:  # a field that dumps itself its own way: compare what it dumps
            da: dict[str, Any] = {}
            db: dict[str, Any] = {}
            step.dump(a, "", da)
            step.dump(b, "", db)
            if da != db:
                return False
    return all(same_state(sub.desc, a, b) for sub in desc.subsections)


def _dump(desc: Description, obj: Any, prefix: str, out: dict[str, Any]) -> None:
    if desc.pre_save is not None:
        desc.pre_save(obj)
    version = desc.version_id
    for step in _plan(desc, version):  # the fields a save at this version writes
        if step.__class__ is _IntRun or step.present(obj, version):
            step.dump(obj, prefix, out)
    for sub in desc.subsections:
        _dump(sub.desc, obj, prefix, out)
