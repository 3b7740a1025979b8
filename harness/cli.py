"""The ``migmatrix`` command: parse arguments, call the library, map errors to exit codes.

Exit codes, the same for every command (README "Exit codes"): 0 success (every cell met
its expectation; a stream loaded or decoded to its end; no problem found); 1 a cell did
not, or a stream was refused or did not decode, or a problem was found, or writing failed
(a full disk); 2 a usage error or a bad input (matrix, results, recipe, a value or a path
on the command line), reported in one line; 3 no cell ran (none matched); 130
interrupted (SIGINT), with the finished cells kept; 141 the output pipe closed early
(``| head``), quietly, as a program killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys

from . import __version__

# typing.TYPE_CHECKING without importing typing (nor pathlib): ``analyze`` starts faster
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from typing import Any

__all__ = ["UsageError", "brief_buffer", "main"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOTHING_RAN = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_PIPE = 130, 141
DEFAULT_OUT = "reports"
LONG_BUFFER = 64  # bytes beyond which --dump-state summarises a buffer (without --full)


class UsageError(Exception):
    """A command line that cannot be carried out; the message says why, in one line."""


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


def _machine(release: str, machine: str, ram: str, nic: str | None = None,
             media: Any = (), vga: str = "cirrus") -> Any:
    """A machine for save/load; a RAM size this host cannot map is a usage error."""
    from .emulator.machine import Machine, parse_size

    size = parse_size(ram)
    try:
        return Machine(release, machine, size, nic, media, vga)
    except (MemoryError, OSError) as e:
        if isinstance(e, OSError) and e.errno != errno.ENOMEM:
            raise
        raise UsageError(
            f"--ram {ram}: this host cannot provide {size} bytes of guest RAM") from None


def _cmd_save(args: argparse.Namespace) -> int:
    from .emulator.errors import SaveCrash
    from .scenarios import apply_scenario, get_scenario

    try:
        media = get_scenario(args.scenario).media
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    machine = _machine(args.release, args.machine, args.ram, args.nic, media, args.vga)
    scenario = apply_scenario(machine, args.scenario, args.seed)
    try:
        if args.output == "-":
            machine.save(sys.stdout.buffer, passes=scenario.live_passes,
                         workload=scenario.workload)
        else:
            with open(args.output, "wb") as f:
                machine.save(f, passes=scenario.live_passes, workload=scenario.workload)
    except SaveCrash as e:
        if args.output != "-":
            os.unlink(args.output)  # the part written is no stream
        print(f"migmatrix save: the source would crash: {e}", file=sys.stderr)
        return EXIT_FAIL
    if args.output != "-":
        size = os.path.getsize(args.output)
        print(f"{machine.endpoint} [{scenario.name}] -> {args.output} ({size} bytes)",
              file=sys.stderr)
    return EXIT_OK


def brief_buffer(hexstr: str) -> str:
    """A long buffer of the state dump in one line: its length, a digest (two dumps
    differ here whenever the buffers do), how many bytes are not zero and where they are.
    A 256 KiB ``io_buffer`` becomes ~100 characters instead of 512 Ki hex digits."""
    import hashlib

    data = bytes.fromhex(hexstr)
    runs: list[str] = []
    nonzero = 0
    start = None
    for i, b in enumerate(data + b"\0"):
        if b and start is None:
            start = i
        elif not b and start is not None:
            nonzero += i - start
            runs.append(f"{start}-{i - 1}" if i - 1 > start else str(start))
            start = None
    shown = ", ".join(runs[:6]) + (f", ... ({len(runs)} runs)" if len(runs) > 6 else "")
    digest = hashlib.sha256(data).hexdigest()[:16]
    where = f"non-zero at {shown}" if runs else "all zero"
    return f"<{len(data)} bytes, sha256 {digest}, {nonzero} non-zero: {where}>"


def _brief_state(doc: dict[str, Any]) -> dict[str, Any]:
    for fields in doc.get("devices", {}).values():
        for path, value in fields.items():
            if isinstance(value, str) and len(value) > 2 * LONG_BUFFER:
                try:
                    fields[path] = brief_buffer(value)
                except ValueError:
                    pass  # not hex: a string field, kept as it is
    return doc


def _cmd_load(args: argparse.Namespace) -> int:
    from .emulator.errors import LoadCrash, LoadError
    from .emulator.machine import Machine, parse_size

    ram_size = parse_size(args.ram)
    media = [m for m in args.media.split(",") if m]
    source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    try:
        machine, report = Machine.load(args.release, args.machine, source, ram_size=ram_size,
                                       nic=args.nic, media=media, vga=args.vga)
    except LoadError as e:
        print(f"migmatrix load: {e}", file=sys.stderr)
        return EXIT_FAIL
    except LoadCrash as e:
        print(f"migmatrix load: the destination would crash: {e}", file=sys.stderr)
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
        if not args.full:
            doc = _brief_state(doc)
        doc["load"] = report.to_dict()
        print(json.dumps(doc, indent=1))
    else:
        print(f"loaded {report.section_count} section(s), {report.bytes_consumed} bytes",
              file=sys.stderr)
    return EXIT_OK


def _load_matrix(ref: str) -> Any:
    from .matrix import load_matrix

    return load_matrix(ref)


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
    return EXIT_OK if cells else EXIT_NOTHING_RAN


def _progress_printer(total: int) -> Any:
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    state = {"n": 0}
    icons = {"pass": "[green]ok[/]", "rejected": "[cyan]rejected[/]"}

    def show(result: dict[str, Any]) -> None:
        state["n"] += 1
        if not console.is_terminal and result["ok"]:
            return
        mark = icons.get(result["verdict"], f"[magenta]{result['verdict']}[/]")
        flag = "" if result["ok"] else " [bold red]UNEXPECTED[/]"
        # Cell ids hold brackets ("[ide-bus-error]"): text, never markup.
        counter = escape(f"[{state['n']}/{total}]")
        console.print(f"{counter} {escape(result['id'])}: {mark}{flag}", markup=True,
                      highlight=False)

    return show


def _out_dir(args: argparse.Namespace, shard: tuple[int, int] | None) -> tuple[Path, bool]:
    """Where a run writes, and whether the user chose it. A filtered run (``-k``,
    ``--shard``) without ``--out`` writes beside the full report, never over it."""
    from pathlib import Path

    if args.out is not None:
        return Path(args.out), True
    if shard is not None:
        return Path(DEFAULT_OUT) / f"shard-{shard[0]}-of-{shard[1]}", False
    if args.k:
        return Path(DEFAULT_OUT) / "selected", False
    return Path(DEFAULT_OUT), False


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import (
        ResultsFile,
        check_overwrite,
        header,
        lock_output,
        run_cells,
        select_cells,
        worker_count,
    )

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
    out, chosen = _out_dir(args, shard)
    if not cells:
        what = " ".join(f"-k {k!r}" for k in args.k or []) or "the selection"
        print(f"no cell ran: {what} matched none of the {total} cell(s) of {matrix.name}; "
              f"nothing written to {out}/", file=sys.stderr)
        return EXIT_NOTHING_RAN
    filtered = bool(args.k) or shard is not None
    jobs = worker_count(args.jobs, len(cells))
    if jobs < args.jobs:
        print(f"--jobs {args.jobs}: running {jobs} worker(s) (at most one per cell and "
              f"{os.cpu_count() or 1} core(s) x 4)", file=sys.stderr)
    with lock_output(out):
        if chosen:
            check_overwrite(out, filtered=filtered)
        results = ResultsFile(out / "results.json",
                              header(matrix, driver, shard, total, selection=args.k))
        try:
            run_cells(cells, results, driver=driver, matrix_path=matrix.path, jobs=jobs,
                      on_result=None if args.quiet else _progress_printer(len(cells)))
        except KeyboardInterrupt:
            doc = results.write(finished=False)
            _write_reports(doc, out, results_json=False)
            print(f"interrupted: {len(results.cells)} cell(s) kept in {out}", file=sys.stderr)
            return EXIT_INTERRUPTED
        doc = results.write(finished=True)
        _write_reports(doc, out, results_json=False)
    s = doc["summary"]
    note = f" (filtered: the full report in {DEFAULT_OUT}/ is kept)" if filtered and \
        not chosen else ""
    print(
        f"{s['total']} cell(s): {s['ok']} as expected, {s['unexpected']} unexpected, "
        f"{s['known_issues']} known issue(s); "
        + ", ".join(f"{k} {v}" for k, v in s["by_verdict"].items() if v)
        + f" -> {out}/{note}",
        file=sys.stderr,
    )
    return EXIT_OK if s["unexpected"] == 0 else EXIT_FAIL


def _write_reports(doc: dict[str, Any], out: Path, baseline: dict[str, Any] | None = None,
                   *, results_json: bool = True) -> None:
    from .report import write_reports

    write_reports(doc, out, baseline=baseline, results_json=results_json)


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report import load_results, merge_results
    from .runner import lock_output

    out = Path(args.out)
    if args.merge:
        paths = [p for p in [args.results, *args.merge] if p]
        doc, problems = merge_results([load_results(p) for p in paths], names=paths)
        for p in problems:
            print(f"migmatrix report: {p['kind']}: {p['message']}", file=sys.stderr)
    else:
        if not args.results:
            raise UsageError("give RESULTS.json or --merge A.json B.json ...")
        doc = load_results(args.results)
        problems = []
    baseline = load_results(args.baseline) if args.baseline else None
    with lock_output(out, "migmatrix report"):
        _write_reports(doc, out, baseline)
    print(f"report written to {out / 'index.html'}", file=sys.stderr)
    return EXIT_FAIL if problems else EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


# Commands whose parser lives in their own module (``configure_parser``).
_MODULE_COMMANDS = ("analyze", "schema", "selftest", "hunt")
# Commands of the emulator core alone: their parser imports nothing else, so that
# ``migmatrix save`` and ``load`` start fast.
_CORE_COMMANDS = ("releases", "save", "load")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; given one of :data:`_MODULE_COMMANDS` or :data:`_CORE_COMMANDS`,
    a parser of those commands only, so that ``migmatrix analyze`` imports the analyzer
    and nothing else, and ``save`` and ``load`` the emulator core."""
    p = argparse.ArgumentParser(prog="migmatrix", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"migmatrix {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    if command in _MODULE_COMMANDS:
        importlib.import_module(f".{command}", __package__).configure_parser(sub)
        return p

    s = sub.add_parser("releases", help="list releases, machine types, formats, peek policies")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_releases)

    def endpoint_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--release", required=True, help="a release (migmatrix releases)")
        s.add_argument("--machine", default="pc", help="machine type (default pc)")
        s.add_argument("--ram", default="8M",
                       help="guest RAM, e.g. 2M or 1G (default 8M); a report cell's "
                            "commands give its own")
        s.add_argument("--nic", default=None, choices=["e1000", "rtl8139", "none"],
                       help="the NIC, with user networking, or none (default: the release's "
                            "without -net options: e1000, rtl8139 on RHEL 6)")
        s.add_argument("--vga", default="cirrus", choices=["cirrus", "none"],
                       help="the display adapter of -vga (default: cirrus)")

    s = sub.add_parser("save", help="write a stream of a machine in a scenario's state")
    endpoint_args(s)
    s.add_argument("--scenario", default="idle", help="a scenario of the catalogue")
    s.add_argument("--seed", type=int, default=0, help="seed of a seeded scenario (random)")
    s.add_argument("-o", "--output", required=True, help="file, or - for stdout")
    s.set_defaults(func=_cmd_save)

    s = sub.add_parser("load", help="load a stream; exit 1 with the reason if refused")
    endpoint_args(s)
    s.add_argument("--media", default="", metavar="LIST",
                   help="images the destination is started with: hda, fda, cdrom (comma "
                        "separated; a scenario's own when the stream came from `save`)")
    s.add_argument("file", help="stream file, or - for stdin")
    s.add_argument("--dump-state", action="store_true",
                   help="print the loaded state as JSON (long buffers summarised)")
    s.add_argument("--full", action="store_true",
                   help="with --dump-state: every buffer in full, as hex")
    s.set_defaults(func=_cmd_load)
    if command in _CORE_COMMANDS:
        return p

    from .drivers import DRIVERS
    from .matrix import shipped_matrices

    matrix_help = ("a matrix file, or the name of a shipped one: "
                   f"{', '.join(shipped_matrices())} (default: default)")
    for name, func, hlp in (("run", _cmd_run, "run a matrix"), ("list", _cmd_list, "list cells")):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--matrix", default="default", metavar="FILE|NAME", help=matrix_help)
        s.add_argument("-k", action="append", metavar="EXPR",
                       help="only cells whose id contains EXPR (or matches the glob); "
                            "repeat to narrow")
        s.add_argument("--shard", metavar="I/N", help="only the I-th of N deterministic slices")
        if name == "run":
            s.add_argument("--out", default=None, metavar="DIR",
                           help=f"folder for results.json, junit.xml, index.html (default "
                                f"{DEFAULT_OUT}/; with -k {DEFAULT_OUT}/selected/, with "
                                f"--shard I/N {DEFAULT_OUT}/shard-I-of-N/, so that a "
                                "partial run never replaces the full report)")
            s.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                           help="cells run in parallel worker processes (default 1; at most "
                                "one per cell and 4 per core)")
            s.add_argument("--driver", default=None, choices=sorted(DRIVERS),
                           help="how model endpoints run: inprocess (default), subprocess, "
                                "docker; real QEMU endpoints run under qemu or historic")
            s.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
        s.set_defaults(func=func)

    s = sub.add_parser("report", help="render the report from saved results")
    s.add_argument("results", nargs="?", help="a results.json")
    s.add_argument("--baseline", metavar="RESULTS",
                   help="an earlier results.json: the report shows what changed since")
    s.add_argument("--merge", nargs="+", metavar="RESULTS", help="merge shard results")
    s.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"folder for results.json, junit.xml, index.html (default {DEFAULT_OUT}/)")
    s.set_defaults(func=_cmd_report)

    from . import analyze, hunt, schema, selftest

    analyze.configure_parser(sub)
    schema.configure_parser(sub)
    selftest.configure_parser(sub)
    hunt.configure_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        code = _run_command(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as if killed by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_PIPE


def _run_command(args: argparse.Namespace) -> int:
    """Run the command; map the errors of its inputs to one line and an exit code."""
    from .emulator.errors import ConfigError, EmulatorError

    try:
        return args.func(args)
    except (UsageError, ConfigError, KeyError) as e:
        return _fail(args, e, EXIT_USAGE)
    except EmulatorError as e:
        return _fail(args, e, EXIT_FAIL)
    except BrokenPipeError:
        raise
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        return _fail(args, e, EXIT_USAGE)  # a path on the command line that cannot be used
    except OSError as e:
        return _fail(args, e, EXIT_FAIL)  # the run itself failed (a full disk, I/O)
    except Exception as e:
        # Imported only here: a cheap start for analyze.
        from .matrix import MatrixError
        from .report.results import ResultsError
        from .runner import OutputBusy, OutputHoldsFullRun

        if isinstance(e, MatrixError | ResultsError | OutputBusy | OutputHoldsFullRun):
            return _fail(args, e, EXIT_USAGE)
        raise


def _fail(args: argparse.Namespace, error: BaseException, code: int) -> int:
    print(f"migmatrix {args.command}: {error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
