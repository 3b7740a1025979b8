"""The stream analyzer: decodes every release's stream back to its state, with offsets;
replays a destination's reading and finds where it parts from the writer's."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.analyze import Input, analyze, render_text
from harness.emulator.machine import Machine, state_key
from harness.emulator.releases import RELEASES
from harness.emulator.vmstate import dump_state
from harness.scenarios import SCENARIOS, apply_scenario

from .devtools import SAVE_DIES

REPO = Path(__file__).resolve().parent.parent
SMALL_RAM = 1 << 20


def saved(release: str, machine: str, scenario: str, seed: int = 0):
    m = Machine(release, machine, SMALL_RAM, media=SCENARIOS[scenario].media)
    sc = apply_scenario(m, scenario, seed)
    return m, m.save(passes=sc.live_passes, workload=sc.workload)


def endpoints():
    for r in RELEASES.values():
        for mt in r.machines:
            yield r.name, mt.name



CASES = [(r, m, s) for r, m in endpoints() for s in SCENARIOS
         if SCENARIOS[s].expressible_on(RELEASES[r]) and (r, s) not in SAVE_DIES]


@pytest.mark.parametrize("release,machine,scenario", CASES,
                         ids=[f"{r}/{m}-{s}" for r, m, s in CASES])
def test_decodes_every_stream_back_to_the_saved_state(release, machine, scenario):
    src, stream = saved(release, machine, scenario)
    a = analyze(stream, release=release, machine=machine)
    assert a.complete and not a.trailing_bytes, a.error
    # The fields as the descriptions saved them (Machine.state is the guest's view,
    # which folds layouts of different releases into one form).
    state = {state_key(s): dump_state(s.desc, s.obj) for _, s in src.device_sections()}
    decoded = a.state()
    assert set(decoded) == set(state)
    compared = 0
    for section, fields in decoded.items():
        for path, value in fields.items():
            if path not in state[section]:
                continue  # a field the description names apart from its device attribute
            assert state[section][path] == value, f"{section}/{path}"
            compared += 1
    assert compared >= 0.95 * sum(len(f) for f in decoded.values())
    # Every element has a place in the stream, and they tile it in order.
    leaves = [e for e in a.elements if e.kind not in ("struct",)]
    for prev, cur in zip(leaves, leaves[1:], strict=False):
        assert cur.offset >= prev.end, (prev, cur)
    assert a.eof_offset == len(stream) - 1
    ram = {b["name"]: b for b in a.ram["blocks"]}
    assert sum(b["zero"] + b["fill"] + b["page"] for b in ram.values()) >= sum(
        b.npages for b in src.ram)


def test_writer_is_inferred_when_not_given():
    _, stream = saved("0.15", "pc", "atapi-media-event")
    a = analyze(stream)
    assert a.complete
    assert a.writer["inferred"]
    assert "ide_drive/atapi/gesn_state" in RELEASES[a.writer["release"]].subsections
    _, stream4 = saved("new", "pc", "idle")
    assert analyze(stream4).writer["endpoint"] == "new/pc"


def test_json_shape():
    _, stream = saved("0.14", "pc", "ide-pio")
    doc = json.loads(json.dumps(analyze(stream, release="0.14").to_dict()))
    assert doc["schema"] == "migmatrix/analysis/1"
    assert doc["complete"] is True and doc["error"] is None
    kinds = {e["kind"] for e in doc["elements"]}
    assert {"header", "section", "field", "struct", "subsection", "ram", "eof"} <= kinds
    for e in doc["elements"]:
        assert isinstance(e["offset"], int) and isinstance(e["size"], int)
    sub = next(e for e in doc["elements"] if e["kind"] == "subsection")
    assert sub["value"] == "ide_drive/pio_state" and sub["path"].endswith("ifs[0]")
    assert {b["name"] for b in doc["ram"]["blocks"]} >= {"pc.ram", "pc.bios"}
    assert all(set(s) >= {"idstr", "offset", "size", "section_id"} for s in doc["sections"])


def test_truncated_stream_reports_the_offset():
    _, stream = saved("0.14", "pc", "idle")
    cut = len(stream) - 40
    a = analyze(stream[:cut], release="0.14")
    assert not a.complete
    assert a.error["reason"] == "truncated" and a.error["offset"] <= cut
    assert "stopped: truncated input" in render_text(a)


def test_cli_reads_stdin_streaming(tmp_path):
    _, stream = saved("0.15", "pc", "ide-bus-error")
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, argparse; from harness import analyze;"
         "p=argparse.ArgumentParser(); s=p.add_subparsers(); analyze.configure_parser(s);"
         "a=p.parse_args(sys.argv[1:]); sys.exit(a.func(a))", "analyze", "-", "--json"],
        input=stream, capture_output=True, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["complete"] and doc["bytes"] == len(stream)


class _Pipe(io.RawIOBase):
    """A non-seekable source that hands out small pieces, as a pipe does."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = 4096 if n < 0 else min(n, 4096)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


