"""Specification of the loader behaviours of wire-format.md section 4.

Each test is one documented behaviour of a peek policy (always-peek: 0.13 and "new";
peek-if-defined: 0.14/0.15; prefix-match: 1.0) or of the format-4 struct sentinel, shown
on a small synthetic description:

* ``child``: an embedded struct (one u8 ``x``), with or without subsections;
* ``parent``: ``child`` followed by parent data whose first byte may be 0x05.
"""

from __future__ import annotations

from types import SimpleNamespace as NS
from typing import Any

import pytest

from harness.emulator.errors import LoadError, Reason
from harness.emulator.savevm import DeviceSection, HeaderPolicy, load_stream
from harness.emulator.stream import StreamReader, StreamWriter
from harness.emulator.vmstate import (
    Buffer,
    Description,
    IntArray,
    PeekPolicy,
    Struct,
    StructArray,
    Subsection,
    WireRules,
    load_state,
    save_state,
    u8,
)

ALWAYS = WireRules(PeekPolicy.ALWAYS_PEEK)
IF_DEFINED = WireRules(PeekPolicy.PEEK_IF_DEFINED)
PREFIX = WireRules(PeekPolicy.PREFIX_MATCH)
FORMAT4 = WireRules(PeekPolicy.ALWAYS_PEEK, struct_sentinel=True)


def sub(name: str, *fields: Any, needed: Any = lambda o: True) -> Subsection:
    return Subsection(Description(name, 1, list(fields)), needed)


def child_desc(*subsections: Subsection) -> Description:
    return Description("child", 1, [u8("x")], subsections=list(subsections))


CHILD_PLAIN = child_desc()
CHILD_WITH_SUB = child_desc(sub("child/sub", u8("y"), needed=lambda o: o.send_sub))
CHILD_WITH_OTHER = child_desc(sub("child/other", u8("z"), needed=lambda o: False))


def parent_desc(child: Description, tail: int = 8) -> Description:
    """child, then ``tail`` bytes of parent data (registers)."""
    return Description("parent", 1, [Struct("child", child), IntArray("regs", 1, tail)])


def parent_obj(regs: list[int], send_sub: bool = False) -> Any:
    return NS(child=NS(x=0x11, y=0x22, z=0x33, send_sub=send_sub), regs=regs)


def fresh_parent() -> Any:
    return NS(child=NS(send_sub=False))


def save(desc: Description, obj: Any, rules: WireRules = IF_DEFINED) -> bytes:
    w = StreamWriter()
    save_state(w, desc, obj, rules)
    return w.getvalue()


def load(desc: Description, data: bytes, rules: WireRules, obj: Any = None) -> tuple[Any, int]:
    """Load and return (object, bytes consumed)."""
    obj = fresh_parent() if obj is None else obj
    r = StreamReader(data)
    load_state(r, desc, obj, desc.version_id, rules)
    return obj, r.offset


def load_error(desc: Description, data: bytes, rules: WireRules, obj: Any = None) -> LoadError:
    with pytest.raises(LoadError) as info:
        load(desc, data, rules, obj)
    return info.value


# Parent data whose first byte is 0x05 (e.g. guest data in the next register).
REGS_05 = [0x05, 0, 0, 0, 0, 0, 0, 0]


# -- spurious rejection --------------------------------------------------------------------


@pytest.mark.parametrize("rules", [ALWAYS, IF_DEFINED], ids=["always-peek", "peek-if-defined"])
def test_parent_0x05_after_a_struct_with_subsections_is_spuriously_rejected(
    rules: WireRules,
) -> None:
    desc = parent_desc(CHILD_WITH_SUB)
    data = save(desc, parent_obj(REGS_05))
    assert data == bytes.fromhex("11 0500000000000000")  # valid: no subsection was sent
    e = load_error(desc, data, rules)
    assert e.reason is Reason.UNKNOWN_SUBSECTION
    assert e.offset == 1  # the parent's 0x05, taken for a subsection marker
    assert e.field == "child"


def test_always_peek_rejects_parent_0x05_even_after_a_struct_without_subsections() -> None:
    desc = parent_desc(CHILD_PLAIN)
    data = save(desc, parent_obj(REGS_05))
    e = load_error(desc, data, ALWAYS)
    assert e.reason is Reason.UNKNOWN_SUBSECTION
    assert e.offset == 1


