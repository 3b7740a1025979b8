"""The stream analyzer: what is in a stream, byte by byte, and where a destination's
reading of it stops meaning what the writer meant.

:func:`analyze` decodes a stream element by element (header, configuration, section
headers, every field with its value, embedded struct elements, subsections, sentinels,
section footers, commands, RAM summarised per block, EOF, the VMDESCRIPTION trailer), each
with its byte offset and size. Two decoders:

* a *modelled* stream (QEMU 0.13 to 1.0, or the "new" series) is decoded with a modelled
  release's own descriptions, loaded through the emulator's engine with a tracer. Without
  ``release`` the writer is inferred: the releases that accept the stream's file version
  are tried, newest first, and the first one that decodes the whole stream is reported;
* a *QEMU* stream (file version 3 with a 0x07 configuration section, section footers,
  and/or the VMDESCRIPTION JSON of QEMU >= 2.3 after EOF) is decoded through that JSON.

:func:`replay_as_destination` loads the same bytes as a destination release would and
aligns its reading with the writer's: the first element where they part (for example the
0x05 that a 0.14 ``ide_bus`` takes for parent data) and the destination's final outcome.

Memory does not grow with the stream: a file is mapped and read through windows (standard
input that is a pipe is copied to a temporary file first), page bytes are skipped and
counted per block and kind, elements, PART sections and RAM chunks are listed up to a cap
and counted past it, every length the stream or its VMDESCRIPTION declares is checked
against the bytes left before it is used, and the replay compares both readings as it
goes (the writer's, past the cap, read back from a temporary file).

Errors: a stream that cannot be decoded is not an exception here: the analysis carries an
``error`` (reason, message, offset, section, field) and everything decoded before it.

The package, by what each module decodes:

* :mod:`.modelled` modelled streams, through the model's machine descriptions;
* :mod:`.qemu` QEMU streams, through their VMDESCRIPTION;
* :mod:`.ram` RAM sections, as summaries (counts per block and kind);
* :mod:`.replay` a destination's reading aligned with the writer's;
* :mod:`.elements` the analysis and its elements; :mod:`.render` its text form;
  :mod:`.source` files, pipes and bytes as re-readable input.
"""

from __future__ import annotations

import argparse
import importlib
import json
import struct
import sys

from ..emulator.errors import ConfigError, EmulatorError, LoadError, Reason
from ..emulator.sections import FILE_MAGIC
from .elements import ANALYSIS_SCHEMA, Analysis, Element, SectionInfo
from .qemu import T_CONFIG, decode_qemu, find_vmdescription
from .ram import (
    F_COMPRESS_PAGE,
    F_CONTINUE,
    F_EOS,
    F_MEM_SIZE,
    F_PAGE,
    F_XBZRLE,
    F_ZERO,
    RamSummary,
)
from .render import render_text
from .source import Input
from .vmdesc import find_trailer

# typing.TYPE_CHECKING without importing typing, which the analyzer's start pays for
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO

__all__ = [
    "kept_writer_analysis",
    "writer_analysis",
    "ANALYSIS_SCHEMA",
    "F_COMPRESS_PAGE",
    "F_CONTINUE",
    "F_EOS",
    "F_MEM_SIZE",
    "F_PAGE",
    "F_XBZRLE",
    "F_ZERO",
    "Analysis",
    "Element",
    "Input",
    "RamSummary",
    "SectionInfo",
    "analyze",
    "configure_parser",
    "decode_modelled",
    "decode_qemu",
    "find_vmdescription",
    "meaning_peek",
    "render_text",
    "replay_as_destination",
]