def test_non_seekable_input_is_spooled_for_inference_and_replay():
    _, stream = saved("0.15", "pc", "ide-bus-error")
    inp = Input(_Pipe(stream))
    assert not inp.seekable
    a = analyze(inp, as_destination="0.14/pc")
    assert a.complete and a.divergence["diverges"]


def _sub_offset(a, name):
    return next(e.offset for e in a.elements if e.kind == "subsection" and e.value == name)


def test_as_destination_names_the_first_section_the_destination_does_not_know():
    """0.15 registers the PIT as i8254 instance 0 (0x40 its legacy alias, matched only on
    a newer loader); 0.14 knows only instance 0x40 and refuses the stream there, long
    before the IDE whose ide_bus/error it would misread (as the real 0.14 does)."""
    _, stream = saved("0.15", "pc", "collide-eof")
    a = analyze(stream, release="0.15", as_destination="0.14/pc")
    d = a.divergence
    pit = next(s for s in a.sections if s.idstr == "i8254")
    assert d["diverges"] and d["offset"] == pit.offset
    assert d["writer"]["kind"] == "section" and d["writer"]["value"].endswith("i8254")
    assert d["destination_reading"]["kind"] == "rejected"
    assert d["outcome"]["status"] == "rejected"
    assert d["outcome"]["reason"] == "unknown_section" and d["outcome"]["section"] == "i8254"
    assert d["offset"] < _sub_offset(a, "ide_bus/error")
    text = render_text(a)
    assert "first divergence" in text and "i8254" in text


def test_as_destination_collide_0x05_spurious_rejections():
    """Parent data 0x05 after an embedded struct: 0.13 (always-peek) takes xmm_regs[1]
    for a subsection; 0.14's bmdma (which defines subsections) takes bus[0].cmd for one."""
    _, stream = saved("0.14", "pc", "collide-0x05")
    a = analyze(stream, release="0.14", as_destination="0.13/pc")
    d = a.divergence
    xmm1 = next(e for e in a.elements if e.kind == "struct" and e.path == "cpu/xmm_regs[1]")
    assert d["offset"] == xmm1.offset
    assert d["writer"]["kind"] == "field" and d["destination_reading"]["kind"] == "subsection"
    assert d["outcome"]["status"] == "rejected" and d["outcome"]["offset"] == xmm1.offset
    b = analyze(stream, release="0.14", as_destination="0.14/pc")
    cmd = next(e for e in b.elements if e.kind == "field"
               and e.path.endswith("ide/bus[0]/cmd"))
    assert b.divergence["offset"] == cmd.offset
    assert b.divergence["outcome"]["reason"] == "unknown_subsection"
    # 1.0 would read the 0x05 right, but never gets there: it refuses 0.14's e1000 first
    # (1.0 checks the read-only PCI status bits; 0.14's e1000 sets the capability bit).
    c = analyze(stream, release="0.14", as_destination="1.0/pc")
    e1000 = next(s for s in c.sections if s.idstr.endswith("/e1000"))
    assert c.divergence["outcome"]["reason"] == "invalid_value"
    assert c.divergence["outcome"]["section"] == e1000.idstr
    assert e1000.offset <= c.divergence["offset"] < cmd.offset


