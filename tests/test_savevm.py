"""Specification of harness.emulator.savevm: the file header, sections, EOF, LoadReport.

Golden bytes follow wire-format.md section 1: ``be32 0x5145564d, be32 version``; START and
FULL are ``type, be32 section_id, u8 len, idstr, be32 instance, be32 version, payload``;
PART and END are ``type, be32 section_id, payload``; the stream ends with 0x00.
"""

from __future__ import annotations

import io
from types import SimpleNamespace as NS
from typing import Any

import pytest

from harness.emulator.errors import LoadError, Reason, SaveError, TruncatedInput
from harness.emulator.savevm import (
    DeviceSection,
    HeaderPolicy,
    LoadReport,
    Saver,
    load_stream,
)
from harness.emulator.stream import StreamReader, StreamWriter
from harness.emulator.vmstate import (
    Description,
    IntArray,
    PeekPolicy,
    Struct,
    StructArray,
    Subsection,
    Timer,
    VBuffer,
    WireRules,
    u8,
    u16,
)

V3 = HeaderPolicy(frozenset({3}), 3)
V3_OR_4 = HeaderPolicy(frozenset({3, 4}), 4)


class FakeLive:
    """A tiny live handler: each stage writes its stage number and a 0xEE terminator."""

    idstr = "ram"
    instance_id = 0
    version_id = 4
    live = True

    def __init__(self) -> None:
        self.loaded: list[tuple[int, int]] = []

    def save_stage(self, w: StreamWriter, stage: int) -> None:
        w.u8(int(stage))
        w.u8(0xEE)

    def load(self, r: StreamReader, version: int, rules: WireRules) -> None:
        stage = r.read_u8()
        end = r.read_u8()
        if end != 0xEE:
            raise LoadError(Reason.INVALID_VALUE, "no terminator", offset=r.offset - 1)
        self.loaded.append((stage, version))


DEV = Description("dev", 2, [u16("a"), u8("b")], minimum_version_id=1)


def dev_section(obj: Any = None) -> DeviceSection:
    return DeviceSection("dev", 0, DEV, NS(a=0, b=0) if obj is None else obj)


HEADER = bytes.fromhex("5145564d 00000003")
START = bytes.fromhex("01 00000000 03") + b"ram" + bytes.fromhex("00000000 00000004")
PART = bytes.fromhex("02 00000000")
END = bytes.fromhex("03 00000000")


def full(idstr: bytes, section_id: int = 1, instance: int = 0, version: int = 2) -> bytes:
    return (
        b"\x04"
        + section_id.to_bytes(4, "big")
        + bytes([len(idstr)])
        + idstr
        + instance.to_bytes(4, "big")
        + version.to_bytes(4, "big")
    )


GOLDEN = (
    HEADER
    + START + b"\x01\xee"
    + PART + b"\x02\xee"
    + END + b"\x03\xee"
    + full(b"dev") + bytes.fromhex("1234 56")
    + b"\x00"
)  # fmt: skip


def save_golden() -> bytes:
    w = StreamWriter()
    saver = Saver(w, [FakeLive(), dev_section(NS(a=0x1234, b=0x56))], 3, PeekPolicy.ALWAYS_PEEK)
    saver.begin()
    saver.iterate()
    saver.complete()
    return w.getvalue()


def load(data: bytes, handlers: list[Any], header: HeaderPolicy = V3, **kw: Any) -> LoadReport:
    return load_stream(StreamReader(data), handlers, header, PeekPolicy.ALWAYS_PEEK, **kw)


def load_error(data: bytes, handlers: list[Any] | None = None, **kw: Any) -> LoadError:
    handlers = [FakeLive(), dev_section()] if handlers is None else handlers
    with pytest.raises(LoadError) as info:
        load(data, handlers, **kw)
    return info.value


# -- saving --------------------------------------------------------------------------------


def test_saver_writes_header_start_part_end_full_eof() -> None:
    assert save_golden() == GOLDEN


def test_saver_section_ids_are_registration_positions() -> None:
    w = StreamWriter()
    other = DeviceSection("other", 3, Description("other", 1, [u8("v")]), NS(v=7))
    saver = Saver(w, [dev_section(NS(a=1, b=2)), FakeLive(), other], 3, PeekPolicy.ALWAYS_PEEK)
    saver.begin()
    saver.complete()
    assert w.getvalue() == (
        HEADER
        + bytes.fromhex("01 00000001 03") + b"ram" + bytes.fromhex("00000000 00000004")
        + b"\x01\xee"
        + bytes.fromhex("03 00000001") + b"\x03\xee"
        + full(b"dev", section_id=0) + bytes.fromhex("0001 02")
        + full(b"other", section_id=2, instance=3, version=1) + b"\x07"
        + b"\x00"
    )  # fmt: skip


