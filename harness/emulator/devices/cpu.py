"""The x86_64 CPU: old-style section "cpu" (v12, min 3) and its companion "cpu_common" (v1).

Both sections are registered per CPU with instance id = cpu_index, "cpu_common" first, and
both read and write the same CPU object (QEMU's CPUState). The "cpu" description is the
0.14/0.15 ``vmstate_cpu`` field for field (devices.md section 3, rows 1-69), not sorted
by version, with 50 embedded struct elements (segments, xmm, mtrr_var, ymmh) after which the
subsection ambiguity can strike. Hand count at v12 without subsections: 1817 bytes.

The x87 registers are saved as 80-bit values (format 0) on every modelled release; the
loader also accepts the 64-bit format 1 written by builds without an 80-bit long double,
choosing among three alternative ``fpregs`` entries by predicates on the FPU mirrors, as
QEMU did. ``cpu/async_pf_msr`` (0.14), ``cpu/fpop_ip_dp`` (0.15), ``cpu/msr_tscdeadline``
and ``cpu/msr_ia32_misc_enable`` (1.0) are top-level subsections present only where the
release row lists them. They follow ``ymmh_regs[15]`` directly, so in format 3 an
always-peek loader searches ymmh_reg's empty list first and refuses any of them;
peek-if-defined never looks there, and format 4's sentinel closes the element first.

Under TCG (how the real builds run here) only ``msr_ia32_misc_enable`` can be set by a
guest (wrmsr); the async PF MSR, the FPU's last instruction pointers and the TSC deadline
are filled in only by KVM, so scenarios that set them describe a KVM guest and exist in
the model only.

RHEL 6's qemu-kvm (variant ``cpu.xsave`` = "none") also says v12 but is upstream's v11
layout plus ``system_time_msr`` and ``wall_clock_msr``: no ``xcr0``, ``xstate_bv`` or
``ymmh_regs`` (272 bytes fewer, 1545 at power-on), so each side reads the other's cpu
misaligned. RHEL 6.2 sends XSAVE state in a subsection named plain "xsave", needed when
the guest's CPUID offers XSAVE, which TCG never does.

Power-on differs by release in three values (variants ``cpu.pat``, ``cpu.mcg_cap``,
``cpu.power_on_irq``): the PAT default (0.15+), MCG_SER_P (0.14+), and whether the PIT's
first interrupt request is pending in ``interrupt_request`` when -S stops the CPU.
"""

from __future__ import annotations

import functools
import math
import random
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import ConfigError, SaveError
from ..releases import Release
from ..savevm import DeviceSection
from ..stream import StreamReader, StreamWriter
from ..vmstate import (
    Description,
    Field,
    Int,
    IntArray,
    Struct,
    StructArray,
    Subsection,
    WireRules,
    i32,
    u8,
    u16,
    u32,
    u64,
)
from . import Device, State

__all__ = [
    "CPU",
    "FPRegArray",
    "FloatX80",
    "MTRR_VAR",
    "SEGMENT",
    "XMM_REG",
    "YMMH_REG",
    "cpu_common_description",
    "cpu_description",
    "fp64_to_fp80",
]

CPU_SAVE_VERSION = 12
NB_REGS = 16  # CPU_NB_REGS on x86_64
TL = 8  # target_ulong width on x86_64
MCE_BANKS = 10

# Segment descriptor flag bits as QEMU caches them (DESC_*_MASK).
DESC_A, DESC_RW, DESC_CS, DESC_S, DESC_P = 1 << 8, 1 << 9, 1 << 11, 1 << 12, 1 << 15
DESC_L, DESC_B, DESC_G = 1 << 21, 1 << 22, 1 << 23
DESC_TYPE_SHIFT = 8

# hflags bits (cpu.h HF_*_SHIFT) used for reset and randomize.
HF_SOFTMMU, HF_CS32, HF_SS32, HF_ADDSEG, HF_PE = 1 << 2, 1 << 4, 1 << 5, 1 << 6, 1 << 7
HF_MP, HF_LMA, HF_CS64, HF_OSFXSR = 1 << 9, 1 << 14, 1 << 15, 1 << 22
HF2_GIF = 1 << 0

