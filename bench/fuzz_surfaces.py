#!/usr/bin/env python3
"""Fuzz the surfaces around the core: the analyzer and the QMP endpoint.

    python bench/fuzz_surfaces.py --surface analyzer --inputs 100000 [--stream FILE ...]
    python bench/fuzz_surfaces.py --surface qmp --inputs 100000 [--jobs 2]

``analyzer``: streams in QEMU's format (harness.fuzz_surfaces.qemu_format_stream, plus any
real QEMU stream given with ``--stream``) whose VMDESCRIPTION JSON is mutated (one to three
values: types, ranges, nesting, sizes; sometimes raw bytes), whose configuration section
is mutated, or whose bytes are flipped, each analyzed under a wall limit in a worker with
an address-space cap. An input counts as a failure if an exception escapes ``analyze``,
it hits the limit, or the analysis says the decoder crashed.

``qmp``: mutated messages (harness.fuzz_surfaces.qmp_messages) sent to real endpoint
processes (a source and a deferred destination) over one connection each: every message
must get a reply or a QMP error; a connection that drops, a process that dies or a reply
that does not come within the limit is a failure. At the end the source must still
migrate to a file (no wedged migration state).

Prints inputs, failures (uncaught / hangs, both must be 0), the slowest input and the
peak RSS (workers, endpoints) against the input size. Exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import fuzz_surfaces  # noqa: E402
from harness.analyze import Input  # noqa: E402
from harness.analyze.vmdesc import find_trailer  # noqa: E402

# -- analyzer ---------------------------------------------------------------------------


def _bases(paths: list[str]) -> list[tuple[bytes, Any]]:
    """(stream up to its EOF byte, parsed description) of each base stream."""
    out = []
    streams = [fuzz_surfaces.qemu_format_stream(seed=s) for s in range(3)]
    streams += [Path(p).read_bytes() for p in paths]
    for data in streams:
        trailer = find_trailer(Input(data))
        assert trailer is not None and isinstance(trailer.doc, dict), "no VMDESCRIPTION"
        out.append((data[: trailer.offset], trailer.doc))
    return out


def _config_mutant(rng: random.Random, stem: bytes) -> bytes:
    """The configuration section (after the 8-byte header) changed: its length, name,
    subsection names and counts."""
    data = bytearray(stem)
    if len(data) < 13 or data[8] != 0x07:
        return bytes(data)
    end = min(len(data), 9 + 4 + int.from_bytes(data[9:13], "big") + 64)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(9, end)
        data[at] = rng.choice((0x00, 0x05, 0xFF, 0x7F, rng.randrange(256)))
    return bytes(data)


def _flip(rng: random.Random, stem: bytes) -> bytes:
    data = bytearray(stem)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
    if rng.random() < 0.2:
        data = data[: rng.randrange(len(data))]
    return bytes(data)


def _analyzer_worker(paths: list[str], count: int, seed: int, limit: float,
                     memory: int) -> dict[str, Any]:
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    rng = random.Random(seed)
    bases = _bases(paths)
    mutator = fuzz_surfaces.DescriptionMutator(rng)
    counts: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    problems: list[dict[str, Any]] = []
    worst = 0.0
    biggest = 0
    for _ in range(count):
        stem, doc = rng.choice(bases)
        roll = rng.random()
        if roll < 0.7:
            kind = "vmdescription"
            data = fuzz_surfaces.with_description(stem, mutator.text(mutator.mutate(doc)))
        elif roll < 0.85:
            kind = "configuration"
            data = fuzz_surfaces.with_description(_config_mutant(rng, stem),
                                                  json.dumps(doc).encode())
        else:
            kind = "bytes"
            data = fuzz_surfaces.with_description(_flip(rng, stem), json.dumps(doc).encode())
        biggest = max(biggest, len(data))
        result = fuzz_surfaces.check_analyze(data, limit=limit)
        outcome = result.kind
        if outcome == "ok" and result.extra.get("crashed"):
            outcome = "crashed"
        counts[outcome] += 1
        kinds[kind] += 1
        worst = max(worst, result.seconds)
        if outcome != "ok" and len(problems) < 10:
            problems.append({"source": kind, "detail": result.detail,
                             "traceback": result.extra.get("traceback"),
                             "input_tail_hex": data[-2048:].hex()})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"counts": dict(counts), "kinds": dict(kinds), "max_s": worst, "rss": rss,
            "biggest": biggest, "problems": problems}


# -- QMP --------------------------------------------------------------------------------


class _Endpoint:
    def __init__(self, folder: str, name: str, *args: str) -> None:
        self.sock_path = f"{folder}/{name}.qmp"
        self.log = open(f"{folder}/{name}.log", "wb")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.emulator", "--release", "0.14", "--ram", "2M",
             "--qmp", f"unix:{self.sock_path}", *args],
            stdout=self.log, stderr=self.log, env=env, cwd=folder)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"endpoint {name} did not start")
            time.sleep(0.01)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.sock_path)
        self.file = self.sock.makefile("rb")
        self.recv(10)
        self.send(b'{"execute": "qmp_capabilities"}')
        assert "return" in self.reply(10)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data + b"\n")

    def recv(self, limit: float) -> dict[str, Any]:
        self.sock.settimeout(limit)
        line = self.file.readline()
        if not line:
            raise ConnectionError("the endpoint closed the connection")
        return json.loads(line)

    def reply(self, limit: float) -> dict[str, Any]:
        while True:
            msg = self.recv(limit)
            if "event" not in msg:
                return msg

    def refused_incoming(self) -> bool:
        """Did it exit with status 1 after ``load of migration failed``, as QEMU does?"""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return False
        self.log.flush()
        log = Path(self.log.name).read_bytes()[-4096:]
        return code == 1 and b"load of migration failed" in log

    def peak_rss(self) -> int:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def _qmp_worker(count: int, seed: int, limit: float) -> dict[str, Any]:
    rng = random.Random(seed)
    counts: collections.Counter[str] = collections.Counter()
    problems: list[dict[str, Any]] = []
    worst = 0.0
    rss = 0
    biggest = 0
    restarts = 0
    with tempfile.TemporaryDirectory(prefix="mm-qmpfuzz-") as folder:
        scratch = f"{folder}/scratch"
        os.mkdir(scratch)
        eps = [_Endpoint(folder, "src"), _Endpoint(folder, "dst", "--incoming", "defer")]
        try:
            for _ in range(count):
                i = rng.randrange(2)
                ep = eps[i]
                msg = fuzz_surfaces.qmp_messages(rng, scratch)
                biggest = max(biggest, len(msg))
                t = time.perf_counter()
                try:
                    ep.send(msg)
                    reply = ep.reply(limit)
                    ok = "return" in reply or "error" in reply
                    counts["ok" if ok else "bad-reply"] += 1
                except TimeoutError:
                    counts["hang"] += 1
                    ok = False
                except (ConnectionError, OSError, ValueError) as e:
                    ok = False
                    reply = {"exception": f"{type(e).__name__}: {e}"}
                    if ep.refused_incoming():
                        # As QEMU: a destination whose incoming migration failed exits
                        # with status 1. Expected; it is started again.
                        counts["ok"] += 1
                        ok = True
                        restarts += 1
                    else:
                        counts["dropped"] += 1
                worst = max(worst, time.perf_counter() - t)
                if not ok or ep.proc.poll() is not None:
                    if not ok and len(problems) < 10:
                        problems.append({"message": msg[:300].decode("latin-1"),
                                         "reply": str(reply)[:300],
                                         "exit": ep.proc.poll()})
                    rss = max(rss, ep.peak_rss())
                    ep.close()
                    eps[i] = _Endpoint(folder, ep.sock_path.rsplit("/", 1)[1][:3],
                                       *(["--incoming", "defer"] if i else []))
                for name in os.listdir(scratch):  # migrations to file: keep the disk clear
                    with_path = os.path.join(scratch, name)
                    if os.path.isfile(with_path) and os.path.getsize(with_path) > 1 << 20:
                        os.unlink(with_path)
            # No request may leave a migration wedged: the source migrates once more.
            src = eps[0]
            deadline = time.monotonic() + 20
            status = None
            while time.monotonic() < deadline:
                src.send(b'{"execute": "query-migrate"}')
                status = src.reply(limit).get("return", {}).get("status")
                if status not in ("setup", "active"):
                    break
                time.sleep(0.05)
            src.send(json.dumps({"execute": "migrate",
                                 "arguments": {"uri": f"file:{folder}/final.mig"}}).encode())
            final = src.reply(limit)
            wedged = status in ("setup", "active") or "error" in final and \
                "in progress" in final["error"].get("desc", "")
            counts["wedged"] += int(wedged)
            rss = max([rss] + [e.peak_rss() for e in eps])
        finally:
            for e in eps:
                e.close()
    return {"counts": dict(counts), "max_s": worst, "rss": rss, "biggest": biggest,
            "problems": problems, "restarts": restarts}


# -- main -------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--surface", choices=("analyzer", "qmp", "all"), default="all")
    p.add_argument("--inputs", type=int, default=100_000, help="inputs per surface")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=float, default=10.0, help="wall seconds per input")
    p.add_argument("--memory", type=int, default=2 << 30, help="address-space cap per worker")
    p.add_argument("--stream", action="append", default=[],
                   help="a real QEMU stream to mutate as well (repeatable)")
    p.add_argument("--json", help="also write the counts to this file")
    args = p.parse_args(argv)
    surfaces = ["analyzer", "qmp"] if args.surface == "all" else [args.surface]
    report: dict[str, Any] = {}
    bad = 0
    for surface in surfaces:
        t0 = time.time()
        chunk = max(1, min(5000, -(-args.inputs // max(1, args.jobs))))
        sizes = [min(chunk, args.inputs - k) for k in range(0, args.inputs, chunk)]
        total: collections.Counter[str] = collections.Counter()
        kinds: collections.Counter[str] = collections.Counter()
        worst = 0.0
        rss = biggest = restarts = 0
        problems: list[dict[str, Any]] = []
        with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
            if surface == "analyzer":
                futures = [pool.submit(_analyzer_worker, args.stream, n,
                                       args.seed * 1_000_003 + k, args.limit, args.memory)
                           for k, n in enumerate(sizes)]
            else:
                futures = [pool.submit(_qmp_worker, n, args.seed * 1_000_003 + k, args.limit)
                           for k, n in enumerate(sizes)]
            for fut in concurrent.futures.as_completed(futures):
                res = fut.result()
                total.update(res["counts"])
                kinds.update(res.get("kinds", {}))
                worst = max(worst, res["max_s"])
                rss = max(rss, res["rss"])
                biggest = max(biggest, res["biggest"])
                restarts += res.get("restarts", 0)
                problems.extend(res["problems"])
        failures = sum(v for k, v in total.items() if k != "ok")
        bad += failures
        inputs = sum(v for k, v in total.items() if k != "wedged")
        print(f"{surface}: {inputs} inputs, {total['ok']} ok, "
              + ", ".join(f"{v} {k}" for k, v in sorted(total.items()) if k != "ok")
              + f" (failures: {failures}); slowest {worst:.3f} s; largest input "
              f"{_mib(biggest)}; peak RSS {_mib(rss)}; {time.time() - t0:.0f} s"
              + (f"; by mutation: {dict(kinds)}" if kinds else "")
              + (f"; {restarts} destination(s) exited after a refused incoming migration, "
                 "as QEMU does, and were started again" if restarts else ""))
        for prob in problems[:3]:
            print(json.dumps(prob)[:3000], file=sys.stderr)
        report[surface] = {"counts": dict(total), "kinds": dict(kinds), "max_s": worst,
                           "restarts": restarts,
                           "rss": rss, "biggest": biggest, "problems": problems}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
