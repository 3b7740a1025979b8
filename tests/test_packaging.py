"""What `pip install .` puts in the wheel: every package, the templates and the matrices."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_of_the_tree_is_listed() -> None:
    listed = set(_setuptools()["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "harness").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {found - listed}"
    assert listed - found == {"harness.matrices"}


def test_the_matrices_ship_as_package_data() -> None:
    config = _setuptools()
    assert config["package-dir"] == {"harness.matrices": "matrix"}
    assert config["package-data"]["harness.matrices"] == ["*.toml"]
    assert config["package-data"]["harness.report"] == ["templates/*"]
    assert list((ROOT / "matrix").glob("*.toml"))
