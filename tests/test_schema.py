"""Schema dump and diff: the known 0.14 -> 0.15 differences (devices.md), nothing spurious
between a release and itself, and predictions that agree with the matrix's verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.emulator.releases import RELEASES
from harness.schema import diff, dump, load_schema, predict, predict_cell, scenario_facts

REPO = Path(__file__).resolve().parent.parent


def problems(src: str, dst: str, severity: str | None = None):
    ps = diff(dump(*src.split("/")), dump(*dst.split("/")))
    return [p for p in ps if severity is None or p.severity == severity]


def test_dump_has_every_section_with_embedded_descriptions():
    d = dump("0.15", "pc")
    assert d["peek"] == "peek-if-defined" and d["stream_format"] == 3
    ide = next(s for s in d["sections"] if s["idstr"].endswith("/ide"))
    bus = next(f for f in ide["description"]["fields"] if f["name"] == "bus")
    assert bus["embedded"] and bus["count"] == 2 and bus["version_id"] == 1
    assert [s["name"] for s in bus["struct"]["subsections"]] == ["ide_bus/error"]
    pci = next(f for f in ide["description"]["fields"] if f["name"] == "dev")
    assert pci["struct"]["size"] == 276  # PCIDevice: 4 + 256 + 16
    json.dumps(d)


def test_0_15_to_0_14_finds_the_documented_differences():
    ps = problems("0.15/pc", "0.14/pc")
    by_sub = {p.subsection: p for p in ps if p.subsection}
    assert by_sub["ide_bus/error"].severity == "error"
    assert by_sub["ide_bus/error"].kind == "subsection-misparse"
    for name in ("ide bmdma/status", "ide_drive/atapi/gesn_state", "cpu/fpop_ip_dp"):
        assert by_sub[name].severity == "warning" and by_sub[name].kind == "subsection-unknown"
    renamed = [p for p in ps if p.kind == "field-renamed"]
    assert len(renamed) == 1 and "migration_compat_status" in renamed[0].where
    variants = {p.where for p in ps if p.kind == "variant"}
    assert variants == {"bmdma.status", "pio_state.needed", "cpu.pat", "pit.ids",
                        "piix4_pm.gpe"}
    # The i8254 written as instance 0, which 0.14 does not know; piix4_pm's GPE arrays.
    errors = {(p.kind, p.where) for p in ps if p.severity == "error" and not p.subsection}
    assert errors == {("section-missing", "i8254"),
                      ("field-resized", "0000:00:01.3/piix4_pm/gpe/sts"),
                      ("field-resized", "0000:00:01.3/piix4_pm/gpe/en")}


def test_0_14_to_0_15_differs_only_in_the_gpe_arrays():
    """0.15 reads 0.14's i8254 0x40 through its alias; what breaks is piix4_pm."""
    ps = [p for p in problems("0.14/pc", "0.15/pc") if p.severity != "info"]
    assert {(p.kind, p.where) for p in ps} == {
        ("field-resized", "0000:00:01.3/piix4_pm/gpe/sts"),
        ("field-resized", "0000:00:01.3/piix4_pm/gpe/en")}
    notes = {p.where for p in problems("0.14/pc", "0.15/pc") if p.kind == "section-not-sent"}
    assert notes == set()  # port92 is in both: 0.13 is the release without it
    assert {p.where for p in problems("0.13/pc", "0.14/pc")
            if p.kind == "section-not-sent"} == {"port92"}


@pytest.mark.parametrize("endpoint", ["0.13/pc", "0.14/pc", "0.15/pc", "1.0/pc",
                                      "1.0/pc-0.14"])
def test_nothing_spurious_between_a_release_and_itself(endpoint):
    assert problems(endpoint, endpoint) == []


def test_always_peek_self_diff_names_only_the_documented_hazards():
    kinds = {p.kind for p in problems("new/pc-0.14", "new/pc-0.14")}
    assert kinds == {"subsection-siblings", "subsection-after-array"}
    after = [p for p in problems("new/pc-0.14", "new/pc-0.14")
             if p.kind == "subsection-after-array"]
    assert {p.where for p in after} == {"cpu"}
    # Format 4 closes ymmh_regs[15] with a sentinel: only the sibling hazard remains.
    assert {p.kind for p in problems("new/pc", "new/pc")} == {"subsection-siblings"}


def test_format_mismatch_and_embedded_misparse_two_levels_deep():
    ps = problems("new/pc", "0.14/pc", "error")
    assert {p.kind for p in ps} >= {"stream-format", "subsection-misparse"}
    assert any(p.subsection == "fdrive/media_changed" and "drives[]" in p.where for p in ps)