MISC_ENABLE_DEFAULT = 1  # MSR_IA32_MISC_ENABLE after reset: fast string operations
MSR_KVM_ASYNC_PF_ENABLED = 1 << 0
MSR_KVM_ASYNC_PF_RESERVED = 0x3C  # bits 2-5 must be zero (KVM refuses the write)
CPU_INTERRUPT_HARD = 0x02
CPU_INTERRUPT_OLD_EXIT = 0x01  # cpu_common post_load clears it
KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_HALTED = 0, 3
MCG_CTL_P, MCG_SER_P = 1 << 8, 1 << 24
U64 = (1 << 64) - 1
FPUS_TOP = 0x3800  # TOP lives in fpus bits 11-13


# -- the x87 register format -----------------------------------------------------------


class FloatX80(NamedTuple):
    """An x87 register: 64-bit mantissa (explicit integer bit) and sign+15-bit exponent."""

    mant: int
    exp: int

    @classmethod
    def from_float(cls, value: float) -> FloatX80:
        """Exact conversion of a Python float (what FLD of a double leaves in a register).

        >>> FloatX80.from_float(1.0)
        FloatX80(mant=9223372036854775808, exp=16383)
        >>> FloatX80.from_float(-2.0).exp == 0x8000 | 0x4000
        True
        """
        sign = 0x8000 if math.copysign(1.0, value) < 0 else 0
        if value == 0:
            return cls(0, sign)
        if math.isinf(value):
            return cls(1 << 63, sign | 0x7FFF)
        if math.isnan(value):
            return cls(0xC000_0000_0000_0000, sign | 0x7FFF)
        frac, e = math.frexp(abs(value))  # value = frac * 2**e, 0.5 <= frac < 1
        mant = int(frac * (1 << 64))  # exact: a double has 53 significant bits
        return cls(mant, sign | (e - 1 + 16383))


def fp64_to_fp80(bits: int) -> FloatX80:
    """QEMU's loader conversion of a format-1 (float64) register to 80-bit.

    It re-biases the exponent and sets the integer bit without special cases, so zero,
    denormals, infinities and NaNs come out as QEMU produced them, not as the FPU would.

    >>> fp64_to_fp80(0x3FF0000000000000)  # 1.0
    FloatX80(mant=9223372036854775808, exp=16383)
    >>> hex(fp64_to_fp80(0xC000000000000000).exp)  # -2.0
    '0xc000'
    """
    mant = ((bits & ((1 << 52) - 1)) << 11) | (1 << 63)
    exp = ((bits >> 52) & 0x7FF) - 1023 + 16383
    exp |= (bits >> 48) & 0x8000
    return FloatX80(mant, exp & 0xFFFF)


class FPRegArray(Field):
    """``fpregs[8]`` in one of QEMU's three VMStateInfo formats (one ARRAY_TEST entry each).

    ``fpreg`` (format 0): be64 mantissa + be16 exponent, 10 bytes, saved and loaded.
    ``fpreg_1_mmx`` and ``fpreg_1_no_mmx`` (format 1): 8 bytes, load only; the first takes
    the value as an MMX quad with exponent 0xffff, the second as a float64.
    """

    _FORMATS = {"fpreg": 10, "fpreg_1_mmx": 8, "fpreg_1_no_mmx": 8}
    _F80 = struct.Struct(">QH")

    def __init__(self, name: str, info: str, count: int, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.info = info
        self.count = count
        self.size = self._FORMATS[info] * count
        self.kind = f"{info}[{count}]"

    def _save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        if self.info != "fpreg":
            # QEMU's put_fpreg_error: these entries exist only to read old streams.
            raise SaveError(f"{self.info} cannot be saved (load-only format)")
        for reg in self.get(obj)[: self.count]:
            w.raw(self._F80.pack(reg.mant, reg.exp))

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        regs = self.get(obj)
        for i in range(self.count):
            if self.info == "fpreg":
                regs[i] = FloatX80(*r.unpack(self._F80))
            elif self.info == "fpreg_1_mmx":
                regs[i] = FloatX80(r.read_u64(), 0xFFFF)
            else:
                regs[i] = fp64_to_fp80(r.read_u64())
        return None

    def dump(self, obj: Any, prefix: str, out: dict[str, Any]) -> None:
        out[prefix + self.path] = list(self.get(obj))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "info": self.info, "count": self.count}


