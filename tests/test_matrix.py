"""Matrix files, expectations, known issues, and what the shipped matrices demonstrate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.emulator.releases import RELEASES
from harness.matrix import (
    Endpoint,
    MatrixError,
    load_matrix,
    matrix_ref,
    resolve_matrix,
    shipped_matrices,
)
from harness.runner import ResultsFile, header, run_cells
from harness.scenarios import SCENARIOS
from harness.verdict import Outcome, Verdict, classify

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "matrix" / "default.toml"
HISTORY = ROOT / "matrix" / "history.toml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.toml"
    p.write_text(text)
    return p


MINIMAL = '[[endpoint]]\nname = "0.14/pc"\n'


# -- loading -----------------------------------------------------------------------------


def test_an_endpoint_without_a_nic_has_its_releases_own(tmp_path: Path) -> None:
    """As QEMU without -net options: e1000, rtl8139 on RHEL 6; in a matrix file and in
    code alike."""
    m = load_matrix(write(tmp_path, '[[endpoint]]\nname = "rhel6.1/rhel6.1.0"\n'
                          '[[endpoint]]\nname = "0.14/pc"\n'
                          '[[endpoint]]\nname = "rhel6.2/rhel6.2.0"\nnic = "e1000"\n'))
    assert [e.nic for e in m.endpoints] == ["rtl8139", "e1000", "e1000"]
    assert Endpoint("r", "rhel6.1", "rhel6.0.0").nic == "rtl8139"
    assert Endpoint("u", "0.14", "pc").nic == "e1000"
    assert Endpoint("r", "rhel6.2", "rhel6.2.0", nic="none").nic == "none"


def test_default_matrix_shape() -> None:
    m = load_matrix(DEFAULT)
    assert [e.name for e in m.endpoints] == ["0.14/pc", "new/pc-0.14", "new/pc"]
    cells = m.cells()
    # 9 pairs x every scenario instance (random x3), minus what 0.14 cannot express
    instances = len(SCENARIOS) + 2
    inexpressible = [s for s in SCENARIOS.values() if not s.expressible_on(RELEASES["0.14"])]
    assert {s.name for s in inexpressible} == {"atapi-media-event", "atapi-two-subsections",
                                               "cpu-fpu-ip", "cpu-two-subsections",
                                               "cpu-misc-enable", "collide-eof"}
    # ... and what the new endpoints cannot: 1.0's cpu/msr_ia32_misc_enable
    assert len(cells) == 9 * instances - 3 * len(inexpressible) - 6 * 1
    assert "0.14/pc->new/pc-0.14[ide-bus-error]" in {c.id for c in cells}
    assert "0.14/pc->0.14/pc[atapi-media-event]" in {i for i, _ in m.excluded}
    ids = [c.id for c in cells]
    assert len(set(ids)) == len(ids)
    assert "new/pc->new/pc[random:2]" in ids


def test_expectations_follow_releases_md() -> None:
    cells = {c.id: c for c in load_matrix(DEFAULT).cells()}
    for pair in ("0.14/pc->new/pc-0.14", "new/pc-0.14->0.14/pc", "new/pc->new/pc", "0.14/pc->0.14/pc"):
        assert cells[f"{pair}[idle]"].expected == ("pass",), pair
    for pair in ("new/pc->0.14/pc", "new/pc->new/pc-0.14", "0.14/pc->new/pc", "new/pc-0.14->new/pc"):
        assert cells[f"{pair}[idle]"].expected == ("rejected",), pair
    assert cells["new/pc->new/pc[idle]"].rule.startswith("rule 1:")


def test_known_issues_attach_to_cells_and_may_name_a_seed(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + '''
[scenarios]
include = ["random", "idle"]
seeds = { random = [1, 2] }
[[known_issue]]
scenario = "random:2"
text = "only seed 2"
link = "https://example.invalid/1"
''')
    cells = {c.id: c for c in load_matrix(p).cells()}
    assert cells["0.14/pc->0.14/pc[random:2]"].known_issue.text == "only seed 2"
    assert cells["0.14/pc->0.14/pc[random:1]"].known_issue is None
    assert cells["0.14/pc->0.14/pc[idle]"].known_issue is None


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("", "endpoint", "is required"),
        ('[[endpoint]]\nname = "0.14"\n', "endpoint[0].name", "RELEASE/MACHINE"),
        ('[[endpoint]]\nname = "9.9/pc"\n', "endpoint[0].name", "unknown release"),
        ('[[endpoint]]\nname = "0.14/pc-1.0"\n', "endpoint[0].name", "no machine type"),
        (MINIMAL + '[[endpoint]]\nname = "0.14/pc"\n', "endpoint", "unique"),
        (MINIMAL + "[defaults]\ntime_limit = \"soon\"\n", "defaults.time_limit", "expected int or float"),
        (MINIMAL + '[scenarios]\ninclude = ["nope"]\n', "scenarios.include", "matches no scenario"),
        (MINIMAL + '[[expect]]\nverdicts = ["great"]\n', "expect[0].verdicts", "unknown verdict"),
        (MINIMAL + '[[expect]]\nverdicts = ["corrupted"]\n', "expect[0].verdicts", "never acceptable"),
        (MINIMAL + '[[expect]]\nverdict = ["pass"]\n', "expect[0].verdict", "unknown key"),
        (MINIMAL + '[[known_issue]]\nscenario = "idle"\n', "known_issue[0].text", "is required"),
        (MINIMAL + "bogus = 1\n", "endpoint[0].bogus", "unknown key"),
        ('bogus = 1\n' + MINIMAL, "bogus", "unknown key"),
        (MINIMAL + "[[endpoint\n", "(syntax)", "valid TOML"),
        (MINIMAL + '[scenarios]\nincludes = ["idle"]\n', "scenarios.includes", "unknown key"),
        (MINIMAL + "[defaults]\ntime_limt = 5\n", "defaults.time_limt", "unknown key"),
        (MINIMAL + "[defaults]\ntime_limit = 0\n", "defaults.time_limit", "positive"),
        (MINIMAL + "[defaults]\ntime_limit = -1\n", "defaults.time_limit", "positive"),
        (MINIMAL + "[defaults]\ntime_limit = inf\n", "defaults.time_limit", "positive"),
        (MINIMAL + "[defaults]\ntime_limit = nan\n", "defaults.time_limit", "positive"),
        (MINIMAL + '[defaults]\ndriver = "warp"\n', "defaults.driver", "one of inprocess"),
        (MINIMAL + 'driver = "warp"\n', "endpoint[0].driver", "no per-endpoint driver"),
        (MINIMAL + 'driver = "subprocess"\n', "endpoint[0].driver", "no per-endpoint driver"),
        (MINIMAL + 'ram = "99999999999G"\n', "endpoint[0].name", "could address"),
    ],
)
def test_malformed_files_name_file_key_and_expectation(tmp_path: Path, text: str, key: str, expected: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(MatrixError) as e:
        load_matrix(p).cells()
    assert e.value.key == key and expected in e.value.expected and str(p) in str(e.value)


def test_a_matrix_file_that_is_not_utf8_names_the_byte(tmp_path: Path) -> None:
    p = tmp_path / "m.toml"
    prefix = MINIMAL.encode() + b'description = "caf'
    p.write_bytes(prefix + b'\xe9"\n')
    with pytest.raises(MatrixError) as e:
        load_matrix(p)
    assert e.value.key == "(file)" and "UTF-8" in e.value.expected
    assert f"byte 0xe9 at offset {len(prefix)}" in e.value.expected


def test_shipped_matrices_are_found_by_name_from_anywhere(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = shipped_matrices()
    assert set(shipped) == {p.stem for p in (ROOT / "matrix").glob("*.toml")}
    monkeypatch.chdir(tmp_path)
    # The checkout's file, or the installed package's copy of it (under tox).
    assert resolve_matrix("default").read_text() == DEFAULT.read_text()
    assert resolve_matrix("history.toml").read_text() == HISTORY.read_text()
    assert load_matrix("default").name == "default"
    assert matrix_ref(DEFAULT) == "default"
    (tmp_path / "default").mkdir()  # a path that exists wins over a name
    own = tmp_path / "mine.toml"
    own.write_text(MINIMAL)
    assert resolve_matrix(own) == own and matrix_ref(own) == str(own)
    with pytest.raises(MatrixError) as e:
        resolve_matrix("nosuch")
    assert "no shipped matrix of that name" in str(e.value) and "default" in str(e.value)


def test_sharding_partitions_the_cells() -> None:
    m = load_matrix(DEFAULT)
    every = [c.id for c in m.cells()]
    parts = [[c.id for c in m.cells(shard=(i, 3))] for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(every) and all(parts)


# -- verdicts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "verdict"),
    [
        (Outcome(harness_error="setup"), Verdict.ERROR),
        (Outcome(timed_out=True, load_error={"reason": "truncated"}), Verdict.TIMEOUT),
        (Outcome(crash="KeyError"), Verdict.CRASHED),
        (Outcome(load_error={"reason": "unknown_subsection"}), Verdict.REJECTED),
        (Outcome(bytes_unread=10, diff=[{"path": "x"}]), Verdict.TRUNCATED),
        (Outcome(not_loaded=["ide/0"]), Verdict.TRUNCATED),
        (Outcome(diff_total=1), Verdict.CORRUPTED),
        (Outcome(), Verdict.PASS),
    ],
)
def test_classify(outcome: Outcome, verdict: Verdict) -> None:
    assert classify(outcome) is verdict


# -- the matrices demonstrate the seed's findings ---------------------------------------


def run(path: Path, tmp_path: Path, k: str | None = None) -> dict[str, dict]:
    m = load_matrix(path)
    cells = [c for c in m.cells() if k is None or k in c.id]
    results = ResultsFile(tmp_path / "results.json", header(m, "inprocess", None, len(cells)))
    run_cells(cells, results, driver="inprocess", matrix_path=str(path))
    doc = results.write(finished=True)
    assert json.loads((tmp_path / "results.json").read_text())["finished"]
    return {c["id"]: c for c in doc["cells"]}


@pytest.fixture(scope="module")
def default_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    return run(DEFAULT, tmp_path_factory.mktemp("default"))


def test_default_matrix_is_green_with_its_findings_as_known_issues(default_results: dict) -> None:
    bad = [i for i, c in default_results.items() if not c["ok"]]
    assert bad == []
    assert sum(c["known_issue"] is not None for c in default_results.values()) >= 10


def test_sentinel_format_passes_the_ambiguity_scenarios(default_results: dict) -> None:
    for s in ("ide-bus-error", "ide-dma-capable", "atapi-media-event", "fdc-media-changed",
              "collide-0x05", "collide-eof", "ide-pio", "ide-dma", "nic-hotplug"):
        assert default_results[f"new/pc->new/pc[{s}]"]["verdict"] == "pass", s


def test_collide_0x05_is_a_spurious_rejection_on_a_supported_format_3_pair(default_results: dict) -> None:
    cell = default_results["0.14/pc->0.14/pc[collide-0x05]"]
    assert cell["verdict"] == "rejected" and cell["expected"] == ["pass"]
    assert cell["detail"]["reason"] == "unknown_subsection" and cell["known_issue"]


def test_the_pc_014_machine_types_refuse_each_other_where_the_real_builds_do(
        default_results: dict) -> None:
    """new/pc-0.14 -> 0.14/pc stops at the i8254 (instance 0), 0.14/pc -> new/pc-0.14 at
    piix4_pm (the GPE arrays), whatever the scenario left in the devices before them."""
    back = default_results["new/pc-0.14->0.14/pc[ide-bus-error]"]
    assert back["verdict"] == "rejected" and back["detail"]["section"] == "i8254"
    assert "'i8254' 0" in back["detail"]["message"] and back["known_issue"]
    assert back["detail"]["window"]["marks"]
    forth = default_results["0.14/pc->new/pc-0.14[idle]"]
    assert forth["verdict"] == "rejected" and forth["detail"]["section"] == "0000:00:01.3/piix4_pm"
    assert forth["detail"]["reason"] == "truncated" and forth["known_issue"]


def test_two_cpu_subsections_show_the_sibling_failure(default_results: dict) -> None:
    cell = default_results["new/pc->new/pc[cpu-two-subsections]"]
    assert cell["verdict"] == "rejected" and "cpu/fpop_ip_dp" in cell["detail"]["message"]


def test_crossing_formats_is_rejected(default_results: dict) -> None:
    for i, c in default_results.items():
        if ("new/pc->" in i) != ("->new/pc[" in i):
            assert c["verdict"] == "rejected", i


def test_rejected_cells_keep_where_and_why(default_results: dict) -> None:
    rejected = default_results["0.14/pc->0.14/pc[collide-0x05]"]["detail"]
    assert rejected["offset"] and rejected["section"] == "0000:00:01.1/ide"
    assert rejected["field"].startswith("bmdma[1]") and rejected["window"]["hex"]
    assert all(c["duration_s"] > 0 and c["stream_bytes"] > 0 for c in default_results.values()
               if c["verdict"] != "error")


def test_a_misparse_names_its_cause_the_field_read_with_another_layout(
        default_results: dict) -> None:
    """0.14 saves the GPE block as two u16; the sentinel series as two arrays of four u16.
    The symptom is a read past the end, eight bytes on; the cause is where the layouts
    part (the real 0.15-family builds refuse 0.14's stream there too)."""
    detail = default_results["0.14/pc->new/pc-0.14[idle]"]["detail"]
    assert detail["reason"] == "truncated" and detail["field"] == "gpe/en"
    cause = detail["cause"]
    assert cause["offset"] < detail["offset"]
    first = next(r for r in cause["rows"] if r["diverged"])
    assert first["offset"] == cause["offset"]
    assert first["writer"] == "field 0000:00:01.3/piix4_pm/gpe/sts = 0 (0x0)"
    assert first["destination"] == "field 0000:00:01.3/piix4_pm/gpe/sts = [0, 0, 0, 0]"
    assert "gpe/sts" in cause["summary"]
    window = cause["window"]
    assert window["start"] <= cause["offset"] < window["start"] + len(window["hex"]) // 2
    # Every row after the cause is the writer's alone: the destination stopped reading.
    after = [r for r in cause["rows"] if r["offset"] > cause["offset"]]
    assert after and all(r["diverged"] for r in after)


def test_a_misread_subsection_header_is_named_as_the_cause(default_results: dict) -> None:
    """0.14's bmdma defines a subsection, so it peeks: IDE bus 0's command byte 0x05 is
    taken for a subsection header, and the stream refused there."""
    detail = default_results["0.14/pc->0.14/pc[collide-0x05]"]["detail"]
    cause = detail["cause"]
    first = next(r for r in cause["rows"] if r["diverged"])
    assert first["bytes"].startswith("05")
    assert first["writer"] == "field 0000:00:01.1/ide/bus[0]/cmd = 5 (0x5)"
    assert first["destination"].startswith("subsection")
    window = cause["window"]
    assert bytes.fromhex(window["hex"])[cause["offset"] - window["start"]] == 0x05


def test_a_clean_refusal_has_no_separate_cause(default_results: dict) -> None:
    for cell_id in ("new/pc->0.14/pc[idle]", "new/pc-0.14->0.14/pc[atapi-media-event]"):
        assert default_results[cell_id]["detail"]["cause"] is None, cell_id
    assert default_results["new/pc->new/pc[idle]"]["detail"]["one_sided"] == []


def test_history_matrix_is_the_real_idle_7x7(tmp_path: Path) -> None:
    """The pairs the real builds load at idle (with e1000, QEMU's default NIC), and where
    they refuse the others (tests/test_conformance.py runs the real builds)."""
    cells = run(HISTORY, tmp_path, k="[idle]")
    assert all(c["ok"] for c in cells.values())
    loads = {i.removesuffix("[idle]") for i, c in cells.items()
             if c["verdict"] == "pass" and c["source"] != c["destination"]}
    assert loads == {"0.13/pc->0.14/pc", "0.15/pc->new/pc-0.14", "1.0/pc->1.0/pc-0.14",
                     "1.0/pc-0.14->1.0/pc"}
    where = {i.removesuffix("[idle]"): c["detail"].get("section") for i, c in cells.items()}
    assert where["new/pc-0.14->0.15/pc"] is None  # "Unknown savevm section type 100"
    assert where["0.15/pc->1.0/pc-0.14"] == "0000:00:03.0/e1000"
    assert where["1.0/pc-0.14->0.15/pc"] == "i8259"
    assert where["0.14/pc->0.13/pc"] == "ioapic"


def test_long_buffers_in_a_diff_are_cut_to_where_they_differ() -> None:
    from harness.drivers import diff_entry

    a = bytes(512)
    b = bytes(100) + b"\x01" + bytes(411)
    entry = diff_entry("ide/bus[0]/ifs[0]/identify_data", a, b)
    assert entry["source"].startswith("512 bytes; from byte 100: 00")
    assert entry["destination"].startswith("512 bytes; from byte 100: 01")
    assert diff_entry("x", a.hex(), b.hex()) == entry | {"path": "x"}
    assert diff_entry("y", 3, 5) == {"path": "y", "source": 3, "destination": 5}
