"""What a test does when something it needs is missing: skip here, fail in CI.

Locally a missing docker engine, QEMU binary or browser skips the tests that need it,
saying why; in CI (``CI=true``) the same absence is a failure, since .ci/run installs
and starts all of them.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(problem: str | None, what: str) -> None:
    """Return when ``problem`` is None; otherwise skip (or fail in CI) naming ``what``."""
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"{what} cannot run in CI: {problem}")
    pytest.skip(f"{what} skipped: {problem}")
