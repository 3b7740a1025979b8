"""Save and load throughput of a large guest (half zero pages, half random data).

    python bench/ram_throughput.py [--ram 1G] [--release 0.14] [--machine pc] [--file PATH]
    python bench/ram_throughput.py --generators

Prints the time to fill the guest (``fill_pattern``, target well under 1 s for 1 GiB),
save and load time and GB/s (of guest RAM) in memory and through a file, and the peak
RSS of this process. ``--generators`` measures the ways of making a guest's random pages
deterministically that ``fill_pattern`` chose between. Compare ratios within one run:
the machines are shared.
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import os
import random
import resource
import tempfile
import time
from collections.abc import Callable

from harness.emulator.machine import Machine, parse_size
from harness.emulator.ram import PAGE_SIZE, fill_pattern


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generators(size: int = 64 << 20, run: int = 32 * PAGE_SIZE) -> None:
    """GB/s of random page content written into memory already mapped (so the figure is
    the generator's, not the page faults'), best of three."""
    mem = mmap.mmap(-1, size)
    view = memoryview(mem)
    view[:] = b"\x01" * size

    def mt_per_run() -> int:  # fill_pattern before: the Mersenne Twister, run by run
        rng = random.Random(1)
        for o in range(0, size, run):
            view[o : o + run] = rng.randbytes(run)
        return size

    def mt_one_call() -> int:
        view[:] = random.Random(1).randbytes(size)
        return size

    def shake_per_run() -> int:
        for i, o in enumerate(range(0, size, run)):
            view[o : o + run] = hashlib.shake_128(b"seed%d" % i).digest(run)
        return size

    def blake2b_counter() -> int:  # 64 bytes per call; on a sixteenth of the buffer
        for o in range(0, size // 16, 64):
            view[o : o + 64] = hashlib.blake2b(o.to_bytes(8, "little"), key=b"seed").digest()
        return size // 16

    def pool_and_stamp() -> int:  # fill_pattern now: windows of one pool, a stamp per page
        fill_pattern(mem, random.Random(1), 1.0)  # every page random
        return size

    ways: list[tuple[str, Callable[[], int]]] = [
        ("random.randbytes per run of pages (before)", mt_per_run),
        ("random.randbytes, one call", mt_one_call),
        ("hashlib.shake_128 per run", shake_per_run),
        ("hashlib.blake2b in counter mode", blake2b_counter),
        ("1 MiB pool windows + per-page stamp (now)", pool_and_stamp),
    ]
    for name, fn in ways:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            n = fn()
            best = min(best, (time.perf_counter() - t) / n)
        print(f"{name:45} {1 / best / 1e9:6.2f} GB/s  512 MiB in {best * (512 << 20):6.2f} s")
    view.release()
    mem.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ram", default="1G")
    p.add_argument("--release", default="0.14")
    p.add_argument("--machine", default="pc")
    p.add_argument("--file", default=None, help="stream file (default: a temp file)")
    p.add_argument("--generators", action="store_true", help="compare page generators")
    args = p.parse_args()
    if args.generators:
        generators()
        return
    size = parse_size(args.ram)
    gb = size / 1e9

    src = Machine(args.release, args.machine, size)
    t, c = time.perf_counter(), time.process_time()
    fill_pattern(src.ram, random.Random(1), 0.5)
    t_fill, c_fill = time.perf_counter() - t, time.process_time() - c
    print(f"guest: {args.release}/{args.machine}, {size >> 20} MiB pc.ram, half random; "
          f"filled in {t_fill:.3f} s, CPU {c_fill:.3f} s (target well under 1 s per GiB); "
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
