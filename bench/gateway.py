"""Governance overhead: the same server and client with governance on (auth, decision, tier,
limiter) and off, calling a no-op tool over real HTTP with the real mcp client.

    .venv/bin/python bench/gateway.py [--json] [--calls N] [--rounds R] [--workers N]

Each server runs in its own process (uvicorn, uvloop, httptools) so the client does not share
its GIL. Every call sends a message the server has not seen (no cache can answer it from an
identical call). Concurrency 1 is sampled in pairs (bench/harness.py): one call to each server
in turn, so "paired added p50" (the median of the per-pair differences) and "added cpu/call"
(the server's extra CPU time per call) hold steady on this shared machine, where a difference of
two medians swings by a millisecond between runs. Concurrency 32: servers alternate in blocks.
Targets (issue 3): governance adds <= 0.5 ms at p50 over bare; governed throughput >= 70% of bare.

`--workers N` adds a concurrency-32 row with N worker processes per server (`opsgate serve
--workers N`'s supervisor; governed workers share the Redis limiter, so Redis must be up), beside
the one-process row: what using more cores gains, measured. The client is one process either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    loaded,
    median,
    paired,
    paired_added,
    pct,
    servers,
)

MODES = ("governed", "bare")
LOADED = 32


def measure(calls: int, rounds: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="opsgate-bench-"))
    try:
        lat1: dict[str, list[float]] = {m: [] for m in MODES}
        lat32: dict[str, list[float]] = {m: [] for m in MODES}
        tput: dict[str, list[float]] = {m: [] for m in MODES}
        cpu = {m: 0.0 for m in MODES}
        with servers("bench.gateway_server", MODES, tmp) as fleet:
            for r in range(rounds):
                for m, xs in asyncio.run(paired(fleet.urls, fleet.pids, fleet.token, calls // rounds, cpu)).items():
                    lat1[m] += xs
                for m in MODES[r % 2:] + MODES[:r % 2]:
                    xs, rate = asyncio.run(loaded(fleet.urls[m], fleet.token, calls // rounds, LOADED))
                    lat32[m] += xs
                    tput[m].append(rate)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    g1, b1 = lat1["governed"], lat1["bare"]
    n1 = len(g1)
    c1 = {"concurrency": 1, "governed_p50_ms": pct(g1, 0.5), "bare_p50_ms": pct(b1, 0.5),
          "added_p50_ms": pct(g1, 0.5) - pct(b1, 0.5), "paired_added_p50_ms": paired_added(g1, b1),
          "governed_p99_ms": pct(g1, 0.99), "bare_p99_ms": pct(b1, 0.99), "p50_ratio": pct(g1, 0.5) / pct(b1, 0.5),
          "governed_cpu_ms_per_call": cpu["governed"] / n1, "bare_cpu_ms_per_call": cpu["bare"] / n1,
          "added_cpu_ms_per_call": (cpu["governed"] - cpu["bare"]) / n1}
    g32, b32 = lat32["governed"], lat32["bare"]
    gt, bt = median(tput["governed"]), median(tput["bare"])
    c32 = {"concurrency": LOADED, "governed_p50_ms": pct(g32, 0.5), "bare_p50_ms": pct(b32, 0.5),
           "added_p50_ms": pct(g32, 0.5) - pct(b32, 0.5), "governed_p99_ms": pct(g32, 0.99),
           "bare_p99_ms": pct(b32, 0.99), "p50_ratio": pct(g32, 0.5) / pct(b32, 0.5), "governed_calls_s": gt,
           "bare_calls_s": bt, "throughput_ratio": gt / bt}
    c32["workers"] = 1
    return {"calls_per_cell": calls, "rounds": rounds, "cells": [c1, c32], "targets": {
        "governance adds <= 0.5 ms at p50, c=1 (paired median)": c1["paired_added_p50_ms"] <= 0.5,
        "governance adds <= 0.5 ms at p50, c=1 (p50 on - p50 off)": c1["added_p50_ms"] <= 0.5,
        f"governed throughput >= 70% of bare, c={LOADED}": c32["throughput_ratio"] >= 0.7}}


def measure_fleet(calls: int, rounds: int, workers: int) -> dict[str, Any]:
    """Concurrency 32 against servers of `workers` processes each, modes alternating in blocks."""
    tmp = Path(tempfile.mkdtemp(prefix="opsgate-bench-fleet-"))
    lat: dict[str, list[float]] = {m: [] for m in MODES}
    tput: dict[str, list[float]] = {m: [] for m in MODES}
    unavailable: list[str] = []  # governed calls refused because Redis did not answer within its timeout
    try:
        with servers("bench.gateway_server", MODES, tmp, extra=["--workers", str(workers)]) as fleet:
            for r in range(rounds):
                for m in MODES[r % 2:] + MODES[:r % 2]:
                    xs, rate = asyncio.run(loaded(fleet.urls[m], fleet.token, calls // rounds, LOADED, unavailable))
                    lat[m] += xs
                    tput[m].append(rate)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    g, b = lat["governed"], lat["bare"]
    gt, bt = median(tput["governed"]), median(tput["bare"])
    return {"concurrency": LOADED, "workers": workers, "governed_p50_ms": pct(g, 0.5), "bare_p50_ms": pct(b, 0.5),
            "governed_p99_ms": pct(g, 0.99), "bare_p99_ms": pct(b, 0.99), "governed_calls_s": gt, "bare_calls_s": bt,
            "throughput_ratio": gt / bt, "limiter_unavailable": len(unavailable)}


def render(r: dict[str, Any]) -> str:
    c1, c32, *fleets = r["cells"]
    lines = [f"{'conc':>4} {'gov p50':>9} {'bare p50':>9} {'added':>8} {'paired added':>13} {'gov p99':>9} "
             f"{'bare p99':>9} {'p50 x':>6} {'added cpu/call':>15}",
             f"{1:>4} {c1['governed_p50_ms']:>7.2f}ms {c1['bare_p50_ms']:>7.2f}ms {c1['added_p50_ms']:>6.2f}ms "
             f"{c1['paired_added_p50_ms']:>11.3f}ms {c1['governed_p99_ms']:>7.2f}ms {c1['bare_p99_ms']:>7.2f}ms "
             f"{c1['p50_ratio']:>6.2f} {c1['added_cpu_ms_per_call']:>13.3f}ms",
             "",
             f"{'conc':>4} {'workers':>7} {'gov p50':>9} {'bare p50':>9} {'gov p99':>9} {'bare p99':>9} "
             f"{'gov c/s':>8} {'bare c/s':>8} {'tput %':>7}"]
    lines += [f"{c['concurrency']:>4} {c['workers']:>7} {c['governed_p50_ms']:>7.2f}ms {c['bare_p50_ms']:>7.2f}ms "
              f"{c['governed_p99_ms']:>7.2f}ms {c['bare_p99_ms']:>7.2f}ms {c['governed_calls_s']:>8.0f} "
              f"{c['bare_calls_s']:>8.0f} {100 * c['throughput_ratio']:>6.1f}%" for c in (c32, *fleets)]
    for c in fleets:
        lines.append(f"{c['workers']} workers vs 1: governed {c['governed_calls_s'] / c32['governed_calls_s']:.2f}x, "
                     f"bare {c['bare_calls_s'] / c32['bare_calls_s']:.2f}x calls/s; governed calls refused because "
                     f"Redis did not answer in time: {c['limiter_unavailable']}")
    lines.append("")
    lines += [f"target {name}: {'PASS' if ok else 'FAIL'}" for name, ok in r["targets"].items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    ap.add_argument("--calls", type=int, default=1800, help="calls per server per concurrency")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="also measure c=32 with this many worker processes")
    a = ap.parse_args()
    result = measure(a.calls, a.rounds)
    if a.workers > 1:
        result["cells"].append(measure_fleet(a.calls, a.rounds, a.workers))
    print(json.dumps(result) if a.json else render(result))


if __name__ == "__main__":
    main()
