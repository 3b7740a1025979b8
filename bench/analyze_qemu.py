"""``migmatrix analyze`` against QEMU's own analyze-migration.py, side by side in one run.

    python bench/analyze_qemu.py [--stream FILE] [--ram 512M] [--anchor PATH]
                                 [--before TREE] [--runs 15] [--python PATH]

Without ``--stream`` it makes the stream first: Debian's QEMU 7.2 (pc-i440fx-7.2) with a
guest RAM of ``--ram`` taken from a file filled with random pages (bench/qemu_compare.py),
migrated to a file over QMP; 512 MiB gives the 514 MiB stream of issue 16. The anchor is
``../shared/anchors/analyze-migration.py`` (QEMU's script, run as it is, never copied
into the project). Both commands run as a user runs them, in fresh processes, alternated
run by run so that load on the machine falls on both alike: ``python -m harness.cli
analyze FILE`` and ``python analyze-migration.py -f FILE``, on one interpreter: the one
``python3`` on the PATH runs (a shim such as pyenv's is resolved first: its shell and
``pyenv exec`` would add their own start-up to both), or ``--python``. The tree's
bytecode is compiled once beforehand, into a scratch pycache, as an installed package's
is (``PYTHONDONTWRITEBYTECODE`` would compile every module on every run); the script is
compiled on every run, as a script always is. ``--before TREE`` (a checkout of an earlier
commit) times that tree too, and the interpreter's bare start-up (``-c pass``), which
both commands include, is timed alongside.

Prints per command the best and median wall time, CPU time and peak RSS, then the ratio
of the anchor's time to migmatrix's (target >= 3x, and peak RSS no higher than the
anchor's). With hyperfine installed it also prints hyperfine's own comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.path.dirname(__file__))


# A child's peak RSS from wait4 counts the memory of the process that forked it (Linux
# carries it across exec): forked from this interpreter, every command measured at least
# this process's 20 MiB. Children are forked by a small helper interpreter instead (about
# 8 MiB, below every figure here), which times them and reports.
_SPAWN = """
import json, os, sys, time
argv = sys.argv[1:]
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
print(json.dumps([time.perf_counter() - t, usage.ru_utime + usage.ru_stime,
                  usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)]))
