"""The x86_64 "cpu" and "cpu_common" sections, as each release saves and loads them."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.emulator.devices import State
from harness.emulator.devices.cpu import (
    CPU,
    SEGMENT,
    XMM_REG,
    FloatX80,
    cpu_common_description,
    cpu_description,
    fp64_to_fp80,
)
from harness.emulator.errors import ConfigError, LoadError, Reason
from harness.emulator.releases import RELEASES, get_release
from harness.emulator.savevm import HeaderPolicy, Saver, load_stream, wire_rules_for
from harness.emulator.stream import StreamReader, StreamWriter
from harness.emulator.vmstate import PeekPolicy, WireRules, dump_state, load_state, save_state

SIZE_V12 = 1817
FPU_MIRRORS = 150  # offset of fpus_vmstate: regs, eip, eflags (144) + hflags + fpuc
FPREGS = 156  # offset of fpregs[0]
FPREGS_END = FPREGS + 8 * 10
ASYNC_PF_HEADER = b"\x05\x10cpu/async_pf_msr" + struct.pack(">I", 1)
FPOP_HEADER = b"\x05\x0ecpu/fpop_ip_dp" + struct.pack(">I", 1)

RELEASE_NAMES = ["0.13", "0.14", "0.15", "new", "1.0"]  # upstream: v12 with XSAVE fields
RHEL_NAMES = ["rhel6.1", "rhel6.2"]  # qemu-kvm's v12: v11 plus two MSRs (tests/test_rhel6.py)
FORMAT3 = WireRules(PeekPolicy.ALWAYS_PEEK)


def formats(release):
    return sorted({m.stream_format for m in release.machines})


def save(cpu: CPU, fmt: int = 3) -> bytes:
    """The "cpu" payload as ``cpu``'s release writes it in stream format ``fmt``."""
    w = StreamWriter()
    save_state(w, cpu_description(cpu.release), cpu, wire_rules_for(fmt, cpu.release.peek))
    return w.getvalue()


def load(release, data: bytes, fmt: int = 3, version: int = 12) -> tuple[CPU, StreamReader]:
    cpu = CPU(release)
    r = StreamReader(data)
    load_state(r, cpu_description(release), cpu, version, wire_rules_for(fmt, release.peek))
    return cpu, r


def dumps(cpu: CPU) -> dict:
    return {
        **dump_state(cpu_common_description(cpu.release), cpu),
        **dump_state(cpu_description(cpu.release), cpu),
    }


# -- golden bytes ----------------------------------------------------------------------


def test_segment_struct_golden_bytes():
    seg = State(selector=0xF000, base=0xFFFF0000, limit=0xFFFF, flags=0x9B00)
    w = StreamWriter()
    save_state(w, SEGMENT, seg, FORMAT3)
    assert w.getvalue() == struct.pack(">IQII", 0xF000, 0xFFFF0000, 0xFFFF, 0x9B00)
    assert len(w.getvalue()) == 20


def test_xmm_struct_golden_bytes():
    reg = State(lo=0x0102030405060708, hi=0x1112131415161718)
    w = StreamWriter()
    save_state(w, XMM_REG, reg, FORMAT3)
    assert w.getvalue() == struct.pack(">QQ", 0x0102030405060708, 0x1112131415161718)


@pytest.mark.parametrize("name", RELEASE_NAMES)
def test_section_size_at_v12_without_subsections(name):
    data = save(CPU(get_release(name)))
    assert len(data) == SIZE_V12


def test_reset_state_head_bytes():
    data = save(CPU(get_release("0.14")))
    regs = struct.unpack_from(">16Q", data)
    assert regs[2] == 0x623  # EDX holds the CPUID version after reset
    eip, eflags, hflags, fpuc, fpus, fptag, fmt = struct.unpack_from(">QQIHHHH", data, 128)
    assert (eip, eflags, fpuc, fpus, fptag, fmt) == (0xFFF0, 2, 0x37F, 0, 0, 0)
    cs = struct.unpack_from(">IQII", data, FPREGS_END + 20)
    assert cs[:3] == (0xF000, 0xFFFF0000, 0xFFFF)