def test_as_destination_same_release_agrees():
    _, stream = saved("0.15", "pc", "random", 1)
    a = analyze(stream, release="0.15", as_destination="0.15/pc")
    assert a.divergence["diverges"] is False


def test_as_destination_takes_the_destinations_nic_and_vga_or_the_streams_own():
    """RHEL 6.2 with -vga none (its rtl8139): 0.14 with the same NIC and no VGA has the
    same RAM blocks and half-loads it; started with its cirrus VGA it refuses the blocks."""
    m = Machine("rhel6.2", "rhel6.2.0", SMALL_RAM, vga="none")
    stream = m.save()
    matched = analyze(stream, release="rhel6.2", as_destination="0.14/pc")
    assert (matched.divergence["nic"], matched.divergence["vga"]) == ("rtl8139", "none")
    assert matched.divergence["outcome"]["status"] == "half-loaded"
    with_vga = analyze(stream, release="rhel6.2", as_destination="0.14/pc", vga="cirrus",
                       nic="e1000")
    assert (with_vga.divergence["nic"], with_vga.divergence["vga"]) == ("e1000", "cirrus")
    assert with_vga.divergence["outcome"]["status"] == "rejected"
    assert with_vga.divergence["outcome"]["section"] == "ram"


def _qmp(sock_path: str):
    s = socket.socket(socket.AF_UNIX)
    for _ in range(100):
        try:
            s.connect(sock_path)
            break
        except OSError:
            time.sleep(0.05)
    f = s.makefile("rw")
    json.loads(f.readline())

    def cmd(name: str, args: dict | None = None) -> dict:
        f.write(json.dumps({"execute": name, **({"arguments": args} if args else {})}) + "\n")
        f.flush()
        while True:
            reply = json.loads(f.readline())
            if "return" in reply or "error" in reply:
                return reply

    return s, cmd


