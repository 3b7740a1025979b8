"""The migmatrix command and the pytest plugin, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.matrix import load_matrix
from harness.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "matrix" / "default.toml"

pytest_plugins = ["pytester"]


def test_releases(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["releases"]) == 0
    out = capsys.readouterr().out
    assert "peek=always-peek" in out and "machine pc (= pc-1.0): format 4" in out
    assert main(["releases", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["release"] for r in data] == ["0.13", "0.14", "0.15", "new", "1.0",
                                                   "rhel6.1", "rhel6.2"]


def test_save_then_load_and_dump_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.mig"
    assert main(["save", "--release", "0.15", "--ram", "1M", "--scenario", "ide-pio", "-o", str(f)]) == 0
    capsys.readouterr()
    assert main(["load", "--release", "new", "--machine", "pc-0.14", "--ram", "1M", str(f),
                 "--dump-state"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["endpoint"] == "new/pc-0.14" and state["load"]["bytes_unread"] == 0
    assert state["devices"]["0000:00:01.1/ide"]["bus[0]/ifs[0]/status"] & 0x08


def test_load_failure_is_one_line_naming_reason_offset_section_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "s.mig"
    main(["save", "--release", "0.14", "--ram", "1M", "--scenario", "collide-0x05", "-o", str(f)])
    capsys.readouterr()
    assert main(["load", "--release", "0.14", "--ram", "1M", str(f)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown subsection" in err and "offset " in err
    assert "section 0000:00:01.1/ide" in err and "field bmdma[1]" in err


def test_half_loaded_load_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.mig"
    main(["save", "--release", "0.14", "--ram", "1M", "-o", str(f)])
    f.write_bytes(f.read_bytes() + b"left behind")  # bytes after the EOF byte stay unread
    assert main(["load", "--release", "0.14", "--ram", "1M", str(f)]) == 0
    assert "half-loaded" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["save", "--release", "9.9", "-o", str(tmp_path / "x")]) == 2
    assert main(["save", "--release", "0.14", "--scenario", "nope", "-o", str(tmp_path / "x")]) == 2
    bad = tmp_path / "m.toml"
    bad.write_text('[[endpoint]]\nname = "0.14"\n')
    assert main(["run", "--matrix", str(bad), "--out", str(tmp_path)]) == 2
    assert "endpoint[0].name" in capsys.readouterr().err
    assert main(["run", "--matrix", str(DEFAULT), "--shard", "4/3", "--out", str(tmp_path)]) == 2


def test_run_writes_results_junit_and_html(tmp_path: Path) -> None:
    out = tmp_path / "r"
    code = main(["run", "--matrix", str(DEFAULT), "--out", str(out), "-q", "-k", "new/pc->new/pc["])
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == "migmatrix/results/1" and doc["finished"]
    per_pair = len(SCENARIOS) + 2 - 1  # random runs three seeds; 1.0's cpu-misc-enable not
    assert len(doc["cells"]) == per_pair and doc["total_cells"] > per_pair
    assert (out / "junit.xml").read_text().startswith("<?xml")
    assert "<html" in (out / "index.html").read_text()


def test_run_with_no_cell_fails(tmp_path: Path) -> None:
    assert main(["run", "--matrix", str(DEFAULT), "--out", str(tmp_path), "-q", "-k", "nothing-matches"]) == 3


def test_run_exit_1_on_an_unexpected_cell(tmp_path: Path) -> None:
    m = tmp_path / "m.toml"
    m.write_text('[defaults]\nram = "1M"\n[[endpoint]]\nname = "new/pc"\n[[endpoint]]\nname = "0.14/pc"\n'
                 '[scenarios]\ninclude = ["idle"]\n[[expect]]\nverdicts = ["pass"]\n')
    assert main(["run", "--matrix", str(m), "--out", str(tmp_path / "o"), "-q"]) == 1


def test_jobs_2_gives_the_same_verdicts(tmp_path: Path) -> None:
    one, two = tmp_path / "1", tmp_path / "2"
    main(["run", "--matrix", str(DEFAULT), "--out", str(one), "-q", "-k", "new/pc-0.14->"])
    main(["run", "--matrix", str(DEFAULT), "--out", str(two), "-q", "-k", "new/pc-0.14->", "--jobs", "2"])
    v1 = {c["id"]: c["verdict"] for c in json.loads((one / "results.json").read_text())["cells"]}
    v2 = {c["id"]: c["verdict"] for c in json.loads((two / "results.json").read_text())["cells"]}
    assert v1 == v2 and len(v1) == 3 * (len(SCENARIOS) + 2 - 1)  # not 1.0's cpu-misc-enable


def test_shards_merge_into_the_single_run(tmp_path: Path) -> None:
    full = tmp_path / "full"
    main(["run", "--matrix", str(DEFAULT), "--out", str(full), "-q"])
    for i in (1, 2, 3):
        main(["run", "--matrix", str(DEFAULT), "--out", str(tmp_path / f"s{i}"), "-q", "--shard", f"{i}/3"])
    merged = tmp_path / "merged"
    shards = [str(tmp_path / f"s{i}" / "results.json") for i in (1, 2, 3)]
    assert main(["report", "--merge", *shards, "--out", str(merged)]) == 0
    a = json.loads((full / "results.json").read_text())
    b = json.loads((merged / "results.json").read_text())
    strip = lambda d: {c["id"]: (c["verdict"], c["ok"], c["detail"]["offset"]) for c in d["cells"]}  # noqa: E731
    assert strip(a) == strip(b) and a["summary"] == b["summary"]
    assert main(["report", "--merge", *shards[:2], "--out", str(tmp_path / "partial")]) == 1


def test_the_migmatrix_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "harness.cli", "releases"], capture_output=True, text=True)
    assert out.returncode == 0 and "0.14" in out.stdout


# -- pytest plugin -----------------------------------------------------------------------


def test_plugin_collects_cells_with_readable_ids(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(str(DEFAULT), "--collect-only", "-q", "-p", "no:cacheprovider")
    ids = [line for line in result.outlines if "::" in line]
    assert any(line.endswith("::0.14/pc->new/pc-0.14[ide-bus-error]") for line in ids)
    assert len(ids) == len(load_matrix(DEFAULT).cells())


def test_plugin_runs_cells_with_k_known_issues_as_xfail_and_writes_results(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    result = pytester.runpytest_subprocess(
        str(DEFAULT), "-k", "collide or ide-bus-error", "--migmatrix-out", str(out), "-p", "no:cacheprovider"
    )
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] >= 10 and outcomes["xfailed"] >= 5 and "failed" not in outcomes
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["cells"]) == outcomes["passed"] + outcomes["xfailed"]
    assert (out / "junit.xml").exists() and (out / "index.html").exists()


def test_plugin_fails_an_unexpected_cell_and_flags_an_unexpected_pass(pytester: pytest.Pytester) -> None:
    m = pytester.mkdir("matrix") / "t.toml"
    m.write_text('[defaults]\nram = "1M"\n[[endpoint]]\nname = "new/pc"\n[[endpoint]]\nname = "0.14/pc"\n'
                 '[scenarios]\ninclude = ["idle"]\n[[expect]]\nverdicts = ["pass"]\n'
                 '[[known_issue]]\nsource = "new/pc"\ndestination = "new/pc"\ntext = "not really"\n')
    result = pytester.runpytest_subprocess(str(m), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(["*known issue passed unexpectedly*", "*verdict rejected, expected pass*"])


def test_plugin_with_xdist_gathers_results_on_the_controller(pytester: pytest.Pytester, tmp_path: Path) -> None:
    out = tmp_path / "x"
    result = pytester.runpytest_subprocess(
        str(DEFAULT), "-n", "2", "-k", "collide", "--migmatrix-out", str(out), "-p", "no:cacheprovider"
    )
    outcomes = result.parseoutcomes()
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["cells"]) == outcomes.get("passed", 0) + outcomes.get("xfailed", 0) == 15


def test_plugin_with_k_keeps_the_full_report(pytester: pytest.Pytester, tmp_path: Path) -> None:
    m = pytester.mkdir("matrix") / "t.toml"
    m.write_text('[defaults]\nram = "1M"\n[[endpoint]]\nname = "new/pc"\n'
                 '[scenarios]\ninclude = ["idle", "ide-pio"]\n')
    out = tmp_path / "reports"
    pytester.runpytest_subprocess(str(m), "--migmatrix-out", str(out), "-p", "no:cacheprovider"
                                  ).assert_outcomes(passed=2)
    full = (out / "results.json").read_text()
    result = pytester.runpytest_subprocess(str(m), "-k", "idle", "--migmatrix-out", str(out),
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"migmatrix: reports in {out}/selected/*the full report*"])
    assert (out / "results.json").read_text() == full
    selected = json.loads((out / "selected" / "results.json").read_text())
    assert [c["id"] for c in selected["cells"]] == ["new/pc->new/pc[idle]"]
    assert selected["selection"] == ["idle"]
    result = pytester.runpytest_subprocess(str(m), "-k", "nothing", "--migmatrix-out", str(out),
                                           "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([f"migmatrix: no cell ran; nothing written to {out}/"])
    assert (out / "results.json").read_text() == full
