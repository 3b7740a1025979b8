"""The analyzer on hostile input: it always returns an analysis (never an exception),
checks every declared length before using it, keeps memory bounded whatever the stream
holds, finds the VMDESCRIPTION in one linear search, and replays a destination with the
destination's own checks.

The VMDESCRIPTION cases are the kinds of mutation that once ended ``migmatrix analyze``
in a traceback (AttributeError, TypeError, ValueError, OverflowError, RecursionError,
MemoryError, or no end at all), on a stream in QEMU's format built by
:func:`harness.fuzz_surfaces.qemu_format_stream` (no QEMU binary needed).
"""

from __future__ import annotations

import copy
import json
import random
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import fuzz, fuzz_surfaces
from harness.analyze import Input, analyze, elements, render_text
from harness.analyze.vmdesc import MAX_JSON_BYTES, find_trailer
from harness.emulator.errors import LoadCrash
from harness.emulator.machine import Machine
from harness.scenarios import apply_scenario, get_scenario

SAMPLE = fuzz_surfaces.SAMPLE_DESCRIPTION
STREAM = fuzz_surfaces.qemu_format_stream()
STEM = STREAM[: find_trailer(Input(STREAM)).offset]  # type: ignore[union-attr]


def with_doc(change: Callable[[dict[str, Any]], Any]) -> bytes:
    doc = copy.deepcopy(SAMPLE)
    result = change(doc)
    return fuzz_surfaces.with_description(STEM, json.dumps(
        doc if result is None else result).encode())


def fields(dev: int = 1) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    return lambda d: d["devices"][dev]["fields"]


def test_the_sample_stream_decodes_whole() -> None:
    a = analyze(STREAM)
    assert a.format == "qemu" and a.complete and not a.notes, (a.error, a.notes)
    assert a.state()["dev"]["regs"] == list(STREAM[16685:16689])
    assert a.state()["dev@0x1"]["x"] == int.from_bytes(STREAM[16757:16761], "big")


def nested(depth: int) -> dict[str, Any]:
    vmsd: dict[str, Any] = {"vmsd_name": "leaf", "fields": []}
    for _ in range(depth):
        vmsd = {"vmsd_name": "s", "fields": [{"name": "f", "size": 0, "struct": vmsd}]}
    return vmsd