def test_saver_file_version_4_writes_sentinels_in_device_payloads() -> None:
    child = Description("c", 1, [u8("x")])
    desc = Description("dev", 1, [Struct("c", child), u8("z")])
    w = StreamWriter()
    saver = Saver(w, [DeviceSection("dev", 0, desc, NS(c=NS(x=1), z=2))], 4, PeekPolicy.ALWAYS_PEEK)
    saver.begin()
    saver.complete()
    assert w.getvalue() == (
        bytes.fromhex("5145564d 00000004")
        + full(b"dev", section_id=0, version=1)
        + b"\x01\x06\x02"  # x, the element's sentinel, z
        + b"\x00"
    )


def test_a_save_error_names_the_section() -> None:
    w = StreamWriter()
    saver = Saver(w, [dev_section(NS(a=0x10000, b=0))], 3, PeekPolicy.ALWAYS_PEEK)
    saver.begin()
    with pytest.raises(SaveError) as info:
        saver.complete()
    assert (info.value.section, info.value.field) == ("dev", "a")


# -- loading -------------------------------------------------------------------------------


def test_loading_the_golden_stream_fills_handlers_and_reports_every_section() -> None:
    live, obj = FakeLive(), NS(a=0, b=0)
    report = load(GOLDEN, [live, dev_section(obj)])
    assert live.loaded == [(1, 4), (2, 4), (3, 4)]
    assert (obj.a, obj.b) == (0x1234, 0x56)
    assert report.file_version == 3
    starts = [8, 8 + 17 + 2, 8 + 17 + 2 + 7, 8 + 17 + 2 + 7 + 7]
    assert [(s.kind, s.section_id, s.idstr, s.instance_id, s.version_id, s.offset, s.end)
            for s in report.sections] == [
        ("START", 0, "ram", 0, 4, starts[0], starts[0] + 17 + 2),
        ("PART", 0, "ram", 0, 4, starts[1], starts[1] + 5 + 2),
        ("END", 0, "ram", 0, 4, starts[2], starts[2] + 5 + 2),
        ("FULL", 1, "dev", 0, 2, starts[3], starts[3] + 17 + 3),
    ]  # fmt: skip
    assert report.bytes_consumed == len(GOLDEN)
    assert report.bytes_unread == 0
    assert report.not_loaded == []
    assert not report.half_loaded
    assert report.to_dict()["half_loaded"] is False


def test_a_section_is_loaded_at_the_stream_version() -> None:
    obj = NS(a=0, b=0)
    versioned = Description("dev", 2, [u16("a"), u8("b", version_id=2)], minimum_version_id=1)
    data = HEADER + full(b"dev", section_id=0, version=1) + bytes.fromhex("abcd") + b"\x00"
    load(data, [DeviceSection("dev", 0, versioned, obj)])
    assert (obj.a, obj.b) == (0xABCD, 0)


def test_bad_magic() -> None:
    e = load_error(b"QEVX" + GOLDEN[4:])
    assert (e.reason, e.offset) == (Reason.BAD_MAGIC, 0)


def test_stream_version_2_is_obsolete() -> None:
    e = load_error(bytes.fromhex("5145564d 00000002") + GOLDEN[8:])
    assert (e.reason, e.offset) == (Reason.OBSOLETE_VERSION, 4)
    assert "obsolete stream version 2" in str(e)


@pytest.mark.parametrize("version", [1, 4, 5, 0xFFFFFFFF])
def test_any_other_stream_version_is_unsupported(version: int) -> None:
    e = load_error(bytes.fromhex("5145564d") + version.to_bytes(4, "big") + GOLDEN[8:])
    assert (e.reason, e.offset) == (Reason.UNSUPPORTED_VERSION, 4)
    assert f"unsupported stream version {version}" in str(e)


def test_a_per_machine_format_loader_refuses_the_other_format() -> None:
    policy = HeaderPolicy(frozenset({3, 4}), machine_format=4, must_match_machine=True)
    e = load_error(GOLDEN, header=policy)
    assert (e.reason, e.offset) == (Reason.FORMAT_MISMATCH, 4)
    assert "mismatching savevm format v3" in str(e)