def test_cpu_common_bytes_and_post_load():
    release = get_release("0.15")
    cpu = CPU(release)
    cpu.halted, cpu.interrupt_request = 1, 0x03
    w = StreamWriter()
    save_state(w, cpu_common_description(release), cpu, FORMAT3)
    assert w.getvalue() == struct.pack(">II", 1, 3)
    dest = CPU(release)
    load_state(StreamReader(w.getvalue()), cpu_common_description(release), dest, 1, FORMAT3)
    assert (dest.halted, dest.interrupt_request) == (1, 0x02)  # 0x01 (old EXIT) cleared


def test_sections_order_and_ids():
    cpu = CPU(get_release("1.0"))
    secs = cpu.sections()
    assert [(s.idstr, s.instance_id, s.version_id) for s in secs] == [
        ("cpu_common", 0, 1),
        ("cpu", 0, 12),
    ]
    assert secs[1].desc.minimum_version_id == 3
    assert all(s.obj is cpu for s in secs)


def test_descriptions_cached_per_release():
    a, b = get_release("0.14"), get_release("0.15")
    assert cpu_description(a) is cpu_description(a)
    assert cpu_description(a) is not cpu_description(b)


# -- version gates ---------------------------------------------------------------------


def present(version: int) -> list[str]:
    cpu = CPU(get_release("0.15"))
    return [f.name for f in cpu_description(cpu.release).fields if f.present(cpu, version)]


def test_version_gates():
    assert "sysenter_esp_u32" in present(6) and "sysenter_esp" not in present(6)
    assert "sysenter_esp_u32" not in present(7) and "sysenter_esp" in present(7)
    assert "halted" in present(5) and "halted" not in present(4) and "halted" not in present(6)
    assert "mtrr_var" not in present(7) and "mtrr_var" in present(8)
    assert "ymmh_regs" not in present(11) and "ymmh_regs" in present(12)
    assert "tsc_aux" not in present(10) and "mcg_cap" in present(10)


def test_load_v11_stream_without_v12_fields():
    release = get_release("0.14")
    src = CPU(release)
    src.randomize(random.Random(3))
    src.xcr0, src.xstate_bv, src.async_pf_en_msr = 1, 0, 0
    for reg in src.ymmh_regs:
        reg.lo = reg.hi = 0
    v11 = save(src)[: SIZE_V12 - 16 - 256]
    dest, r = load(release, v11, version=11)
    assert r.at_eof()
    # The v11 fields load; xcr0 (v12) and cpu_common's interrupt_request (not in this
    # section) keep the destination's power-on values.
    fresh = CPU(release)
    assert dumps(dest) == {**dumps(src), "xcr0": fresh.xcr0,
                           "interrupt_request": fresh.interrupt_request}


@pytest.mark.parametrize(
    "version, reason", [(2, Reason.VERSION_TOO_OLD), (13, Reason.VERSION_TOO_NEW)]
)
def test_version_limits(version, reason):
    release = get_release("0.14")
    with pytest.raises(LoadError) as e:
        load(release, save(CPU(release)), version=version)
    assert e.value.reason is reason


# -- FPU -------------------------------------------------------------------------------


def test_pre_save_fpu_mirrors():
    cpu = CPU(get_release("0.15"))
    cpu.fpus = 0x0021
    cpu.execute_fpu(stack=(1.0, 2.0, 3.0))
    data = save(cpu)
    fpus, fptag, fmt = struct.unpack_from(">HHH", data, FPU_MIRRORS)
    assert fpus == 0x0021 | (5 << 11)  # TOP = 5 after three pushes
    assert fptag == 0b1110_0000  # registers 5, 6, 7 valid
    assert fmt == 0
    assert data[FPREGS + 7 * 10 : FPREGS_END] == struct.pack(">QH", 1 << 63, 0x3FFF)


def fpu_format1(src: CPU, fpus: int, fptag: int, quads: list[int]) -> bytes:
    """``src``'s stream rewritten by hand with a format-1 (8-byte) register file."""
    data = save(src)
    return (
        data[:FPU_MIRRORS]
        + struct.pack(">HHH", fpus, fptag, 1)
        + struct.pack(">8Q", *quads)
        + data[FPREGS_END:]
    )


def test_load_format1_mmx():
    release = get_release("0.15")
    quads = [0x0101010101010101 * i for i in range(8)]
    dest, r = load(release, fpu_format1(CPU(release), 0x0000, 0xFF, quads))
    assert r.at_eof()
    assert dest.fpregs == [FloatX80(q, 0xFFFF) for q in quads]
    assert dest.fptags == [0] * 8 and dest.fpstt == 0


