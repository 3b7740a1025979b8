"""Save and load throughput of a large guest (half zero pages, half random data).

    python bench/ram_throughput.py [--ram 1G] [--release 0.14] [--machine pc] [--file PATH]

Prints save and load time and GB/s (of guest RAM) in memory and through a file, and the
peak RSS of this process. Compare ratios within one run: the machines are shared.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import tempfile
import time

from harness.emulator.machine import Machine, parse_size
from harness.emulator.ram import fill_pattern


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ram", default="1G")
    p.add_argument("--release", default="0.14")
    p.add_argument("--machine", default="pc")
    p.add_argument("--file", default=None, help="stream file (default: a temp file)")
    args = p.parse_args()
    size = parse_size(args.ram)
    gb = size / 1e9

    src = Machine(args.release, args.machine, size)
    fill_pattern(src.ram, random.Random(1), 0.5)
    print(f"guest: {args.release}/{args.machine}, {size >> 20} MiB pc.ram, half random; "
          f"RSS after fill {rss_mib():.0f} MiB")

    t = time.perf_counter()
    stream = src.save()
    t_save = time.perf_counter() - t
    print(f"save to memory:   {t_save:6.3f} s  {gb / t_save:5.2f} GB/s  stream {len(stream) / 1e6:,.0f} MB")

    t = time.perf_counter()
    Machine.load(args.release, args.machine, stream, ram_size=size)
    t_load = time.perf_counter() - t
    print(f"load from memory: {t_load:6.3f} s  {gb / t_load:5.2f} GB/s")
    del stream

    path = args.file or os.path.join(tempfile.mkdtemp(), "guest.mig")
    t = time.perf_counter()
    with open(path, "wb") as f:
        src.save(f)
    t_fsave = time.perf_counter() - t
    print(f"save to file:     {t_fsave:6.3f} s  {gb / t_fsave:5.2f} GB/s")
    t = time.perf_counter()
    with open(path, "rb") as f:
        Machine.load(args.release, args.machine, f, ram_size=size)
    t_fload = time.perf_counter() - t
    print(f"load from file:   {t_fload:6.3f} s  {gb / t_fload:5.2f} GB/s")
    print(f"peak RSS {rss_mib():.0f} MiB (two guests of {size >> 20} MiB live in this process)")
    if not args.file:
        os.unlink(path)


if __name__ == "__main__":
    main()