def test_version_2_is_reported_obsolete_before_a_format_mismatch() -> None:
    policy = HeaderPolicy(frozenset({3, 4}), machine_format=4, must_match_machine=True)
    e = load_error(bytes.fromhex("5145564d 00000002 00"), header=policy)
    assert e.reason is Reason.OBSOLETE_VERSION


def test_a_per_machine_format_loader_accepts_its_own_format() -> None:
    data = bytes.fromhex("5145564d 00000004") + full(b"dev") + bytes.fromhex("000102 00")
    report = load(data, [dev_section()], header=V3_OR_4)
    assert report.file_version == 4


def test_an_unknown_section_is_refused() -> None:
    data = HEADER + full(b"nope") + b"\x00"
    e = load_error(data)
    assert (e.reason, e.offset, e.section) == (Reason.UNKNOWN_SECTION, 8, "nope")


def test_an_unknown_instance_is_refused() -> None:
    data = HEADER + full(b"dev", instance=1) + bytes.fromhex("0001 02") + b"\x00"
    e = load_error(data)
    assert (e.reason, e.offset, e.section) == (Reason.UNKNOWN_SECTION, 8, "dev")


def test_an_alias_instance_is_accepted_on_load_and_never_written() -> None:
    # qdev_set_legacy_instance_id: the i8254 of 0.15 is written as 0 and reads 0x40 too.
    obj = NS(a=0, b=0)
    pit = DeviceSection("dev", 0, DEV, obj, alias_id=0x40)
    load(HEADER + full(b"dev", instance=0x40) + bytes.fromhex("0001 02") + b"\x00", [pit])
    assert (obj.a, obj.b) == (1, 2)
    w = StreamWriter()
    saver = Saver(w, [pit], 3, PeekPolicy.PEEK_IF_DEFINED)
    saver.begin()
    saver.complete()
    assert w.getvalue() == HEADER + full(b"dev", section_id=0) + bytes.fromhex("0001 02 00")


def test_without_an_alias_the_legacy_instance_is_refused() -> None:
    # 0.14's i8254 is instance 0x40 and knows no other: a 0.15 stream's instance 0 fails.
    data = HEADER + full(b"dev", instance=0) + bytes.fromhex("0001 02") + b"\x00"
    e = load_error(data, [DeviceSection("dev", 0x40, DEV, NS(a=0, b=0))])
    assert (e.reason, e.section) == (Reason.UNKNOWN_SECTION, "dev")


def test_a_qdev_section_also_answers_to_its_bare_compat_name() -> None:
    obj = NS(a=0, b=0)
    ide = DeviceSection("0000:00:01.1/dev", 0, DEV, obj, compat=("dev", 0))
    load(HEADER + full(b"dev") + bytes.fromhex("0001 02") + b"\x00", [ide])
    assert (obj.a, obj.b) == (1, 2)
    # ... but only with the compat instance (or the alias), and only as a part of its idstr
    e = load_error(HEADER + full(b"dev", instance=1) + bytes.fromhex("0001 02") + b"\x00", [ide])
    assert e.reason is Reason.UNKNOWN_SECTION
    other = DeviceSection("0000:00:01.1/ide", 0, DEV, obj, compat=("dev", 0))
    assert load_error(HEADER + full(b"dev") + bytes.fromhex("0001 02") + b"\x00",
                      [other]).reason is Reason.UNKNOWN_SECTION


def test_the_first_matching_entry_in_registration_order_wins() -> None:
    first, second = NS(a=0, b=0), NS(a=0, b=0)
    handlers = [DeviceSection("dev", 0, DEV, first, alias_id=7),
                DeviceSection("dev", 7, DEV, second)]
    load(HEADER + full(b"dev", instance=7) + bytes.fromhex("0001 02") + b"\x00", handlers)
    assert (first.a, second.a) == (1, 0)


def test_a_section_version_above_the_destinations_is_refused() -> None:
    data = HEADER + full(b"dev", version=3) + bytes.fromhex("0001 02") + b"\x00"
    e = load_error(data)
    assert (e.reason, e.offset, e.section) == (Reason.VERSION_TOO_NEW, 8, "dev")