"""


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, int]:
    """Wall time, CPU time, peak RSS (MiB, the child's own) and exit status of one fresh
    process."""
    out = subprocess.run([sys.executable, "-I", "-S", "-c", _SPAWN, *argv], env=env,
                         capture_output=True, text=True, check=True).stdout
    wall, cpu, rss, code = json.loads(out)
    return wall, cpu, rss, code


def make_stream(ram: str) -> str:
    """QEMU 7.2's save of a guest whose RAM is all random pages, as qemu_compare.py saves."""
    from qemu_compare import fill_file, qemu_argv, qemu_process

    from harness.emulator.machine import parse_size

    qemu = "qemu-system-x86_64"
    if shutil.which(qemu) is None:
        sys.exit(f"{qemu} not found (apt-get install qemu-system-x86)")
    size = parse_size(ram)
    tmp = tempfile.mkdtemp(prefix="mm-analyze-")
    stream, ramfile, sock = (os.path.join(tmp, n) for n in ("qemu.mig", "guest.ram", "qs.sock"))
    fill_file(ramfile, size, fraction_random=1.0)
    backend = f"memory-backend-file,id=pc.ram,size={size},mem-path={ramfile},share=on"
    qemu_process(qemu_argv(qemu, size, sock, backend, incoming=False),
                 os.path.join(tmp, "qs.log"), sock, "migrate", f"exec:cat > {stream}")
    os.unlink(ramfile)
    return stream


def real_interpreter(name: str) -> str:
    """The interpreter that ``name`` on the PATH runs, through any shim."""
    found = shutil.which(name)
    if found is None:
        return sys.executable
    out = subprocess.run([found, "-c", "import sys; print(sys.executable)"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else found


def python_for(tree: Path, python: str) -> str:
    """``python`` when it can import ``tree``'s analyzer (so that both tools run on the
    same interpreter), else this one."""
    ok = subprocess.run([python, "-P", "-c", "import harness.analyze"],
                        env={**os.environ, "PYTHONPATH": str(tree)},
                        capture_output=True).returncode == 0
    return python if ok else sys.executable


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", help="an existing QEMU stream file")
    p.add_argument("--ram", default="512M", help="guest RAM when making the stream")
    p.add_argument("--anchor", default=str(REPO.parent / "shared" / "anchors" /
                                           "analyze-migration.py"))
    p.add_argument("--before", help="a checkout of an earlier tree, timed as well")
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--python", help="the interpreter for both (default: what python3 runs)")
    args = p.parse_args()
    from qemu_compare import migmatrix_env

    stream = args.stream or make_stream(args.ram)
    if not os.path.exists(args.anchor):
        sys.exit(f"{args.anchor}: QEMU's analyze-migration.py is not there (--anchor PATH)")
    size = os.path.getsize(stream)
    python = args.python or real_interpreter("python3")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pycache = tempfile.mkdtemp(prefix="mm-pycache-")
    commands: dict[str, tuple[list[str], dict[str, str]]] = {}
    for label, tree in (("migmatrix analyze", REPO),
                        *((("before: " + Path(args.before).name, Path(args.before)),)
                          if args.before else ())):
        # -P: the tree comes from PYTHONPATH, not from the working directory.
        commands[label] = ([python_for(tree, python), "-P", "-m", "harness.cli", "analyze",
                            stream], migmatrix_env(str(tree), pycache))
    commands["analyze-migration.py"] = ([python, args.anchor, "-f", stream], env)
    commands["interpreter start-up"] = ([python, "-c", "pass"], env)
    print(f"stream {stream}: {size / 2**20:,.0f} MiB; {args.runs} alternated runs each; "
          f"load average {os.getloadavg()[0]:.1f}; interpreter {python}")
    for argv, e in commands.values():  # warm the page cache, compile the tree's bytecode
        measure(argv, e)
    results: dict[str, list[tuple[float, float, float, int]]] = {k: [] for k in commands}
    for _ in range(args.runs):
        for label, (argv, e) in commands.items():
            results[label].append(measure(argv, e))
    print(f"{'':24} {'best':>8} {'median':>8} {'CPU':>8} {'peak RSS':>10}  exit")
    summary = {}
    for label, runs in results.items():
        best = min(r[0] for r in runs)
        med = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        rss = max(r[2] for r in runs)
        summary[label] = (best, med, cpu, rss)
        print(f"{label:24} {best:7.3f}s {med:7.3f}s {cpu:7.3f}s {rss:8.1f} MiB  "
              f"{sorted({r[3] for r in runs})}")
    mine, ref = summary["migmatrix analyze"], summary["analyze-migration.py"]
    ratio_best, ratio_med, ratio_cpu = ref[0] / mine[0], ref[1] / mine[1], ref[2] / mine[2]
    met = ratio_med >= 3 and mine[3] <= ref[3]
    print(f"analyze-migration.py / migmatrix: {ratio_best:.2f}x (best), {ratio_med:.2f}x "
          f"(median), {ratio_cpu:.2f}x (CPU); peak RSS {mine[3]:.1f} vs {ref[3]:.1f} MiB; "
          f"target >= 3x and RSS no higher: {'met' if met else 'NOT met'}")
    if args.before:
        label = next(k for k in summary if k.startswith("before"))
        print(f"{label} -> now: {summary[label][1] / mine[1]:.2f}x faster (median)")
    if shutil.which("hyperfine"):
        argv = ["hyperfine", "-N", "-w", "2", "-r", str(args.runs)]
        for label, (cmd, e) in commands.items():
            prefix = (f"env PYTHONPATH={e['PYTHONPATH']} PYTHONPYCACHEPREFIX={pycache} "
                      if "PYTHONPATH" in e else "")
            argv += ["-n", label, prefix + " ".join(cmd)]
        print("\nhyperfine:", flush=True)
        subprocess.run(argv, check=False, stdout=sys.stdout)
    shutil.rmtree(pycache, ignore_errors=True)


if __name__ == "__main__":
    main()
