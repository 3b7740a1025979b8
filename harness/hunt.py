"""``migmatrix hunt SRC DST``: property-based search for states that break a pair.

The scenario catalogue holds the states someone thought of. ``hunt`` looks for the
others: hypothesis composes *state recipes* (:mod:`harness.emulator.recipes`: the device
operations guest programs use, and register writes, with values in their valid ranges),
builds each one on the source endpoint, migrates it in-process to the destination and
classifies the cell (:func:`harness.verdict.classify`). A *finding* is a recipe whose
cell is ``corrupted``, ``truncated`` or ``crashed``, or ``rejected`` on a pair whose
matrix rules expect ``pass`` (a spurious rejection). Each distinct finding (verdict plus
where it happened) is shrunk by hypothesis to a minimal recipe, printed with the commands
that reproduce it, and written as a recipe file that ``--replay FILE`` runs again
(``--recipes DIR``, default ``reports/hunt/``). A finding that ends like one of the
matrix's known issues on the pair (same verdict, same place) is marked as that known issue
and does not fail the hunt. A finding can also be saved as a new scenario (``--save
NAME``): a JSON recipe that :mod:`harness.emulator.guest` replays as ``found-NAME``.

Integer values are drawn so that the first byte on the wire is sometimes a framing byte
(0x00-0x07) and register values are composed from their bits: the ambiguity this tool
hunts for lives in exactly such bytes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .emulator.errors import ConfigError, LoadError, SaveCrash
from .emulator.machine import Machine, compare_machines
from .emulator.recipes import OPERATIONS, apply_ops, found_dir, media_of, requirements
from .emulator.releases import Release, parse_endpoint
from .verdict import Outcome, Verdict, classify

__all__ = [
    "HUNT_RAM",
    "Finding",
    "configure_parser",
    "expected_verdicts",
    "format_finding",
    "hunt",
    "known_signatures",
    "write_recipe",
    "recipe_strategy",
    "run_recipe",
    "save_finding",
]

HUNT_RAM = 64 << 10  # device state does not depend on RAM size; small RAM is fast
SHRINK_BUDGET = 300  # cell runs allowed for shrinking one finding


class InvalidState(Exception):
    """The recipe cannot be built on the source (an operation refused it)."""


@dataclass
class Finding:
    source: str
    destination: str
    verdict: str
    signature: tuple[Any, ...]
    ops: list[list[Any]]
    message: str
    expected: tuple[str, ...]
    detail: dict[str, Any] = field(default_factory=dict)
    runs: int = 0  # cell runs used when it was found (including shrinking)
    known_issue: str | None = None  # the matrix's note, when a known issue ends the same way

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "destination": self.destination, "verdict": self.verdict,
            "signature": list(self.signature), "ops": self.ops, "message": self.message,
            "expected": list(self.expected), "detail": self.detail,
            "known_issue": self.known_issue,
        }  # fmt: skip


# -- one recipe, one cell ----------------------------------------------------------------


def _endpoint(text: str) -> tuple[Release, str]:
    release, _ = parse_endpoint(text)
    return release, text.partition("/")[2]


def run_recipe(source: str, destination: str, ops: Any, *, ram_size: int = HUNT_RAM) -> Outcome:
    """Build ``ops`` on ``source``, migrate to ``destination`` in-process, report facts.

    Raises :class:`InvalidState` when the source cannot build the state.
    """
    from .drivers import diff_entry  # long buffers cut to where they differ

    src_rel, src_machine = _endpoint(source)
    dst_rel, dst_machine = _endpoint(destination)
    outcome = Outcome()
    t0 = time.perf_counter()
    media = media_of(ops)  # both sides are started with the images the ops need
    try:
        machine = Machine(src_rel, src_machine, ram_size, media=media)
        apply_ops(machine, ops)
        stream = machine.save()
    except (ConfigError, ValueError, TypeError) as e:  # TypeError: arguments of a bad recipe
        raise InvalidState(f"{type(e).__name__}: {e}") from e
    except SaveCrash as e:  # the source release dies saving this state (RHEL 6.1's gesn)
        outcome.crash = f"{type(e).__name__}: {e}"
        outcome.message = f"source crashed: {e}"
        return outcome
    except Exception as e:  # the source itself failed: not a verdict on the destination
        outcome.harness_error = f"source: {type(e).__name__}: {e}"
        return outcome
    assert stream is not None
    outcome.stream_bytes = len(stream)
    try:
        dest, report = Machine.load(dst_rel, dst_machine, stream, ram_size=ram_size, media=media)
    except LoadError as e:
        outcome.load_error = e.to_dict()
        outcome.message = str(e)
    except Exception as e:  # not a migration error (a LoadCrash too): the destination died
        outcome.crash = f"{type(e).__name__}: {e}"
        outcome.message = f"destination crashed: {outcome.crash}"
    else:
        outcome.bytes_unread = report.bytes_unread
        outcome.not_loaded = report.not_loaded if report.half_loaded else []
        diffs = compare_machines(machine, dest)
        outcome.diff_total = len(diffs)
        outcome.diff = [diff_entry(d.path, d.source, d.destination) for d in diffs[:20]]
        if report.half_loaded:
            outcome.message = (f"an EOF byte at offset {report.bytes_consumed - 1} ended the "
                               f"load; never loaded: {', '.join(report.not_loaded) or 'none'}")
        elif diffs:
            outcome.message = f"{len(diffs)} field(s) differ, first {diffs[0].path}"
    outcome.duration_s = time.perf_counter() - t0
    return outcome


def expected_verdicts(source: str, destination: str, matrix: str | None) -> tuple[str, ...]:
    """What the matrix's rules expect of the pair (first matching rule); pass without one."""
    if matrix is None:
        return ("pass",)
    from .matrix import load_matrix

    for rule in load_matrix(matrix).rules:
        if rule.matches(source, destination, "hunt"):
            return rule.verdicts
    return ("pass",)


