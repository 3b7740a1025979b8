"""Compare two QEMU streams: device fields through their VMDESCRIPTION, then RAM.

A cell passes when the destination's state equals the source's. Both are read the same
way: each side writes its own stream of its stopped guest (the source after its
migration completed, the destination after it loaded), and :func:`read_state` decodes
each with the analyzer (:func:`harness.analyze.analyze`): every device field with its
value, and every RAM page (a digest and its first byte, the guest's counter).

Fields that legitimately differ between two processes holding the same guest are listed
in :data:`IGNORED_FIELDS` with the reason, never dropped silently: a comparison reports
how many values each entry absorbed, so an entry that starts hiding real differences is
visible in the cell's detail.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..analyze import (
    F_COMPRESS_PAGE,
    F_CONTINUE,
    F_EOS,
    F_MEM_SIZE,
    F_PAGE,
    F_XBZRLE,
    F_ZERO,
    Input,
    analyze,
)
from ..emulator.errors import ConfigError
from .bootimage import PAGE

__all__ = ["HISTORIC_IGNORED", "IGNORED_FIELDS", "Ignored", "StreamState", "compare", "page_counters",
           "read_state"]


@dataclass(frozen=True)
class Ignored:
    """Values of ``section``/``field`` (globs) are not compared, because ``reason``;
    with ``unless``, only while the source's section has no nonzero value at that path
    (``{n}`` stands for the first index in the field's path); with ``byte_range``
    ``(start, end)``, only those bytes of a buffer field, the rest is still compared."""

    section: str
    field: str
    reason: str
    unless: str | None = None
    byte_range: tuple[int, int] | None = None

    def masked(self, value: Any) -> Any:
        """``value`` with this rule's bytes zeroed (offsets kept, so rules combine)."""
        if self.byte_range is None or not isinstance(value, (bytes, bytearray)):
            return value
        start, end = self.byte_range
        end = min(end, len(value))
        return bytes(value[:start]) + bytes(max(0, end - start)) + bytes(value[end:])

    def matches(self, section: str, path: str, fields: dict[str, Any]) -> bool:
        if not (fnmatch.fnmatchcase(section, self.section)
                and fnmatch.fnmatchcase(path, self.field)):
            return False
        if self.unless is None:
            return True
        index = re.search(r"\[(\d+)\]", path)
        guard = self.unless.replace("{n}", index.group(1) if index else "0")
        return not fields.get(guard)


# Each entry was observed to differ between a source and a destination holding the same
# stopped guest (same binary, same machine type), and is explained by how QEMU saves it.
IGNORED_FIELDS: tuple[Ignored, ...] = (
    Ignored("globalstate", "runstate",
            "the run state when the stream was written: the source ran until it migrated "
            "('running'), the destination saves its own state while paused (-S)"),
    Ignored("globalstate", "size", "the length of that run-state name"),
    Ignored("*/ide", "bmdma[[]*[]]/migration_retry_*",
            "pre_save copies the bus's retry_* leftovers of the last DMA; post_load gives "
            "them back only for a pending retry, so without one the destination saves 0",
            unless="bus[{n}]/error_status"),
)


# Fields of the 2011 releases that differ between a source and a destination holding the
# same stopped guest, or between two runs of one build, each explained by how QEMU keeps
# them (tests/test_conformance.py holds the model's power-on streams to the same list).
_RTC_CLOCK = ("the RTC runs on the host clock (rtc_clock), even while the guest is "
              "stopped: its time is the host's when the state is saved")
HISTORIC_IGNORED: tuple[Ignored, ...] = (
    *(Ignored("mc146818rtc*", "cmos_data", f"{_RTC_CLOCK} (CMOS {what})", byte_range=span)
      for span, what in (((0x00, 0x01), "seconds"), ((0x02, 0x03), "minutes"),
                         ((0x04, 0x05), "hours"), ((0x06, 0x0A), "weekday to year"),
                         ((0x0A, 0x0B), "register A: its update-in-progress bit; the byte "
                                        "whole, its rate bits show again in 'period'"),
                         ((0x0C, 0x0D), "register C: the update-ended flag of that clock"))),
    Ignored("mc146818rtc*", "current_tm/*", _RTC_CLOCK),
    Ignored("mc146818rtc*", "next_second_time", _RTC_CLOCK + " (the next update cycle)"),
    Ignored("mc146818rtc*", "second_timer*", _RTC_CLOCK + " (the update cycle's timers)"),
    Ignored("cpu_common", "interrupt_request",
            "a latch of the interrupt controllers' output, not state of its own: real 1.0 "
            "drops a CPU_INTERRUPT_HARD (2) the source held when 'stop' landed with an "
            "interrupt pending (about one cell in three after the guest ran), while the "
            "PIC's request itself (irr, compared) arrives; where 1.0 clears the latch is "
            "not traced, so this is an observation, not a proof that it is harmless"),
    *(Ignored("i8254*", f"channels[[]*[]]/{f}",
              "the channel's next tick deadline: seen one period (54.9 ms) later in the "
              "destination's re-save on real 1.0 after live-ram, by timing (why the "
              "destination ran that tick is not traced); the counts, modes and latches "
              "that decide the ticks are compared") for f in ("next_transition_time",
                                                               "irq_timer")),
    Ignored("fdc*", "state/fifo", "allocated with qemu_memalign and never cleared: whatever "
            "the heap held (zeros, 0xff or old pointers, by release and run)"),
)


@dataclass
class StreamState:
    """What one stream holds: device fields per section, RAM pages per block."""

    path: str
    machine_type: str | None
    devices: dict[str, dict[str, Any]]
    ram: dict[str, dict[int, tuple[bytes, int]]]  # block -> offset -> (digest, first byte)
    error: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def read_state(path: str | Path, *, release: str | None = None,
               machine: str | None = None) -> StreamState:
    """Decode a stream a QEMU wrote (device fields and RAM pages): through its
    VMDESCRIPTION, or with ``release`` as the emulator core's model of that release and
    machine type reads it (the streams of 2011 describe nothing)."""
    inp = Input(str(path))
    try:
        try:
            a = analyze(inp, release=release, machine=machine)
        except ConfigError as e:  # no model of that release or machine type
            return StreamState(str(path), None, {}, {}, {"message": str(e)})
        if a.error is None and not a.complete:
            a.error = {"message": "the stream ends before its EOF byte"}
        ram = _ram_pages(inp, a.ram or {}) if a.error is None else {}
    finally:
        inp.close()
    return StreamState(str(path), (a.qemu or {}).get("machine_type"), a.state(), ram,
                       a.error, list(a.notes))


_FILL: dict[int, bytes] = {}


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _ram_pages(inp: Input, summary: dict[str, Any]) -> dict[str, dict[int, tuple[bytes, int]]]:
    """Every page of every block, the last copy sent winning (a live stream sends a page
    again when the guest dirtied it after it was sent)."""
    pages: dict[str, dict[int, tuple[bytes, int]]] = {}
    page = PAGE
    block: str | None = None  # a CONTINUE record may follow a section boundary
    for chunk in summary.get("chunks", []):
        data = inp.read_at(chunk["offset"], chunk["size"])
        pos = 0
        while pos < len(data):
            (word,) = _be64(data, pos)
            pos += 8
            flags, addr = word & (page - 1), word & ~(page - 1)
            if flags & F_MEM_SIZE:
                left = addr
                while left > 0:
                    n = data[pos]
                    pos += 1 + n
                    (length,) = _be64(data, pos)
                    pos += 8
                    left -= length
            elif flags & (F_ZERO | F_PAGE | F_XBZRLE | F_COMPRESS_PAGE):
                if not flags & F_CONTINUE:
                    n = data[pos]
                    block = data[pos + 1 : pos + 1 + n].decode("latin-1")
                    pos += 1 + n
                    pages.setdefault(block, {})
                if block is None:
                    raise ValueError(f"a CONTINUE page at {chunk['offset'] + pos:#x} "
                                     "with no block before it")
                if flags & F_ZERO:
                    fill = data[pos]
                    pos += 1
                    if fill not in _FILL:
                        _FILL[fill] = _digest(bytes([fill]) * page)
                    pages[block][addr] = (_FILL[fill], fill)
                elif flags & F_PAGE:
                    content = data[pos : pos + page]
                    pos += page
                    pages[block][addr] = (_digest(content), content[0])
                else:  # xbzrle / compressed pages are never sent with default capabilities
                    raise ValueError(f"{block}@{addr:#x}: XBZRLE or compressed page; "
                                     "the comparison needs plain pages")
            if flags & F_EOS:
                break
    return pages


def _be64(data: bytes, pos: int) -> tuple[int]:
    return (int.from_bytes(data[pos : pos + 8], "big"),)


@dataclass
class Comparison:
    diffs: list[dict[str, Any]]
    ignored: dict[str, int]  # "section/field reason" -> values not compared
    only_source: list[str]  # sections the destination did not save
    only_destination: list[str]
    compared_fields: int
    compared_pages: int

    def to_dict(self) -> dict[str, Any]:
        return {"ignored": self.ignored, "sections_only_source": self.only_source,
                "sections_only_destination": self.only_destination,
                "compared_fields": self.compared_fields,
                "compared_pages": self.compared_pages}


def compare(src: StreamState, dst: StreamState,
            ignored: tuple[Ignored, ...] = IGNORED_FIELDS, *, page_limit: int = 20
            ) -> Comparison:
    """Every field both streams define whose value differs, then every RAM block whose
    pages differ (with the first differing page offsets)."""
    diffs: list[dict[str, Any]] = []
    hits: dict[str, int] = {}
    fields = 0
    for section, values in src.devices.items():
        other = dst.devices.get(section)
        if other is None:
            continue
        for path, value in values.items():
            if path not in other:
                continue
            rules = [r for r in ignored if r.matches(section, path, values)]
            theirs = other[path]
            for rule in rules:
                key = f"{rule.section}/{rule.field}: {rule.reason}"
                hits[key] = hits.get(key, 0) + 1
                value, theirs = rule.masked(value), rule.masked(theirs)
            if any(r.byte_range is None for r in rules):
                continue
            fields += 1
            if theirs != value:
                diffs.append({"path": f"{section}/{path}", "source": _show(value),
                              "destination": _show(theirs)})
    pages = 0
    for block, src_pages in src.ram.items():
        dst_pages = dst.ram.get(block)
        if dst_pages is None:
            diffs.append({"path": f"ram/{block}", "source": f"{len(src_pages)} page(s)",
                          "destination": "no such block"})
            continue
        pages += len(src_pages)
        differ = sorted(a for a in src_pages.keys() | dst_pages.keys()
                        if src_pages.get(a, (None,))[0] != dst_pages.get(a, (None,))[0])
        if differ:
            where = ", ".join(f"{a:#x}" for a in differ[:page_limit])
            diffs.append({"path": f"ram/{block}",
                          "source": f"{len(differ)} page(s) differ: [{where}"
                          + (", ...]" if len(differ) > page_limit else "]"),
                          "destination": "differs"})
    return Comparison(diffs, hits, sorted(src.devices.keys() - dst.devices.keys()),
                      sorted(dst.devices.keys() - src.devices.keys()), fields, pages)


def _show(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        b = bytes(value)
        return b[:32].hex() + ("..." if len(b) > 32 else "")
    return value


def page_counters(state: StreamState, start: int, top: int, block: str = "pc.ram"
                  ) -> list[int] | str:
    """The guest's per-page counters (first byte of every page in ``[start, top)``), or
    why they cannot be read."""
    pages = state.ram.get(block)
    if pages is None:
        return f"no RAM block {block!r} in {state.path}"
    out = []
    for addr in range(start, top, PAGE):
        entry = pages.get(addr)
        if entry is None:
            return f"page {addr:#x} of {block} is not in {state.path}"
        out.append(entry[1])
    return out