# The model (machine descriptions, releases, the engine) is imported only for a modelled
# stream: a QEMU stream is decoded without it, and starts faster for that.
_LAZY = {"decode_modelled": "modelled", "meaning_peek": "modelled",
         "replay_as_destination": "replay"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def kept_writer_analysis(stream: bytes, release: str, machine: str) -> Analysis | None:
    """:func:`writer_analysis` when it is kept already, else None (nothing decoded)."""
    return _kept_writer(stream, release, machine)[0]


def writer_analysis(stream: bytes, release: str, machine: str) -> Analysis:
    """``analyze(stream, release=, machine=)``: the stream decoded as its writer meant it.
    One source stream serves each of its destinations and its prediction, so the last few
    of up to :data:`KEEP_STREAM` bytes are kept (by the stream's digest and the seeded bug
    the core runs with). Callers only read the result."""
    hit, where, key = _kept_writer(stream, release, machine)
    if hit is None:
        hit = analyze(stream, release=release, machine=machine)
        if key is None:
            return hit  # too large to keep
        if len(_WRITERS) >= 8:
            _WRITERS.pop(next(iter(_WRITERS)))
        _WRITERS[key] = hit
    _LAST_WRITER[:] = [stream, where, hit]
    return hit


def _kept_writer(stream: bytes, release: str, machine: str
                 ) -> tuple[Analysis | None, tuple[Any, ...], tuple[Any, ...] | None]:
    """The kept analysis of ``stream`` (or None), where it was written (release, machine,
    seeded bug) and its key among those kept (None: too large to keep)."""
    import hashlib

    from ..emulator import faults

    bug = faults.active()
    where = (release, machine, bug.name if bug else None)
    last = _LAST_WRITER
    if last and last[0] is stream and last[1] == where:
        return last[2], where, None  # the same bytes object: no digest needed
    if len(stream) > KEEP_STREAM:
        return None, where, None
    key = (*where, hashlib.sha1(stream).digest())
    return _WRITERS.get(key), where, key


KEEP_STREAM = 64 << 20  # the largest stream whose analysis is kept for reuse
_WRITERS: dict[tuple[str, str, str | None, bytes], Analysis] = {}
_LAST_WRITER: list[Any] = []


def analyze(source: str | bytes | BinaryIO | Input, *, release: str | None = None,
            machine: str | None = None, as_destination: str | None = None,
            nic: str | None = None, vga: str | None = None) -> Analysis:
    """Decode ``source``; with ``as_destination`` ("R/M") also replay it there, on a
    destination with the NIC ``nic`` and the display ``vga`` (default: the stream's own,
    as a matrix cell's destination is started with its source's command line)."""
    inp = source if isinstance(source, Input) else Input(source)
    a = Analysis(inp.name)
    head = inp.reader().peek(9)
    if len(head) >= 4 and struct.unpack(">I", head[:4])[0] != FILE_MAGIC:
        # Not a savevm stream at all: say so, rather than what no release would decode.
        a.error = LoadError(Reason.BAD_MAGIC, f"0x{head[:4].hex()}, not a savevm stream "
                            "(which starts with QEVM)", offset=0).to_dict()
        return a
    file_version = struct.unpack(">I", head[4:8])[0] if len(head) >= 8 else None
    a.file_version = file_version
    qemu = release is None and (
        (len(head) >= 9 and head[8] == T_CONFIG)
        or (file_version == 3 and find_trailer(inp) is not None))
    if qemu:
        decode_qemu(inp, a)
        if as_destination:
            a.divergence = {"error": "--as-destination replays modelled releases only"}
        return a
    from .modelled import candidates, decode_modelled, release_named
    from .replay import replay_as_destination

    if release is not None:
        decode_modelled(inp, release_named(release), machine, analysis=a,
                        spill=bool(as_destination))
        a.writer["inferred"] = False  # type: ignore[index]
    else:
        # QEMU sends every section it registered: the writer is a release that decodes
        # the whole stream and whose every section it holds. A newer release may decode
        # an older stream too (0.14 reads 0.13's, with its port92 never sent): that one
        # is kept only if no candidate holds exactly the stream's sections.
        tried = []
        best: Analysis | None = None
        exact = False
        for rel, mach in candidates(file_version):
            attempt = decode_modelled(inp, rel, mach, analysis=Analysis(inp.name),
                                      spill=bool(as_destination))
            ok = _decodes(attempt)
            unsent = next((n for n in attempt.notes if n.startswith("never sent")), None)
            tried.append({"endpoint": f"{rel.name}/{mach}", "decodes": ok,
                          "error": None if ok else (attempt.error or {}).get("message")
                          or f"{attempt.trailing_bytes} byte(s) after EOF",
                          **({"note": unsent} if ok and unsent else {})})
            if best is None or (ok and not _decodes(best)) or (
                    not _decodes(best) and attempt.bytes_read > best.bytes_read):
                best = attempt
            if ok and unsent is None:
                # Its sections fit; the machines whose sections and RAM blocks both do are
                # the writers (the newest shown), where there is one.
                fits = _fitting(inp, attempt, candidates(file_version, every_machine=True),
                                spill=bool(as_destination))
                best, exact = (fits[0][1] if fits else attempt), True
                alike = [endpoint for endpoint, _ in fits[1:]]
                if alike:
                    best.writer["also"] = alike  # type: ignore[index]
                    best.notes.append(
                        f"it decodes exactly as {', '.join(alike)} too: those write such "
                        "a stream alike, so it does not say which of them wrote it (shown "
                        f"as {best.writer['endpoint']}, the newest)")  # type: ignore[index]
                elif not fits:
                    best.notes.append("no modelled machine has this stream's RAM blocks; "
                                      f"shown as {best.writer['endpoint']} reads it")  # type: ignore[index]
                break
        decoded = best is not None and _decodes(best)
        if not decoded and file_version == 3 and find_trailer(inp) is not None:
            return decode_qemu(inp, Analysis(inp.name))
        if best is None:
            a.error = {"reason": "unsupported_version", "errno": None,
                       "message": f"no modelled release accepts file version {file_version}",
                       "offset": 4, "section": None, "field": None}
            a.writer = {"inferred": True, "tried": tried}
            return a
        assert best.writer is not None
        best.writer["inferred"] = True
        best.writer["tried"] = tried
        if not decoded:
            best.notes.append("no modelled release decodes the whole stream; shown as "
                              f"{best.writer['endpoint']} reads it (it reads furthest)")
        elif not exact:
            best.notes.append("no modelled release sends exactly this stream's sections; "
                              f"shown as {best.writer['endpoint']} reads it (the newest "
                              "that decodes it whole)")
        a = best
    if as_destination:
        if a.format != "modelled":
            a.divergence = {"error": "--as-destination replays modelled releases only"}
        else:
            a.divergence = replay_as_destination(inp, a, as_destination, nic=nic, vga=vga)
    return a


def _fitting(inp: Input, found: Analysis, machines: list[Any], *, spill: bool = False
             ) -> list[tuple[str, Analysis]]:
    """The machines (release, machine), newest first, with the NIC and VGA ``found``
    read, that have exactly the stream's sections (idstr, instance, version) and RAM
    blocks, each with its own decode of the whole stream (all of them decode it alike;
    ``spill``: as ``found`` was, every mark kept for a replay)."""
    from collections import Counter

    from .modelled import _option_sections, decode_modelled, option_blocks

    writer = found.writer or {}
    nic, vga = writer.get("nic"), writer.get("vga")
    sent = Counter((s.idstr, s.instance_id, s.version_id) for s in found.sections
                   if s.kind in ("START", "FULL"))
    blocks = frozenset((b["name"], b["length"]) for b in (found.ram or {}).get("blocks", [])
                       if b.get("listed") and b["name"] != "pc.ram")
    out = []
    for rel, mach in machines:
        try:
            theirs = Counter((i, n, v) for i, n, v, _ in _option_sections(rel.name, mach, nic,
                                                                           vga))
            if theirs != sent or option_blocks(rel.name, mach, nic, vga) != blocks:
                continue
        except ConfigError:  # an option that machine does not have
            continue
        if (rel.name, mach) == (writer.get("release"), writer.get("machine")):
            attempt = found
        else:
            attempt = decode_modelled(inp, rel, mach, nic=nic, vga=vga,
                                      analysis=Analysis(inp.name), spill=spill)
            attempt.writer["nic"], attempt.writer["vga"] = nic, vga  # type: ignore[index]
        if _decodes(attempt) and not any(n.startswith("never sent") for n in attempt.notes):
            out.append((f"{rel.name}/{mach}", attempt))
    return out


def _decodes(a: Analysis) -> bool:
    """The whole stream decoded, to its EOF and nothing after it."""
    return a.complete and not a.trailing_bytes


def _cmd_analyze(args: argparse.Namespace) -> int:
    inp = Input(args.file)
    try:
        a = analyze(inp, release=args.release, machine=args.machine,
                    as_destination=args.as_destination, nic=args.nic, vga=args.vga)
    except (ConfigError, EmulatorError) as e:
        print(f"migmatrix analyze: {e}", file=sys.stderr)
        return 2
    finally:
        inp.close()
    out = sys.stdout
    if args.json:
        json.dump(a.to_dict(), out, indent=1 if args.pretty else None, default=_jsonable)
        out.write("\n")
    else:
        out.write(render_text(a, max_elements=args.limit))
    return 0 if a.complete and not a.trailing_bytes else 1


def _jsonable(value: Any) -> Any:
    from ..emulator.machine import jsonable

    return jsonable(value)


def configure_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``analyze`` to the ``migmatrix`` subcommands."""
    s = subparsers.add_parser(
        "analyze", help="decode a stream element by element, with offsets",
        description="Decode a migration stream: header, sections, fields with values, "
                    "subsections, sentinels, RAM per block; exit 1 if it does not decode "
                    "to its end.")
    s.add_argument("file", help="stream file, or - for standard input")
    s.add_argument("--release", help="decode with this release (default: infer)")
    s.add_argument("--machine", help="machine type (default: one matching the stream format)")
    s.add_argument("--as-destination", metavar="R/M",
                   help="replay how this destination reads the bytes; show the divergence")
    s.add_argument("--nic", choices=("e1000", "rtl8139", "none"), default=None,
                   help="the destination's NIC, as on QEMU's command line (default: the "
                        "stream's own)")
    s.add_argument("--vga", choices=("cirrus", "none"), default=None,
                   help="the destination's display adapter, as -vga on QEMU's command line "
                        "(default: the stream's own)")
    s.add_argument("--json", action="store_true", help="JSON for tools")
    s.add_argument("--pretty", action="store_true", help="indent the JSON")
    s.add_argument("--limit", type=int, default=None, help="text: at most N elements")
    s.set_defaults(func=_cmd_analyze)
    return s