def known_signatures(source: str, destination: str, matrix: str | None
                     ) -> dict[tuple[Any, ...], str]:
    """How the matrix's known issues on the pair end: the signature of each of their
    cells (run in-process), with the note and the cell that shows it."""
    if matrix is None:
        return {}
    from .drivers.inprocess import InProcessDriver
    from .matrix import load_matrix

    cells = [c for c in load_matrix(matrix).cells()
             if c.source.name == source and c.destination.name == destination
             and c.known_issue is not None]
    out: dict[tuple[Any, ...], str] = {}
    driver = InProcessDriver()
    for cell in cells:
        sig = signature(driver.run_cell(cell), cell.expected)
        if sig is not None and cell.known_issue is not None:
            out.setdefault(sig, f"{cell.known_issue.text} (as in {cell.id})")
    return out


def signature(outcome: Outcome, expected: tuple[str, ...]) -> tuple[Any, ...] | None:
    """What makes a finding distinct, or None when the outcome is not a finding."""
    verdict = classify(outcome)
    if verdict is Verdict.REJECTED:
        if "pass" not in expected or "rejected" in expected:
            return None
        e = outcome.load_error or {}
        where = re.sub(r"\[\d+\]", "[]", e.get("field") or "")  # bmdma[0] and [1] alike
        return ("rejected", e.get("reason"), e.get("section"), where)
    if verdict is Verdict.TRUNCATED:
        return ("truncated", tuple(outcome.not_loaded))
    if verdict is Verdict.CORRUPTED:
        first = outcome.diff[0]["path"] if outcome.diff else ""
        return ("corrupted", re.sub(r"\[\d+\]", "[]", first))
    if verdict is Verdict.CRASHED:
        return ("crashed", (outcome.crash or "").partition(":")[0])
    return None


# -- strategies ------------------------------------------------------------------------