def test_load_format1_float64():
    release = get_release("1.0")
    src = CPU(release)
    values = [0.0, 0.0, 0.0, 0.0, 0.0, -0.75, 3.0, 1.0]
    quads = [struct.unpack(">Q", struct.pack(">d", v))[0] for v in values]
    dest, r = load(release, fpu_format1(src, 5 << 11, 0b1110_0000, quads))
    assert r.at_eof()
    assert dest.fpstt == 5 and dest.fptags == [1] * 5 + [0] * 3
    assert dest.fpregs[5:] == [FloatX80.from_float(v) for v in values[5:]]
    assert dest.fpregs[0] == fp64_to_fp80(0)  # QEMU's conversion has no zero case
    assert {k: v for k, v in dumps(dest).items() if "fp" not in k} == {
        k: v for k, v in dumps(src).items() if "fp" not in k
    }


def test_format1_all_tags_but_top_nonzero_is_float64():
    release = get_release("0.14")
    quads = [0x3FF0000000000000] * 8
    dest, _ = load(release, fpu_format1(CPU(release), 1 << 11, 0xFF, quads))
    assert dest.fpregs == [FloatX80.from_float(1.0)] * 8


# -- subsections -----------------------------------------------------------------------


def test_async_pf_subsection_bytes():
    cpu = CPU(get_release("0.14"))
    cpu.enable_async_pf(msr=0x12340041)
    data = save(cpu)
    assert data[SIZE_V12:] == ASYNC_PF_HEADER + struct.pack(">Q", 0x12340041)


def test_fpop_subsection_bytes():
    cpu = CPU(get_release("0.15"))
    cpu.execute_fpu(fpop=0x1C0, fpip=0x401000, fpdp=0x602000)
    data = save(cpu)
    assert data[SIZE_V12:] == FPOP_HEADER + struct.pack(">HQQ", 0x1C0, 0x401000, 0x602000)


def test_both_subsections_in_order():
    cpu = CPU(get_release("1.0"))
    cpu.enable_async_pf(msr=0x1001)
    cpu.execute_fpu(fpop=1, fpip=2, fpdp=3)
    data = save(cpu)
    assert data[SIZE_V12:] == (
        ASYNC_PF_HEADER + struct.pack(">Q", 0x1001) + FPOP_HEADER + struct.pack(">HQQ", 1, 2, 3)
    )


@pytest.mark.parametrize(
    "name, async_pf, fpop, msrs",
    [("0.13", False, False, False), ("0.14", True, False, False), ("0.15", True, True, False),
     ("new", True, True, False), ("1.0", True, True, True)],
)  # fmt: skip
def test_subsections_per_release(name, async_pf, fpop, msrs):
    desc = cpu_description(get_release(name))
    assert [s.desc.name for s in desc.subsections] == (
        ["cpu/async_pf_msr"] * async_pf + ["cpu/fpop_ip_dp"] * fpop
        + ["cpu/msr_tscdeadline", "cpu/msr_ia32_misc_enable"] * msrs
    )


@pytest.mark.parametrize("name, pat, mcg_cap, irq", [
    ("0.13", 0, 0x10A, 2), ("0.14", 0, 0x100010A, 2), ("0.15", 0x0007040600070406, 0x100010A, 2),
    ("new", 0x0007040600070406, 0x100010A, 0), ("1.0", 0x0007040600070406, 0x100010A, 0),
])  # fmt: skip
def test_power_on_values_that_differ_by_release(name, pat, mcg_cap, irq):
    """As the real builds' idle streams show them: 0.15 set the PAT default in cpu_reset,
    0.14 added MCG_SER_P, and up to 0.15 the PIT's first IRQ is pending at -S."""
    cpu = CPU(get_release(name))
    assert (cpu.pat, cpu.mcg_cap, cpu.interrupt_request) == (pat, mcg_cap, irq)
    assert (cpu.xcr0, cpu.interrupt_injected, cpu.exception_injected) == (0, 0, 0)


