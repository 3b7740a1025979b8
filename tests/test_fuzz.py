"""Hostile input never crashes the core: properties over mutated and generated streams.

Whatever bytes arrive, :meth:`Machine.load` either returns or raises ``LoadError`` (the
core's typed error), within a bounded time. These are bounded versions of
``bench/fuzz.py``; a failure shrinks to a small mutation of one corpus stream.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import fuzz
from harness.emulator.releases import RELEASES

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")

FAST = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
LIMIT = 2.0  # seconds per load


@pytest.fixture(scope="module")
def seeds() -> list[fuzz.Seed]:
    return fuzz.corpus(all_machines=False)


def assert_typed(result: fuzz.CheckResult) -> None:
    assert result.kind in ("ok", "typed"), f"{result.kind}: {result.detail}\n" + str(
        result.extra.get("traceback", ""))
    assert result.seconds < LIMIT


DESTS = fuzz.destinations()


@FAST
@given(data=st.data())
def test_mutated_valid_streams_load_or_raise_load_error(seeds: list[fuzz.Seed],
                                                         data: st.DataObject) -> None:
    seed = seeds[data.draw(st.integers(0, len(seeds) - 1), label="seed")]
    op = data.draw(st.sampled_from(fuzz.Mutator.OPS), label="op")
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="rng"))
    _, mutant = fuzz.Mutator(rng, seeds).mutate(seed, op)
    dest = data.draw(st.sampled_from([(seed.release, seed.machine), *DESTS]), label="dest")
    via = data.draw(st.sampled_from(("bytes", "stream", "trace")), label="via")
    assert_typed(fuzz.check_load(*dest, mutant, limit=LIMIT, via=via))


@FAST
@given(data=st.data())
def test_generated_section_framing_loads_or_raises_load_error(seeds: list[fuzz.Seed],
                                                               data: st.DataObject) -> None:
    release, machine = data.draw(st.sampled_from(DESTS), label="dest")
    stream = data.draw(fuzz.framing_strategy(seeds, release, machine), label="stream")
    assert_typed(fuzz.check_load(release, machine, stream, limit=LIMIT))


@FAST
@given(data=st.data())
def test_any_bytes_after_a_valid_prefix(seeds: list[fuzz.Seed], data: st.DataObject) -> None:
    seed = seeds[data.draw(st.integers(0, len(seeds) - 1), label="seed")]
    marks = seed.marks
    cut = marks[data.draw(st.integers(0, len(marks) - 1), label="cut")] if marks else 8
    tail = data.draw(st.binary(max_size=512), label="tail")
    assert_typed(fuzz.check_load(seed.release, seed.machine, seed.data[:cut] + tail,
                                 limit=LIMIT))


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_stream_source_reads_exactly_what_bytes_read(seeds: list[fuzz.Seed],
                                                        data: st.DataObject) -> None:
    """The buffered reader (a socket) refuses a stream with the same reason as memory."""
    seed = seeds[data.draw(st.integers(0, len(seeds) - 1), label="seed")]
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="rng"))
    _, mutant = fuzz.Mutator(rng, seeds).mutate(seed)
    a = fuzz.check_load(seed.release, seed.machine, mutant, via="bytes")
    b = fuzz.check_load(seed.release, seed.machine, mutant, via="stream")
    assert (a.kind, a.reason) == (b.kind, b.reason)
    assert a.detail == b.detail


def test_every_mutation_operator_keeps_the_contract(seeds: list[fuzz.Seed]) -> None:
    rng = random.Random(7)
    mut = fuzz.Mutator(rng, seeds)
    for op in fuzz.Mutator.OPS:
        for _ in range(8):
            seed = rng.choice(seeds)
            _, mutant = mut.mutate(seed, op)
            assert_typed(fuzz.check_load(seed.release, seed.machine, mutant))


def test_the_corpus_covers_every_release_and_loads_cleanly() -> None:
    seeds = fuzz.corpus(all_machines=False)
    assert {s.release for s in seeds} == set(RELEASES)
    for s in seeds:
        assert s.data[:4] == b"QEVM" and s.sections
        assert struct.unpack(">I", s.data[4:8])[0] in (3, 4)


def test_check_load_reports_a_core_bug_as_other(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.emulator import machine

    def broken(*a: object, **k: object) -> None:
        raise IndexError("list index out of range")

    monkeypatch.setattr(machine.Machine, "load", broken)
    result = fuzz.check_load("0.14", "pc", b"QEVM")
    assert result.kind == "other" and "IndexError" in result.detail


def test_check_load_bounds_the_time_of_one_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as _time

    from harness.emulator import machine

    def slow(*a: object, **k: object) -> None:
        _time.sleep(5)

    monkeypatch.setattr(machine.Machine, "load", slow)
    result = fuzz.check_load("0.14", "pc", b"QEVM", limit=0.2)
    assert result.kind == "timeout" and result.seconds < 1.0