def test_peek_if_defined_never_looks_after_a_struct_without_subsections() -> None:
    desc = parent_desc(CHILD_PLAIN)
    data = save(desc, parent_obj(REGS_05))
    obj, used = load(desc, data, IF_DEFINED)
    assert obj.regs == REGS_05 and used == len(data)


@pytest.mark.parametrize("child", [CHILD_PLAIN, CHILD_WITH_SUB], ids=["plain", "with-sub"])
def test_prefix_match_leaves_parent_0x05_with_a_short_length_byte_to_the_parent(
    child: Description,
) -> None:
    desc = parent_desc(child)
    data = save(desc, parent_obj(REGS_05))
    obj, used = load(desc, data, PREFIX)
    assert obj.regs == REGS_05 and used == len(data)


# -- silent misparse (peek-if-defined) -------------------------------------------------------


def test_peek_if_defined_misparses_a_subsection_sent_to_a_struct_that_defines_none() -> None:
    source = parent_desc(CHILD_WITH_SUB, tail=4)
    data = save(source, parent_obj([1, 2, 3, 4], send_sub=True))
    assert data == (
        b"\x11" + b"\x05\x09child/sub" + bytes.fromhex("00000001 22") + b"\x01\x02\x03\x04"
    )
    destination = parent_desc(CHILD_PLAIN, tail=4)
    obj, used = load(destination, data, IF_DEFINED)  # no error ...
    assert obj.regs == list(b"\x05\x09ch")  # ... but the parent read the subsection header
    assert obj.regs != [1, 2, 3, 4]
    assert used == 5 < len(data)


def _misparse_stream() -> tuple[bytes, Description]:
    """A FULL section whose struct carries a subsection, then a second device, then EOF.

    The parent's tail is 11 bytes: the destination without the subsection reads
    ``05 09 "child/sub"`` as that tail, then takes the version's first byte 0x00 for EOF.
    """
    source = Description("parent", 1, [Struct("child", CHILD_WITH_SUB), Buffer("tail", 11)])
    obj = NS(child=NS(x=0x11, y=0x22, send_sub=True), tail=b"T" * 11)
    w = StreamWriter()
    w.u32(0x5145564D)
    w.u32(3)
    w.raw(bytes.fromhex("04 00000000 06") + b"parent" + bytes.fromhex("00000000 00000001"))
    save_state(w, source, obj, IF_DEFINED)
    w.raw(bytes.fromhex("04 00000001 05") + b"other" + bytes.fromhex("00000000 00000001"))
    w.u8(0x42)
    w.u8(0)
    destination = Description("parent", 1, [Struct("child", CHILD_PLAIN), Buffer("tail", 11)])
    return w.getvalue(), destination


def test_peek_if_defined_misparse_can_end_the_load_half_loaded() -> None:
    data, destination = _misparse_stream()
    dest_obj = NS(child=NS())
    other = NS(v=0)
    handlers = [
        DeviceSection("parent", 0, destination, dest_obj),
        DeviceSection("other", 0, Description("other", 1, [u8("v")]), other),
    ]
    report = load_stream(
        StreamReader(data), handlers, HeaderPolicy(frozenset({3}), 3), PeekPolicy.PEEK_IF_DEFINED
    )
    header_len = 8 + 1 + 4 + 1 + 6 + 4 + 4
    assert dest_obj.tail == b"\x05\x09child/sub"  # corrupted, silently
    assert [s.idstr for s in report.sections] == ["parent"]
    assert report.bytes_consumed == header_len + 1 + 11 + 1  # the 0x00 counts as EOF
    assert report.bytes_unread == len(data) - report.bytes_consumed > 0
    assert report.not_loaded == ["other/0"]
    assert report.half_loaded
    assert other.v == 0


def test_peek_if_defined_fails_cleanly_when_the_struct_defines_other_subsections() -> None:
    source = parent_desc(CHILD_WITH_SUB, tail=4)
    data = save(source, parent_obj([1, 2, 3, 4], send_sub=True))
    e = load_error(parent_desc(CHILD_WITH_OTHER, tail=4), data, IF_DEFINED)
    assert e.reason is Reason.UNKNOWN_SUBSECTION
    assert e.offset == 1
    assert "child/sub" in str(e)


# -- sibling subsections ---------------------------------------------------------------------

SIBLINGS = Description(
    "dev",
    1,
    [u8("a")],
    subsections=[sub("dev/first", u8("b")), sub("dev/second", u8("c"))],
)
SIBLING_BYTES = (
    b"\x01" + b"\x05\x09dev/first" + bytes.fromhex("00000001 02")
    + b"\x05\x0adev/second" + bytes.fromhex("00000001 03")
)  # fmt: skip


