"""The ``migmatrix`` command: parse arguments, call the library, map errors to exit codes.

Exit codes: 0 every cell met its expectation (or the command succeeded); 1 a cell did
not, or a stream was refused; 2 a usage or matrix-file error; 3 no cell ran.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["main"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOTHING_RAN = 0, 1, 2, 3


class UsageError(Exception):
    pass


def _cmd_releases(args: argparse.Namespace) -> int:
    from .emulator.releases import RELEASES

    if args.json:
        out = [
            {
                "release": r.name,
                "description": r.description,
                "peek": r.peek.value,
                "accepted_versions": sorted(r.accepted_versions),
                "format_per_machine": r.format_per_machine,
                "machines": [
                    {"name": m.name, "aliases": list(m.aliases), "stream_format": m.stream_format}
                    for m in r.machines
                ],
                "subsections": sorted(r.subsections),
                "variants": dict(r.variants),
            }
            for r in RELEASES.values()
        ]
        print(json.dumps(out, indent=2))
        return EXIT_OK
    for r in RELEASES.values():
        print(f"{r.name:5}  peek={r.peek.value:16} accepts v{','.join(map(str, sorted(r.accepted_versions)))}"
              f"{'  (stream version must equal the machine format)' if r.format_per_machine else ''}")
        print(f"       {r.description}")
        for m in r.machines:
            alias = f" (= {', '.join(m.aliases)})" if m.aliases else ""
            print(f"       machine {m.name}{alias}: format {m.stream_format}")
        print(f"       subsections: {', '.join(sorted(r.subsections))}")
    return EXIT_OK


def _cmd_save(args: argparse.Namespace) -> int:
    from .emulator.machine import Machine
    from .scenarios import apply_scenario

    machine = Machine(args.release, args.machine, args.ram)
    scenario = apply_scenario(machine, args.scenario, args.seed)
    if args.output == "-":
        machine.save(sys.stdout.buffer, passes=scenario.live_passes, workload=scenario.workload)
    else:
        with open(args.output, "wb") as f:
            machine.save(f, passes=scenario.live_passes, workload=scenario.workload)
        size = Path(args.output).stat().st_size
        print(f"{machine.endpoint} [{scenario.name}] -> {args.output} ({size} bytes)",
              file=sys.stderr)
    return EXIT_OK


def _cmd_load(args: argparse.Namespace) -> int:
    from .emulator.errors import LoadError
    from .emulator.machine import Machine

    source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    try:
        machine, report = Machine.load(args.release, args.machine, source, ram_size=args.ram)
    except LoadError as e:
        print(f"migmatrix load: {e}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    if report.half_loaded:
        print(
            f"migmatrix load: warning: EOF at offset {report.bytes_consumed - 1} ended the load "
            f"with {report.bytes_unread} byte(s) unread (half-loaded); never loaded: "
            f"{', '.join(report.not_loaded) or 'none'}",
            file=sys.stderr,
        )
    if args.dump_state:
        doc = machine.state_json()
        doc["load"] = report.to_dict()
        print(json.dumps(doc, indent=1))
    else:
        print(f"loaded {len(report.sections)} section(s), {report.bytes_consumed} bytes",
              file=sys.stderr)
    return EXIT_OK


def _load_matrix(path: str) -> Any:
    from .matrix import load_matrix

    return load_matrix(path)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 1/3") from None
    if not 1 <= index <= count:
        raise UsageError(f"--shard {text!r}: I must be between 1 and N")
    return index, count


def _cmd_list(args: argparse.Namespace) -> int:
    from .runner import select_cells

    matrix = _load_matrix(args.matrix)
    cells = select_cells(matrix.cells(shard=_parse_shard(args.shard)), args.k)
    for cell in cells:
        known = "  [known issue]" if cell.known_issue else ""
        print(f"{cell.id}  expect {'|'.join(cell.expected)}{known}")
    print(f"{len(cells)} cell(s); {len(matrix.excluded)} not expressible by their source",
          file=sys.stderr)
    return EXIT_OK


def _progress_printer(total: int) -> Any:
    from rich.console import Console

    console = Console(stderr=True)
    state = {"n": 0}
    icons = {"pass": "[green]ok[/]", "rejected": "[cyan]rejected[/]"}

    def show(result: dict[str, Any]) -> None:
        state["n"] += 1
        if not console.is_terminal and result["ok"]:
            return
        mark = icons.get(result["verdict"], f"[magenta]{result['verdict']}[/]")
        flag = "" if result["ok"] else " [bold red]UNEXPECTED[/]"
        console.print(f"[{state['n']}/{total}] {result['id']}: {mark}{flag}", markup=True,
                      highlight=False)

    return show


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import ResultsFile, header, run_cells, select_cells

    matrix = _load_matrix(args.matrix)
    driver = args.driver or matrix.driver
    if driver == "docker":
        from .drivers.containers import engine_problem

        problem = engine_problem()
        if problem:
            raise UsageError(problem)
    shard = _parse_shard(args.shard)
    total = len(matrix.cells())
    cells = select_cells(matrix.cells(shard=shard), args.k)
    out = Path(args.out)
    results = ResultsFile(out / "results.json", header(matrix, driver, shard, total))
    try:
        run_cells(cells, results, driver=driver, matrix_path=matrix.path, jobs=args.jobs,
                  on_result=None if args.quiet else _progress_printer(len(cells)))
    except KeyboardInterrupt:
        doc = results.write(finished=False)
        _write_reports(doc, out, results_json=False)
        print(f"interrupted: {len(results.cells)} cell(s) kept in {out}", file=sys.stderr)
        return 130
    doc = results.write(finished=True)
    _write_reports(doc, out, results_json=False)
    s = doc["summary"]
    print(
        f"{s['total']} cell(s): {s['ok']} as expected, {s['unexpected']} unexpected, "
        f"{s['known_issues']} known issue(s); "
        + ", ".join(f"{k} {v}" for k, v in s["by_verdict"].items() if v)
        + f" -> {out}/",
        file=sys.stderr,
    )
    if s["total"] == 0:
        print("no cell ran", file=sys.stderr)
        return EXIT_NOTHING_RAN
    return EXIT_OK if s["unexpected"] == 0 else EXIT_FAIL


def _write_reports(doc: dict[str, Any], out: Path, baseline: dict[str, Any] | None = None,
                   *, results_json: bool = True) -> None:
    from .report import write_reports

    write_reports(doc, out, baseline=baseline, results_json=results_json)


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import load_results, merge_results

    out = Path(args.out)
    if args.merge:
        paths = [p for p in [args.results, *args.merge] if p]
        doc, problems = merge_results([load_results(p) for p in paths], names=paths)
        for p in problems:
            print(f"migmatrix report: {p['kind']}: {p['message']}", file=sys.stderr)
    else:
        if not args.results:
            raise UsageError("report: give RESULTS.json or --merge A.json B.json ...")
        doc = load_results(args.results)
        problems = []
    baseline = load_results(args.baseline) if args.baseline else None
    _write_reports(doc, out, baseline)
    print(f"report written to {out / 'index.html'}", file=sys.stderr)
    return EXIT_FAIL if problems else EXIT_OK


# Commands whose parser lives in their own module (``configure_parser``).
_MODULE_COMMANDS = ("analyze", "schema", "selftest", "hunt")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; given one of :data:`_MODULE_COMMANDS`, a parser of that command
    only, so that ``migmatrix analyze`` imports the analyzer and nothing else."""
    p = argparse.ArgumentParser(prog="migmatrix", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"migmatrix {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    if command in _MODULE_COMMANDS:
        importlib.import_module(f".{command}", __package__).configure_parser(sub)
        return p

    from .drivers import DRIVERS

    s = sub.add_parser("releases", help="list releases, machine types, formats, peek policies")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_releases)

    def endpoint_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--release", required=True)
        s.add_argument("--machine", default="pc")
        s.add_argument("--ram", default="8M", help="RAM size, e.g. 8M (default) or 1G")

    s = sub.add_parser("save", help="write a stream of a machine in a scenario's state")
    endpoint_args(s)
    s.add_argument("--scenario", default="idle")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("-o", "--output", required=True, help="file, or - for stdout")
    s.set_defaults(func=_cmd_save)

    s = sub.add_parser("load", help="load a stream; exit 1 with the reason if refused")
    endpoint_args(s)
    s.add_argument("file", help="stream file, or - for stdin")
    s.add_argument("--dump-state", action="store_true", help="print the loaded state as JSON")
    s.set_defaults(func=_cmd_load)

    for name, func, hlp in (("run", _cmd_run, "run a matrix"), ("list", _cmd_list, "list cells")):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--matrix", default="matrix/default.toml")
        s.add_argument("-k", action="append", metavar="EXPR",
                       help="only cells whose id contains EXPR (or matches the glob)")
        s.add_argument("--shard", metavar="I/N", help="only the I-th of N deterministic slices")
        if name == "run":
            s.add_argument("--out", default="reports")
            s.add_argument("--jobs", type=int, default=1)
            s.add_argument("--driver", default=None, choices=sorted(DRIVERS),
                           help="inprocess (default), subprocess or docker")
            s.add_argument("-q", "--quiet", action="store_true")
        s.set_defaults(func=func)

    s = sub.add_parser("report", help="render the report from saved results")
    s.add_argument("results", nargs="?")
    s.add_argument("--baseline")
    s.add_argument("--merge", nargs="+", metavar="RESULTS", help="merge shard results")
    s.add_argument("--out", default="reports")
    s.set_defaults(func=_cmd_report)

    from . import analyze, hunt, schema, selftest

    analyze.configure_parser(sub)
    schema.configure_parser(sub)
    selftest.configure_parser(sub)
    hunt.configure_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from .emulator.errors import ConfigError, EmulatorError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ConfigError, KeyError) as e:
        print(f"migmatrix {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except EmulatorError as e:
        print(f"migmatrix {args.command}: {e}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as e:
        print(f"migmatrix {args.command}: {e}", file=sys.stderr)
        return EXIT_FAIL
    except Exception as e:
        from .matrix import MatrixError  # imported only here: a cheap start for analyze

        if not isinstance(e, MatrixError):
            raise
        print(f"migmatrix {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