def _fpregs_is_0(cpu: Any, version: int) -> bool:
    return cpu.fpregs_format_vmstate == 0


def _guess_mmx(cpu: Any) -> bool:
    # All tags valid and TOP = 0: the registers were last used as MMX registers.
    return cpu.fptag_vmstate == 0xFF and not (cpu.fpus_vmstate & FPUS_TOP)


def _fpregs_is_1_mmx(cpu: Any, version: int) -> bool:
    return cpu.fpregs_format_vmstate == 1 and _guess_mmx(cpu)


def _fpregs_is_1_no_mmx(cpu: Any, version: int) -> bool:
    return cpu.fpregs_format_vmstate == 1 and not _guess_mmx(cpu)


# -- embedded structs (release-independent) --------------------------------------------

SEGMENT = Description(
    "segment", 1, [u32("selector"), u64("base"), u32("limit"), u32("flags")],
    minimum_version_id=1,
)  # fmt: skip
XMM_REG = Description("xmm_reg", 1, [u64("lo"), u64("hi")], minimum_version_id=1)
YMMH_REG = Description("ymmh_reg", 1, [u64("lo"), u64("hi")], minimum_version_id=1)
MTRR_VAR = Description("mtrr_var", 1, [u64("base"), u64("mask")], minimum_version_id=1)


def _tl(name: str, **kw: Any) -> Field:
    return Int(name, TL, **kw)


def _less_than_7(cpu: Any, version: int) -> bool:
    return version < 7


def _version_is_5(cpu: Any, version: int) -> bool:
    return version == 5


# -- hooks -----------------------------------------------------------------------------


def _pre_save(save_format: int) -> Callable[[Any], None]:
    def pre_save(cpu: Any) -> None:
        cpu.fpus_vmstate = (cpu.fpus & ~FPUS_TOP) | ((cpu.fpstt & 7) << 11)
        cpu.fptag_vmstate = sum((0 if tag else 1) << i for i, tag in enumerate(cpu.fptags))
        cpu.fpregs_format_vmstate = save_format

    return pre_save


def _post_load(cpu: Any, version: int) -> None:
    # Rebuild the live FPU state from the mirrors. QEMU checked nothing else here: the
    # rest (breakpoints, TLB flush) has no state the stream could contradict.
    cpu.fpstt = (cpu.fpus_vmstate >> 11) & 7
    cpu.fpus = cpu.fpus_vmstate & ~FPUS_TOP
    cpu.fptag_vmstate ^= 0xFF
    cpu.fptags = [(cpu.fptag_vmstate >> i) & 1 for i in range(8)]


def _common_post_load(cpu: Any, version: int) -> None:
    cpu.interrupt_request &= ~CPU_INTERRUPT_OLD_EXIT  # 0x01 was CPU_INTERRUPT_EXIT


# variant value of "cpu.fpregs" -> the fpregs_format_vmstate the saver writes
_FPREGS_SAVE_FORMAT = {"80bit": 0}
# Power-on values that differ by release (cpu_reset and the machine's reset order):
# "cpu.pat": 0.15 made cpu_reset set the PAT's power-on default.
_PAT = {"zero": 0, "wb-default": 0x0007040600070406}
# "cpu.mcg_cap": 0.14 added software error recovery (MCG_SER_P) to the MCE capabilities.
_MCG_CAP = {"ctl": MCG_CTL_P | MCE_BANKS, "ctl-ser": MCG_CTL_P | MCG_SER_P | MCE_BANKS}
# "cpu.power_on_irq": the PIT's IRQ0, raised as it is reset, reaches the CPU through the
# i8259 and the APIC's ExtINT LINT0 before -S stops it (up to 0.15), or does not.
_POWER_ON_IRQ = {"pending": CPU_INTERRUPT_HARD, "none": 0}
# "cpu.model": the default CPU model's family/model/stepping, which reset leaves in EDX:
# qemu64 (6/2/3); RHEL 6's cpu64-rhel6 (6/13/3) and, on its rhel5.x machine types,
# cpu64-rhel5 (6/6/3), both from the bundle's cpu-x86_64.conf.
_CPUID_VERSION = {"qemu64": 0x623, "cpu64-rhel6": 0x6D3, "cpu64-rhel5": 0x663}


