"""The source digest that labels the endpoint image.

``containers/build-endpoint.sh`` computes it with whatever Python builds the image, where
none of the project's dependencies are installed (a CI run once failed on exactly that).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.sources import source_digest

REPO = Path(__file__).resolve().parents[1]


def test_the_digest_needs_nothing_but_the_standard_library() -> None:
    # -S: no site-packages, so neither qemu.qmp nor docker nor jinja2 can be imported.
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
            "from harness.sources import source_digest; print(source_digest())")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         check=True, cwd="/")
    assert out.stdout.strip() == source_digest()


def test_the_digest_changes_with_any_package_source(tmp_path: Path) -> None:
    import harness.sources as sources

    pkg = tmp_path / "harness"
    pkg.mkdir()
    (pkg / "sources.py").write_text(Path(sources.__file__).read_text())
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("x = 1\n")
    run = [sys.executable, "-S", "-c",
           f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
           "from harness.sources import source_digest; print(source_digest())"]
    first = subprocess.run(run, capture_output=True, text=True, check=True, cwd="/").stdout
    (pkg / "a.py").write_text("x = 2\n")
    second = subprocess.run(run, capture_output=True, text=True, check=True, cwd="/").stdout
    assert first.strip() and first != second