def test_1_0_sends_misc_enable_once_the_guest_wrote_it():
    cpu = CPU(get_release("1.0"))
    assert len(save(cpu)) == SIZE_V12
    cpu.write_misc_enable(1 | 1 << 22)
    name = b"cpu/msr_ia32_misc_enable"
    assert save(cpu)[SIZE_V12:] == (b"\x05" + bytes((len(name),)) + name
                                    + struct.pack(">IQ", 1, 1 | 1 << 22))


def test_fpu_pointers_not_saved_without_subsection():
    release = get_release("0.14")
    cpu = CPU(release)
    cpu.execute_fpu(fpop=0x123, fpip=0x1000, fpdp=0x2000)
    data = save(cpu)
    assert len(data) == SIZE_V12
    dest, _ = load(release, data)
    assert dumps(dest) == dumps(cpu)
    assert (dest.fpop, dest.fpip, dest.fpdp) == (0, 0, 0)


def two_subsection_cpu(name: str = "new") -> CPU:
    cpu = CPU(get_release(name))
    cpu.enable_async_pf()
    cpu.execute_fpu()
    return cpu


def two_subsection_stream() -> bytes:
    return save(two_subsection_cpu("0.15"))


def test_always_peek_fails_on_sibling_subsections():
    """Format 4: the sentinel closes ymmh_regs[15], the first subsection loads, and the
    peek after its body takes the second for a subsection of cpu/async_pf_msr."""
    data = save(two_subsection_cpu(), 4)
    with pytest.raises(LoadError) as e:
        load(get_release("new"), data, 4)
    assert e.value.reason is Reason.UNKNOWN_SUBSECTION
    assert e.value.offset == SIZE_V12 + 50 + len(ASYNC_PF_HEADER) + 8  # the second header
    assert "cpu/fpop_ip_dp" in str(e.value) and "after cpu/async_pf_msr" in str(e.value)


@pytest.mark.parametrize("op", ["async_pf", "fpu", "both"])
def test_always_peek_format3_rejects_any_cpu_subsection(op):
    """Format 3: the cpu's subsections follow ymmh_regs[15], whose (empty) list is searched
    first, so even a single one is refused."""
    cpu = CPU(get_release("new"))
    if op in ("async_pf", "both"):
        cpu.enable_async_pf()
    if op in ("fpu", "both"):
        cpu.execute_fpu()
    with pytest.raises(LoadError) as e:
        load(get_release("new"), save(cpu, 3), 3)
    assert e.value.reason is Reason.UNKNOWN_SUBSECTION
    assert e.value.offset == SIZE_V12
    assert e.value.field == "ymmh_regs[15]"


@pytest.mark.parametrize("name", ["0.15", "1.0"])
def test_sibling_subsections_load(name):
    data = two_subsection_stream()
    dest, r = load(get_release(name), data)
    assert r.at_eof()
    assert dest.async_pf_en_msr and dest.fpop == 0x1C0


@pytest.mark.parametrize("with_async_pf", [False, True])
def test_014_refuses_fpop_subsection(with_async_pf):
    src = CPU(get_release("0.15"))
    if with_async_pf:
        src.enable_async_pf()
    src.execute_fpu()
    with pytest.raises(LoadError) as e:
        load(get_release("0.14"), save(src))
    assert e.value.reason is Reason.UNKNOWN_SUBSECTION
    assert e.value.offset == SIZE_V12 + (len(ASYNC_PF_HEADER) + 8) * with_async_pf


# -- embedded-struct ambiguity and the format-4 sentinel -------------------------------


def element_ends() -> list[int]:
    """Offsets (format 3) right after each of the 50 embedded struct elements."""
    segs = [FPREGS_END + 20 * k for k in range(1, 11)]
    xmm = [560 + 16 * k for k in range(1, 17)]
    mtrr = [1021 + 16 * k for k in range(1, 9)]
    ymmh = [1561 + 16 * k for k in range(1, 17)]
    return segs + xmm + mtrr + ymmh


def test_format4_sentinel_after_every_element():
    release = get_release("new")
    cpu = CPU(release)
    cpu.randomize(random.Random(7))
    plain, sentinel = save(cpu, 3), save(cpu, 4)
    ends = element_ends()
    assert len(ends) == 50
    expected = bytearray()
    prev = 0
    for end in ends:
        expected += plain[prev:end] + b"\x06"
        prev = end
    expected += plain[prev:]
    assert sentinel == bytes(expected)
    assert len(sentinel) == len(plain) + 50
    dest, r = load(release, sentinel, 4)
    assert r.at_eof() and dumps(dest) == dumps(cpu)