def test_a_section_version_below_the_minimum_is_refused_with_the_section() -> None:
    data = HEADER + full(b"dev", version=0) + bytes.fromhex("0001 02") + b"\x00"
    e = load_error(data)
    assert (e.reason, e.section) == (Reason.VERSION_TOO_OLD, "dev")


@pytest.mark.parametrize("kind", [b"\x02", b"\x03"])
def test_part_or_end_with_an_unknown_section_id_is_refused(kind: bytes) -> None:
    data = HEADER + START + b"\x01\xee" + kind + bytes.fromhex("00000007") + b"\x02\xee\x00"
    e = load_error(data)
    assert (e.reason, e.offset) == (Reason.UNKNOWN_SECTION_ID, 8 + 17 + 2)


@pytest.mark.parametrize("kind", [0x05, 0x06, 0x07, 0x7E, 0xFF])
def test_an_unknown_type_byte_is_refused(kind: int) -> None:
    e = load_error(HEADER + bytes([kind]) + bytes(20))
    assert (e.reason, e.offset) == (Reason.UNKNOWN_SECTION_TYPE, 8)


def test_an_early_eof_byte_ends_the_load_successfully_but_half_loaded() -> None:
    live, obj = FakeLive(), NS(a=0, b=0)
    rest = END + b"\x03\xee" + full(b"dev") + b"\x12\x34\x56" + b"\x00"
    data = HEADER + START + b"\x01\xee" + b"\x00" + rest
    report = load(data, [live, dev_section(obj)])
    assert [s.kind for s in report.sections] == ["START"]
    assert report.bytes_consumed == 8 + 17 + 2 + 1
    assert report.bytes_unread == len(data) - report.bytes_consumed
    assert report.not_loaded == ["dev/0"]
    assert report.half_loaded
    assert (obj.a, obj.b) == (0, 0)
    assert report.to_dict()["half_loaded"] is True


def test_bytes_after_eof_alone_make_a_load_half_loaded() -> None:
    report = load(HEADER + full(b"dev") + b"\x00\x01\x02\x00" + b"junk", [dev_section()])
    assert report.not_loaded == [] and report.bytes_unread == 4 and report.half_loaded


def test_a_handler_missing_from_the_stream_keeps_its_state_and_is_no_early_eof() -> None:
    # A destination section the stream does not have (0.14's port92 for a 0.13 stream)
    # keeps its reset state; the load ended at the stream's own EOF, so it is complete.
    report = load(HEADER + b"\x00", [dev_section()])
    assert report.bytes_consumed == 9 and report.bytes_unread == 0
    assert report.not_loaded == ["dev/0"] and not report.half_loaded


def test_count_unread_false_leaves_the_rest_of_the_input_alone() -> None:
    r = StreamReader(HEADER + b"\x00" + b"more")
    report = load_stream(r, [], V3, PeekPolicy.ALWAYS_PEEK, count_unread=False)
    assert report.bytes_unread == 0
    assert r.offset == 9
    assert r.read_bytes(4) == b"more"


def test_a_field_error_carries_offset_section_and_field() -> None:
    eq = Description("dev", 2, [u16("a"), u8("b", check=lambda o, v: "odd" if v % 2 else None)])
    data = HEADER + full(b"dev") + bytes.fromhex("0001 03") + b"\x00"
    e = load_error(data, [DeviceSection("dev", 0, eq, NS())])
    assert (e.reason, e.offset, e.section, e.field) == (
        Reason.INVALID_VALUE, 8 + 17 + 2, "dev", "b",
    )  # fmt: skip
    assert e.to_dict() == {
        "reason": "invalid_value",
        "errno": "EINVAL",
        "message": str(e),
        "offset": 8 + 17 + 2,
        "section": "dev",
        "field": "b",
    }


def test_an_error_in_a_live_section_part_names_the_live_section() -> None:
    data = HEADER + START + b"\x01\xee" + PART + b"\x02\xff" + b"\x00"
    e = load_error(data)
    assert (e.reason, e.section) == (Reason.INVALID_VALUE, "ram")


# -- truncation ----------------------------------------------------------------------------

CHILD = Description(
    "child",
    1,
    [u8("x"), Timer("t")],
    subsections=[Subsection(Description("child/sub", 1, [u16("y")]), lambda o: True)],
)
RICH = Description(
    "rich",
    1,
    [
        u8("n"),
        VBuffer("blob", "n", max_size=8),
        Struct("one", CHILD),
        StructArray("many", CHILD, 2),
        IntArray("tail", 1, 16),  # longer than a subsection header (see prefix-match below)
    ],
    subsections=[Subsection(Description("rich/late", 1, [u8("late")]), lambda o: True)],
)


