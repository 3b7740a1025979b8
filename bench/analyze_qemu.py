"""``migmatrix analyze`` on a real QEMU 7.2 stream of a 1 GiB half-random guest.

    python bench/analyze_qemu.py [--stream FILE] [--qemu-src DIR] [--ram 1G]

Without ``--stream`` it makes the stream first (bench/qemu_compare.py's QEMU save: a
memory-backend-file filled half with random pages, migrated to a file over QMP). Prints
migmatrix's wall time, MB/s and peak RSS (a fresh process, as a user runs it). With
``--qemu-src`` (a QEMU source tree; not part of this project) it also runs that tree's
``scripts/analyze-migration.py -f FILE`` on the same file and prints the ratio; the target
is migmatrix at least 3x faster.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))


def timed(argv: list[str]) -> tuple[float, float, int]:
    """Wall time, peak RSS (MiB) and exit status of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if rss <= before:  # ru_maxrss of children is the largest so far, not this one's
        rss = before
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stderr.decode(errors="replace")[-2000:])
    return wall, rss / 1024, proc.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", help="an existing QEMU stream file")
    p.add_argument("--qemu-src", help="a QEMU source tree, for scripts/analyze-migration.py")
    p.add_argument("--ram", default="1G")
    p.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    args = p.parse_args()
    stream = args.stream
    if stream is None:
        from qemu_compare import run_qemu

        from harness.emulator.machine import parse_size

        tmp = tempfile.mkdtemp(prefix="mm-analyze-")
        stream = os.path.join(tmp, "qemu.mig")
        run_qemu("qemu-system-x86_64", parse_size(args.ram), tmp, stream)
    size = os.path.getsize(stream)
    mb = size / 1e6
    print(f"stream {stream}: {size / 2**20:,.0f} MiB")
    runs = [timed([sys.executable, "-m", "harness.cli", "analyze", stream])
            for _ in range(args.repeat)]
    wall = min(r[0] for r in runs)
    rss = max(r[1] for r in runs)
    print(f"migmatrix analyze:          {wall:6.3f} s  {mb / wall:7,.0f} MB/s  peak RSS "
          f"{rss:5.0f} MiB (best of {args.repeat}, exit {runs[0][2]})")
    if args.qemu_src:
        script = os.path.join(args.qemu_src, "scripts", "analyze-migration.py")
        qruns = [timed([sys.executable, script, "-f", stream]) for _ in range(args.repeat)]
        qwall = min(r[0] for r in qruns)
        print(f"QEMU analyze-migration.py:  {qwall:6.3f} s  {mb / qwall:7,.0f} MB/s  peak RSS "
              f"{max(r[1] for r in qruns):5.0f} MiB")
        print(f"speed-up {qwall / wall:.2f}x  target >= 3x "
              f"({'met' if qwall >= 3 * wall else 'NOT met'})")
    else:
        ref = 1.1 * size / (514 << 20)
        print(f"no --qemu-src: the script's figure measured earlier on these machines "
              f"(514 MiB in 1.1 s, 26 MB peak RSS) scales to {ref:.2f} s here: "
              f"{ref / wall:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
