"""Hostile-input checks of the emulator core: a corpus of valid streams and their mutants.

A migration stream is untrusted input. The core's contract is that :meth:`Machine.load`
on *any* bytes either returns or raises :class:`~harness.emulator.errors.LoadError` (or
:class:`~harness.emulator.errors.LoadCrash`, where the modelled QEMU would die), within a
bounded time and without allocating more than the destination machine itself.
This module holds what both the property tests (``tests/test_fuzz.py``) and the fuzzing
bench (``bench/fuzz.py``) need:

- :func:`corpus`: valid streams of every release, machine type and scenario, each with
  the offsets where its sections and fields start (from the core's tracer), so that
  mutations land on structure rather than deep inside RAM pages;
- :class:`Mutator`: byte flips, interesting values, insertions, deletions, truncations,
  repeats, splices of two streams and garbage after a prefix;
- :func:`frame`: a stream assembled from section records (the framing a hypothesis
  strategy or a random generator chooses);
- :func:`check_load`: one load under a wall-clock limit, classified as ``ok``,
  ``typed`` (a ``LoadError``, or a ``LoadCrash``), ``other`` (any other exception: a core
  bug) or
  ``timeout``.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import random
import struct
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from .drivers.inprocess import CellTimeout, time_limit
from .emulator.errors import EmulatorError, LoadCrash, LoadError
from .emulator.guest import PROGRAMS
from .emulator.machine import Machine
from .emulator.releases import RELEASES
from .emulator.vmstate import Tracer
from .scenarios import SCENARIOS, apply_scenario

__all__ = [
    "FUZZ_RAM",
    "KINDS",
    "CheckResult",
    "Mutator",
    "Seed",
    "Trickle",
    "check_load",
    "corpus",
    "destinations",
    "frame",
    "framing_strategy",
    "idstrs",
    "random_framing",
]

FUZZ_RAM = 64 << 10  # the smallest sensible pc: streams stay small, loads fast
KINDS = ("ok", "typed", "other", "timeout")
_MAGIC = b"QEVM"


@dataclass(frozen=True)
class Seed:
    """One valid stream and where its structure is."""

    release: str
    machine: str
    scenario: str
    data: bytes
    marks: tuple[int, ...]  # offsets where a section, field, subsection or sentinel starts
    sections: tuple[tuple[int, int], ...]  # (start, end) of every section record

    @property
    def endpoint(self) -> str:
        return f"{self.release}/{self.machine}"

    def records(self) -> list[tuple[int, int, bytes | None, int, int, bytes]]:
        """The section records of this stream, as :func:`frame` takes them."""
        out: list[tuple[int, int, bytes | None, int, int, bytes]] = []
        d = self.data
        for start, end in self.sections:
            kind, sid = struct.unpack_from(">BI", d, start)
            if kind in (1, 4):
                n = d[start + 5]
                idstr = d[start + 6 : start + 6 + n]
                inst, ver = struct.unpack_from(">II", d, start + 6 + n)
                out.append((kind, sid, idstr, inst, ver, d[start + 14 + n : end]))
            else:
                out.append((kind, sid, None, 0, 0, d[start + 5 : end]))
        return out


def destinations() -> list[tuple[str, str]]:
    """Every (release, machine type) the core models."""
    return [(r.name, m.name) for r in RELEASES.values() for m in r.machines]


def _seed(release: str, machine: str, scenario: str, seed: int) -> Seed | None:
    m = Machine(release, machine, FUZZ_RAM, media=SCENARIOS[scenario].media)
    try:
        sc = apply_scenario(m, scenario, seed)
        data = m.save(passes=min(sc.live_passes, 1), workload=sc.workload)
    except EmulatorError:
        return None
    assert data is not None
    tracer = Tracer()
    with contextlib.suppress(LoadError):  # a release may refuse its own stream (siblings)
        Machine.load(release, machine, data, ram_size=FUZZ_RAM, media=m.media, tracer=tracer)
    marks = sorted({mk.offset for mk in tracer.marks} | {mk.end for mk in tracer.marks})
    starts = [mk.offset for mk in tracer.marks if mk.kind == "section"]
    ends = [*starts[1:], len(data) - 1]
    sections = tuple(zip(starts, ends, strict=True))
    return Seed(release, machine, scenario, data, tuple(marks), sections)


@functools.cache
def corpus(releases: tuple[str, ...] | None = None, *, all_machines: bool = True) -> list[Seed]:
    """Valid streams of every release (x machine type) x expressible scenario."""
    out: list[Seed] = []
    for rel in RELEASES.values():
        if releases is not None and rel.name not in releases:
            continue
        machines = [m.name for m in rel.machines] if all_machines else [rel.machines[0].name]
        for machine in machines:
            for name, scenario in SCENARIOS.items():
                if not scenario.expressible_on(rel) or name not in PROGRAMS:
                    continue
                seeds = (1, 2) if scenario.seeded else (0,)
                for seed in seeds:
                    s = _seed(rel.name, machine, name, seed)
                    if s is not None:
                        out.append(s)
    return out


@functools.cache
def idstrs() -> tuple[tuple[str, int, int], ...]:
    """(idstr, instance_id, version_id) of every section some release registers."""
    seen: dict[tuple[str, int], int] = {}
    for rel, machine in destinations():
        for h in Machine(rel, machine, FUZZ_RAM).handlers():
            seen[(h.idstr, h.instance_id)] = h.version_id
    return tuple((i, inst, v) for (i, inst), v in sorted(seen.items()))


# -- framing ---------------------------------------------------------------------------


def frame(
    version: int,
    records: list[tuple[int, int, bytes | None, int, int, bytes]],
    *,
    eof: bool = True,
    magic: bytes = _MAGIC,
) -> bytes:
    """A stream from ``(type, section_id, idstr, instance_id, version_id, payload)``.

    ``idstr`` None writes a PART/END-style header (type and section id only), whatever
    the type byte says.
    """
    out = bytearray(magic)
    out += struct.pack(">I", version & 0xFFFFFFFF)
    for kind, sid, idstr, inst, ver, payload in records:
        out += struct.pack(">BI", kind & 0xFF, sid & 0xFFFFFFFF)
        if idstr is not None:
            name = idstr[:255]
            out += bytes((len(name),)) + name
            out += struct.pack(">II", inst & 0xFFFFFFFF, ver & 0xFFFFFFFF)
        out += payload
    if eof:
        out.append(0)
    return bytes(out)


def random_framing(rng: random.Random, seeds: list[Seed], version: int | None = None) -> bytes:
    """A stream assembled from real section records, shuffled, repeated, renamed and
    re-versioned, with random payloads mixed in: the framing a loader must survive."""
    pool = [rec for s in rng.sample(seeds, min(3, len(seeds))) for rec in s.records()]
    names = idstrs()
    records = []
    for _ in range(rng.choice((0, 1, 2, 3, 5, 8, 16))):
        kind, sid, idstr, inst, ver, payload = rng.choice(pool)
        roll = rng.random()
        if roll < 0.15:
            kind = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 0x7E, 0xFF))
        if rng.random() < 0.2:
            sid = rng.choice((0, 1, 2, 5, 0xFFFFFFFF, rng.getrandbits(32)))
        if idstr is None and kind in (1, 4) and rng.random() < 0.5:
            n, i, v = rng.choice(names)
            idstr, inst, ver = n.encode("latin-1"), i, v
        if idstr is not None and rng.random() < 0.2:
            idstr = rng.choice((b"", b"x" * 255, idstr + b"\x00", idstr[:-1], rng.randbytes(8)))
        if rng.random() < 0.2:
            ver = rng.choice((0, 1, 2, ver - 1, ver + 1, 255, 256, 0xFFFFFFFF)) & 0xFFFFFFFF
        if rng.random() < 0.2:
            inst = rng.choice((0, 1, 0x3F0, 0xFFFFFFFF))
        if rng.random() < 0.15:
            payload = rng.randbytes(rng.choice((0, 1, 8, 64, 600)))
        elif rng.random() < 0.15:
            payload = payload[: rng.randrange(len(payload) + 1)]
        if kind in (2, 3) and rng.random() < 0.7:
            idstr = None
        records.append((kind, sid, idstr, inst, ver, payload))
    if version is None or rng.random() < 0.1:
        version = rng.choice((3, 4, 2, 5, 0, 0xFFFFFFFF))
    magic = _MAGIC if rng.random() < 0.95 else rng.randbytes(4)
    return frame(version, records, eof=rng.random() < 0.8, magic=magic)


def framing_strategy(seeds: list[Seed], release: str, machine: str) -> Any:
    """A hypothesis strategy of whole streams for ``release/machine``: a header (usually
    of the machine's format), section records with known or arbitrary idstrs, instance
    ids, versions and payloads (real payloads, their prefixes, or arbitrary bytes)."""
    from hypothesis import strategies as st

    from .emulator.releases import get_release

    fmt = get_release(release).machine(machine).stream_format
    known = idstrs()
    payloads = [rec[5] for s in seeds[:12] for rec in s.records()] or [b""]
    idstr = st.one_of(st.sampled_from([n.encode() for n, _, _ in known]),
                      st.binary(max_size=300))
    record = st.tuples(
        st.sampled_from((0, 1, 2, 3, 4, 5, 6, 7, 0x7E, 0xFF)),
        st.one_of(st.integers(0, 12), st.integers(0, 2**32 - 1)),
        st.one_of(st.none(), idstr),
        st.one_of(st.sampled_from(sorted({i for _, i, _ in known})), st.integers(0, 2**32 - 1)),
        st.one_of(st.integers(0, 13), st.integers(0, 2**32 - 1)),
        st.one_of(st.sampled_from(payloads), st.binary(max_size=64),
                  st.sampled_from(payloads).flatmap(
                      lambda p: st.integers(0, len(p)).map(lambda k: p[:k]))),
    )
    version = st.one_of(st.just(fmt), st.sampled_from((2, 3, 4, 5, 0xFFFFFFFF)))
    return st.builds(lambda v, recs, eof: frame(v, recs, eof=eof), version,
                     st.lists(record, max_size=8), st.booleans())


# -- mutation --------------------------------------------------------------------------

_INTERESTING8 = (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x10, 0x20, 0x7F, 0x80, 0xFF)
_INTERESTING32 = (0, 1, 2, 3, 4, 5, 6, 0xFF, 0x100, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
_INTERESTING64 = (
    0, 1 << 63, (1 << 64) - 1, 0x1000 | 0x08, 0x10, 0x20 | 0x08, 0x04, (1 << 40) | 0x08,
    (1 << 62) | 0x04,
)


class Mutator:
    """Deterministic (per ``rng``) mutations of valid streams."""

    OPS = (
        "flip", "set8", "set32", "set64", "insert", "delete", "truncate", "repeat",
        "splice", "garbage", "section_swap", "section_drop", "section_dup", "multi",
    )  # fmt: skip

    def __init__(self, rng: random.Random, seeds: list[Seed]) -> None:
        self.rng = rng
        self.seeds = seeds

    def position(self, seed: Seed, n: int | None = None) -> int:
        """An offset: usually where a structure starts (or just after), sometimes anywhere."""
        rng = self.rng
        n = len(seed.data) if n is None else n
        if seed.marks and rng.random() < 0.8:
            # Favour the device sections (after RAM): that is where parsing decisions are.
            marks = seed.marks
            first_device = bisect.bisect_left(marks, seed.sections[1][0]) if len(
                seed.sections) > 1 else 0
            pool = marks[first_device:] if rng.random() < 0.8 and first_device < len(marks) \
                else marks
            pos = rng.choice(pool) + rng.choice((0, 0, 0, 1, -1, 2, 4))
        else:
            pos = rng.randrange(max(n, 1))
        return min(max(pos, 0), max(n - 1, 0))

    def mutate(self, seed: Seed, op: str | None = None) -> tuple[str, bytes]:
        rng = self.rng
        op = op or rng.choice(self.OPS)
        if op == "multi":
            data = seed.data
            for _ in range(rng.randint(2, 5)):
                sub = rng.choice(self.OPS[:-1])
                data = self._apply(sub, Seed(seed.release, seed.machine, seed.scenario, data,
                                             seed.marks, seed.sections))
            return op, data
        return op, self._apply(op, seed)

    def _apply(self, op: str, seed: Seed) -> bytes:
        rng = self.rng
        data = bytearray(seed.data)
        n = len(data)
        if n == 0:
            return bytes(rng.randbytes(rng.randint(0, 16)))
        pos = self.position(seed, n)
        if op == "flip":
            data[pos] ^= 1 << rng.randrange(8)
        elif op == "set8":
            data[pos] = rng.choice(_INTERESTING8)
        elif op == "set32":
            data[pos : pos + 4] = struct.pack(">I", rng.choice(_INTERESTING32))
        elif op == "set64":
            data[pos : pos + 8] = struct.pack(">Q", rng.choice(_INTERESTING64))
        elif op == "insert":
            k = rng.choice((1, 1, 2, 4, 8, 16, 255))
            filler = rng.choice((bytes((rng.choice(_INTERESTING8),)) * k, rng.randbytes(k)))
            data[pos:pos] = filler
        elif op == "delete":
            del data[pos : pos + rng.choice((1, 1, 2, 4, 8, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op == "repeat":
            k = rng.choice((1, 4, 16, 256))
            data[pos:pos] = data[pos : pos + k] * rng.randint(1, 4)
        elif op == "splice":
            other = rng.choice(self.seeds)
            at = self.position(other)
            data = data[:pos] + other.data[at:]
        elif op == "garbage":
            k = rng.choice((1, 16, 4096, 1 << 16))
            data = data[:pos] + rng.randbytes(k)
        elif op in ("section_swap", "section_drop", "section_dup"):
            secs = seed.sections
            if not secs:
                return bytes(data)
            a, b = secs[rng.randrange(len(secs))]
            if op == "section_drop":
                del data[a:b]
            elif op == "section_dup":
                data[b:b] = data[a:b]
            else:
                c, d = secs[rng.randrange(len(secs))]
                if (c, d) != (a, b):
                    (a, b), (c, d) = sorted(((a, b), (c, d)))
                    if b <= c:
                        data = data[:a] + data[c:d] + data[b:c] + data[a:b] + data[d:]
        return bytes(data)


# -- one load --------------------------------------------------------------------------


@dataclass
class CheckResult:
    kind: str  # ok | typed | other | timeout
    seconds: float
    detail: str = ""
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Trickle:
    """A readable source that hands out ``data`` in small, varying chunks (a socket)."""

    def __init__(self, data: bytes, seed: int = 0) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._rng = random.Random(seed)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = len(self._data)
        k = min(n, self._rng.choice((1, 3, 7, 64, 4093, 1 << 16)))
        chunk = bytes(self._data[self._pos : self._pos + k])
        self._pos += len(chunk)
        return chunk


def check_load(
    release: str,
    machine: str,
    data: bytes,
    *,
    limit: float = 2.0,
    ram_size: int = FUZZ_RAM,
    via: str = "bytes",
) -> CheckResult:
    """Load ``data`` on a fresh ``release/machine`` and say how it ended.

    ``via``: ``bytes`` (in memory), ``stream`` (a :class:`Trickle` source: the buffered
    reader's paths) or ``trace`` (in memory with a tracer, as the analyzer loads).
    """
    t0 = time.perf_counter()
    source: Any = Trickle(data, len(data)) if via == "stream" else data
    tracer = Tracer() if via == "trace" else None
    try:
        with time_limit(limit):
            Machine.load(release, machine, source, ram_size=ram_size, tracer=tracer)
    except CellTimeout:
        return CheckResult("timeout", time.perf_counter() - t0, f"no outcome within {limit} s")
    except LoadError as e:
        return CheckResult("typed", time.perf_counter() - t0, str(e), e.reason.name)
    except LoadCrash as e:  # where the modelled release dies: typed too, as "crash"
        return CheckResult("typed", time.perf_counter() - t0, str(e), "CRASH")
    except Exception as e:  # anything else is a bug in the core
        return CheckResult(
            "other", time.perf_counter() - t0, f"{type(e).__name__}: {e}",
            extra={"traceback": traceback.format_exc()},
        )
    return CheckResult("ok", time.perf_counter() - t0)
