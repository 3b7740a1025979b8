#!/usr/bin/env python3
"""Fuzz the emulator core's loader: any input either loads or raises LoadError.

    python bench/fuzz.py --inputs 100000 --release all [--jobs N] [--seed S]

For each destination release, ``--inputs`` inputs are loaded on that release's machine
types: mutants of valid streams of every release x machine type x scenario (byte flips,
interesting values, insertions, deletions, truncations, repeats, splices, garbage,
section drops/duplicates/swaps, several at once), streams assembled from section records
at random, and streams drawn from the hypothesis framing strategy. A fraction is read
through a trickling stream source and through the tracer. Each load runs under a wall
limit (``--limit``), and a worker's address space is capped (``--memory``).

Prints, per release: inputs, loaded ok, typed errors (LoadError), other exceptions (must
be 0), timeouts (must be 0), max time per input, and peak memory (the largest traced
allocation of one sampled load, and the largest worker RSS). Exit 1 if any input ended
in something other than ok or a typed error. CI runs a bounded slice
(``--inputs 2000``).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import random
import resource
import sys
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import fuzz  # noqa: E402
from harness.emulator.releases import RELEASES  # noqa: E402

MIX = (("mutation", 0.70), ("framing", 0.20), ("hypothesis", 0.10))
TRACE_EVERY = 250  # one load in this many runs under tracemalloc


def _hypothesis_inputs(seeds: list[fuzz.Seed], release: str, machine: str, n: int,
                       seed: int) -> list[bytes]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    out: list[bytes] = []

    @settings(max_examples=n, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), phases=[__import__(
                  "hypothesis").Phase.generate])
    @hseed(seed)
    @given(fuzz.framing_strategy(seeds, release, machine))
    def collect(stream: bytes) -> None:
        out.append(stream)

    collect()
    return out


def _worker(release: str, count: int, seed: int, limit: float, memory: int) -> dict[str, Any]:
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    warnings.simplefilter("ignore")
    rng = random.Random(seed)
    seeds = fuzz.corpus()
    own = [s for s in seeds if s.release == release]
    machines = [m.name for m in RELEASES[release].machines]
    mutator = fuzz.Mutator(rng, seeds)
    counts: collections.Counter[str] = collections.Counter()
    sources: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    worst = 0.0
    peak_traced = 0
    problems: list[dict[str, Any]] = []
    pending: list[bytes] = []
    for i in range(count):
        roll = rng.random()
        machine = rng.choice(machines)
        if roll < MIX[0][1]:
            kind = "mutation"
            base = rng.choice(own) if rng.random() < 0.6 else rng.choice(seeds)
            _, data = mutator.mutate(base)
        elif roll < MIX[0][1] + MIX[1][1]:
            kind = "framing"
            fmt = RELEASES[release].machine(machine).stream_format
            data = fuzz.random_framing(rng, seeds, fmt)
        else:
            kind = "hypothesis"
            if not pending:
                pending = _hypothesis_inputs(seeds, release, machine, 200,
                                             rng.getrandbits(32))
            data = pending.pop()
        via = rng.choices(("bytes", "stream", "trace"), weights=(8, 1, 1))[0]
        traced = i % TRACE_EVERY == 0
        if traced:
            tracemalloc.start()
        result = fuzz.check_load(release, machine, data, limit=limit, via=via)
        if traced:
            peak_traced = max(peak_traced, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        counts[result.kind] += 1
        sources[kind] += 1
        if result.reason:
            reasons[result.reason] += 1
        worst = max(worst, result.seconds)
        if result.kind in ("other", "timeout") and len(problems) < 20:
            problems.append({"machine": machine, "source": kind, "via": via,
                             "detail": result.detail, "input_hex": data[:4096].hex(),
                             "traceback": result.extra.get("traceback")})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"release": release, "counts": dict(counts), "sources": dict(sources),
            "reasons": dict(reasons), "max_s": worst, "peak_traced": peak_traced,
            "rss": rss, "problems": problems}


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=100_000, help="inputs per release")
    p.add_argument("--release", default="all", help="a release name or 'all'")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=float, default=5.0, help="wall seconds per load")
    p.add_argument("--memory", type=int, default=2 << 30, help="address-space cap per worker")
    p.add_argument("--json", help="also write the counts to this file")
    args = p.parse_args(argv)
    releases = list(RELEASES) if args.release == "all" else [args.release]
    for r in releases:
        if r not in RELEASES:
            p.error(f"unknown release {r!r} (known: {', '.join(RELEASES)})")
    t0 = time.time()
    fuzz.corpus()  # built once before forking
    chunk = max(1, min(5000, args.inputs // max(1, args.jobs)))
    tasks = []
    for ri, r in enumerate(releases):
        left, k = args.inputs, 0
        while left > 0:
            n = min(chunk, left)
            tasks.append((r, n, args.seed * 1_000_003 + ri * 100_000 + k))
            left -= n
            k += 1
    totals: dict[str, dict[str, Any]] = {
        r: {"counts": collections.Counter(), "reasons": collections.Counter(),
            "sources": collections.Counter(), "max_s": 0.0, "peak_traced": 0, "rss": 0,
            "problems": []}
        for r in releases
    }  # fmt: skip
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(_worker, r, n, s, args.limit, args.memory) for r, n, s in tasks]
        for fut in concurrent.futures.as_completed(futures):
            res = fut.result()
            t = totals[res["release"]]
            t["counts"].update(res["counts"])
            t["reasons"].update(res["reasons"])
            t["sources"].update(res["sources"])
            t["max_s"] = max(t["max_s"], res["max_s"])
            t["peak_traced"] = max(t["peak_traced"], res["peak_traced"])
            t["rss"] = max(t["rss"], res["rss"])
            t["problems"].extend(res["problems"])
    print(f"{'release':8} {'inputs':>8} {'ok':>8} {'typed':>8} {'other':>6} {'timeout':>7} "
          f"{'max s':>7} {'peak alloc':>11} {'max rss':>10}")
    bad = 0
    for r in releases:
        t = totals[r]
        c = t["counts"]
        total = sum(c.values())
        bad += c["other"] + c["timeout"]
        print(f"{r:8} {total:8} {c['ok']:8} {c['typed']:8} {c['other']:6} {c['timeout']:7} "
              f"{t['max_s']:7.3f} {_mib(t['peak_traced']):>11} {_mib(t['rss']):>10}")
    print(f"({time.time() - t0:.0f} s, {args.jobs} job(s); inputs by source: "
          + ", ".join(f"{k} {sum(totals[r]['sources'][k] for r in releases)}"
                      for k, _ in MIX) + ")")
    for r in releases:
        for prob in totals[r]["problems"][:3]:
            print(f"\n{r}/{prob['machine']} ({prob['source']}, via {prob['via']}): "
                  f"{prob['detail']}\n{prob['traceback'] or ''}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {r: {**{k: v for k, v in t.items() if k != "problems"},
                 "counts": dict(t["counts"]), "reasons": dict(t["reasons"]),
                 "sources": dict(t["sources"]), "problems": t["problems"]}
             for r, t in totals.items()}, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
