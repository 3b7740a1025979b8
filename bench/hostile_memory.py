"""Peak memory of ``migmatrix load`` and ``migmatrix analyze`` on hostile but valid streams
of growing size, and the time of the analyzer's trailer search on runs of 0x06.

    python bench/hostile_memory.py [--sizes 10M,100M,1G] [--kinds page-parts,...]
                                   [--before TREE] [--before-max 30M]

Each stream is a valid stream of 0.14/pc (1 MiB of RAM) with one kind of repetition
spliced in, written to a temporary file in chunks (never held in memory here):

- ``page-parts``: after the first pass, RAM PART sections that each resend one page
  (4,117 bytes a section: 243,000 sections in 1 GB);
- ``empty-parts``: RAM PART sections holding only their EOS record (13 bytes a section);
- ``subsections``: 0.15's ``ide_bus/error`` subsection repeated (23 bytes each; 0.15
  loads every copy).

Every stream loads (exit 0) and analyzes to its end. Each command runs in a fresh
process; peak RSS is the child's own (wait4). Target: flat from 10 MB to 1 GB (guest RAM
plus a constant). Record-heavy kinds are slow per byte in Python (about 10 us a record),
so ``--record-max`` bounds their sizes (default 100M). ``--before TREE`` runs an earlier
checkout on the same streams up to ``--before-max`` (its memory grew with the stream).

The trailer search: ``find_trailer`` on a stream followed by N MB of 0x06 (each byte a
candidate trailer start for a backward scan), in this process: time against N.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.emulator.machine import Machine, parse_size  # noqa: E402
from harness.emulator.vmstate import Tracer  # noqa: E402
from harness.scenarios import apply_scenario  # noqa: E402

RAM = 1 << 20
KINDS = ("page-parts", "empty-parts", "subsections")
RECORD_HEAVY = ("empty-parts", "subsections")


def _base(kind: str) -> tuple[str, bytes, int, bytes]:
    """(release, valid stream, where to splice, the unit repeated there)."""
    if kind == "subsections":
        m = Machine("0.15", "pc", RAM)
        apply_scenario(m, "ide-bus-error")
        data = m.save()
        assert data is not None
        tracer = Tracer()
        Machine.load("0.15", "pc", data, ram_size=RAM, tracer=tracer)
        sub = next(x for x in tracer.marks if x.kind == "subsection"
                   and x.value == "ide_bus/error")
        return "0.15", data, sub.offset, data[sub.offset : sub.offset + 23]
    m = Machine("0.14", "pc", RAM)
    data = m.save()
    assert data is not None
    tracer = Tracer()
    Machine.load("0.14", "pc", data, ram_size=RAM, tracer=tracer)
    after_start = [x for x in tracer.marks if x.kind == "section"][1].offset
    eos = struct.pack(">Q", 0x10)
    if kind == "empty-parts":
        unit = struct.pack(">BI", 2, 0) + eos
    else:  # a page of pc.ram, named (no CONTINUE across sections needed), then EOS
        page = struct.pack(">Q", 0x5000 | 0x08) + b"\x06pc.ram" + bytes(range(256)) * 16
        unit = struct.pack(">BI", 2, 0) + page + eos
    return "0.14", data, after_start, unit


def write_stream(path: str, kind: str, size: int) -> tuple[str, int]:
    release, data, at, unit = _base(kind)
    n = max(0, (size - len(data)) // len(unit))
    block = unit * max(1, (1 << 20) // len(unit))
    per_block = len(block) // len(unit)
    with open(path, "wb") as f:
        f.write(data[:at])
        left = n
        while left:
            k = min(left, per_block)
            f.write(block if k == per_block else unit * k)
            left -= k
        f.write(data[at:])
    return release, n


def run(argv: list[str], env: dict[str, str], limit: float) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and exit status of one fresh process (-1: killed at
    the time limit)."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    deadline = time.monotonic() + limit
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            return time.perf_counter() - t, usage.ru_maxrss / 1024, -1
        time.sleep(0.02)
    return time.perf_counter() - t, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def trailer_search(sizes: list[int]) -> None:
    from harness.analyze import Input
    from harness.analyze.vmdesc import find_trailer
    from harness.fuzz_surfaces import qemu_format_stream

    stem = qemu_format_stream()
    print("\ntrailer search (find_trailer) on a stream followed by N bytes of 0x06")
    print(f"{'N':>10} {'seconds':>9}")
    with tempfile.TemporaryDirectory(prefix="mm-trailer-") as tmp:
        for n in sizes:
            path = os.path.join(tmp, "t.mig")
            with open(path, "wb") as f:
                f.write(stem)
                chunk = b"\x06" * (1 << 20)
                for _ in range(n >> 20):
                    f.write(chunk)
            inp = Input(path)
            t = time.perf_counter()
            found = find_trailer(inp)
            took = time.perf_counter() - t
            inp.close()
            print(f"{n / 1e6:>8.0f}MB {took:9.4f}  ({'found' if found else 'none'})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10M,100M,1G")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--record-max", default="100M", help="largest record-heavy stream")
    p.add_argument("--before", help="a checkout of an earlier tree, run on the same streams")
    p.add_argument("--before-max", default="30M")
    p.add_argument("--limit", type=float, default=1800, help="seconds per command")
    p.add_argument("--trailer", default="16M,64M,256M,1G", help="0x06 runs to search")
    args = p.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    record_max = parse_size(args.record_max)
    before_max = parse_size(args.before_max)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    trees = [("now", str(REPO))] + ([("before", args.before)] if args.before else [])
    print(f"{'kind':12} {'size':>7} {'records':>10} {'tree':7} {'load RSS':>10} {'load s':>8} "
          f"{'analyze RSS':>12} {'analyze s':>10}")
    with tempfile.TemporaryDirectory(prefix="mm-hostile-") as tmp:
        for kind in args.kinds.split(","):
            for size in sizes:
                if kind in RECORD_HEAVY and size > record_max:
                    continue
                path = os.path.join(tmp, f"{kind}.mig")
                release, n = write_stream(path, kind, size)
                for label, tree in trees:
                    if label == "before" and size > before_max:
                        continue
                    e = {**env, "PYTHONPATH": tree}
                    py = [sys.executable, "-P", "-m", "harness.cli"]
                    load = run([*py, "load", "--release", release, "--ram", str(RAM), path],
                               e, args.limit)
                    ana = run([*py, "analyze", "--json", path], e, args.limit)
                    status = "" if load[2] == 0 and ana[2] == 0 else \
                        f"  (exit {load[2]}/{ana[2]}; -1: stopped at {args.limit:g} s)"
                    print(f"{kind:12} {size / 1e6:>5.0f}MB {n:>10,} {label:7} "
                          f"{load[1]:>7.1f}MiB {load[0]:>8.1f} {ana[1]:>9.1f}MiB "
                          f"{ana[0]:>10.1f}{status}", flush=True)
                os.unlink(path)
    trailer_search([parse_size(s) for s in args.trailer.split(",")])


if __name__ == "__main__":
    main()
