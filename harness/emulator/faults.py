"""Seeded bugs: deliberate faults the core can be built with, to test the harness itself.

A harness is only worth its verdicts if it catches the bugs it exists for. Each
:class:`SeededBug` is a small, realistic mistake in a device description or in the RAM
code (a field dropped, two fields swapped on save, a wrong width, a subsection whose
``needed`` lies, an off-by-one version test, a ``post_load`` that forgets a value, a
dirtied page never re-sent). ``migmatrix selftest`` runs a matrix once per bug and checks
that at least one cell turns unexpected.

A bug is switched on for the whole process by the environment variable
``MIGMATRIX_SEEDED_BUG=name`` (read at import, so endpoint processes inherit it) or with
:func:`activate`. Description bugs are *patches*: the engine asks :func:`patched` for the
description it is about to save or load, and gets a modified copy for the bug's target
(cached) or the description itself. The state comparison (``dump_state``) never sees a
patch: it shows the guest state as the correct description defines it.

The phase of a patch is ``"save"`` or ``"load"``; a bug that is in the description on
both sides (a field missing from it) patches both.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .vmstate import Description

__all__ = ["BUGS", "ENV", "SeededBug", "activate", "active", "patched", "set_active"]

ENV = "MIGMATRIX_SEEDED_BUG"

Patch = Callable[["Description", str], "Description | None"]


@dataclass(frozen=True)
class SeededBug:
    """One deliberate bug. ``patch(desc, phase)`` returns a replacement description or
    None (leave it alone); ``ram_partial_writes_clean``: guest writes shorter than a page
    do not mark the page dirty."""

    name: str
    summary: str
    patch: Patch | None = None
    ram_partial_writes_clean: bool = False


# -- patches ---------------------------------------------------------------------------


def _replace(desc: Description, **changes: Any) -> Description:
    return dataclasses.replace(desc, **changes)


def _field_names(desc: Description) -> list[str]:
    return [f.name for f in desc.fields]


def _drop_field(desc: Description, phase: str) -> Description | None:
    # The inner 16550A "serial" description without its scratch register, on both sides.
    if desc.name == "serial" and "scr" in _field_names(desc):
        return _replace(desc, fields=[f for f in desc.fields if f.name != "scr"])
    return None


def _swap_fields(desc: Description, phase: str) -> Description | None:
    # pit channel: read_state and write_state written in each other's place.
    if phase == "save" and desc.name == "pit channel":
        fields = list(desc.fields)
        names = _field_names(desc)
        a, b = names.index("read_state"), names.index("write_state")
        fields[a], fields[b] = fields[b], fields[a]
        return _replace(desc, fields=fields)
    return None


def _wrong_width(desc: Description, phase: str) -> Description | None:
    # ide_bus/error: the loader reads error_status as 16 bits; the saver writes 32.
    if phase == "load" and desc.name == "ide_bus/error":
        from .vmstate import Int

        fields = [Int(f.name, 2, True) if f.name == "error_status" else f for f in desc.fields]
        return _replace(desc, fields=fields)
    return None


def _needed_lies(desc: Description, phase: str) -> Description | None:
    # fdrive/media_changed is never sent: its needed() always says no.
    if phase == "save" and desc.name == "fdrive" and desc.subsections:
        subs = tuple(
            dataclasses.replace(s, needed=lambda obj: False)
            if s.desc.name == "fdrive/media_changed" else s
            for s in desc.subsections
        )  # fmt: skip
        return _replace(desc, subsections=subs)
    return None


def _version_off_by_one(desc: Description, phase: str) -> Description | None:
    # The loader's field test is "field.version_id < version" instead of "<=": a field
    # introduced in the version being loaded is skipped.
    if phase != "load":
        return None
    changed = False
    fields = []
    for f in desc.fields:
        if f.exists is None and f.version_id > 0:
            g = copy.copy(f)
            g.exists = lambda obj, version, since=f.version_id: since < version
            fields.append(g)
            changed = True
        else:
            fields.append(f)
    return _replace(desc, fields=fields) if changed else None


def _post_load_forgets(desc: Description, phase: str) -> Description | None:
    # cpu post_load rebuilds the FPU stack top and status but forgets the tag word.
    if phase == "load" and desc.name == "cpu" and desc.post_load is not None:

        def post_load(cpu: Any, version: int) -> None:
            cpu.fpstt = (cpu.fpus_vmstate >> 11) & 7
            cpu.fpus = cpu.fpus_vmstate & ~0x3800

        return _replace(desc, post_load=post_load)
    return None


BUGS: dict[str, SeededBug] = {
    b.name: b
    for b in (
        SeededBug("drop-field", "serial: the scratch register (scr) is missing from the "
                  "description, on save and on load", _drop_field),
        SeededBug("swap-fields", "pit channel: read_state and write_state are saved in each "
                  "other's place", _swap_fields),
        SeededBug("wrong-width", "ide_bus/error: error_status is loaded as 16 bits, saved as "
                  "32", _wrong_width),
        SeededBug("needed-lies", "fdrive/media_changed: needed() always says no, so a cleared "
                  "media-changed flag never travels", _needed_lies),
        SeededBug("version-off-by-one", "the loader skips a field whose version_id equals the "
                  "version being loaded (< instead of <=)", _version_off_by_one),
        SeededBug("post-load-forgets", "cpu post_load forgets to rebuild the FPU tag word "
                  "from fptag_vmstate", _post_load_forgets),
        SeededBug("ram-not-resent", "a guest write shorter than a page does not mark the page "
                  "dirty, so it is not re-sent", ram_partial_writes_clean=True),
    )
}


# -- the switch ------------------------------------------------------------------------

_ACTIVE: SeededBug | None = None
_CACHE: dict[tuple[str, int, str], tuple[Description, Description]] = {}


def active() -> SeededBug | None:
    """The bug the core currently runs with, or None."""
    return _ACTIVE


def set_active(name: str | None) -> None:
    """Switch a bug on (by name) or off (None) for this process and its children."""
    global _ACTIVE
    if name:
        try:
            bug = BUGS[name]
        except KeyError:
            raise ConfigError(f"unknown seeded bug {name!r} (known: {', '.join(BUGS)})") from None
        _ACTIVE = bug
        os.environ[ENV] = name
    else:
        _ACTIVE = None
        os.environ.pop(ENV, None)


@contextlib.contextmanager
def activate(name: str | None) -> Iterator[SeededBug | None]:
    """Run the body with bug ``name`` switched on, then restore what was active."""
    before = _ACTIVE.name if _ACTIVE is not None else None
    set_active(name)
    try:
        yield _ACTIVE
    finally:
        set_active(before)


def patched(desc: Description, phase: str) -> Description:
    """The description the engine should use for ``phase`` under the active bug."""
    bug = _ACTIVE
    if bug is None or bug.patch is None:
        return desc
    key = (bug.name, id(desc), phase)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is desc:
        return hit[1]
    result = bug.patch(desc, phase) or desc
    _CACHE[key] = (desc, result)
    return result


def ram_marks_partial_writes() -> bool:
    return _ACTIVE is None or not _ACTIVE.ram_partial_writes_clean


def _from_environment() -> None:
    name = os.environ.get(ENV)
    if not name:
        return
    if name not in BUGS:  # an import must not fail: say so and run without a bug
        warnings.warn(f"{ENV}={name!r} names no seeded bug (known: {', '.join(BUGS)})",
                      stacklevel=2)
        return
    set_active(name)


_from_environment()
