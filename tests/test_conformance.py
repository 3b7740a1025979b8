"""The model against the real builds: the whole idle machine of every modelled release.

For every release, machine type and NIC option (``--nic``: QEMU's default e1000 with user
networking, ``-net nic,model=rtl8139 -net user``, ``-net none``), the real program is
started with ``-S`` (no BIOS runs) and saves its stream; the model's power-on stream of
the same endpoint must have

* the same sections (idstr, instance id, version, payload size) in the same order, the
  live ones (``block``, ``ram``: START, one PART, END) first;
* the same RAM blocks, in the same order, with the same lengths, and pages of the same
  kinds (raw, or uniform with the same fill byte);
* byte-identical device payloads, except the fields in ``HISTORIC_IGNORED`` (harness.qemu.compare), which
  depend on the host's clock or on memory QEMU never initialised.

Every real stream decodes in the analyzer, writer given or inferred.

Then the idle 7x7: every real stream is loaded by the model as each destination
endpoint, and by the real build of that endpoint; the model loads exactly the streams the
real program loads, and refuses the others in the section the real program names (when
it names one). The real programs also load the model's streams exactly where they load
their own (hybrid cells).

RHEL 6.1 and 6.2's qemu-kvm the same way on every machine type each build has (rhel5.x,
without PCI option ROM blocks, included), with RHEL's own NIC, an e1000, no NIC, and no
VGA; their loaders are in tests/test_rhel6.py.

Real streams come from the bundles (``../shared/qemu-historic``), unpacked into the cache
and run per test session; without them the tests skip, and fail in CI.
"""

from __future__ import annotations

import fnmatch
import functools
import itertools
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.emulator.errors import LoadCrash, LoadError
from harness.emulator.machine import Machine
from harness.emulator.releases import RELEASES, get_release
from harness.emulator.vmstate import Tracer
from harness.qemu.compare import HISTORIC_IGNORED

from .realqemu import ENDPOINT_IDS, ENDPOINTS, NICS, full_sections
from .realqemu import historic as historic  # noqa: F401 - the fixture

RAM = 64 << 20  # the real builds' -m 64
PAIRS = [(s, d) for s, d in itertools.product(ENDPOINTS, ENDPOINTS) if s != d]


def host_dependent(idstr: str, path: str, at: int) -> bool:
    """Byte ``at`` of field ``path`` of section ``idstr`` depends on the host or the clock:
    the historic driver's list of ignored fields, with its reasons, is the one list."""
    return any(fnmatch.fnmatchcase(idstr, r.section) and fnmatch.fnmatchcase(path, r.field)
               and (r.byte_range is None or r.byte_range[0] <= at < r.byte_range[1])
               for r in HISTORIC_IGNORED)



# -- the real streams, cut without the model ---------------------------------------------


def live_records(data: bytes) -> list[tuple[str, str, int, int, int]]:
    """(kind, idstr, instance, version, payload size) of the live records, in order."""
    from .realqemu import _skip_live

    out, pos, names = [], 8, {}
    end_of_live = _skip_live(data)
    while pos < end_of_live:
        kind = data[pos]
        sid = int.from_bytes(data[pos + 1 : pos + 5], "big")
        pos += 5
        if kind == 0x01:
            n = data[pos]
            idstr = data[pos + 1 : pos + 1 + n].decode()
            inst = int.from_bytes(data[pos + 1 + n : pos + 5 + n], "big")
            ver = int.from_bytes(data[pos + 5 + n : pos + 9 + n], "big")
            names[sid] = (idstr, inst, ver)
            pos += 1 + n + 8
        idstr, inst, ver = names[sid]
        body = pos
        pos = body + _live_payload_size(data, body, idstr)
        out.append(({1: "START", 2: "PART", 3: "END"}[kind], idstr, inst, ver, pos - body))
    return out


def _live_payload_size(data: bytes, body: int, idstr: str) -> int:
    """Bytes of one live chunk: ``block`` up to its EOS record, ``ram`` up to its EOS."""
    pos = body
    if idstr == "block":
        while not int.from_bytes(data[pos : pos + 8], "big") & 0x02:
            pos += 8
        return pos + 8 - body
    return next(a for kind, a, _ in _ram_chunk(data, body) if kind == "end") - body