def _strategies() -> dict[str, Any]:
    from hypothesis import strategies as st

    def wire_int(bits: int) -> Any:
        """Any value of the width, or one whose first wire byte is a framing byte."""
        top = bits - 8
        return st.one_of(
            st.integers(0, (1 << bits) - 1),
            st.builds(lambda b, rest: b << top | rest, st.integers(0, 7),
                      st.integers(0, (1 << top) - 1)),
        )

    def byte() -> Any:
        """A register byte; as often as not a framing byte."""
        return st.one_of(st.integers(0, 7), st.integers(0, 255))

    def args(**kw: Any) -> Any:
        return st.fixed_dictionaries(kw)

    none = st.just({})
    return {
        "ide.pio_read": args(bus=st.integers(0, 1)),
        "ide.dma": args(lba=st.integers(0, (1 << 20) - 1), count=st.integers(1, 256),
                        write=st.booleans()),
        "ide.dma_retry": none,
        "ide.pio_retry": args(lba=st.integers(0, (1 << 20) - 1)),
        "ide.dma_capable": args(bus=st.integers(0, 1), bits=st.sampled_from((0x20, 0x40, 0x60))),
        "ide.media_event": none,
        "ide.device_control": args(bus=st.integers(0, 1),
                                   value=byte()),
        "ide.tray": args(open=st.booleans(), locked=st.booleans()),
        "fdc.clear_media_changed": args(drive=st.integers(0, 1)),
        "fdc.change_media": none,
        "cpu.async_pf": args(page=st.integers(1, (1 << 40) - 1)),
        "cpu.fpu": args(fpop=st.integers(0, 0x7FF), fpip=wire_int(64), fpdp=wire_int(64),
                        pushes=st.integers(0, 2)),
        "cpu.xmm": args(index=st.integers(0, 15), lo=wire_int(64), hi=wire_int(64)),
        "nic.hotplug": none,
        "serial.receive": args(byte=byte()),
        "serial.write": st.one_of(
            args(register=st.sampled_from(("ier", "lcr", "mcr", "scr", "fcr")),
                 value=byte()),
            args(register=st.just("divider"), value=st.integers(1, 0xFFFF)),
        ),
        "pit.program": args(channel=st.integers(0, 2), rw_mode=st.integers(1, 3),
                            mode=st.integers(0, 5), count=st.integers(0, 0xFFFF),
                            half_written=st.booleans()),
        "pic.raise_irq": args(line=st.integers(0, 15)),
    }


def recipe_strategy(release: Release, *, max_ops: int = 5) -> Any:
    """Lists of ``[operation, {args}]`` steps the source release can run."""
    from hypothesis import strategies as st

    table = _strategies()
    steps = [
        st.tuples(st.just(name), table[name]).map(list)
        for name, op in OPERATIONS.items()
        if op.available(release) and name in table
    ]
    return st.lists(st.one_of(steps), min_size=1, max_size=max_ops)


# -- the search ------------------------------------------------------------------------


class _Found(Exception):
    def __init__(self, sig: tuple[Any, ...], ops: list[list[Any]], outcome: Outcome) -> None:
        super().__init__(repr(sig))
        self.sig, self.ops, self.outcome = sig, ops, outcome