def _power_on(release: Release, table: dict[str, int], key: str) -> int:
    variant = release.variant(key)
    try:
        return table[variant]
    except KeyError:
        raise ConfigError(f"{key} variant {variant!r} is not modelled") from None


_XSAVE_STATE: tuple[Field, ...] = (
    u64("xcr0"), u64("xstate_bv"), StructArray("ymmh_regs", YMMH_REG, NB_REGS),
)


def _xsave_fields(release: Release) -> list[Field]:
    """Variant "cpu.xsave": upstream's v12 fields, or none (qemu-kvm's v12)."""
    variant = release.variant("cpu.xsave")
    if variant == "v12-fields":
        return [u64("xcr0", version_id=12), u64("xstate_bv", version_id=12),
                StructArray("ymmh_regs", YMMH_REG, NB_REGS, version_id=12)]
    if variant == "none":
        return []
    raise ConfigError(f"cpu.xsave variant {variant!r} is not modelled")


@functools.cache
def cpu_common_description(release: Release) -> Description:
    return Description(
        "cpu_common", 1, [u32("halted"), u32("interrupt_request")],
        minimum_version_id=1, post_load=_common_post_load,
    )  # fmt: skip


@functools.cache
def cpu_description(release: Release) -> Description:
    """vmstate_cpu for x86_64 as ``release`` saves and loads it."""
    variant = release.variant("cpu.fpregs")
    try:
        save_format = _FPREGS_SAVE_FORMAT[variant]
    except KeyError:
        raise ConfigError(f"cpu.fpregs variant {variant!r} is not modelled") from None

    fields: list[Field] = [
        IntArray("regs", TL, NB_REGS),
        _tl("eip"),
        _tl("eflags"),
        u32("hflags"),
        u16("fpuc"),
        u16("fpus_vmstate"),
        u16("fptag_vmstate"),
        u16("fpregs_format_vmstate"),
        FPRegArray("fpregs", "fpreg", 8, exists=_fpregs_is_0),
        FPRegArray("fpregs", "fpreg_1_mmx", 8, exists=_fpregs_is_1_mmx),
        FPRegArray("fpregs", "fpreg_1_no_mmx", 8, exists=_fpregs_is_1_no_mmx),
        StructArray("segs", SEGMENT, 6),
        Struct("ldt", SEGMENT),
        Struct("tr", SEGMENT),
        Struct("gdt", SEGMENT),
        Struct("idt", SEGMENT),
        u32("sysenter_cs"),
        # Before v7 x86_64 sent these as u32 (read into the 64-bit registers).
        u32("sysenter_esp_u32", attr="sysenter_esp", exists=_less_than_7),
        u32("sysenter_eip_u32", attr="sysenter_eip", exists=_less_than_7),
        _tl("sysenter_esp", version_id=7),
        _tl("sysenter_eip", version_id=7),
        *(_tl(f"cr[{n}]") for n in (0, 2, 3, 4)),
        IntArray("dr", TL, 8),
        i32("a20_mask"),
        u32("mxcsr"),
        StructArray("xmm_regs", XMM_REG, NB_REGS),
        *(u64(n) for n in ("efer", "star", "lstar", "cstar", "fmask", "kernelgsbase")),
        u32("smbase", version_id=4),
        u64("pat", version_id=5),
        u32("hflags2", version_id=5),
        u32("halted", exists=_version_is_5),
        *(u64(n, version_id=5) for n in ("vm_hsave", "vm_vmcb", "tsc_offset", "intercept")),
        *(
            u16(n, version_id=5)
            for n in ("intercept_cr_read", "intercept_cr_write",
                      "intercept_dr_read", "intercept_dr_write")
        ),  # fmt: skip
        u32("intercept_exceptions", version_id=5),
        u8("v_tpr", version_id=5),
        IntArray("mtrr_fixed", 8, 11, version_id=8),
        u64("mtrr_deftype", version_id=8),
        StructArray("mtrr_var", MTRR_VAR, 8, version_id=8),
        i32("interrupt_injected", version_id=9),
        u32("mp_state", version_id=9),
        u64("tsc", version_id=9),
        i32("exception_injected", version_id=11),
        *(u8(n, version_id=11)
          for n in ("soft_interrupt", "nmi_injected", "nmi_pending", "has_error_code")),
        u32("sipi_vector", version_id=11),
        *(u64(n, version_id=10) for n in ("mcg_cap", "mcg_status", "mcg_ctl")),
        IntArray("mce_banks", 8, MCE_BANKS * 4, version_id=10),
        *(u64(n, version_id=11) for n in ("tsc_aux", "system_time_msr", "wall_clock_msr")),
        *_xsave_fields(release),
    ]  # fmt: skip

    # name, fields, needed: the subsections a release defines, in the order it sends them
    optional = (
        ("xsave", _XSAVE_STATE, lambda cpu: cpu.xsave_exposed),
        ("cpu/async_pf_msr", [u64("async_pf_en_msr")],
         lambda cpu: cpu.async_pf_en_msr != 0),
        ("cpu/fpop_ip_dp", [u16("fpop"), u64("fpip"), u64("fpdp")],
         lambda cpu: bool(cpu.fpop or cpu.fpip or cpu.fpdp)),
        ("cpu/msr_tscdeadline", [u64("tsc_deadline")],
         lambda cpu: cpu.tsc_deadline != 0),
        ("cpu/msr_ia32_misc_enable", [u64("msr_ia32_misc_enable")],
         lambda cpu: cpu.msr_ia32_misc_enable != MISC_ENABLE_DEFAULT),
    )  # fmt: skip
    subsections = [Subsection(Description(name, 1, sub_fields, minimum_version_id=1), needed)
                   for name, sub_fields, needed in optional if release.has(name)]

    return Description(
        "cpu", CPU_SAVE_VERSION, fields,
        minimum_version_id=3, subsections=tuple(subsections),
        pre_save=_pre_save(save_format), post_load=_post_load,
    )  # fmt: skip