def _ram_chunk(data: bytes, pos: int) -> Iterator[tuple[str, Any, Any]]:
    """The records of the ``ram`` chunk at ``pos``: ("block", name, length) for each entry
    of a MEM_SIZE list, ("page", block, "r" raw or "f<hex>" uniform), and last ("end",
    offset after the EOS record, None)."""
    last = None
    while True:
        word = int.from_bytes(data[pos : pos + 8], "big")
        flags, pos = word & 0xFFF, pos + 8
        if flags & 0x04:
            total, seen = word & ~0xFFF, 0
            while seen < total:
                n = data[pos]
                length = int.from_bytes(data[pos + 1 + n : pos + 9 + n], "big")
                yield "block", data[pos + 1 : pos + 1 + n].decode(), length
                seen += length
                pos += 1 + n + 8
        if flags & (0x02 | 0x08):
            if not flags & 0x20:
                last = data[pos + 1 : pos + 1 + data[pos]].decode()
                pos += 1 + data[pos]
            if flags & 0x02:
                yield "page", last, f"f{data[pos]:02x}"
                pos += 1
            else:
                yield "page", last, "r"
                pos += 4096
        if flags & 0x10:
            yield "end", pos, None
            return


def ram_pages(data: bytes) -> list[tuple[str, int, str]]:
    """The RAM blocks (name, length, page kinds as runs: "r" raw, "f<hex>" uniform) of a
    stream's START chunk, in the order it lists them."""
    blocks: dict[str, list[str]] = {}
    lengths: dict[str, int] = {}
    for kind, a, b in _ram_chunk(data, data.index(b"\x03ram") + 4 + 8):
        if kind == "block":
            lengths[a], blocks[a] = b, []
        elif kind == "page":
            blocks[a].append(b)
    out = []
    for name, kinds in blocks.items():
        runs = " ".join(f"{len(list(g))}{k}" for k, g in itertools.groupby(kinds))
        out.append((name, lengths[name], runs))
    return out


# -- the model's side --------------------------------------------------------------------


@functools.cache
def model_stream(release: str, machine: str, nic: str, *, now: bool = False) -> bytes:
    """The model's power-on stream; ``now``: on this host's clock, as a real source here
    would save it (a real destination's RTC catches up from the source's clock)."""
    stream = Machine(release, machine, RAM, nic, host_time_ns=time.time_ns() if now else None
                     ).save()
    assert stream is not None
    return stream


def model_outcome(release: str, machine: str, stream: bytes, nic: str) -> str | None:
    """None when the model's destination loads ``stream``, else the refused section (or
    "(stream)" for a refusal outside any section, "(crash)" where it would die)."""
    try:
        Machine.load(release, machine, stream, ram_size=RAM, nic=nic)
    except LoadError as e:
        return e.section or "(stream)"
    except LoadCrash:
        return "(crash)"
    return None


_SECTION_IN_LOG = (
    re.compile(r"Unknown savevm section or instance '([^']+)'"),
    re.compile(r"savevm: unsupported version \d+ for '([^']+)'"),
    re.compile(r"error while loading state for instance 0x[0-9a-f]+ of device '([^']+)'"),
)


def real_section(log: str) -> str | None:
    """The section a real refusal names, if its message names one."""
    for pattern in _SECTION_IN_LOG:
        m = pattern.search(log)
        if m:
            return m.group(1)
    return None


# -- the idle stream of each endpoint ------------------------------------------------------


def assert_same_shape(model: bytes, real: bytes) -> None:
    """The same header, live records, sections (idstr, instance id, version, payload size)
    and RAM blocks (names, lengths and page kinds, in the listed order)."""
    assert model[:8] == real[:8]  # magic and file version (the machine's format)
    assert live_records(model) == live_records(real)
    shape = [(s.idstr, s.instance_id, s.version_id, len(s.payload)) for s in full_sections(model)]
    assert shape == [(s.idstr, s.instance_id, s.version_id, len(s.payload))
                     for s in full_sections(real)]
    assert ram_pages(model) == ram_pages(real)


