"""Migration of a large guest between two endpoint processes over loopback TCP.

    python bench/endpoint_throughput.py [--ram 1G] [--release 0.14]

The source runs the guest program ``live-ram`` (RAM half zero pages, half random data,
then three short live passes), migrates over ``tcp:127.0.0.1:PORT`` to a destination
started with ``--incoming``; the stream is saved and loaded at once, so the figure is
the transfer's GB/s of guest RAM, measured from ``migrate`` until the destination has
loaded. Prints each endpoint's peak RSS (VmHWM) against the target: guest RAM + 64 MiB.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _qmp import QMP, free_port, peak_rss_mib, start, wait_for  # noqa: E402

from harness.emulator.machine import parse_size  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ram", default="1G")
    p.add_argument("--release", default="0.14")
    args = p.parse_args()
    size = parse_size(args.ram)
    tmp = tempfile.mkdtemp(prefix="mm-bench-")
    port = free_port()
    base = [sys.executable, "-m", "harness.emulator", "--release", args.release,
            "--ram", str(size)]
    dst = start(base + ["--qmp", f"unix:{tmp}/d.sock", "--incoming",
                        f"tcp:127.0.0.1:{port}"], f"{tmp}/d.log")
    src = start(base + ["--qmp", f"unix:{tmp}/s.sock"], f"{tmp}/s.log")
    try:
        qs, qd = QMP(f"{tmp}/s.sock"), QMP(f"{tmp}/d.sock")
        t = time.perf_counter()
        qs.cmd("x-guest-run", program="live-ram", seed=1)
        print(f"guest: {args.release}/pc, {size >> 20} MiB pc.ram, half random "
              f"(program live-ram, filled in {time.perf_counter() - t:.2f} s)")
        t0 = time.perf_counter()
        qs.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        t_saved = wait_for(lambda: qs.cmd("query-migrate").get("status")
                           in ("completed", "failed"))
        t_loaded = wait_for(lambda: qd.cmd("query-status")["status"] != "inmigrate")
        mig = qs.cmd("query-migrate")
        status = qd.cmd("query-status")["status"]
        gb = size / 1e9
        save_s, load_s = t_saved - t0, t_loaded - t0
        print(f"source status {mig['status']}, destination {status}; stream "
              f"{mig.get('ram', {}).get('transferred', 0) / 1e6:,.0f} MB")
        print(f"save (source done):     {save_s:6.3f} s  {gb / save_s:5.2f} GB/s   target >= 1 GB/s")
        print(f"load (destination done): {load_s:6.3f} s  {gb / load_s:5.2f} GB/s   target >= 1 GB/s")
        limit = (size >> 20) + 64
        for name, proc in (("source", src), ("destination", dst)):
            rss = peak_rss_mib(proc.pid)
            print(f"peak RSS {name:12} {rss:7.0f} MiB   target <= {limit} MiB "
                  f"({'met' if rss <= limit else 'NOT met'})")
        for q in (qs, qd):
            try:
                q.cmd("quit")
            except (ConnectionError, RuntimeError, OSError):
                pass
    finally:
        for proc in (src, dst):
            try:
                proc.wait(timeout=10)
            except Exception:
                proc.kill()


if __name__ == "__main__":
    main()
