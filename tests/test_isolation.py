"""The emulator core depends on nothing else in harness (STYLE.md, house style 1).

Each check runs in a fresh interpreter, so modules the test session has already
imported cannot hide a dependency.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import harness.emulator

REPO = Path(harness.emulator.__file__).resolve().parents[2]

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
loaded = sorted(m for m in sys.modules if m == "harness" or m.startswith("harness."))
print(json.dumps(loaded))
"""


def emulator_modules() -> list[str]:
    """Every module under harness/emulator, found on disk (without importing them)."""
    found = ["harness.emulator"]
    for info in pkgutil.walk_packages(harness.emulator.__path__, "harness.emulator."):
        found.append(info.name)
    return sorted(found)


def loaded_after_import(module: str) -> list[str]:
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"importing {module} failed:\n{proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_emulator_package_has_modules_to_check() -> None:
    modules = emulator_modules()
    for core in ("errors", "stream", "vmstate", "savevm", "releases"):
        assert f"harness.emulator.{core}" in modules


@pytest.mark.parametrize("module", emulator_modules())
def test_importing_an_emulator_module_loads_nothing_else_from_harness(module: str) -> None:
    loaded = loaded_after_import(module)
    assert module in loaded
    outside = [m for m in loaded if m != "harness" and not m.startswith("harness.emulator")]
    assert outside == []


def test_the_probe_lists_transitive_imports() -> None:
    """The check is not vacuous: what a module imports shows up in the probe's list."""
    loaded = loaded_after_import("harness.emulator.savevm")
    for needed in (
        "harness",
        "harness.emulator",
        "harness.emulator.errors",
        "harness.emulator.stream",
        "harness.emulator.vmstate",
    ):
        assert needed in loaded


COMMAND_PROBE = """
import json, sys
from harness import cli
code = cli.main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m == "harness" or m.startswith("harness."))
print(json.dumps([code, loaded]))
"""


def test_save_and_load_commands_import_the_emulator_core_and_the_scenarios_only(
    tmp_path: Path,
) -> None:
    """``migmatrix save`` and ``load`` start without the matrix, drivers or report."""
    stream = str(tmp_path / "idle.mig")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for argv in (["save", "--release", "new", "--scenario", "live-ram", "-o", stream],
                 ["load", "--release", "new", stream]):
        proc = subprocess.run([sys.executable, "-c", COMMAND_PROBE, *argv], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        code, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
        assert code == 0, proc.stderr
        assert "harness.emulator.machine" in loaded
        outside = [m for m in loaded if not m.startswith("harness.emulator")
                   and m not in ("harness", "harness.cli", "harness.scenarios")]
        assert outside == [], argv[0]
