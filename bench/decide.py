"""decide() latency against raw Cedar on the full policy set, from 10 to 10,000 policies.

    .venv/bin/python bench/decide.py [--json] [--quick] [--seed N]

For each size a bundle is generated (bench/policygen.py) and the SAME requests go to
`Engine.decide()` and to raw `cedarpy.is_authorized` on one pre-parsed PolicySet of every
enforce-mode policy. Raw gets every advantage: pre-parsed policies, schema and entities (one
handle per distinct request-entity set, parsed before timing), contexts built and JSON-encoded
before timing; decide() does all of its own work (context, projection, entity resolution,
slicing) inside the timed call. The two alternate in blocks of 20 requests, which goes first
switching block by block, so machine noise lands on both alike (see `interleaved`). The first
pass over the requests is timed too and reported separately as "cold"; the figures without
that label are from later passes. The engine's answer memo (engine/memo.py) is off for all of
these, since later passes repeat the very same requests; "memo p50" is one more pass with it on,
after a pass that filled it: what a request the engine has seen before costs.

Then, at the largest size: decide() p99 while a background thread calls `engine.reload()` over
and over, against p99 without; and, to explain the difference, p99 while a thread only runs
`load_bundle()` (contention, no swap), p99 right after a swap (cold caches, no contention),
and how long each step of `load_bundle()` holds the GIL (a heartbeat thread measures the
longest gap it could not run).

Latencies are wall-clock on a shared machine: compare ratios, not absolutes. No assertions:
targets are reported as pass/fail.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import statistics
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from any directory

import cedarpy

import engine.bundle
import engine.engine
from bench.policygen import NOW, GeneratedBundle, generate, random_requests
from engine import Engine, Request
from engine.allowlist import host_entities
from engine.catalogue import project
from engine.engine import cedar_datetime
from engine.index import Slicer

SIZES = (10, 100, 1000, 10000)
ns = time.perf_counter_ns


def pct(samples: list[int], p: float) -> float:
    """Nearest-rank percentile, in microseconds."""
    s = sorted(samples)
    return s[max(0, math.ceil(p * len(s)) - 1)] / 1000


def summary(samples: list[int]) -> dict[str, float]:
    return {"p50_us": round(pct(samples, 0.50), 1), "p99_us": round(pct(samples, 0.99), 1), "n": len(samples)}


# -- decide vs raw ----------------------------------------------------------------------------

class Raw:
    """Everything raw Cedar needs, prepared before any timing."""

    def __init__(self, eng: Engine, requests: list[Request]) -> None:
        b = eng.bundle
        self.policies = b.reference_sets()["enforce"]  # authorization only: the strict baseline
        self.schema = b.schema
        now = cedar_datetime(NOW)
        handles: dict[str, Any] = {}
        self.calls: list[tuple[dict[str, Any], Any]] = []
        for req in requests:
            extra = [e.as_cedar() for e in req.entities]
            if req.resource.type == "Ops::Host" and not any(e.uid == req.resource for e in req.entities):
                extra += host_entities(req.resource.id)
            key = json.dumps(extra, sort_keys=True)
            if key not in handles:
                handles[key] = (cedarpy.Entities.from_json_str(json.dumps([*b.static_entities, *extra]), b.schema)
                                if extra else b.static_entities_handle)
            ctx = dict(req.context)
            if "args" in ctx and req.action in b.args_types:
                ctx["args"] = project(ctx["args"], b.args_types[req.action])
            ctx["now"] = now
            ctx_json = json.dumps(ctx)  # cedarpy takes the context as JSON text: encode it now, not per call
            request = {"principal": req.principal.as_cedar(), "action": {"type": "Ops::Action", "id": req.action},
                       "resource": req.resource.as_cedar(), "context": ctx_json}
            self.calls.append((request, handles[key]))
        self.entity_sets = len(handles)


BLOCK = 20  # requests per block: fine enough that machine noise hits both sides alike


def interleaved(eng: Engine, raw: Raw, requests: list[Request]) -> tuple[list[int], list[int]]:
    """One pass in blocks: a block of requests through decide, the same block through raw, the
    order of the two alternating block by block. Not call by call: at 10,000 policies one raw
    call walks ~18 ms of policy data and flushes the CPU caches, which would bill decide() for
    raw's working set rather than its own."""
    dec: list[int] = []
    cedar: list[int] = []
    decide, authorize, policies, schema = eng.decide, cedarpy.is_authorized, raw.policies, raw.schema

    def run_decide(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            t0 = ns()
            decide(requests[i], now=NOW)
            dec.append(ns() - t0)

    def run_raw(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            request, ents = raw.calls[i]
            t0 = ns()
            authorize(request, policies, ents, schema)
            cedar.append(ns() - t0)

    for block, lo in enumerate(range(0, len(requests), BLOCK)):
        hi = min(lo + BLOCK, len(requests))
        first, second = (run_decide, run_raw) if block % 2 == 0 else (run_raw, run_decide)
        first(lo, hi)
        second(lo, hi)
    return dec, cedar


@contextmanager
def patched(owner: Any, name: str, wrap: Callable[[Any], Any]) -> Iterator[None]:
    """Replace owner.name by wrap(original) for the duration (diagnostics only, never timed)."""
    original = getattr(owner, name)
    setattr(owner, name, wrap(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


def anatomy(eng: Engine, requests: list[Request]) -> dict[str, float]:
    """Where a warm decide() spends its time: each Cedar call it makes, and Python around them.
    A separate pass with the Cedar call (engine.cedar.authorize) wrapped; its timings are not
    mixed with the table's.

    decide() calls Cedar once per decision: one slice answers authorization, rate tiers and the
    dryrun policies together."""
    spent: list[int] = []

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            t0 = ns()
            try:
                return f(*a, **k)
            finally:
                spent.append(ns() - t0)
        return timed

    by_call: dict[str, list[int]] = {"enforce": []}
    inside: list[int] = []
    calls: list[int] = []
    total: list[int] = []
    evaluated: list[int] = []

    def count(f: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*a: Any, **k: Any) -> Any:
            hit = f(*a, **k)
            evaluated.append(len(hit[0]))
            return hit
        return counted

    with patched(engine.engine, "authorize", wrap), patched(eng.bundle.enforce, "slice_for", count):
        for req in requests:
            spent.clear()
            t0 = ns()
            eng.decide(req, now=NOW)
            total.append(ns() - t0)
            inside.append(sum(spent))
            calls.append(len(spent))
            for name, t in zip(("enforce",), spent, strict=False):
                by_call[name].append(t)
    b = eng.bundle
    sizes = [len(b.enforce.slice(k)[0]) for k in b.enforce.hot_keys(len(requests))]
    out = {"cedar_calls_per_decide": round(statistics.mean(calls), 2),
           "in_cedar_p50_us": round(pct(inside, 0.5), 1),
           "python_p50_us": round(pct([t - c for t, c in zip(total, inside, strict=True)], 0.5), 1),
           "mean_slice": round(statistics.mean(sizes), 1), "max_slice": max(sizes),
           # what Cedar actually evaluates: the scope slice less the policies argument guards drop
           "mean_evaluated": round(statistics.mean(evaluated), 1) if evaluated else 0.0}
    for name, ts in by_call.items():
        out[f"{name}_calls"] = len(ts)
        out[f"{name}_p50_us"] = round(pct(ts, 0.5), 1) if ts else 0.0
    return out


def measure_size(n: int, seed: int, count: int, reps: int, workdir: Path) -> tuple[dict[str, Any], Engine,
                                                                                     GeneratedBundle]:
    gen = generate(workdir / f"bundle-{n}", n, seed)
    t0 = time.perf_counter()
    # The answer memo off: every request of these repeated passes is evaluated, as a first sight
    # of its arguments would be; the memo's own figure is measured apart ("memo p50").
    eng = Engine.from_dir(gen.root, memoise=False)
    load_s = time.perf_counter() - t0
    requests = random_requests(gen, count, seed)
    raw = Raw(eng, requests)
    cold_d, cold_r = interleaved(eng, raw, requests)   # first sight: slices and entities get built
    warm_d: list[int] = []
    warm_r: list[int] = []
    for _ in range(reps):
        d, r = interleaved(eng, raw, requests)
        warm_d += d
        warm_r += r
    row: dict[str, Any] = {
        "policies": n, "enforce_policies": len(eng.bundle.enforce), "dryrun_policies": len(eng.bundle.dryrun_ids),
        "requests": count, "entity_sets": raw.entity_sets, "load_s": round(load_s, 2),
        "decide": summary(warm_d), "raw": summary(warm_r),
        "cold_decide": summary(cold_d), "cold_raw": summary(cold_r),
    }
    eng.memoise = True
    interleaved(eng, raw, requests)  # fills the memo
    memo_d, _ = interleaved(eng, raw, requests)
    eng.memoise = False
    row["memo_decide"] = summary(memo_d)  # the same requests again: answered from the memo where it may
    row["ratio_p50"] = round(row["decide"]["p50_us"] / row["raw"]["p50_us"], 2)
    row["ratio_p99"] = round(row["decide"]["p99_us"] / row["raw"]["p99_us"], 2)
    row["anatomy"] = anatomy(eng, requests)
    return row, eng, gen


# -- reload -----------------------------------------------------------------------------------

def timed_decides(eng: Engine, requests: list[Request], calls: int) -> list[int]:
    out = []
    decide = eng.decide
    for i in range(calls):
        req = requests[i % len(requests)]
        t0 = ns()
        decide(req, now=NOW)
        out.append(ns() - t0)
    return out


def while_running(work: Callable[[], object], eng: Engine, requests: list[Request], min_runs: int,
                  max_s: float) -> tuple[list[int], int]:
    """Time decide() calls while a thread repeats `work`, until it ran min_runs times (or max_s)."""
    stop = threading.Event()
    runs = 0

    def loop() -> None:
        nonlocal runs
        while not stop.is_set():
            work()
            runs += 1

    t = threading.Thread(target=loop, daemon=True)
    out: list[int] = []
    decide = eng.decide
    deadline = time.perf_counter() + max_s
    t.start()
    i = 0
    while runs < min_runs and time.perf_counter() < deadline:
        req = requests[i % len(requests)]
        i += 1
        t0 = ns()
        decide(req, now=NOW)
        out.append(ns() - t0)
    stop.set()
    t.join()
    return out, runs


def measure_reload(eng: Engine, gen: GeneratedBundle, seed: int, count: int, min_runs: int,
                   max_s: float) -> dict[str, Any]:
    requests = random_requests(gen, count, seed + 1)
    for req in requests:  # steady state first, as for the table
        eng.decide(req, now=NOW)
    baseline_calls = 10 * count
    baseline = timed_decides(eng, requests, baseline_calls)
    took: list[float] = []

    def reload() -> None:
        t0 = time.perf_counter()
        ok, issues = eng.reload()
        assert ok, issues
        took.append(time.perf_counter() - t0)

    during, reloads = while_running(reload, eng, requests, min_runs, max_s)
    for req in requests:  # back to steady state
        eng.decide(req, now=NOW)
    loading, loads = while_running(lambda: engine.bundle.load_bundle(gen.root), eng, requests, 1, max_s / 2)
    eng.reload()  # the swap alone: fresh caches, nobody competing
    after_swap = timed_decides(eng, requests, len(requests))
    t0 = time.perf_counter()
    eng.reload()
    reload_s = time.perf_counter() - t0
    out = {"policies": gen.n, "reload_s": round(reload_s, 2), "baseline": summary(baseline),
           "during_reload": summary(during), "reloads_completed": reloads,
           "reload_s_under_load": round(statistics.mean(took), 2) if took else None,
           "during_load_bundle_only": summary(loading), "load_bundle_runs": loads,
           "first_pass_after_swap": summary(after_swap)}
    out["ratio_p99"] = round(out["during_reload"]["p99_us"] / out["baseline"]["p99_us"], 2)
    return out


def gil_holds(eng: Engine) -> list[dict[str, Any]]:
    """The steps of one engine.reload() (load_bundle + warming the hot slices a serving engine
    has) and, for each, the longest time a heartbeat thread could not run during it: how long
    that step holds the GIL in one go. A pure-Python step shows up to the switch interval
    (5 ms); a C call that keeps the GIL shows its full duration."""
    beats: list[int] = []
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.is_set():
            beats.append(ns())
            time.sleep(0.0001)

    spans: dict[str, list[tuple[int, int]]] = {}

    def wrap(label: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(f: Callable[..., Any]) -> Callable[..., Any]:
            def timed(*a: Any, **k: Any) -> Any:
                t0 = ns()
                try:
                    return f(*a, **k)
                finally:
                    spans.setdefault(label, []).append((t0, ns()))
            return timed
        return deco

    fake_cedarpy = types.SimpleNamespace(**{k: getattr(cedarpy, k) for k in dir(cedarpy) if not k.startswith("__")})
    fake_cedarpy.policies_to_json_str = wrap("cedarpy.policies_to_json_str")(cedarpy.policies_to_json_str)
    fake_cedarpy.validate_policies = wrap("cedarpy.validate_policies (release_gil=True)")(cedarpy.validate_policies)
    fake_cedarpy.Schema = types.SimpleNamespace(from_str=wrap("cedarpy.Schema.from_str")(cedarpy.Schema.from_str))
    fake_cedarpy.Entities = types.SimpleNamespace(
        from_json_str=wrap("cedarpy.Entities.from_json_str")(cedarpy.Entities.from_json_str))
    fake_cedarpy.PolicySet = types.SimpleNamespace(
        from_json_str=wrap("cedarpy.PolicySet.from_json_str")(cedarpy.PolicySet.from_json_str))
    fake_cedarpy.is_authorized = wrap("cedarpy.is_authorized (action probes)")(cedarpy.is_authorized)
    fake_json = types.SimpleNamespace(loads=wrap("json.loads")(json.loads), dumps=wrap("json.dumps")(json.dumps))
    import engine.index as index_module

    gc_started: list[int] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started.append(ns())
        elif gc_started:
            spans.setdefault(f"gc collection (generation {info['generation']})", []).append((gc_started.pop(), ns()))

    t = threading.Thread(target=heartbeat, daemon=True)
    gc.callbacks.append(on_gc)
    with patched(engine.bundle, "cedarpy", lambda _: fake_cedarpy), \
            patched(index_module, "cedarpy", lambda _: fake_cedarpy), \
            patched(engine.bundle, "json", lambda _: fake_json), \
            patched(engine.bundle.Slicer, "__init__", wrap("Slicer.__init__ (index build, Python)")), \
            patched(engine.bundle, "_parse_policies", wrap("bundle._parse_policies (incl. to_json, loads)")), \
            patched(engine.bundle, "_validate", wrap("bundle._validate")), \
            patched(engine.bundle.Bundle, "__init__", wrap("Bundle.__init__ (indexes, entities, probes)")), \
            patched(Slicer, "warm", wrap("Slicer.warm (hot slices for the new bundle)")), \
            patched(engine.engine, "load_bundle", wrap("load_bundle (whole)")):
        t.start()
        time.sleep(0.01)
        t0 = ns()
        try:
            eng.reload()
        finally:
            t1 = ns()
            gc.callbacks.remove(on_gc)
        time.sleep(0.01)
        stop.set()
        t.join()
    # What follows the last wrapped step: the swap, and freeing the old bundle (its Python objects
    # and its Rust PolicySet handles) as the last reference to it goes.
    last = max(b for ss in spans.values() for _, b in ss if b <= t1)
    spans["reload tail (swap, old bundle freed)"] = [(last, t1)]
    spans["engine.reload (whole)"] = [(t0, t1)]

    def longest_gap(a: int, b: int) -> int:
        inside = [x for x in beats if a <= x <= b]
        marks = [a, *inside, b]
        return max(y - x for x, y in itertools.pairwise(marks))

    rows = []
    for label, ss in spans.items():
        rows.append({"step": label, "calls": len(ss), "total_ms": round(sum(b - a for a, b in ss) / 1e6, 1),
                     "longest_call_ms": round(max(b - a for a, b in ss) / 1e6, 2),
                     "longest_gil_hold_ms": round(max(longest_gap(a, b) for a, b in ss) / 1e6, 2)})
    rows.sort(key=lambda r: -r["total_ms"])
    return rows


# -- report -----------------------------------------------------------------------------------

# The issue's reference: raw full-set cedarpy at 10,000 policies takes ~16 ms "here".
REFERENCE_RAW_10K_US = 16_000


def targets(rows: list[dict[str, Any]], reload: dict[str, Any]) -> list[dict[str, Any]]:
    by_n = {r["policies"]: r for r in rows}
    out = []
    if 10000 in by_n:
        # The issue states this target for a machine where the raw full set takes ~16 ms; this
        # machine's speed varies several-fold, so the absolute figure is also scaled by the raw
        # full-set p50 measured in the same run (the target is judged on the scaled figure).
        v = by_n[10000]["decide"]["p50_us"]
        raw = by_n[10000]["raw"]["p50_us"]
        scaled = round(v * REFERENCE_RAW_10K_US / raw, 1)
        out.append({"target": "decide p50 <= 150 us at 10,000 policies (scaled to raw full set = 16 ms)",
                    "value": f"{scaled} us scaled ({v} us here, raw full set {raw / 1000:.1f} ms here)",
                    "pass": scaled <= 150})
    if 10 in by_n:
        v = by_n[10]["ratio_p50"]
        out.append({"target": "decide p50 <= 1.3x raw p50 at 10 policies", "value": f"{v}x", "pass": v <= 1.3})
    if reload:
        v = reload["ratio_p99"]
        out.append({"target": f"decide p99 during reload <= 2x p99 without ({reload['policies']} policies)",
                    "value": f"{v}x", "pass": v <= 2.0})
    return out


def render(result: dict[str, Any]) -> str:
    lines = [f"decide() vs raw cedarpy.is_authorized on the full enforce set "
             f"(us; warm = after one pass; cold = first pass); seed {result['seed']}", ""]
    head = (f"{'policies':>8} {'reqs':>5} | {'decide p50':>10} {'p99':>8} | {'raw p50':>9} {'p99':>8} | "
            f"{'ratio p50':>9} {'p99':>5} | {'cold decide p50':>15} {'p99':>8} | {'cold raw p50':>12} {'p99':>8} | "
            f"{'memo p50':>8} {'p99':>8}")
    lines += [head, "-" * len(head)]
    for r in result["sizes"]:
        d, w, cd, cr = r["decide"], r["raw"], r["cold_decide"], r["cold_raw"]
        lines.append(f"{r['policies']:>8} {r['requests']:>5} | {d['p50_us']:>10} {d['p99_us']:>8} | "
                     f"{w['p50_us']:>9} {w['p99_us']:>8} | {r['ratio_p50']:>9} {r['ratio_p99']:>5} | "
                     f"{cd['p50_us']:>15} {cd['p99_us']:>8} | {cr['p50_us']:>12} {cr['p99_us']:>8} | "
                     f"{r['memo_decide']['p50_us']:>8} {r['memo_decide']['p99_us']:>8}")
    lines += ["", "anatomy of a warm decide() (p50 us of each Cedar call it makes, and of the Python around them)",
              f"{'policies':>8} | {'enforce':>7} {'dryrun':>6} | {'calls':>5} | {'enforce':>7} "
              f"| {'all cedar':>9} {'python':>6} | {'slice mean':>10} {'max':>4} {'evaluated':>9} | {'load s':>6}"]
    for r in result["sizes"]:
        a = r["anatomy"]
        lines.append(f"{r['policies']:>8} | {r['enforce_policies']:>7} {r['dryrun_policies']:>6} | "
                     f"{a['cedar_calls_per_decide']:>5} | {a['enforce_p50_us']:>7} | "
                     f"{a['in_cedar_p50_us']:>9} {a['python_p50_us']:>6} | {a['mean_slice']:>10} {a['max_slice']:>4} "
                     f"{a['mean_evaluated']:>9} | {r['load_s']:>6}")
    rl = result.get("reload")
    if rl:
        lines += ["", f"reload at {rl['policies']} policies (one engine.reload() takes {rl['reload_s']} s alone, "
                      f"{rl['reload_s_under_load']} s while decide() runs flat out)",
                  f"  decide p99 without reload       {rl['baseline']['p99_us']:>9} us  "
                  f"(p50 {rl['baseline']['p50_us']}, {rl['baseline']['n']} calls)",
                  f"  decide p99 during reload        {rl['during_reload']['p99_us']:>9} us  "
                  f"(p50 {rl['during_reload']['p50_us']}, {rl['during_reload']['n']} calls, "
                  f"{rl['reloads_completed']} reloads completed)  ratio {rl['ratio_p99']}x",
                  f"  ... during load_bundle() only   {rl['during_load_bundle_only']['p99_us']:>9} us  "
                  f"(p50 {rl['during_load_bundle_only']['p50_us']}, {rl['load_bundle_runs']} loads, no swap)",
                  f"  ... first pass after a swap     {rl['first_pass_after_swap']['p99_us']:>9} us  "
                  f"(p50 {rl['first_pass_after_swap']['p50_us']}, no concurrent work)"]
    gil = result.get("gil")
    if gil:
        lines += ["", "GIL held by the steps of one engine.reload() (heartbeat thread's longest stall inside the step)",
                  f"  {'step':<52} {'calls':>5} {'total ms':>9} {'longest call':>12} {'longest hold':>12}"]
        for g in gil:
            lines.append(f"  {g['step']:<52} {g['calls']:>5} {g['total_ms']:>9} {g['longest_call_ms']:>12} "
                         f"{g['longest_gil_hold_ms']:>12}")
    lines += ["", "targets"]
    for t in result["targets"]:
        lines.append(f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['target']}: {t['value']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--quick", action="store_true", help="fewer requests and reloads (a smoke run)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"seed": args.seed, "quick": args.quick, "sizes": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="opsgate-bench-decide-") as tmp:
        work = Path(tmp)
        eng, gen = None, None
        for n in SIZES:
            # Raw costs ~2 us per policy per call: fewer requests at 10,000 keep the run in minutes.
            count = (300 if n < 10000 else 200) if args.quick else (2000 if n < 10000 else 1000)
            reps = 1 if args.quick or n >= 1000 else 3
            row, eng, gen = measure_size(n, args.seed, count, reps, work)
            result["sizes"].append(row)
            print(f"  {n} policies done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        assert eng is not None and gen is not None
        # 1,000 distinct requests even when quick: the engine carries only its 512 hottest slices
        # over a reload, so a smaller working set would hide what a swap costs.
        result["reload"] = measure_reload(eng, gen, args.seed, 1000, min_runs=1 if args.quick else 3,
                                          max_s=20 if args.quick else 45)
        print(f"  reload done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        result["gil"] = gil_holds(eng)
    result["targets"] = targets(result["sizes"], result["reload"])
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
