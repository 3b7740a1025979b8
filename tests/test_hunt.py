"""``migmatrix hunt``: property-based search over device states for a pair of endpoints.

From scratch, within a modest budget, it finds classic findings of the pc-0.14 machine
types: always-peek's refusal of the cpu's own subsection after ymmh_regs (0.15/pc ->
new/pc-0.14) and the collide-0x05 spurious rejection (0.14/pc -> 0.14/pc), each shrunk to
one operation. (The seed's ide_bus/error misparse into 0.14 is gone: with the real
instance ids 0.14 refuses every newer stream at its i8254, before the IDE.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness import hunt as hunt_mod
from harness.hunt import expected_verdicts, format_finding, hunt, run_recipe, save_finding
from harness.verdict import Verdict, classify

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = str(ROOT / "matrix" / "default.toml")


def test_it_finds_the_always_peek_rejection_after_ymmh_from_scratch() -> None:
    findings = hunt("0.15/pc", "new/pc-0.14", budget=60, seed=0, matrix=DEFAULT,
                    max_findings=2)
    cpu = [f for f in findings if f.signature[2] == "cpu"]
    assert cpu, [f.signature for f in findings]
    f = cpu[0]
    assert f.verdict == "rejected" and f.signature[1] == "unknown_subsection"
    assert [op for op, _ in f.ops] == ["cpu.async_pf"]  # shrunk to the one operation
    text = format_finding(f)
    assert "migmatrix hunt 0.15/pc new/pc-0.14 --replay" in text


def test_it_finds_the_collide_0x05_rejection_from_scratch() -> None:
    findings = hunt("0.14/pc", "0.14/pc", budget=300, seed=2, matrix=DEFAULT)
    rejected = [f for f in findings if f.verdict == "rejected"]
    assert rejected, [f.signature for f in findings]
    f = rejected[0]
    assert f.ops == [["ide.device_control", {"bus": 0, "value": 5}]]
    assert f.signature[1] == "unknown_subsection"
    assert f.expected == ("pass",)


def test_a_rejection_the_rules_expect_is_not_a_finding() -> None:
    assert expected_verdicts("new/pc", "0.14/pc", DEFAULT) == ("rejected",)
    assert hunt("new/pc", "0.14/pc", budget=20, seed=0, matrix=DEFAULT) == []


def test_a_saved_finding_replays_as_a_scenario(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    f = hunt("0.15/pc", "new/pc-0.14", budget=60, seed=0, matrix=DEFAULT, max_findings=1)[0]
    path = save_finding(f, "bus-error", tmp_path)
    doc = json.loads(path.read_text())
    assert doc["ops"] == f.ops and doc["verdict"] == "rejected"
    # The guest programs load saved recipes from MIGMATRIX_FOUND_DIR.
    from harness.emulator import guest
    from harness.emulator.recipes import FOUND_ENV, load_recipes

    monkeypatch.setenv(FOUND_ENV, str(tmp_path))
    assert "bus-error" in load_recipes()
    monkeypatch.setattr(guest, "FOUND", {})
    found = guest._register_found()
    assert "found-bus-error" in found and "found-bus-error" in guest.PROGRAMS
    try:
        outcome = run_recipe("0.15/pc", "new/pc-0.14", doc["ops"])
        assert classify(outcome) is Verdict.REJECTED
    finally:
        guest.PROGRAMS.pop("found-bus-error", None)


def test_a_finding_that_repeats_a_known_issue_is_marked_with_its_note() -> None:
    # Every state of new/pc-0.14 is refused by 0.14 at its i8254 (instance 0).
    f = hunt("new/pc-0.14", "0.14/pc", budget=60, seed=0, matrix=DEFAULT, max_findings=1)[0]
    assert f.known_issue is not None
    assert f.known_issue.startswith("refused at the i8254: since 0.15 the PIT is")
    assert "(as in new/pc-0.14->0.14/pc[" in f.known_issue
    assert format_finding(f).startswith("[1] known issue: rejected on new/pc-0.14 -> 0.14/pc")
    # Without a matrix there is no known issue to repeat: the same finding is new.
    g = hunt("new/pc-0.14", "0.14/pc", budget=60, seed=0, matrix=None, max_findings=1)[0]
    assert g.signature == f.signature and g.known_issue is None
    assert format_finding(g).startswith("[1] NEW: rejected")


def _hunt_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    hunt_mod.configure_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["hunt", *argv])


def test_hunt_command_writes_recipes_that_replay(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    recipes = tmp_path / "recipes"
    args = _hunt_args("new/pc-0.14", "0.14/pc", "--budget", "20", "--matrix", DEFAULT,
                      "--save", "x", "--save-dir", str(tmp_path), "--recipes", str(recipes))
    assert args.func(args) == 0  # every finding is one of the matrix's known issues
    out = capsys.readouterr()
    assert "known issue: rejected on new/pc-0.14 -> 0.14/pc" in out.out
    assert "0 new" in out.err
    assert "migmatrix save --release new --machine pc-0.14 --scenario found-x" in out.out
    first = recipes / "new_pc_0.14_0.14_pc-1.json"
    assert f"--replay {first}" in out.out
    assert json.loads(first.read_text())["verdict"] == "rejected"
    args = _hunt_args("new/pc-0.14", "0.14/pc", "--matrix", DEFAULT, "--replay", str(first))
    assert args.func(args) == 1  # the state still breaks the pair
    assert "rejected (expected pass)" in capsys.readouterr().out


def test_new_findings_fail_the_hunt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _hunt_args("new/pc-0.14", "0.14/pc", "--budget", "20", "--no-matrix",
                      "--recipes", str(tmp_path))
    assert args.func(args) == 1
    assert "NEW: rejected" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"\x8e\x00", b"{}", b'{"ops": 5}', b"[5]",
                                     b'[["ide.dma", 5]]', b'[["nope", {}]]'])
def test_a_bad_recipe_file_is_one_line_and_exit_2(tmp_path: Path, content: bytes,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    recipe = tmp_path / "r.json"
    recipe.write_bytes(content)
    assert main(["hunt", "new/pc-0.14", "0.14/pc", "--replay", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("migmatrix hunt:")
