"""``migmatrix save`` and ``load`` of a 1 GiB guest as whole processes, against QEMU 7.2
saving and loading the same guest, in one run.

    python bench/qemu_compare.py [--ram 1G] [--rounds 3] [--before DIR] [--dir DIR]
                                 [--qemu qemu-system-x86_64] [--keep FILE]

migmatrix: ``python -m harness.cli save --release new --machine pc --ram 1G --scenario
live-ram -o FILE`` (the guest is built by the command: half its RAM random pages in runs,
then three live passes), then ``load --release new --machine pc --ram 1G FILE``, each a
fresh process timed from launch to exit, with its peak RSS from ``wait4``. ``--before
DIR`` runs the same commands from another tree (``git archive REV | tar -x -C DIR``), in
the same rounds. Bytecode is compiled once beforehand, into a scratch pycache, as for an
installed package.

QEMU (Debian's qemu-system-x86, pc-i440fx-7.2) gets its RAM from a memory-backend-file
holding the same ``pc.ram`` as the migmatrix guest (``fill_pattern`` with the scenario's
seed; filled before the timing: the guest's life before the migration), and nothing boots.
Its save is a process launched with ``-S`` that migrates to ``exec:cat > FILE`` (no
bandwidth limit) and quits; its load a process launched with ``-incoming defer`` that
takes ``migrate-incoming exec:cat FILE`` and quits. Both are timed from launch to exit;
the migration alone (command to ``completed``) is shown too.

Targets per command: >= 1 GiB/s of guest RAM, within 2x of QEMU's process, peak RSS <=
guest RAM + 64 MiB. Each figure is the median of ``--rounds`` rounds; the rounds
interleave QEMU, before and after, because the machines are shared. ``--keep FILE`` keeps
QEMU's stream (for bench/analyze_qemu.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(__file__))
from _qmp import QMP, start, wait_for, wait_rusage  # noqa: E402

from harness.emulator.machine import parse_size  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIO, SEED = "live-ram", 0
GUEST_RNG = f"{SCENARIO}:{SEED}"  # the seed the scenario's program gets (guest.run_program)


def fill_file(path: str, size: int, *, fraction_random: float = 0.5) -> None:
    """``size`` bytes at ``path``: the ``pc.ram`` of the migmatrix guest (``fraction_random``
    of its pages random, else zeros; bench/analyze_qemu.py asks for all random). In a
    process of its own: Linux counts a parent's peak RSS in the peak of the children it
    forks later."""
    code = ("import mmap, random, sys; from harness.emulator.ram import fill_pattern\n"
            "path, size = sys.argv[1], int(sys.argv[2])\n"
            "with open(path, 'wb') as f: f.truncate(size)\n"
            "with open(path, 'r+b') as f, mmap.mmap(f.fileno(), size) as m:\n"
            f"    fill_pattern(m, random.Random({GUEST_RNG!r}), {fraction_random!r})\n")
    subprocess.run([sys.executable, "-c", code, path, str(size)], check=True, cwd=REPO)


@dataclass
class Figures:
    """Wall seconds, peak RSS (MiB) and CPU seconds per round of one command."""

    wall: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    migrate: list[float] = field(default_factory=list)  # QEMU: the migration alone

    def add(self, wall: float, rss: float, cpu: float, migrate: float | None = None) -> None:
        self.wall.append(wall)
        self.rss.append(rss)
        self.cpu.append(cpu)
        if migrate is not None:
            self.migrate.append(migrate)


def run_command(argv: list[str], env: dict[str, str], log: str) -> tuple[float, float, float]:
    """Run a command to its exit: (wall s, peak RSS MiB, CPU s); fails on a non-zero exit.
    It runs in its tree (``python -m`` puts the working directory first on the path)."""
    t = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=env["PYTHONPATH"])
        code, rss, cpu = wait_rusage(proc)
    wall = time.perf_counter() - t
    if code != 0:
        with open(log, "rb") as f:
            raise RuntimeError(f"{' '.join(argv)} exited with {code}: {f.read()[-2000:]!r}")
    return wall, rss, cpu


def qemu_argv(qemu: str, size: int, sock: str, backend: str, *, incoming: bool) -> list[str]:
    return [qemu, "-M", "pc-i440fx-7.2,memory-backend=pc.ram", "-object", backend,
            "-m", f"{size >> 20}M", "-nodefaults", "-display", "none", "-S",
            "-qmp", f"unix:{sock},server=on,wait=off", *(["-incoming", "defer"] if incoming
                                                          else [])]


def completed(q: QMP) -> bool:
    status = q.cmd("query-migrate").get("status")
    if status == "failed":
        raise RuntimeError(f"migration failed: {q.cmd('query-migrate')}")
    return status == "completed"


def qemu_process(argv: list[str], log: str, sock: str, command: str, uri: str
                 ) -> tuple[float, float, float, float]:
    """Launch QEMU, run one migration command, quit: (wall s, peak RSS MiB, CPU s,
    migration s)."""
    t = time.perf_counter()
    proc = start(argv, log)
    try:
        q = QMP(sock)
        if command == "migrate":
            q.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        t0 = time.perf_counter()
        q.cmd(command, uri=uri)
        migrate = wait_for(lambda: completed(q), step=0.005) - t0
        q.cmd("quit")
    except BaseException:
        proc.kill()
        raise
    code, rss, cpu = wait_rusage(proc)
    wall = time.perf_counter() - t
    if code != 0:
        raise RuntimeError(f"QEMU exited with {code}; log {log}")
    return wall, rss, cpu, migrate


def qemu_round(qemu: str, size: int, tmp: str, ramfile: str, stream: str,
               save: Figures, load: Figures) -> None:
    if os.path.exists(stream):
        os.unlink(stream)
    backend = f"memory-backend-file,id=pc.ram,size={size},mem-path={ramfile},share=on"
    save.add(*qemu_process(qemu_argv(qemu, size, f"{tmp}/qs.sock", backend, incoming=False),
                           f"{tmp}/qs.log", f"{tmp}/qs.sock", "migrate", f"exec:cat > {stream}"))
    backend = f"memory-backend-ram,id=pc.ram,size={size}"
    load.add(*qemu_process(qemu_argv(qemu, size, f"{tmp}/qd.sock", backend, incoming=True),
                           f"{tmp}/qd.log", f"{tmp}/qd.sock", "migrate-incoming",
                           f"exec:cat {stream}"))


def migmatrix_env(tree: str, pycache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = tree
    env["PYTHONPYCACHEPREFIX"] = pycache  # compiled once, kept out of the trees
    return env


def migmatrix_round(env: dict[str, str], ram: str, tmp: str, stream: str,
                    save: Figures, load: Figures) -> int:
    if os.path.exists(stream):
        os.unlink(stream)
    base = [sys.executable, "-m", "harness.cli"]
    endpoint = ["--release", "new", "--machine", "pc", "--ram", ram]
    save.add(*run_command([*base, "save", *endpoint, "--scenario", SCENARIO, "--seed",
                           str(SEED), "-o", stream], env, f"{tmp}/ms.log"))
    size = os.path.getsize(stream)
    load.add(*run_command([*base, "load", *endpoint, stream], env, f"{tmp}/ml.log"))
    return size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ram", default="1G")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--before", default=None, help="a tree to run as 'before' in the same rounds")
    p.add_argument("--dir", default=None, help="where streams and QEMU's RAM file go")
    p.add_argument("--qemu", default="qemu-system-x86_64")
    p.add_argument("--keep", default=None, help="keep QEMU's stream at this path")
    args = p.parse_args()
    size = parse_size(args.ram)
    if shutil.which(args.qemu) is None:
        sys.exit(f"{args.qemu} not found (apt-get install qemu-system-x86)")
    tmp = tempfile.mkdtemp(prefix="mm-qemu-", dir=args.dir)
    pycache = os.path.join(tmp, "pycache")
    trees = {"after": REPO} if not args.before else {"before": os.path.abspath(args.before),
                                                     "after": REPO}
    envs = {name: migmatrix_env(tree, pycache) for name, tree in trees.items()}
    for env in envs.values():  # compile the bytecode once
        run_command([sys.executable, "-m", "harness.cli", "save", "--release", "new",
                     "--scenario", SCENARIO, "-o", os.path.join(tmp, "warm.mig")], env,
                    f"{tmp}/warm.log")
    ramfile = os.path.join(tmp, "guest.ram")
    t = time.perf_counter()
    fill_file(ramfile, size)
    print(f"QEMU guest RAM file filled in {time.perf_counter() - t:.2f} s")
    qemu_stream = args.keep or os.path.join(tmp, "qemu.mig")
    streams = {name: os.path.join(tmp, f"{name}.mig") for name in trees}
    figures = {name: (Figures(), Figures()) for name in ("QEMU 7.2", *trees)}
    sizes = {}
    for i in range(args.rounds):
        qemu_round(args.qemu, size, tmp, ramfile, qemu_stream, *figures["QEMU 7.2"])
        sizes["QEMU 7.2"] = os.path.getsize(qemu_stream)
        for name, env in envs.items():
            sizes[name] = migmatrix_round(env, args.ram, tmp, streams[name], *figures[name])
            os.unlink(streams[name])
        print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
    os.unlink(ramfile)
    if not args.keep:
        os.unlink(qemu_stream)
    report(size, figures, sizes, args.rounds)
    shutil.rmtree(tmp)  # logs and bytecode; kept only when a round failed


def report(size: int, figures: dict[str, tuple[Figures, Figures]], sizes: dict[str, int],
           rounds: int) -> None:
    gib = size / (1 << 30)
    limit = (size >> 20) + 64
    med = statistics.median
    print(f"guest {size >> 20} MiB pc.ram, half random pages; medians of {rounds} rounds; "
          "streams " + ", ".join(f"{k} {v / 1e6:,.0f} MB" for k, v in sizes.items()))
    print(f"{'':18} {'wall':>7} {'GiB/s':>6} {'CPU':>6} {'peak RSS':>9} {'vs QEMU':>8}  "
          f"targets: >= 1 GiB/s, <= 2x QEMU, RSS <= {limit} MiB")
    for i, what in enumerate(("save", "load")):
        q_wall = med(figures["QEMU 7.2"][i].wall)
        for name, pair in figures.items():
            f = pair[i]
            wall = med(f.wall)
            line = (f"{what + ' ' + name:18} {wall:6.2f}s {gib / wall:6.2f} {med(f.cpu):5.2f}s "
                    f"{med(f.rss):5.0f} MiB")
            if name == "QEMU 7.2":
                line += (f"           (migration alone {med(f.migrate):.2f} s, "
                         f"{gib / med(f.migrate):.2f} GiB/s)")
            else:
                met = [gib / wall >= 1, wall <= 2 * q_wall, med(f.rss) <= limit]
                line += (f" {wall / q_wall:7.2f}x  "
                         + ", ".join("met" if m else "NOT met" for m in met)
                         + f"  (rounds: {' '.join(f'{w:.2f}' for w in f.wall)} s)")
            print(line)


if __name__ == "__main__":
    main()