# -- the device ------------------------------------------------------------------------


def _segment(selector: int, base: int, limit: int, flags: int) -> State:
    return State(selector=selector, base=base, limit=limit, flags=flags)


def _canonical(rng: random.Random, kernel: bool = True) -> int:
    """A random canonical 48-bit virtual address (upper half for kernel)."""
    low = rng.randrange(1 << 47)
    return (U64 ^ ((1 << 47) - 1)) | low if kernel else low


def _no_marker(value: int) -> int:
    """Keep 0x05 out of a u64's first wire byte (it may follow an embedded element)."""
    return value ^ (1 << 56) if value >> 56 == 0x05 else value


class CPU(Device):
    """CPU 0 of the PC (x86_64): "cpu_common" and "cpu" sections, one shared state."""

    key = "cpu"
    cpu_index = 0

    def reset(self) -> None:
        """Real-mode state after power-on reset (QEMU's cpu_reset under TCG), as a guest
        started with -S holds it: it never executed an instruction."""
        r = self.release
        self.halted = 0
        self.interrupt_request = _power_on(r, _POWER_ON_IRQ, "cpu.power_on_irq")
        self.regs = [0] * NB_REGS
        model = self.board.cpu_model or r.variant("cpu.model")
        if model not in _CPUID_VERSION:
            raise ConfigError(f"CPU model {model!r} is not modelled")
        self.regs[2] = _CPUID_VERSION[model]  # EDX = cpuid_version
        self.eip = 0xFFF0
        self.eflags = 0x2
        self.hflags = HF_SOFTMMU | HF_ADDSEG
        self.hflags2 = HF2_GIF
        # FPU: live state plus the vmstate mirrors pre_save computes.
        self.fpuc = 0x37F
        self.fpus = 0
        self.fpstt = 0
        self.fptags = [1] * 8  # 1 = empty
        self.fpregs = [FloatX80(0, 0)] * 8
        self.fpus_vmstate = self.fptag_vmstate = self.fpregs_format_vmstate = 0
        self.fpop = self.fpip = self.fpdp = 0
        data = DESC_P | DESC_S | DESC_RW | DESC_A
        self.segs = [_segment(0, 0, 0xFFFF, data) for _ in range(6)]  # ES CS SS DS FS GS
        self.segs[1] = _segment(0xF000, 0xFFFF0000, 0xFFFF, data | DESC_CS)
        self.ldt = _segment(0, 0, 0xFFFF, DESC_P | (2 << DESC_TYPE_SHIFT))
        self.tr = _segment(0, 0, 0xFFFF, DESC_P | (11 << DESC_TYPE_SHIFT))
        self.gdt = _segment(0, 0, 0xFFFF, 0)
        self.idt = _segment(0, 0, 0xFFFF, 0)
        self.sysenter_cs = self.sysenter_esp = self.sysenter_eip = 0
        self.cr = [0x60000010, 0, 0, 0, 0]
        self.dr = [0] * 6 + [0xFFFF0FF0, 0x400]
        self.a20_mask = -1
        self.mxcsr = 0x1F80
        self.xmm_regs = [State(lo=0, hi=0) for _ in range(NB_REGS)]
        self.efer = self.star = self.lstar = self.cstar = self.fmask = self.kernelgsbase = 0
        self.smbase = 0x30000
        self.pat = _power_on(r, _PAT, "cpu.pat")
        self.vm_hsave = self.vm_vmcb = self.tsc_offset = self.intercept = 0
        self.intercept_cr_read = self.intercept_cr_write = 0
        self.intercept_dr_read = self.intercept_dr_write = 0
        self.intercept_exceptions = 0
        self.v_tpr = 0
        self.mtrr_fixed = [0] * 11
        self.mtrr_deftype = 0
        self.mtrr_var = [State(base=0, mask=0) for _ in range(8)]
        self.interrupt_injected = 0  # -1 only once KVM has synchronized the vcpu
        self.mp_state = KVM_MP_STATE_RUNNABLE
        self.tsc = 0
        self.exception_injected = 0
        self.soft_interrupt = self.nmi_injected = self.nmi_pending = self.has_error_code = 0
        self.sipi_vector = 0
        self.mcg_cap = _power_on(r, _MCG_CAP, "cpu.mcg_cap")
        self.mcg_status = 0
        self.mcg_ctl = U64
        self.mce_banks = [U64 if i % 4 == 0 else 0 for i in range(MCE_BANKS * 4)]
        self.tsc_aux = self.system_time_msr = self.wall_clock_msr = 0
        self.xsave_exposed = False  # TCG's CPUID offers no XSAVE
        self.xcr0 = 0  # TCG has no XSAVE: XCR0 stays 0
        self.xstate_bv = 0
        self.ymmh_regs = [State(lo=0, hi=0) for _ in range(NB_REGS)]
        self.async_pf_en_msr = 0
        self.tsc_deadline = 0
        self.msr_ia32_misc_enable = MISC_ENABLE_DEFAULT

    def sections(self) -> list[DeviceSection]:
        return [
            DeviceSection("cpu_common", self.cpu_index, cpu_common_description(self.release), self),
            DeviceSection("cpu", self.cpu_index, cpu_description(self.release), self),
        ]

    # -- operations --------------------------------------------------------------------

    def enable_async_pf(self, msr: int = 0x0000_0000_0009_F040 | MSR_KVM_ASYNC_PF_ENABLED) -> None:
        """The guest writes MSR_KVM_ASYNC_PF_EN: a 64-byte aligned address | enable bit."""
        if not self.release.has("cpu/async_pf_msr"):
            raise ConfigError(f"release {self.release.name} offers no async page faults")
        if not 0 < msr <= U64 or not msr & MSR_KVM_ASYNC_PF_ENABLED:
            raise ValueError(f"async PF MSR 0x{msr:x} lacks the enable bit")
        if msr & MSR_KVM_ASYNC_PF_RESERVED or msr >> 52:
            raise ValueError(f"async PF MSR 0x{msr:x}: reserved bits or address too wide")
        self.async_pf_en_msr = msr

    def execute_fpu(
        self,
        fpop: int = 0x1C0,
        fpip: int = 0x0000_0000_0040_1000,
        fpdp: int = 0x0000_0000_0060_2000,
        stack: tuple[float, ...] = (1.0, 2.5),
    ) -> None:
        """Push ``stack`` (FLDs) and record the last FPU opcode and pointers.

        The pointers are saved only where the release has cpu/fpop_ip_dp; elsewhere they
        are live state that never travels.
        """
        if not 0 <= fpop < 0x800:
            raise ValueError(f"FPU opcode 0x{fpop:x} has more than 11 bits")
        if not (0 <= fpip <= U64 and 0 <= fpdp <= U64):
            raise ValueError("FPU pointers must fit in 64 bits")
        if len(stack) > self.fptags.count(1):
            raise ValueError("FPU stack overflow")
        for value in stack:
            self.fpstt = (self.fpstt - 1) & 7
            self.fpregs[self.fpstt] = FloatX80.from_float(value)
            self.fptags[self.fpstt] = 0
        self.fpop, self.fpip, self.fpdp = fpop, fpip, fpdp

    def write_misc_enable(self, value: int = MISC_ENABLE_DEFAULT | 1 << 22) -> None:
        """wrmsr IA32_MISC_ENABLE (TCG stores any value; the default sets bit 22, "limit
        CPUID maxval", as old BIOSes did). Saved only where cpu/msr_ia32_misc_enable is."""
        if not 0 <= value <= U64:
            raise ValueError(f"MSR value 0x{value:x} does not fit in 64 bits")
        self.msr_ia32_misc_enable = value

    def set_xmm(self, index: int, lo: int, hi: int) -> None:
        """Set XMM register ``index``: ``lo`` = XMM_Q(0) (first on the wire), ``hi`` = XMM_Q(1)."""
        if not 0 <= index < NB_REGS:
            raise ValueError(f"no xmm{index}")
        if not (0 <= lo <= U64 and 0 <= hi <= U64):
            raise ValueError("xmm halves must fit in 64 bits")
        self.xmm_regs[index].lo, self.xmm_regs[index].hi = lo, hi

    def randomize(self, rng: random.Random, *, collisions: bool = False) -> None:
        """A random 64-bit kernel-mode state, as a KVM guest under Linux could leave it.

        Unless ``collisions``, no 0x05 follows an embedded element in format 3, so that
        ``random`` measures everything but the ambiguity the dedicated scenarios exercise:
        xmm/ymmh low quads never start with 0x05 (collide-0x05), and the FPU pointers and
        async PF MSR stay zero, because the cpu's subsections come right after
        ``ymmh_regs[15]`` (cpu-async-pf, cpu-fpu-ip, cpu-two-subsections).
        """
        self.reset()
        r64 = lambda: rng.getrandbits(64)  # noqa: E731
        self.halted = int(rng.random() < 0.2)  # stopped in HLT
        self.mp_state = KVM_MP_STATE_HALTED if self.halted else KVM_MP_STATE_RUNNABLE
        self.interrupt_request = rng.choice((0, CPU_INTERRUPT_HARD))
        self.regs = [r64() for _ in range(NB_REGS)]
        self.eip = _canonical(rng)
        self.eflags = 0x2 | (rng.getrandbits(12) & 0xAD5) | (1 << 9)  # IF set, arith flags
        self.hflags = (HF_SOFTMMU | HF_CS32 | HF_SS32 | HF_PE | HF_MP
                       | HF_LMA | HF_CS64 | HF_OSFXSR)  # fmt: skip
        # FPU: k values pushed from an empty stack; stale contents in the empty slots.
        self.fpuc = rng.choice((0x37F, 0x27F))
        self.fpus = rng.getrandbits(7) & 0x3F  # sticky exception flags only
        pushed = rng.randrange(9)
        self.fpstt = (8 - pushed) & 7
        self.fptags = [0 if (i - self.fpstt) % 8 < pushed else 1 for i in range(8)]
        self.fpregs = [
            FloatX80(rng.getrandbits(63) | (1 << 63), rng.randrange(0x3FC0, 0x4040)
                     | (rng.getrandbits(1) << 15))
            for _ in range(8)
        ]  # fmt: skip
        self.fpop = rng.randrange(0x800)
        self.fpip, self.fpdp = _canonical(rng, kernel=False), _canonical(rng, kernel=False)
        # Long mode flat segments; FS/GS bases are TLS and per-CPU pointers.
        code = DESC_P | DESC_S | DESC_CS | DESC_RW | DESC_A | DESC_L | DESC_G
        data = DESC_P | DESC_S | DESC_RW | DESC_A | DESC_B | DESC_G
        self.segs = [_segment(0x18, 0, 0xFFFFFFFF, data) for _ in range(6)]
        self.segs[1] = _segment(0x10, 0, 0xFFFFFFFF, code)
        self.segs[4].base = _canonical(rng, kernel=False)
        self.segs[5].base = _canonical(rng)
        self.ldt = _segment(0, 0, 0, 0)
        self.tr = _segment(0x40, _canonical(rng), 0x2087, DESC_P | (11 << DESC_TYPE_SHIFT))
        self.gdt = _segment(0, _canonical(rng), 0x7F, 0)
        self.idt = _segment(0, _canonical(rng), 0xFFF, 0)
        self.sysenter_cs = 0x10
        self.sysenter_esp, self.sysenter_eip = _canonical(rng), _canonical(rng)
        self.cr = [0x80050033, 0, _canonical(rng), rng.randrange(1 << 40) & ~0xFFF, 0x6F0]
        self.dr = [_canonical(rng) for _ in range(4)] + [0, 0, 0xFFFF0FF0, 0x400]
        self.mxcsr = 0x1F80 | rng.getrandbits(6)
        self.xmm_regs = [State(lo=r64(), hi=r64()) for _ in range(NB_REGS)]
        self.efer = 0xD01  # SCE | LME | LMA | NXE
        self.star = 0x0023001000000000
        self.lstar, self.cstar = _canonical(rng), _canonical(rng)
        self.fmask = 0x47700
        self.kernelgsbase = _canonical(rng, kernel=False)
        self.mtrr_deftype = 0xC06
        self.mtrr_fixed = [
            int.from_bytes(bytes(rng.choice((0, 1, 4, 5, 6)) for _ in range(8)), "big")
            for _ in range(11)
        ]
        self.mtrr_var = [State(base=0, mask=0) for _ in range(8)]
        for var in self.mtrr_var[: rng.randrange(9)]:
            size_bits = rng.randrange(20, 32)
            var.base = (rng.randrange(1 << (36 - size_bits)) << size_bits) | rng.choice((0, 6))
            var.mask = (((1 << 36) - 1) & ~((1 << size_bits) - 1)) | 0x800
        self.interrupt_injected = rng.choice((-1, rng.randrange(32, 256)))
        self.tsc = rng.getrandbits(60)
        self.nmi_pending = rng.getrandbits(1)
        self.tsc_aux = self.cpu_index
        self.system_time_msr = (rng.randrange(1 << 32) & ~0x3F) | 1
        self.wall_clock_msr = rng.randrange(1 << 32) & ~0x3F
        if self.release.variant("cpu.xsave") == "v12-fields":  # elsewhere TCG has no XSAVE
            self.xcr0 = rng.choice((1, 3, 7))
            self.xstate_bv = self.xcr0 & rng.getrandbits(3)
            if self.xcr0 & 4:
                self.ymmh_regs = [State(lo=r64(), hi=r64()) for _ in range(NB_REGS)]
        if self.release.has("cpu/async_pf_msr") and rng.random() < 0.5:
            self.async_pf_en_msr = (rng.randrange(1, 1 << 26) << 6) | MSR_KVM_ASYNC_PF_ENABLED
        if collisions:
            return
        for reg in (*self.xmm_regs[1:], *self.ymmh_regs[1:]):
            reg.lo = _no_marker(reg.lo)
        self.async_pf_en_msr = self.fpop = self.fpip = self.fpdp = 0