def hunt(
    source: str,
    destination: str,
    budget: int = 200,
    seed: int = 0,
    *,
    matrix: str | None = "default",
    ram_size: int = HUNT_RAM,
    max_findings: int = 8,
    max_ops: int = 5,
    on_finding: Callable[[Finding], None] | None = None,
) -> list[Finding]:
    """Search ``budget`` generated states (plus shrinking) for findings on the pair."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hseed

    src_release, _ = _endpoint(source)
    _endpoint(destination)
    expected = expected_verdicts(source, destination, matrix)
    known = known_signatures(source, destination, matrix)
    strategy = recipe_strategy(src_release, max_ops=max_ops)
    findings: dict[tuple[Any, ...], Finding] = {}
    memo: dict[str, tuple[Any, ...] | None | str] = {}  # recipe -> signature (or "invalid")
    state = {"generated": 0, "runs": 0, "raised": set(), "shrink_left": 0, "found": False}

    def evaluate(ops: list[list[Any]]) -> tuple[tuple[Any, ...] | None, Outcome | None]:
        key = json.dumps(ops, sort_keys=True)
        if key in memo:
            hit = memo[key]
            return (None, None) if hit == "invalid" else (hit, None)  # type: ignore[return-value]
        state["runs"] += 1
        try:
            outcome = run_recipe(source, destination, ops, ram_size=ram_size)
        except InvalidState:
            memo[key] = "invalid"
            return None, None
        sig = signature(outcome, expected)
        memo[key] = sig
        return sig, outcome

    rounds = 0
    while state["generated"] < budget and len(findings) < max_findings:
        state["found"] = False
        state["shrink_left"] = SHRINK_BUDGET
        round_generated = {"n": 0}

        @settings(
            max_examples=budget - state["generated"], database=None, deadline=None,
            verbosity=Verbosity.quiet, report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck),
            phases=(Phase.generate, Phase.shrink),
        )  # fmt: skip
        @hseed(seed * 7919 + rounds)
        @given(strategy)
        def search(ops: list[list[Any]]) -> None:
            from hypothesis import reject

            key = json.dumps(ops, sort_keys=True)
            if not state["found"]:
                round_generated["n"] += 1  # noqa: B023 (called in this iteration)
            elif key not in state["raised"]:
                # Shrinking: stop exploring new recipes once the budget is spent.
                if state["shrink_left"] <= 0:
                    return
                state["shrink_left"] -= 1
            sig, outcome = evaluate(ops)
            if memo.get(key) == "invalid":
                reject()
            if sig is not None and sig not in findings:
                state["found"] = True
                state["raised"].add(key)
                if outcome is None:
                    outcome = run_recipe(source, destination, ops, ram_size=ram_size)
                raise _Found(sig, ops, outcome)

        try:
            search()
        except _Found as f:
            finding = Finding(source, destination, f.sig[0], f.sig, f.ops, f.outcome.message,
                              expected, _detail(f.outcome), state["runs"], known.get(f.sig))
            findings[f.sig] = finding
            if on_finding is not None:
                on_finding(finding)
        except Exception as e:  # hypothesis gave up (e.g. everything rejected)
            if type(e).__name__ in ("Unsatisfiable", "FailedHealthCheck"):
                break
            raise
        else:
            state["generated"] += round_generated["n"]
            break
        state["generated"] += round_generated["n"]
        rounds += 1
    return list(findings.values())


def _detail(outcome: Outcome) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if outcome.load_error:
        out["load_error"] = outcome.load_error
    if outcome.not_loaded or outcome.bytes_unread:
        out["not_loaded"] = outcome.not_loaded
        out["bytes_unread"] = outcome.bytes_unread
    if outcome.diff:
        out["diff"] = outcome.diff[:5]
        out["diff_total"] = outcome.diff_total
    if outcome.crash:
        out["crash"] = outcome.crash
    return out


# -- output ----------------------------------------------------------------------------


def _step_text(step: list[Any]) -> str:
    name, args = step[0], step[1] if len(step) > 1 else {}
    shown = " ".join(
        f"{k}=0x{v:x}" if isinstance(v, int) and not isinstance(v, bool) and v > 9 else f"{k}={v}"
        for k, v in args.items()
    )
    return f"{name} {shown}".strip()


def _release_args(endpoint: str) -> str:
    release, _, machine = endpoint.partition("/")
    return f"--release {release} --machine {machine}"


def format_finding(f: Finding, index: int = 1, saved_as: str | None = None,
                   recipe_file: str | None = None) -> str:
    tag = "known issue: " if f.known_issue else "NEW: "
    lines = [
        f"[{index}] {tag}{f.verdict} on {f.source} -> {f.destination} "
        f"(expected {'|'.join(f.expected)}): {f.message}",
    ]
    if f.known_issue:
        lines.append(f"    the matrix's known issue: {f.known_issue}")
    lines += [
        f"    minimal state ({len(f.ops)} step(s)):",
        *(f"      {_step_text(s)}" for s in f.ops),
        f"    recipe: {json.dumps(f.ops)}",
        "    reproduce:",
    ]
    if saved_as:
        lines += [
            f"      migmatrix save {_release_args(f.source)} --scenario {saved_as} -o cell.mig",
            f"      migmatrix load {_release_args(f.destination)} cell.mig --dump-state",
        ]
    target = recipe_file or "RECIPE.json (the recipe above)"
    lines.append(f"      migmatrix hunt {f.source} {f.destination} --replay {target}")
    return "\n".join(lines)


def write_recipe(f: Finding, directory: Path, index: int) -> Path:
    """The finding as a file that ``migmatrix hunt SRC DST --replay FILE`` runs again."""
    directory.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", f"{f.source}--{f.destination}")
    path = directory / f"{slug}-{index}.json"
    path.write_text(json.dumps(f.to_dict(), indent=1) + "\n")
    return path


def save_finding(f: Finding, name: str, directory: Path | None = None) -> Path:
    """Write the finding as a state recipe that guest programs replay (``found-NAME``)."""
    directory = directory or found_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    doc = {
        "name": name,
        "summary": f"found by hunt: {f.verdict} on {f.source} -> {f.destination}",
        "ops": f.ops,
        "requires": sorted(requirements(f.ops)),
        "source": f.source,
        "destination": f.destination,
        "verdict": f.verdict,
        "signature": [str(x) for x in f.signature],
        "message": f.message,
        "found_by": "migmatrix hunt",
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


# -- command ---------------------------------------------------------------------------


def _read_recipe(path: str) -> list[Any]:
    """The steps of a recipe file (a hunt finding, a saved scenario, or a bare list)."""
    from .cli import UsageError

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"--replay {path}: {e.strerror or e}") from None
    except ValueError as e:  # not UTF-8, not JSON
        raise UsageError(f"--replay {path}: not a JSON recipe ({e})") from None
    ops = doc.get("ops") if isinstance(doc, dict) else doc
    if not isinstance(ops, list) or not all(
            isinstance(s, list) and s and isinstance(s[0], str) for s in ops):
        raise UsageError(f"--replay {path}: expected a list of [operation, {{args}}] steps "
                         "(or an object with 'ops')")
    return ops


def _cmd_hunt(args: argparse.Namespace) -> int:
    matrix = None if args.no_matrix else args.matrix
    if args.replay:
        ops = _read_recipe(args.replay)
        try:
            outcome = run_recipe(args.source, args.destination, ops)
        except InvalidState as e:
            print(f"migmatrix hunt: the source cannot build this state: {e}", file=sys.stderr)
            return 2
        verdict = classify(outcome)
        expected = expected_verdicts(args.source, args.destination, matrix)
        print(f"{args.source} -> {args.destination}: {verdict.value} "
              f"(expected {'|'.join(expected)}) {outcome.message}")
        return 0 if verdict.value in expected else 1
    t0 = time.perf_counter()
    out: list[str] = []
    recipes = Path(args.recipes)

    def show(f: Finding) -> None:
        index = len(out) + 1
        recipe = write_recipe(f, recipes, index)
        saved = None
        if args.save:
            name = args.save if index == 1 else f"{args.save}-{index}"
            save_dir = Path(args.save_dir) if args.save_dir else None
            path = save_finding(f, name, save_dir)
            saved = f"found-{name}"
            text = format_finding(f, index, saved, str(recipe)) + f"\n    saved as {path}"
        else:
            text = format_finding(f, index, recipe_file=str(recipe))
        out.append(text)
        print(text, flush=True)

    findings = hunt(args.source, args.destination, args.budget, args.seed, matrix=matrix,
                    on_finding=show)
    new = [f for f in findings if not f.known_issue]
    print(f"{len(findings)} finding(s) on {args.source} -> {args.destination}, {len(new)} new, "
          f"{len(findings) - len(new)} known issue(s) of the matrix "
          f"({time.perf_counter() - t0:.1f} s, budget {args.budget})", file=sys.stderr)
    return 1 if new else 0


def configure_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``hunt`` to the ``migmatrix`` sub-commands."""
    s = subparsers.add_parser(
        "hunt", help="search device states that break a pair",
        description="Search device states that break a pair; exit 1 if a finding is not "
                    "one of the matrix's known issues.")
    s.add_argument("source", metavar="SRC", help="source endpoint, e.g. new/pc-0.14")
    s.add_argument("destination", metavar="DST", help="destination endpoint, e.g. 0.14/pc")
    s.add_argument("--budget", type=int, default=200, help="generated states (default 200)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--matrix", default="default", metavar="FILE|NAME",
                   help="whose rules say what the pair expects and whose known issues a "
                        "finding may repeat (default: default)")
    s.add_argument("--no-matrix", action="store_true", help="expect pass on the pair")
    s.add_argument("--save", metavar="NAME", help="save findings as scenarios found-NAME[-i]")
    s.add_argument("--save-dir", help=f"where to save (default: {found_dir()})")
    s.add_argument("--replay", metavar="RECIPE", help="run one saved recipe and classify it")
    s.add_argument("--recipes", metavar="DIR", default="reports/hunt",
                   help="where each finding's recipe file is written (default reports/hunt)")
    s.set_defaults(func=_cmd_hunt)
    return s