MALFORMED = {
    # (what the JSON says, how it is reported): a device's own description is malformed
    "device-fields-not-an-array": (lambda d: d["devices"][1].update(fields=5),
                                   "devices[1].fields: expected an array, found an integer"),
    "field-not-an-object": (lambda d: fields()(d).__setitem__(0, [1]),
                            "devices[1].fields[0]: expected an object, found an array"),
    "size-a-string": (lambda d: fields()(d)[1].update(size="x"),
                      "devices[1].fields[1].size: expected an integer, found a string"),
    "size-infinite": (lambda d: fields()(d)[1].update(size=1e308),
                      "devices[1].fields[1].size: expected an integer, found a number"),
    "size-negative": (lambda d: fields()(d)[1].update(size=-5),
                      "devices[1].fields[1].size: -5 is outside 0..4294967296"),
    "array-len-a-string": (lambda d: fields()(d)[0].update(array_len="4"),
                           "devices[1].fields[0].array_len: expected an integer"),
    "struct-not-an-object": (lambda d: fields()(d)[3].update(struct=7),
                             "devices[1].fields[3].struct: expected an object"),
    "subsections-not-an-array": (lambda d: d["devices"][1].update(subsections={"a": 1}),
                                 "devices[1].subsections: expected an array"),
    "structs-nested-40-deep": (lambda d: fields()(d)[3].update(struct=nested(40)),
                               "nested more than 32 deep"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_device_description_is_reported_with_its_json_path(case: str) -> None:
    change, message = MALFORMED[case]
    a = analyze(with_doc(change))
    assert a.error["reason"] == "invalid_value" and a.error["section"] == "dev"
    assert message in a.error["message"]
    assert a.error["offset"] == STEM.index(b"\x04\x00\x00\x00\x02")  # the dev section
    assert "timer" in a.state()  # what came before it is decoded
    assert "stopped:" in render_text(a)


UNUSABLE = {
    "not-an-object": lambda d: [1, 2],
    "devices-not-an-array": lambda d: d.update(devices={"x": 1}),
}


@pytest.mark.parametrize("case", UNUSABLE, ids=list(UNUSABLE))
def test_an_unusable_description_is_named_at_the_first_device(case: str) -> None:
    a = analyze(with_doc(UNUSABLE[case]))
    assert "VMDESCRIPTION is unusable" in a.error["message"]
    assert any("device sections cannot be decoded" in n for n in a.notes)


def test_json_nested_100000_deep_is_an_unusable_description() -> None:
    data = fuzz_surfaces.with_description(STEM, b'{"devices": ' + b"[" * 100_000
                                          + b"]" * 100_000 + b"}")
    a = analyze(data)
    assert "nested too deeply" in a.error["message"]


def test_a_bad_page_size_or_a_nameless_device_costs_only_itself() -> None:
    a = analyze(with_doc(lambda d: d.update(page_size=0)))
    assert a.complete and "page_size: 0 is not a power of two" in a.notes[0]
    b = analyze(with_doc(lambda d: d["devices"][0].update(name=5)))
    assert b.error["section"] == "timer" and "not in the stream's VMDESCRIPTION" in \
        b.error["message"]
    assert "devices[0].name: expected a string" in b.notes[0]


def test_a_declared_size_of_4_gib_is_refused_before_anything_is_read() -> None:
    a = analyze(with_doc(lambda d: fields()(d)[2].update(size=2**32)))
    assert a.error["reason"] == "truncated"
    assert a.error["field"] == "dev/buf"
    assert "declares 4294967296 byte(s)" in a.error["message"]


def test_a_struct_array_of_10_to_the_12_empty_elements_ends_after_one() -> None:
    a = analyze(with_doc(lambda d: fields()(d).insert(0, {
        "name": "e", "type": "struct", "size": 0, "array_len": 10**12,
        "struct": {"vmsd_name": "e", "fields": []}})))
    assert a.complete
    assert any("999999999999 more empty element(s)" in n for n in a.notes)
    assert sum(1 for e in a.elements if e.path.startswith("dev/e[")) == 1


def test_a_struct_array_of_10_to_the_12_sized_elements_is_refused_up_front() -> None:
    a = analyze(with_doc(lambda d: fields()(d)[3].update(array_len=10**12)))
    assert a.error["reason"] == "truncated" and "declares 6000000000000" in a.error["message"]


def test_a_configuration_name_of_4_gib_is_refused() -> None:
    data = STEM[:8] + b"\x07" + struct.pack(">I", 0xFFFFFFFF) + STEM[12 + 13 + 1:]
    a = analyze(fuzz_surfaces.with_description(data, json.dumps(SAMPLE).encode()))
    assert a.error["reason"] == "limit_exceeded" and "machine type name" in a.error["message"]


class CountingInput(Input):
    """An input that counts the reads the trailer search makes."""

    reads = 0

    def read_at(self, offset: int, n: int) -> bytes:
        CountingInput.reads += 1
        return super().read_at(offset, n)


def test_the_trailer_search_reads_a_run_of_0x06_once() -> None:
    """A long run of 0x06 at the end (each byte a candidate trailer start to a scan from
    the back) costs one search and at most five candidate reads."""
    CountingInput.reads = 0
    inp = CountingInput(STEM + b"\x06" * (4 << 20))
    assert find_trailer(inp) is None
    assert CountingInput.reads <= 5


def test_the_trailer_is_found_when_its_length_holds_a_0x06() -> None:
    """The JSON holds no raw 0x06, but its be32 length may: the search looks back four."""
    doc = copy.deepcopy(SAMPLE)
    doc["pad"] = ""
    doc["pad"] = "x" * (0x406 - len(json.dumps(doc).encode()))
    text = json.dumps(doc).encode()
    assert len(text) == 0x406  # be32 length 00 00 04 06
    data = fuzz_surfaces.with_description(STEM, text)
    assert find_trailer(Input(data)).offset == len(STEM)  # type: ignore[union-attr]
    assert analyze(data).complete


def test_a_trailer_larger_than_the_cap_is_not_parsed() -> None:
    data = fuzz_surfaces.with_description(STEM, b"{" + b" " * MAX_JSON_BYTES + b"}")
    trailer = find_trailer(Input(data))
    assert trailer is not None and trailer.doc is None and "more than" in trailer.error


def repeated_subsections(n: int) -> bytes:
    m = Machine("0.15", "pc", 1 << 20, media=get_scenario("ide-bus-error").media)
    apply_scenario(m, "ide-bus-error")
    data = m.save()
    at = data.index(b"\x05\x0dide_bus/error")
    sub = data[at : at + 23]  # 0x05, name, version, then error_status: 0.15's subsection
    return data[:at] + sub * n + data[at:]


def test_elements_past_the_cap_are_counted_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(elements, "ELEMENTS_KEPT", 2000)
    from harness.analyze import modelled

    monkeypatch.setattr(modelled, "ELEMENTS_KEPT", 2000)
    a = analyze(repeated_subsections(3000), release="0.15", machine="pc")
    assert a.complete, a.error
    assert len(a.elements) <= 2000 + 2
    assert a.omitted_elements["subsection"] >= 2000
    assert a.state()["0000:00:01.1/ide"]["bus[0]/error_status"] is not None
    assert "counted, not listed" in render_text(a)
    doc = a.to_dict()
    assert doc["omitted"]["elements"] == a.omitted_elements


def test_elements_are_made_when_asked_and_the_cap_counts_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A decode lists its elements when they are first read (a matrix cell reads the
    marks only); an error element past the cap is counted at once all the same."""
    from harness.analyze import modelled

    stream = repeated_subsections(40)[:-300]  # cut: the decode ends in an error
    whole = analyze(stream, release="0.15", machine="pc")
    assert whole.error is not None and whole.elements[-1].kind == "error"
    marks = len(whole.tracer_marks)
    assert len(whole.elements) == marks + 1
    monkeypatch.setattr(elements, "ELEMENTS_KEPT", marks)
    monkeypatch.setattr(modelled, "ELEMENTS_KEPT", marks)
    capped = analyze(stream, release="0.15", machine="pc")
    assert capped.omitted_elements == {"error": 1}  # before any element was read
    assert [e.to_dict() for e in capped.elements] == [e.to_dict() for e in
                                                     whole.elements[:-1]]
    assert capped.to_dict()["omitted"]["elements"] == {"error": 1}


def test_as_destination_walks_a_writer_reading_longer_than_the_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's marks past the cap are read back from disk: a divergence hundreds of
    elements after the last one kept is still found, at the right offset. The "new"
    release fails on two sibling subsections: it takes the second ide_bus/error for a
    subsection of the first."""
    from harness.analyze import modelled

    monkeypatch.setattr(modelled, "ELEMENTS_KEPT", 500)
    stream = repeated_subsections(1000)
    a = analyze(stream, release="0.15", machine="pc", as_destination="new/pc-0.14")
    d = a.divergence
    second = stream.index(b"\x05\x0dide_bus/error", stream.index(b"\x05\x0dide_bus/error") + 1)
    assert d["diverges"] and d["offset"] > a.elements[-1].offset
    assert second <= d["offset"] < second + 23
    assert d["outcome"]["status"] == "rejected"
    assert d["outcome"]["reason"] == "unknown_subsection"
    assert "'ide_bus/error' after ide_bus/error" in d["outcome"]["message"]


def page_beyond_block() -> bytes:
    """A 0.14/pc stream (64 KiB of RAM) whose START chunk also sends pc.ram's page at
    64 KiB: one page past the block."""
    seed = next(s for s in fuzz.corpus(("0.14",), all_machines=False) if s.scenario == "idle")
    records = seed.records()
    at = next(i for i, r in enumerate(records) if r[2] == b"ram")  # its START section
    kind, sid, idstr, inst, ver, payload = records[at]
    eos = struct.pack(">Q", 0x10)
    assert payload.endswith(eos)
    bad = struct.pack(">Q", fuzz.FUZZ_RAM | 0x08) + b"\x06pc.ram" + bytes(4096)
    records[at] = (kind, sid, idstr, inst, ver, payload[:-8] + bad + eos)
    return fuzz.frame(3, records)


def test_as_destination_says_what_load_says_of_a_page_beyond_the_block() -> None:
    """0.14 trusts a page's address: it writes past the block's memory (undefined
    behaviour, modelled as a crash); the replay must reach the same end, not a lenient
    reader's "loaded"."""
    data = page_beyond_block()
    with pytest.raises(LoadCrash) as crashed:
        Machine.load("0.14", "pc", data, ram_size=fuzz.FUZZ_RAM)
    a = analyze(data, release="0.14", machine="pc", as_destination="0.14/pc")
    assert a.complete  # the writer's reading: a summary, lenient about addresses
    outcome = a.divergence["outcome"]
    assert outcome["status"] == "crashed", outcome
    assert outcome["offset"] == crashed.value.offset and outcome["section"] == "ram"
    assert a.divergence["diverges"]


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_mutated_descriptions_always_give_an_analysis(seed: int) -> None:
    """A bounded run of bench/fuzz.py --surface analyzer."""
    mutator = fuzz_surfaces.DescriptionMutator(random.Random(seed))
    data = fuzz_surfaces.with_description(STEM, mutator.text(mutator.mutate(SAMPLE)))
    result = fuzz_surfaces.check_analyze(data, limit=10)
    assert result.kind == "ok", f"{result.detail}\n{result.extra.get('traceback', '')}"
    assert not result.extra["crashed"]


def test_a_replay_of_a_cut_writer_reading_claims_no_divergence_past_the_cut(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer analysed without a replay in view keeps only the first elements; a later
    replay compares those and says so, instead of reporting the cut as a divergence."""
    from harness.analyze import modelled, replay_as_destination

    monkeypatch.setattr(modelled, "ELEMENTS_KEPT", 500)
    stream = repeated_subsections(1000)
    writer = analyze(stream, release="0.15", machine="pc")
    d = replay_as_destination(Input(stream), writer, "0.15/pc")
    assert d["diverges"] is False and "first 500 elements" in d["note"]
    assert d["outcome"]["status"] == "loaded"


def test_an_inferred_writer_found_among_alike_machines_keeps_every_mark_for_a_replay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With --as-destination the writer's reading is replayed whole, past the elements
    listed: also when inference settles on another machine than the first it decoded
    with (a rhel5.x machine type, named after the ROM blocks)."""
    from harness.analyze import modelled
    from harness.emulator.machine import Machine

    monkeypatch.setattr(elements, "ELEMENTS_KEPT", 300)
    monkeypatch.setattr(modelled, "ELEMENTS_KEPT", 300)
    stream = Machine("rhel6.2", "rhel5.4.0", 1 << 20).save()
    a = analyze(stream, as_destination="rhel6.2/rhel5.4.0")
    assert a.writer["endpoint"].startswith("rhel6.2/rhel5."), a.writer
    assert a.mark_log.spilled and len(a.tracer_marks) == 300
    assert "compared up to" not in a.divergence.get("note", ""), a.divergence
    assert a.divergence["diverges"] is False