def test_format4_bad_sentinel():
    release = get_release("new")
    data = bytearray(save(CPU(release), 4))
    data[FPREGS_END + 20] = 0x00  # where segs[0]'s 0x06 belongs
    with pytest.raises(LoadError) as e:
        load(release, bytes(data), 4)
    assert e.value.reason is Reason.BAD_SENTINEL
    assert e.value.field.startswith("segs[0]")


def collide_xmm() -> CPU:
    cpu = CPU(get_release("new"))
    cpu.set_xmm(1, 0x05 << 56, 0x1122334455667788)
    return cpu


def test_always_peek_spurious_rejection_of_xmm_0x05():
    data = save(collide_xmm(), 3)
    with pytest.raises(LoadError) as e:
        load(get_release("new"), data, 3)
    assert e.value.reason is Reason.UNKNOWN_SUBSECTION
    assert e.value.field.startswith("xmm_regs[0]")
    assert e.value.offset == 560 + 16


def test_format4_loads_xmm_0x05():
    src = collide_xmm()
    dest, r = load(get_release("new"), save(src, 4), 4)
    assert r.at_eof() and dumps(dest) == dumps(src)
    assert dest.xmm_regs[1].lo == 0x05 << 56


@pytest.mark.parametrize("name", ["0.14", "0.15", "1.0"])
def test_xmm_0x05_loads_where_no_peek(name):
    release = get_release(name)
    src = CPU(release)
    src.set_xmm(1, 0x05 << 56, 0)
    dest, r = load(release, save(src))
    assert r.at_eof() and dumps(dest) == dumps(src)


# -- round trips per release -----------------------------------------------------------


def op_idle(cpu: CPU) -> None:
    pass


def op_async_pf(cpu: CPU) -> None:
    cpu.enable_async_pf(msr=0x7FFC0 | 1)


def op_fpu(cpu: CPU) -> None:
    cpu.execute_fpu(fpop=0x5E9, fpip=0x7F0012345678, fpdp=0x7FFF00001000, stack=(3.25, -1e300))


def op_xmm(cpu: CPU) -> None:
    cpu.set_xmm(0, 0xDEADBEEFCAFEBABE, 0x0123456789ABCDEF)
    cpu.set_xmm(15, 1, 2)


def op_random(cpu: CPU) -> None:
    cpu.randomize(random.Random(1234))


OPERATIONS = {"idle": op_idle, "async_pf": op_async_pf, "fpu": op_fpu, "xmm": op_xmm,
              "random": op_random}  # fmt: skip


SECTION_BREAK = 0x04  # in a real stream a section type byte follows every payload


def save_both(cpu: CPU, fmt: int) -> bytes:
    """cpu_common then cpu, as a machine registers them: each payload followed by a
    section type byte, as in a stream, so a top-level peek never sees the next payload."""
    w = StreamWriter()
    rules = wire_rules_for(fmt, cpu.release.peek)
    for sec in cpu.sections():
        save_state(w, sec.desc, sec.obj, rules)
        w.u8(SECTION_BREAK)
    return w.getvalue()


def load_both(release, data: bytes, fmt: int) -> tuple[CPU, StreamReader]:
    cpu = CPU(release)
    r = StreamReader(data)
    rules = wire_rules_for(fmt, release.peek)
    for sec in cpu.sections():
        load_state(r, sec.desc, sec.obj, sec.version_id, rules)
        assert r.read_u8() == SECTION_BREAK
    return cpu, r


@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("name", RELEASE_NAMES)
def test_round_trip(name, op):
    release = get_release(name)
    for fmt in formats(release):
        src = CPU(release)
        if op == "async_pf" and not release.has("cpu/async_pf_msr"):
            with pytest.raises(ConfigError):
                OPERATIONS[op](src)
            return
        OPERATIONS[op](src)
        data = save_both(src, fmt)
        sends_subsection = len(data) > 8 + SIZE_V12 + 2 + 50 * (fmt == 4)
        if release.peek is PeekPolicy.ALWAYS_PEEK and fmt == 3 and sends_subsection:
            with pytest.raises(LoadError) as e:  # see test_always_peek_format3_...
                load_both(release, data, fmt)
            assert e.value.reason is Reason.UNKNOWN_SUBSECTION
            continue
        dest, r = load_both(release, data, fmt)
        assert r.at_eof()
        assert dumps(dest) == dumps(src)
        assert (dest.fpstt, dest.fptags, dest.fpus) == (src.fpstt, src.fptags, src.fpus)


