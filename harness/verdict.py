"""Classification of one cell's outcome into a verdict.

The driver reports what happened as an :class:`Outcome` (typed facts: the destination's
load error as data, an exception that was not a migration error, a timeout, the load
report, the state differences). :func:`classify` maps those facts to a verdict exactly as
DESIGN.md defines them; it never reads message text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Outcome", "Verdict", "classify", "NEVER_ACCEPTABLE"]


class Verdict(enum.StrEnum):
    PASS = "pass"
    REJECTED = "rejected"
    CORRUPTED = "corrupted"
    TRUNCATED = "truncated"
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    ERROR = "error"


# A matrix may never declare these acceptable; a cell can only carry them as known issues.
NEVER_ACCEPTABLE = frozenset({Verdict.CORRUPTED, Verdict.TRUNCATED, Verdict.CRASHED})


@dataclass
class Outcome:
    """What a driver observed for one cell.

    ``harness_error``: the harness could not run the cell (setup, driver, source side).
    ``timed_out``: no outcome within the time limit. ``crash``: the destination failed with
    something that is not a migration error. ``load_error``: the destination refused the
    stream (``LoadError.to_dict()``). Otherwise the load completed: ``bytes_unread`` and
    ``not_loaded`` say whether an early EOF ended it, ``diff`` lists state differences.
    """

    harness_error: str | None = None
    timed_out: bool = False
    crash: str | None = None
    load_error: dict[str, Any] | None = None
    bytes_unread: int = 0
    not_loaded: list[str] = field(default_factory=list)
    diff: list[dict[str, Any]] = field(default_factory=list)
    diff_total: int = 0
    stream_bytes: int = 0
    duration_s: float = 0.0
    window: dict[str, Any] | None = None
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def classify(outcome: Outcome) -> Verdict:
    if outcome.harness_error is not None:
        return Verdict.ERROR
    if outcome.timed_out:
        return Verdict.TIMEOUT
    if outcome.crash is not None:
        return Verdict.CRASHED
    if outcome.load_error is not None:
        return Verdict.REJECTED
    if outcome.bytes_unread > 0 or outcome.not_loaded:
        return Verdict.TRUNCATED
    if outcome.diff_total or outcome.diff:
        return Verdict.CORRUPTED
    return Verdict.PASS