def test_cli_exit_status_counts_errors(tmp_path):
    out = tmp_path / "015.json"
    run = [sys.executable, "-c", "import sys, argparse; from harness import schema;"
           "p=argparse.ArgumentParser(); s=p.add_subparsers(); schema.configure_parser(s);"
           "a=p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"]
    assert subprocess.run([*run, "schema", "dump", "--release", "0.15", "-o", str(out)],
                          cwd=REPO, check=False).returncode == 0
    res = subprocess.run([*run, "schema", "diff", str(out), "0.14/pc"], cwd=REPO,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 1
    # ide_bus/error, the i8254's instance, the two GPE arrays
    assert "0.15/pc -> 0.14/pc: 4 error(s)" in res.stderr
    lines = res.stdout.splitlines()
    assert any(line.startswith("error") and "ide_bus/error" in line for line in lines)
    assert any(line.startswith("error") and "i8254" in line for line in lines)
    same = subprocess.run([*run, "schema", "diff", "0.14/pc", "0.14/pc"], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert same.returncode == 0 and same.stdout == ""


def test_predictions_from_facts():
    facts = scenario_facts("0.15", "pc", "ide-bus-error")
    assert "ide_bus/error" in [s["name"] for s in facts["subsections"]]
    # 0.14 never reaches the IDE: it has no i8254 instance 0 (as the real 0.14 says).
    p = predict("0.15/pc", "0.14/pc", facts)
    assert p.verdicts == {"rejected"} and p.reason.startswith("i8254")
    # The pair the real builds load (0.15 -> the sentinel series on pc-0.14).
    assert predict("0.15/pc", "new/pc-0.14", facts).verdicts == {"pass"}
    assert predict("0.13/pc", "0.14/pc", scenario_facts("0.13", "pc", "idle")).verdicts == {
        "pass"}
    collide = scenario_facts("0.14", "pc", "collide-0x05")
    assert len(collide["collisions"]) == 2
    assert predict("0.14/pc", "0.13/pc", collide).verdicts == {"rejected"}
    own = predict("0.14/pc", "0.14/pc", collide)
    assert own.verdicts == {"rejected"} and "peeks" in own.reason
    # 1.0's e1000 has no capability list: its load refuses 0.14's config space.
    e1000 = predict("0.14/pc", "1.0/pc", collide)
    assert e1000.verdicts == {"rejected"} and "read-only bits of status" in e1000.reason
    # Without it (an RTL8139 on both): a GPE block saved as two u16 and read as two
    # arrays, desynchronised.
    rtl = scenario_facts("0.14", "pc", "collide-0x05", nic="rtl8139")
    assert predict(dump("0.14", "pc", "rtl8139"), dump("1.0", "pc", "rtl8139"),
                   rtl).verdicts == {"corrupted", "truncated", "rejected"}
    sentinel = scenario_facts("new", "pc", "collide-0x05")
    assert predict("new/pc", "new/pc", sentinel).verdicts == {"pass"}
    assert predict("new/pc", "0.15/pc", None).verdicts == {"rejected"}
    static = predict("0.15/pc", "0.14/pc", None, subsections={"ide_drive/atapi/gesn_state"})
    assert static.verdicts == {"rejected"}


def test_predict_cell_agrees_with_the_default_matrix():
    from harness.drivers import get_driver
    from harness.matrix import load_matrix
    from harness.verdict import classify

    cells = load_matrix(REPO / "matrix" / "default.toml").cells()
    driver = get_driver("inprocess")
    wrong = []
    for cell in cells:
        p = predict_cell(cell)
        assert p["verdicts"], p["reason"]
        verdict = classify(driver.run_cell(cell)).value
        if verdict not in p["verdicts"]:
            wrong.append((cell.id, verdict, p))
    assert wrong == []


def test_a_source_that_dies_saving_is_predicted_crashed():
    from harness.matrix import Cell, Endpoint

    src = Endpoint("rhel6.1/rhel6.1.0", "rhel6.1", "rhel6.1.0", 2 << 20)
    dst = Endpoint("rhel6.2/rhel6.2.0", "rhel6.2", "rhel6.2.0", 2 << 20)
    p = predict_cell(Cell(src, dst, "atapi-media-event", 0, ("pass",), "test"))
    assert p["verdicts"] == ["crashed"] and "SIGSEGV" in p["reason"]


def test_every_release_is_dumpable():
    for r in RELEASES.values():
        for m in r.machines:
            assert dump(r.name, m.name)["sections"]


def test_fixed_hardware_differences_refuse_whatever_the_guest_did():
    """What no guest changes and a destination compares: the read-only bits of a PCI
    function's config space (QEMU's pci_device_load), and the RAM blocks a version-4
    stream lists by name and length (the destination may have more)."""
    problems = diff(dump("0.15", "pc"), dump("1.0", "pc"))
    (pci,) = [p for p in problems if p.kind == "pci-read-only"]
    assert pci.where == "0000:00:03.0/e1000/dev/config"
    assert "status (config 0x06) differ: stream 0x10, destination 0x00" in pci.message
    assert not [p for p in diff(dump("1.0", "pc"), dump("1.0", "pc-0.14"))
                if p.kind == "pci-read-only"]
    blocks = diff(dump("rhel6.2", "rhel6.2.0"), dump("rhel6.2", "rhel5.4.0"))
    assert {p.where for p in blocks if p.kind == "ram-block-missing"} == {
        "ram/0000:00:03.0/rtl8139.rom", "ram/0000:00:02.0/cirrus_vga.rom"}
    assert not [p for p in diff(dump("rhel6.2", "rhel5.4.0"), dump("rhel6.2", "rhel6.2.0"))
                if p.kind.startswith("ram-block")]  # more blocks than the stream: fine
    no_vga = diff(dump("0.14", "pc"), dump("0.14", "pc", vga="none"))
    assert "ram/vga.vram" in {p.where for p in no_vga if p.kind == "ram-block-missing"}
    assert predict("0.15/pc", "1.0/pc").verdicts == {"rejected"}


def test_a_release_whose_load_corrupts_is_predicted_so():
    """RHEL 6 sets palette bytes 232-235 on every load (the inner post_load on the
    wrapper): a load into it may pass only if the source's palette holds 0xff there."""
    into_rhel = predict(dump("rhel6.2", "rhel6.2.0"), dump("rhel6.2", "rhel6.2.0"),
                        scenario_facts("rhel6.2", "rhel6.2.0", "idle"))
    assert into_rhel.verdicts == {"pass", "corrupted"} and "palette" in into_rhel.reason
    from_rhel = predict(dump("rhel6.2", "rhel6.2.0", "e1000"), dump("0.13", "pc"), None)
    assert "palette" not in from_rhel.reason


def test_the_first_problem_the_stream_reaches_decides():
    """RHEL 6.2 -> 0.13 with the RAM blocks matched: 0.13 refuses RHEL's ioapic v2, but
    the cpu section before it is laid out otherwise and the real 0.13 reads a 0x00 there
    as the end of the stream (a half-load): a refusal further on is not the prediction."""
    src = dump("rhel6.2", "rhel6.2.0", "rtl8139", "none")
    dst = dump("0.13", "pc", "rtl8139", "none")
    problems = diff(src, dst)
    ioapic = next(p for p in problems if p.kind == "version-too-new" and p.where == "ioapic")
    first = min((p for p in problems if p.severity == "error"), key=lambda p: p.order)
    assert first.order < ioapic.order and first.where.startswith("cpu")
    p = predict(src, dst, scenario_facts("rhel6.2", "rhel6.2.0", "idle", nic="rtl8139",
                                         vga="none"))
    assert "truncated" in p.verdicts and "desynchronised" in p.reason
    # the header comes before every section
    assert predict("new/pc", "0.14/pc").reason.startswith("header")


def test_a_load_hazard_needs_the_section_on_both_sides_and_old_dumps_still_read(tmp_path,
                                                                                capsys):
    no_vga = predict(dump("rhel6.2", "rhel6.2.0", vga="none"),
                     dump("rhel6.2", "rhel6.2.0", vga="none"))
    assert no_vga.verdicts == {"pass"}
    old = dump("0.15", "pc")
    for key in ("ram", "nic", "vga"):
        del old[key]
    for s in old["sections"]:
        s.pop("pci", None)
    old["schema"] = "migmatrix/schema/1"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert not [p for p in diff(load_schema(str(path)), dump("1.0", "pc"))
                if p.kind == "pci-read-only"]
    assert "not compared" in capsys.readouterr().err


def test_a_destination_whose_field_list_runs_past_its_end_is_predicted_to_crash():
    """RHEL 6.1's gesn_state has no end marker: loading the subsection takes the
    ide-drive device info as a field and dies (the real 6.1 build: SIGBUS in about half
    the runs, the next save in the others)."""
    facts = scenario_facts("rhel6.2", "rhel6.2.0", "atapi-media-event")
    p = predict(dump("rhel6.2", "rhel6.2.0"), dump("rhel6.1", "rhel6.1.0"), facts)
    assert p.verdicts == {"crashed"} and "no end marker" in p.reason
    assert "crashed" not in predict(dump("rhel6.2", "rhel6.2.0"), dump("rhel6.2", "rhel6.2.0"),
                                    facts).verdicts
