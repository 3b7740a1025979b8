"""Save and load of a 1 GiB half-random guest: migmatrix against QEMU, in one run.

    python bench/qemu_compare.py [--ram 1G] [--qemu qemu-system-x86_64] [--keep FILE]

QEMU (Debian's qemu-system-x86, pc-i440fx-7.2) gets its RAM from a memory-backend-file
that this script fills page by page like migmatrix's ``fill_pattern`` (runs of random
pages, else zero pages; nothing boots, the guest stays in prelaunch). It saves with QMP
``migrate {"uri": "exec:cat > FILE"}`` after lifting the bandwidth limit, and a second
QEMU loads the file with ``migrate-incoming {"uri": "exec:cat FILE"}``; times run from
the command until ``query-migrate`` says completed. migmatrix saves a guest of the same
RAM size and fill to a file and loads it (in-process: the emulator core). Target:
migmatrix within 2x of QEMU for each. ``--keep FILE`` keeps QEMU's stream (for
bench/analyze_qemu.py).
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _qmp import QMP, start, wait_for  # noqa: E402

from harness.emulator.machine import Machine, parse_size  # noqa: E402
from harness.emulator.ram import PAGE_SIZE, fill_pattern  # noqa: E402


def fill_file(path: str, size: int, seed: int = 1, max_run: int = 64) -> int:
    """``size`` bytes at ``path``: runs of random pages with probability 1/2, else zeros."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
    random_pages = 0
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), size) as m:
        n, i = size // PAGE_SIZE, 0
        while i < n:
            run = min(rng.randint(1, max_run), n - i)
            if rng.random() < 0.5:
                o = i * PAGE_SIZE
                m[o : o + run * PAGE_SIZE] = rng.randbytes(run * PAGE_SIZE)
                random_pages += run
            i += run
    return random_pages


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


def run_qemu(qemu: str, size: int, tmp: str, stream: str) -> tuple[float, float]:
    ramfile = os.path.join(tmp, "guest.ram")
    t = time.perf_counter()
    fill_file(ramfile, size)
    print(f"QEMU guest RAM file filled in {time.perf_counter() - t:.2f} s")
    src = start(qemu_argv(qemu, size, f"{tmp}/qs.sock",
                          f"memory-backend-file,id=pc.ram,size={size},mem-path={ramfile},"
                          "share=on", incoming=False), f"{tmp}/qs.log")
    try:
        q = QMP(f"{tmp}/qs.sock")
        q.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        t0 = time.perf_counter()
        q.cmd("migrate", uri=f"exec:cat > {stream}")
        save_s = wait_for(lambda: completed(q), step=0.005) - t0
        q.cmd("quit")
    finally:
        src.wait(timeout=30)
    dst = start(qemu_argv(qemu, size, f"{tmp}/qd.sock",
                          f"memory-backend-ram,id=pc.ram,size={size}", incoming=True),
                f"{tmp}/qd.log")
    try:
        q = QMP(f"{tmp}/qd.sock")
        t0 = time.perf_counter()
        q.cmd("migrate-incoming", uri=f"exec:cat {stream}")
        load_s = wait_for(lambda: completed(q), step=0.005) - t0
        q.cmd("quit")
    finally:
        dst.wait(timeout=30)
    os.unlink(ramfile)
    return save_s, load_s


def run_migmatrix(size: int, tmp: str) -> tuple[float, float, int]:
    src = Machine("0.14", "pc", size)
    fill_pattern(src.ram, random.Random(1), 0.5)
    path = os.path.join(tmp, "migmatrix.mig")
    t = time.perf_counter()
    with open(path, "wb") as f:
        src.save(f)
    save_s = time.perf_counter() - t
    t = time.perf_counter()
    with open(path, "rb") as f:
        Machine.load("0.14", "pc", f, ram_size=size)
    load_s = time.perf_counter() - t
    n = os.path.getsize(path)
    os.unlink(path)
    return save_s, load_s, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ram", default="1G")
    p.add_argument("--qemu", default="qemu-system-x86_64")
    p.add_argument("--keep", default=None, help="keep QEMU's stream at this path")
    args = p.parse_args()
    size = parse_size(args.ram)
    if shutil.which(args.qemu) is None:
        sys.exit(f"{args.qemu} not found (apt-get install qemu-system-x86)")
    tmp = tempfile.mkdtemp(prefix="mm-qemu-")
    stream = args.keep or os.path.join(tmp, "qemu.mig")
    q_save, q_load = run_qemu(args.qemu, size, tmp, stream)
    q_bytes = os.path.getsize(stream)
    m_save, m_load, m_bytes = run_migmatrix(size, tmp)
    if not args.keep:
        os.unlink(stream)
    gb = size / 1e9
    print(f"guest {size >> 20} MiB, half random; streams: QEMU {q_bytes / 1e6:,.0f} MB, "
          f"migmatrix {m_bytes / 1e6:,.0f} MB")
    print(f"{'':10} {'QEMU 7.2':>16} {'migmatrix':>16} {'ratio':>7}  target")
    for what, q, m in (("save", q_save, m_save), ("load", q_load, m_load)):
        print(f"{what:10} {q:7.3f} s {gb / q:4.2f}GB/s {m:7.3f} s {gb / m:4.2f}GB/s "
              f"{m / q:6.2f}x  <= 2x ({'met' if m <= 2 * q else 'NOT met'})")


if __name__ == "__main__":
    main()
