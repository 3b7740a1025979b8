"""Seeded bugs: the core can be built with deliberate faults, and the matrix catches them.

``migmatrix selftest`` runs the default matrix once per seeded bug; here a few bugs run on
the pairs that should catch them (fast), and the switch itself is checked: off by
default, on for the process and its children through ``MIGMATRIX_SEEDED_BUG``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.emulator import faults
from harness.emulator.machine import Machine, compare_machines
from harness.scenarios import apply_scenario
from harness.selftest import BASELINE, format_table, run_selftest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = str(ROOT / "matrix" / "default.toml")


def test_the_catalogue_has_the_seven_kinds_of_bug() -> None:
    assert set(faults.BUGS) >= {
        "drop-field", "swap-fields", "wrong-width", "needed-lies", "version-off-by-one",
        "post-load-forgets", "ram-not-resent",
    }
    assert faults.active() is None  # never on unless asked for


@pytest.mark.parametrize("bug", ["swap-fields", "needed-lies", "ram-not-resent"])
def test_a_seeded_bug_is_caught_by_the_default_matrix(bug: str) -> None:
    rows = run_selftest(DEFAULT, [bug], patterns=["new/pc->new/pc["])
    base, row = rows
    assert base.bug == BASELINE and not base.unexpected  # green without the bug
    assert row.caught, format_table(rows)
    assert faults.active() is None  # switched off again


@pytest.mark.parametrize("bug", ["swap-fields", "needed-lies"])
def test_a_save_side_bug_is_caught_on_a_cell_the_baseline_ran_just_before(bug: str) -> None:
    """The baseline's last cell and the bug's first are the same source and scenario: the
    save kept for reuse must not be the bug-free one."""
    cell = {"swap-fields": "0.14/pc->0.14/pc[pit-half-written]",
            "needed-lies": "new/pc->new/pc[fdc-media-changed]"}[bug]
    rows = run_selftest(DEFAULT, [bug], patterns=[cell])
    assert rows[0].cells == rows[1].cells == 1
    assert rows[1].caught, format_table(rows)


def test_the_bug_changes_the_wire_only_while_active() -> None:
    def stream() -> bytes:
        m = Machine("0.14", "pc", "64K")
        apply_scenario(m, "pit-half-written")
        return m.save() or b""

    clean = stream()
    with faults.activate("swap-fields"):
        assert os.environ[faults.ENV] == "swap-fields"
        buggy = stream()
    assert faults.ENV not in os.environ
    assert buggy != clean and len(buggy) == len(clean)
    assert stream() == clean


def test_drop_field_loses_the_value_on_a_same_release_pair() -> None:
    with faults.activate("drop-field"):
        src = Machine("new", "pc", "64K")
        apply_scenario(src, "serial-configured")
        dst, _ = Machine.load("new", "pc", src.save(), ram_size="64K")
        diffs = compare_machines(src, dst)
    assert [d.path for d in diffs] == ["serial@0x3f8/state/scr"]


def test_the_environment_switches_a_bug_on_in_a_child_process() -> None:
    code = ("from harness.emulator import faults; "
            "print(faults.active().name if faults.active() else None)")
    env = {**os.environ, faults.ENV: "wrong-width", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "wrong-width"
    env[faults.ENV] = "no-such-bug"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "None" and "names no seeded bug" in out.stderr


def test_selftest_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from harness import selftest

    parser = argparse.ArgumentParser()
    selftest.configure_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["selftest", "--matrix", DEFAULT, "--bug", "wrong-width",
                              "-k", "new/pc-0.14->new/pc-0.14["])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "wrong-width" in out and "yes" in out and "ide-bus-error" in out