def test_sibling_subsections_are_saved_one_after_the_other() -> None:
    assert save(SIBLINGS, NS(a=1, b=2, c=3)) == SIBLING_BYTES


def test_always_peek_fails_on_the_second_sibling_subsection() -> None:
    e = load_error(SIBLINGS, SIBLING_BYTES, ALWAYS, NS())
    assert e.reason is Reason.UNKNOWN_SUBSECTION
    assert e.offset == 1 + 2 + 9 + 4 + 1  # the second 0x05, read after dev/first's body
    assert "dev/second" in str(e)


@pytest.mark.parametrize("rules", [IF_DEFINED, PREFIX], ids=["peek-if-defined", "prefix-match"])
def test_sibling_subsections_load_under_peek_if_defined_and_prefix_match(
    rules: WireRules,
) -> None:
    obj, used = load(SIBLINGS, SIBLING_BYTES, rules, NS())
    assert vars(obj) == {"a": 1, "b": 2, "c": 3}
    assert used == len(SIBLING_BYTES)


def test_sibling_subsections_of_a_struct_fail_under_always_peek_in_format_4_too() -> None:
    desc = Description("parent", 1, [Struct("dev", SIBLINGS), u8("z")])
    obj = NS(dev=NS(a=1, b=2, c=3), z=4)
    data = save(desc, obj, FORMAT4)
    assert data == SIBLING_BYTES + b"\x06\x04"
    e = load_error(desc, data, FORMAT4, NS(dev=NS()))
    # The second header is consumed and refused (-ENOENT); the element's sentinel is read
    # before that result counts, and the next byte is not 0x06 (-EINVAL).
    assert e.reason is Reason.BAD_SENTINEL
    assert e.__cause__.reason is Reason.UNKNOWN_SUBSECTION


# -- prefix-match ---------------------------------------------------------------------------


def test_prefix_match_accepts_a_real_subsection() -> None:
    source = parent_desc(CHILD_WITH_SUB, tail=4)
    data = save(source, parent_obj([5, 6, 7, 8], send_sub=True))
    obj, used = load(source, data, PREFIX)
    assert (obj.child.y, obj.regs, used) == (0x22, [5, 6, 7, 8], len(data))


def _after_child(parent_bytes: bytes) -> bytes:
    return b"\x11" + parent_bytes


@pytest.mark.parametrize(
    "parent_bytes",
    [
        pytest.param(b"\x05\x05child" + b"\x00" * 6, id="length-byte-one-short"),
        pytest.param(b"\x05\x09chilx/sub" + b"\x00" * 2, id="name-not-prefixed"),
        pytest.param(b"\x05\x09xchild/su" + b"\x00" * 2, id="name-contains-but-not-starts"),
        pytest.param(b"\x05\x20chi", id="not-enough-bytes-available"),
    ],
)
def test_prefix_match_leaves_an_implausible_0x05_to_the_parent(parent_bytes: bytes) -> None:
    desc = parent_desc(CHILD_WITH_SUB, tail=len(parent_bytes))
    obj, used = load(desc, _after_child(parent_bytes), PREFIX)
    assert obj.regs == list(parent_bytes)
    assert used == 1 + len(parent_bytes)


def test_always_peek_reads_past_the_end_where_prefix_match_declines() -> None:
    desc = parent_desc(CHILD_WITH_SUB, tail=5)
    with pytest.raises(LoadError) as info:
        load(desc, _after_child(b"\x05\x20chi"), ALWAYS)
    assert info.value.reason is Reason.TRUNCATED


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(b"child/zzz", id="unknown-subsection"),
        pytest.param(b"child/", id="length-exactly-name-plus-one"),
        pytest.param(b"childish", id="no-slash-check"),
    ],
)
def test_prefix_match_with_an_unknown_exact_name_fails(name: bytes) -> None:
    parent_bytes = b"\x05" + bytes([len(name)]) + name + b"\x00\x00\x00\x01"
    desc = parent_desc(CHILD_WITH_SUB, tail=len(parent_bytes))
    e = load_error(desc, _after_child(parent_bytes), PREFIX)
    assert e.reason is Reason.UNKNOWN_SUBSECTION
    assert e.offset == 1