def rich_obj() -> Any:
    def c(x: int) -> Any:
        return NS(x=x, t=-1 if x % 2 else 1000, y=0x0505)

    return NS(n=3, blob=b"\x05\x00\x06", one=c(1), many=[c(2), c(3)], tail=list(range(16)), late=9)


def rich_handlers() -> list[Any]:
    fresh = NS(one=NS(), many=[NS(), NS()])
    return [FakeLive(), DeviceSection("rich", 0, RICH, fresh), dev_section()]


def rich_stream(version: int) -> bytes:
    w = StreamWriter()
    handlers = [FakeLive(), DeviceSection("rich", 0, RICH, rich_obj()), dev_section(NS(a=1, b=2))]
    saver = Saver(w, handlers, version, PeekPolicy.ALWAYS_PEEK)
    saver.begin()
    saver.iterate()
    saver.complete()
    return w.getvalue()


CASES = [(3, policy) for policy in PeekPolicy] + [(4, PeekPolicy.ALWAYS_PEEK)]


@pytest.mark.parametrize("version, policy", CASES, ids=lambda x: getattr(x, "value", x))
def test_the_whole_stream_loads_under_every_policy(version: int, policy: PeekPolicy) -> None:
    data = rich_stream(version)
    handlers = rich_handlers()
    report = load_stream(StreamReader(data), handlers, V3_OR_4, policy)
    assert report.bytes_consumed == len(data) and not report.half_loaded
    assert handlers[1].obj.many[1].y == 0x0505 and handlers[1].obj.late == 9


def _expected_truncation(data: bytes, cut: int, policy: PeekPolicy) -> tuple[Reason, int | None]:
    """TRUNCATED everywhere, but prefix-match declines a subsection header it cannot peek
    whole: cut inside the top-level ``rich/late`` header, the 0x05 goes back to the section
    loader as a type byte (as in QEMU 1.0, where this is -EINVAL)."""
    marker = data.index(b"\x05\x09rich/late")
    if policy is PeekPolicy.PREFIX_MATCH and marker < cut < marker + 2 + 9:
        return Reason.UNKNOWN_SECTION_TYPE, marker
    return Reason.TRUNCATED, None


@pytest.mark.parametrize("version, policy", CASES, ids=lambda x: getattr(x, "value", x))
def test_truncation_at_every_offset_raises_truncated_input_and_nothing_else(
    version: int, policy: PeekPolicy
) -> None:
    data = rich_stream(version)
    for cut in range(len(data)):
        reason, offset = _expected_truncation(data, cut, policy)
        try:
            load_stream(StreamReader(data[:cut]), rich_handlers(), V3_OR_4, policy)
        except TruncatedInput as e:
            assert reason is Reason.TRUNCATED, f"cut at {cut}"
            assert isinstance(e, LoadError) and e.reason is Reason.TRUNCATED
            assert e.offset is not None and e.offset <= cut
            assert e.offset + e.available == cut
        except LoadError as e:
            assert (e.reason, e.offset) == (reason, offset), f"cut at {cut}: {e}"
        except Exception as e:  # noqa: BLE001 - the point is that nothing else escapes
            pytest.fail(f"cut at {cut}: {type(e).__name__}: {e}")
        else:
            pytest.fail(f"cut at {cut}: the truncated stream loaded")


def test_truncation_over_a_stream_source_matches_truncation_over_bytes() -> None:
    data = rich_stream(3)
    for cut in range(0, len(data), 7):
        errors = []
        for source in (data[:cut], io.BytesIO(data[:cut])):
            with pytest.raises(TruncatedInput) as info:
                load_stream(
                    StreamReader(source, chunk_size=5), rich_handlers(), V3, PeekPolicy.ALWAYS_PEEK
                )
            errors.append(info.value.to_dict())
        assert errors[0] == errors[1]


def test_truncation_inside_a_section_names_the_section() -> None:
    data = rich_stream(3)
    cut = data.index(b"rich") + 4 + 8 + 2  # inside the blob
    with pytest.raises(TruncatedInput) as info:
        load(data[:cut], rich_handlers(), header=V3_OR_4)
    assert info.value.section == "rich" and info.value.field == "blob"