def test_round_trip_sends_what_the_release_has():
    assert len(save_both(CPU(get_release("0.13")), 3)) == 8 + SIZE_V12 + 2
    cpu = CPU(get_release("new"))
    op_fpu(cpu)
    assert len(save_both(cpu, 4)) == 8 + SIZE_V12 + 2 + 50 + len(FPOP_HEADER) + 18


@pytest.mark.parametrize("name", RELEASE_NAMES)
def test_full_stream_round_trip(name):
    release = get_release(name)
    machine = release.machines[0]
    src = CPU(release)
    src.randomize(random.Random(99))
    w = StreamWriter()
    saver = Saver(w, src.sections(), machine.stream_format, release.peek)
    saver.begin()
    saver.complete()
    dest = CPU(release)
    header = HeaderPolicy(
        release.accepted_versions, machine.stream_format, release.format_per_machine
    )
    report = load_stream(StreamReader(w.getvalue()), dest.sections(), header, release.peek)
    assert [s.idstr for s in report.sections] == ["cpu_common", "cpu"]
    assert not report.half_loaded
    assert dumps(dest) == dumps(src)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(RELEASE_NAMES))
def test_randomize_loads_everywhere(seed, name):
    """Random states keep 0x05 away from the byte after an embedded element, so every
    release loads them in format 3, even under always-peek."""
    src = CPU(get_release(name))
    src.randomize(random.Random(seed))
    data = save_both(src, 3)
    assert len(data) == 8 + SIZE_V12 + 2
    expected = dumps(src)
    for dest_name in RELEASE_NAMES:
        dest, r = load_both(get_release(dest_name), data, 3)
        assert r.at_eof()
        got = dumps(dest)  # subsection fields differ in name only where a release has them
        assert {k: v for k, v in got.items() if k in expected} == {
            k: v for k, v in expected.items() if k in got
        }


def test_randomize_is_deterministic():
    a, b = CPU(get_release("0.15")), CPU(get_release("0.15"))
    a.randomize(random.Random(5))
    b.randomize(random.Random(5))
    assert save(a) == save(b)


def test_randomize_collisions_flag_can_send_both():
    release = get_release("0.15")
    for seed in range(200):
        cpu = CPU(release)
        cpu.randomize(random.Random(seed), collisions=True)
        if len(save(cpu)) == SIZE_V12 + len(ASYNC_PF_HEADER) + 8 + len(FPOP_HEADER) + 18:
            dest, r = load_both(release, save_both(cpu, 3), 3)
            assert r.at_eof() and dumps(dest) == dumps(cpu)
            return
    pytest.fail("collisions=True never produced both subsections")


def test_013_refuses_async_pf():
    src = CPU(get_release("0.14"))
    src.enable_async_pf()
    with pytest.raises(LoadError) as e:
        load(get_release("0.13"), save(src))
    assert e.value.reason is Reason.UNKNOWN_SUBSECTION


# -- operation validation --------------------------------------------------------------


@pytest.mark.parametrize("msr", [0, 0x1000, 0x1005, 0x1021, 1 << 60 | 1])
def test_enable_async_pf_rejects_invalid_msr(msr):
    with pytest.raises(ValueError):
        CPU(get_release("0.14")).enable_async_pf(msr=msr)


def test_enable_async_pf_needs_release_support():
    with pytest.raises(ConfigError):
        CPU(get_release("0.13")).enable_async_pf()


def test_execute_fpu_validation():
    cpu = CPU(get_release("0.15"))
    with pytest.raises(ValueError):
        cpu.execute_fpu(fpop=0x800)
    with pytest.raises(ValueError):
        cpu.execute_fpu(stack=(1.0,) * 9)


def test_set_xmm_validation():
    cpu = CPU(get_release("0.15"))
    with pytest.raises(ValueError):
        cpu.set_xmm(16, 0, 0)
    with pytest.raises(ValueError):
        cpu.set_xmm(0, 1 << 64, 0)


def test_all_releases_modelled():
    assert set(RELEASES) == set(RELEASE_NAMES + RHEL_NAMES)