def test_prefix_match_checks_subsection_bodies_against_their_own_name() -> None:
    """After dev/first's body the prefix is "dev/first": "dev/second" goes back to dev."""
    obj, _ = load(SIBLINGS, SIBLING_BYTES, PREFIX, NS())
    assert obj.c == 3


# -- format 4: the struct sentinel ----------------------------------------------------------

F4_PARENT = Description(
    "parent",
    1,
    [
        u8("a"),
        Struct("child", CHILD_WITH_SUB),
        StructArray("items", CHILD_PLAIN, 2),
        u8("z"),
    ],
    subsections=[sub("parent/extra", u8("e"))],
)


def f4_obj() -> Any:
    return NS(
        a=0xA0,
        child=NS(x=0x11, y=0x22, send_sub=True),
        items=[NS(x=0x31), NS(x=0x32)],
        z=0x7A,
        e=0xEE,
    )


F4_GOLDEN = (
    b"\xa0"
    + b"\x11" + b"\x05\x09child/sub" + bytes.fromhex("00000001 22") + b"\x06"
    + b"\x31\x06"
    + b"\x32\x06"
    + b"\x7a"
    + b"\x05\x0cparent/extra" + bytes.fromhex("00000001 ee")
)  # fmt: skip


def test_format_4_writes_0x06_after_every_struct_element_only() -> None:
    """After each element (after its own subsections, also for structs without any);
    none after the top-level description or after a subsection body."""
    assert save(F4_PARENT, f4_obj(), FORMAT4) == F4_GOLDEN


def test_format_3_writes_no_sentinel() -> None:
    assert save(F4_PARENT, f4_obj(), IF_DEFINED) == F4_GOLDEN.replace(b"\x06", b"")


def test_format_4_stream_loads_back() -> None:
    obj, used = load(
        F4_PARENT, F4_GOLDEN, FORMAT4, NS(child=NS(send_sub=False), items=[NS(), NS()])
    )
    assert used == len(F4_GOLDEN)
    assert (obj.a, obj.child.x, obj.child.y, [i.x for i in obj.items], obj.z, obj.e) == (
        0xA0, 0x11, 0x22, [0x31, 0x32], 0x7A, 0xEE,
    )  # fmt: skip


def test_format_4_loader_refuses_a_missing_sentinel() -> None:
    format3 = F4_GOLDEN.replace(b"\x06", b"")
    e = load_error(F4_PARENT, format3, FORMAT4, NS(child=NS(), items=[NS(), NS()]))
    assert e.reason is Reason.BAD_SENTINEL
    assert e.offset == 1 + 1 + 2 + 9 + 4 + 1  # where child's 0x06 should be
    assert e.field == "child"


def test_format_4_loader_refuses_a_wrong_sentinel_at_its_offset() -> None:
    wrong = bytearray(F4_GOLDEN)
    second_item_sentinel = 1 + 17 + 1 + 2 + 1
    assert wrong[second_item_sentinel] == 0x06
    wrong[second_item_sentinel] = 0x07
    e = load_error(F4_PARENT, bytes(wrong), FORMAT4, NS(child=NS(), items=[NS(), NS()]))
    assert e.reason is Reason.BAD_SENTINEL
    assert e.offset == second_item_sentinel
    assert e.field == "items[1]"


@pytest.mark.parametrize("child", [CHILD_PLAIN, CHILD_WITH_SUB], ids=["plain", "with-sub"])
def test_format_4_makes_a_parent_0x05_after_a_struct_unambiguous(child: Description) -> None:
    desc = parent_desc(child)
    data = save(desc, parent_obj(REGS_05), FORMAT4)
    assert data == bytes.fromhex("11 06 0500000000000000")
    obj, used = load(desc, data, FORMAT4)
    assert obj.regs == REGS_05 and used == len(data)


def test_format_4_reads_the_sentinel_before_the_childs_error_counts() -> None:
    source = parent_desc(CHILD_WITH_SUB, tail=4)
    data = save(source, parent_obj([1, 2, 3, 4], send_sub=True), FORMAT4)
    assert data == (
        b"\x11" + b"\x05\x09child/sub" + bytes.fromhex("00000001 22 06") + b"\x01\x02\x03\x04"
    )
    e = load_error(parent_desc(CHILD_WITH_OTHER, tail=4), data, FORMAT4)
    assert e.reason is Reason.BAD_SENTINEL
    assert e.offset == 1 + 2 + 9 + 4  # the subsection's first field byte, 0x22
