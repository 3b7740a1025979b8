"""The README's examples, run as written, in order, in an empty folder.

Every line of every ``sh`` block is a command a newcomer copies. Each runs with the
installed ``migmatrix`` on PATH and must exit as its comment says (``(exit N)``, else 0)
without a traceback; the few that cannot run inside the test suite are skipped by name,
each with its reason, and a skip that no longer matches a README line fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

#: Lines not run here, and why.
SKIPPED = {
    "pip install tox && tox -e matrix": "installs tox and runs the matrix job: .ci/run does",
    "tox": "runs the test suite this test is part of",
    "python3 -m venv .venv && . .venv/bin/activate":
        "makes an environment: this test runs in one that has migmatrix installed",
    "pip install .": "installs this checkout: the environment running this test has it",
    "migmatrix analyze qemu-7.2.mig --json":
        "needs a stream saved by real QEMU 7.2: tests/test_analyze.py saves one and analyzes "
        "it where QEMU is installed",
    "migmatrix selftest": "a minute of seeded-bug runs of the whole matrix: "
                          "tests/test_selftest.py runs the command and each bug on a slice",
}


def readme_commands() -> list[tuple[str, set[int]]]:
    """(command, the exit codes its comment allows) for every line of every ``sh`` block:
    ``(exit 1)``, ``(exit 0, or 1 on ...)``, else 0."""
    text = README.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if not line.strip():
                continue
            m = re.match(r"(.*?)\s{2,}#\s?(.*)$", line)  # a comment: two spaces, then #
            command, comment = (m.group(1), m.group(2)) if m else (line, "")
            codes = re.search(r"\(exit ([^)]*)\)", comment)
            allowed = {int(n) for n in re.findall(r"\b\d+\b", codes.group(1))} if codes \
                else {0}
            out.append((command.strip(), allowed))
    return out


def test_every_skip_names_a_readme_line() -> None:
    commands = {c for c, _ in readme_commands()}
    assert set(SKIPPED) <= commands, set(SKIPPED) - commands


@pytest.mark.slow
def test_the_readme_examples_run_as_written(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    assert shutil.which("migmatrix", path=str(bin_dir)), "migmatrix is not installed"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MIGMATRIX_FOUND_DIR", None)
    ran = []
    for command, code in readme_commands():
        if command in SKIPPED:
            continue
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=600)
        assert "Traceback" not in done.stderr, (command, done.stderr[-2000:])
        assert done.returncode in code, (command, done.returncode, done.stderr[-2000:])
        ran.append(command)
    assert len(ran) >= 14
    # What they left: each report where the README says, the full one untouched by -k.
    for folder in ("reports", "reports/history", "reports/selected"):
        assert (tmp_path / folder / "index.html").exists(), folder
    selected = json.loads((tmp_path / "reports" / "selected" / "results.json").read_text())
    assert [c["id"] for c in selected["cells"]] == ["new/pc-0.14->0.14/pc[ide-bus-error]"]
    full = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert len(full["cells"]) == full["total_cells"] > 100
    assert "Changes since the baseline" in (tmp_path / "reports" / "index.html").read_text()
    assert list((tmp_path / "reports" / "hunt").glob("*.json"))