def payload_differences(release: str, machine: str, model: bytes, real: bytes,
                        **devices: str) -> list[str]:
    """The device payload bytes where the model's stream differs from the real one,
    outside the host-dependent fields."""
    # Where each field of the real stream is, as the model's release reads it.
    tracer = Tracer()
    Machine.load(release, machine, real, ram_size=RAM, tracer=tracer, **devices)
    fields = [m for m in tracer.marks if m.kind == "field"]
    problems = []
    for m_sec, r_sec in zip(full_sections(model), full_sections(real), strict=True):
        if m_sec.payload == r_sec.payload:
            continue
        for at in (i for i, (a, b) in enumerate(zip(m_sec.payload, r_sec.payload, strict=True))
                   if a != b):
            offset = r_sec.offset + at
            mark = next((f for f in fields if f.offset <= offset < f.end), None)
            path = mark.path.partition("/")[2] if mark else "?"
            if mark is None or not host_dependent(r_sec.idstr, path, offset - mark.offset):
                problems.append(f"{r_sec.idstr} {path} (payload byte {at})")
    return problems


@pytest.mark.parametrize("nic", NICS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_the_models_idle_stream_has_the_real_sections_and_ram_blocks(historic, endpoint, nic):
    release, machine, fmt = endpoint
    assert_same_shape(model_stream(release, machine, nic), historic.idle(release, machine, nic))


@pytest.mark.parametrize("nic", NICS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_device_payloads_are_byte_identical_but_for_the_host_dependent_fields(
        historic, endpoint, nic):
    release, machine, fmt = endpoint
    assert payload_differences(release, machine, model_stream(release, machine, nic),
                               historic.idle(release, machine, nic), nic=nic) == []


def test_the_host_dependent_fields_really_differ_between_runs_or_releases(historic):
    """Each exemption is needed: the clock moves between the captures, and the floppy
    controller's FIFO is uninitialised (zeros on some releases, not on others)."""
    streams = [historic.idle(r, m) for r, m, _ in ENDPOINTS]
    # The cached captures may all fall in one second: take one more a second later.
    release, machine, _ = ENDPOINTS[0]
    time.sleep(1.1)
    later = historic.fresh_idle(release, machine)
    rtc = {bytes(s.payload[:10]) for st in (streams[0], later) for s in full_sections(st)
           if s.idstr == "mc146818rtc"}
    fifos = {bytes(s.payload[9:9 + 512]) for st in streams for s in full_sections(st)
             if s.idstr == "fdc"}
    assert len(rtc) > 1 and len(fifos) > 1


# -- the analyzer on the real streams ---------------------------------------------------------


@pytest.mark.parametrize("nic", NICS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ENDPOINT_IDS)
def test_every_real_stream_decodes_in_the_analyzer(historic, endpoint, nic):
    """Each real idle stream decodes to its EOF, writer given or inferred; the inferred
    writer is the real program's release, with its NIC, and every section it lists."""
    from harness.analyze import analyze

    release, machine, fmt = endpoint
    real = historic.idle(release, machine, nic)
    given = analyze(real, release=release, machine=machine)
    assert given.complete and not given.trailing_bytes, given.error
    inferred = analyze(real)
    assert inferred.complete and not inferred.trailing_bytes, inferred.error
    assert inferred.writer["nic"] == nic
    # Inference names the newest machine that decodes the stream exactly and lists the
    # others that do (the machine types of a release, 0.15.0 and the sentinel series on
    # pc-0.14 write the same sections, versions and layouts at idle): the real one is
    # among them.
    named = [inferred.writer["endpoint"], *inferred.writer.get("also", [])]
    assert f"{release}/{machine}" in named, named
    if inferred.writer["release"] != release:
        assert (release, inferred.writer["endpoint"]) == ("0.15", "new/pc-0.14")
    assert [s.idstr for s in inferred.sections if s.kind == "FULL"] == \
        [s.idstr for s in full_sections(real)]
    assert not any(n.startswith("never sent") for n in inferred.notes), inferred.notes


# -- the idle 7x7 ----------------------------------------------------------------------------


@pytest.mark.parametrize("nic", NICS)
def test_the_idle_7x7_loads_and_refuses_as_the_real_programs_do(historic, nic):
    """Every real idle stream into every other endpoint, real and modelled: the model loads
    exactly what the real program loads (42 of 42 cells), and refuses the rest in the
    section the real program names (when its message names one). The real programs load
    the model's streams exactly where they load their own (hybrid cells); that costs 42
    more runs, so only QEMU's default NIC does it."""
    disagree, misplaced, hybrid_off = [], [], []
    for src, dst in PAIRS:
        pair = f"{src[0]}/{src[1]} -> {dst[0]}/{dst[1]}"
        real = historic.accepts(dst[0], dst[1], historic.idle(src[0], src[1], nic), nic)
        model = model_outcome(dst[0], dst[1], historic.idle(src[0], src[1], nic), nic)
        if (model is None) != (real is None):
            disagree.append(f"{pair}: model {model or 'loads'}, real {real or 'loads'}")
        named = real_section(real or "")
        if named is not None and model != named:
            misplaced.append(f"{pair}: model refuses at {model}, the real program at {named}")
        if nic == "e1000":
            hybrid = historic.accepts(dst[0], dst[1],
                                      model_stream(src[0], src[1], nic, now=True), nic)
            if (hybrid is None) != (real is None) or real_section(hybrid or "") != named:
                hybrid_off.append(f"{pair}: the model's stream {hybrid or 'loads'}, "
                                  f"the real one {real or 'loads'}")
    assert disagree == [] and misplaced == [] and hybrid_off == []


# -- RHEL 6: both builds on every machine type, rhel5.x included -------------------------------

RHEL_ENDPOINTS = [(r, m.name) for r in ("rhel6.1", "rhel6.2") for m in RELEASES[r].machines]
# (nic, vga) as on the command line: RHEL's own rtl8139, an e1000 instead, no NIC, and the
# rtl8139 without a VGA (the RAM blocks upstream 0.13/0.14 have with -vga none).
RHEL_DEVICES = [("rtl8139", "cirrus"), ("e1000", "cirrus"), ("none", "cirrus"),
                ("rtl8139", "none")]


@pytest.mark.parametrize(("nic", "vga"), RHEL_DEVICES, ids=[f"{n}-{v}" for n, v in RHEL_DEVICES])
@pytest.mark.parametrize(("release", "machine"), RHEL_ENDPOINTS,
                         ids=[f"{r}/{m}" for r, m in RHEL_ENDPOINTS])
def test_the_models_rhel_idle_stream_is_the_real_one(historic, release, machine, nic, vga):
    """The rows of rhel6.md on every machine type: the rhel5.x ones set rombar=0 on every
    PCI device, so their streams list no option ROM blocks (the NIC's and the VGA's ROMs go
    through fw_cfg into pc.rom), and the model's do not either."""
    real = historic.idle(release, machine, nic, vga)
    model = Machine(release, machine, RAM, nic, vga=vga).save()
    assert_same_shape(model, real)
    assert payload_differences(release, machine, model, real, nic=nic, vga=vga) == []
    roms = [name for name, _, _ in ram_pages(real) if name.startswith("0000:")]  # PCI ROMs
    assert bool(roms) == get_release(release).machine(machine).rom_bars or (
        nic == "none" and vga == "none")


@pytest.mark.parametrize(("nic", "vga"), RHEL_DEVICES, ids=[f"{n}-{v}" for n, v in RHEL_DEVICES])
@pytest.mark.parametrize(("release", "machine"), RHEL_ENDPOINTS,
                         ids=[f"{r}/{m}" for r, m in RHEL_ENDPOINTS])
def test_every_real_rhel_stream_decodes_in_the_analyzer(historic, release, machine, nic, vga):
    """Writer given or inferred, with the real NIC and VGA. (Inferred, an idle RHEL
    stream is named as the newest machine that writes it alike, the others listed: 6.1
    and 6.2 write the same sections, and the machine types differ on the wire only in
    the rhel5.x ones' missing ROM blocks; the real one is among those named.)"""
    from harness.analyze import analyze

    real = historic.idle(release, machine, nic, vga)
    given = analyze(real, release=release, machine=machine)
    assert given.complete and not given.trailing_bytes, given.error
    inferred = analyze(real)
    assert inferred.complete and not inferred.trailing_bytes, inferred.error
    assert (inferred.writer["nic"], inferred.writer["vga"]) == (nic, vga)
    named = [inferred.writer["endpoint"], *inferred.writer.get("also", [])]
    assert f"{release}/{machine}" in named, named
    rhel5 = machine.startswith("rhel5")
    assert all(n.split("/")[1].startswith("rhel5") == rhel5 for n in named), named