@pytest.fixture(scope="module")
def qemu_stream(tmp_path_factory):
    exe = shutil.which("qemu-system-x86_64")
    if exe is None:
        if os.environ.get("CI") == "true" and os.environ.get("MIGMATRIX_REQUIRE_QEMU") == "1":
            pytest.fail("qemu-system-x86_64 is required (MIGMATRIX_REQUIRE_QEMU=1)")
        pytest.skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    d = tmp_path_factory.mktemp("qemu")
    sock, out = str(d / "qmp.sock"), d / "qemu.mig"
    proc = subprocess.Popen([exe, "-M", "pc-i440fx-7.2", "-nodefaults", "-display", "none",
                             "-S", "-m", "64", "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        s, cmd = _qmp(sock)
        cmd("qmp_capabilities")
        assert "return" in cmd("migrate", {"uri": f"exec:cat > {out}"})
        for _ in range(200):
            status = cmd("query-migrate")["return"].get("status")
            if status in ("completed", "failed"):
                break
            time.sleep(0.05)
        assert status == "completed"
        cmd("quit")
        s.close()
    finally:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def test_real_qemu_stream_decodes_through_its_vmdescription(qemu_stream):
    a = analyze(str(qemu_stream))
    assert a.format == "qemu" and a.complete, a.error
    assert a.qemu["machine_type"] == "pc-i440fx-7.2" and a.qemu["section_footers"]
    assert a.qemu["vmdescription"]["devices"] >= 20
    kinds = {e.kind for e in a.elements}
    assert {"configuration", "footer", "field", "ram", "eof", "vmdescription"} <= kinds
    assert {b["name"] for b in a.ram["blocks"]} >= {"pc.ram", "pc.bios"}
    assert a.bytes_read == qemu_stream.stat().st_size
    with open(qemu_stream, "rb") as f:  # through a pipe, the description read last
        b = analyze(Input(_Pipe(f.read())))
    assert b.format == "qemu" and b.complete
    assert len(b.elements) == len(a.elements)


@pytest.mark.parametrize("window", [None, 10_000, 1 << 20], ids=["bytes", "10k", "1M"])
def test_ram_runs_of_every_length_are_counted_exactly(tmp_path, window):
    """Pages, zero pages and filled pages interleaved in runs of 1 to 300 records (across
    the bulk counter's probes and the reader's windows of a mapped file) are counted one
    by one, as the general loop would count them, and the section ends at its EOS."""
    from harness.analyze.ram import F_CONTINUE, F_EOS, F_PAGE, F_ZERO, RamSummary
    from harness.emulator.stream import MappedFile, StreamReader

    out = bytearray((0 | F_ZERO).to_bytes(8, "big") + bytes([6]) + b"pc.ram" + b"\0")
    expected = {"zero": 1, "fill": 0, "page": 0}
    addr = 4096
    for i, n in enumerate([1, 63, 64, 65, 127, 128, 129, 300, 2, 1, 191, 192, 193]):
        for _ in range(n):
            if i % 3 == 0:
                out += (addr | F_CONTINUE | F_PAGE).to_bytes(8, "big") + bytes([i]) * 4096
                expected["page"] += 1
            else:
                out += (addr | F_CONTINUE | F_ZERO).to_bytes(8, "big") + bytes([i % 2])
                expected["fill" if i % 2 else "zero"] += 1
            addr += 4096
    out += F_EOS.to_bytes(8, "big")
    if window is None:
        r = StreamReader(bytes(out))
    else:
        (tmp_path / "ram").write_bytes(out)
        with open(tmp_path / "ram", "rb") as f:
            r = StreamReader(MappedFile(f, window=window))
    ram = RamSummary(4, qemu=True)
    ram.load(r, 4)
    assert r.offset == len(out)
    block = ram.summary()["blocks"][0]
    assert {k: block[k] for k in expected} == expected
    assert ram.last_chunk["records"] == sum(expected.values()) + 1


@pytest.mark.parametrize("release", ["0.14", "new", "1.0"])
def test_a_decode_asked_to_stop_reads_what_the_whole_decode_reads_up_to_there(release):
    """``until`` (a cell's byte window near the start): every mark before the first
    section at or past the offset is the whole decode's, and nothing after it is read."""
    from harness.analyze import decode_modelled
    from harness.analyze.modelled import release_named

    m = Machine(release, "pc", 1 << 20)
    stream = m.save()
    whole = analyze(stream, release=release, machine="pc")
    sections = [x.offset for x in whole.tracer_marks if x.kind == "section"]
    for until in (9, 52, sections[3] + 1, sections[-2]):
        part = decode_modelled(Input(stream), release_named(release), "pc", nic=m.nic,
                               vga=m.vga, until=until)
        stop = part.bytes_read  # a section, or a section's payload, at or past ``until``
        assert until <= stop <= min(o for o in sections if o >= until)
        assert part.error is None and not part.complete
        assert part.tracer_marks == [x for x in whole.tracer_marks if x.offset < stop]
        assert max(x.end for x in part.tracer_marks) <= stop
        assert f"decoded up to offset {stop} only" in part.notes[-1]
        if until == 52:  # the RAM section's header ends there: its pages are not read
            assert stop == 52 and part.tracer_marks[-1].kind == "section"


def test_inference_names_every_machine_that_writes_the_stream_alike():
    """Without a writer given: the newest machine whose sections and RAM blocks are the
    stream's, and the others that decode it exactly as well (the stream cannot tell
    them apart); a machine without the stream's ROM blocks is not among them."""
    a = analyze(Machine("1.0", "pc-0.14", 1 << 20).save())
    assert a.writer["endpoint"] == "1.0/pc" and "1.0/pc-0.14" in a.writer["also"]
    assert "does not say which of them wrote it" in a.notes[-1]
    rhel5 = analyze(Machine("rhel6.2", "rhel5.4.0", 1 << 20).save())
    named = [rhel5.writer["endpoint"], *rhel5.writer["also"]]
    assert "rhel6.2/rhel5.4.0" in named and all("/rhel5." in n for n in named), named
    new = analyze(Machine("new", "pc", 1 << 20).save())
    assert new.writer["endpoint"] == "new/pc" and "also" not in new.writer
