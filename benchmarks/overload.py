"""The router at twice the load its gatekeeper can sustain: who is scored, who is shed, how fast.

Setup: the shipped adapter, the threshold router of ``policies/threshold.yaml`` (500 ms
scoring budget, ``overload: shed``, default batching), short factual questions. The
sustainable load is the most the gatekeeper can score per second: 16 closed-loop callers keep
it saturated without a budget (every request scored, batches full). Requests then arrive
open-loop (Poisson) at ``--factor`` times that rate for ``--seconds``, each one
``Router.aroute`` on one event loop, under the 500 ms budget. For reference, the highest
arrival rate at which 90% of requests are still scored within the budget is searched for too
(open loop, rates x1.5 per 10 s step): under a budget, batches are limited to what fits it.
Reported: the share scored / shed / timed out, latency percentiles of each (the scoring step's
``gatekeeper_ms``; for a shed request that is how long it took to be told), the queue depth and
the process's resident memory over the run (bounded queue => bounded memory).

    python benchmarks/overload.py --out benchmarks/results/overload.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from support import peak_rss_mib, questions, router, rss_mib, write_result

from introroute.gatekeeper import IntroLM

BUDGET_MS = 500.0  # the presets' fixed budget before timeout_ms: auto (kept: comparable runs)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None}
    ordered = sorted(values)
    return {
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[int(0.95 * (len(ordered) - 1))],
        "max_ms": ordered[-1],
    }


def capacity_without_budget(rt, callers: int, seconds: float) -> dict:
    """Scored requests per second with ``callers`` back-to-back callers and no budget."""
    work = questions(100_000)
    stop = time.perf_counter() + seconds
    counts: Counter[str] = Counter()

    def caller(offset: int) -> None:
        for i in range(offset, len(work), callers):
            if time.perf_counter() >= stop:
                return
            counts[rt.route(work[i]).reason or "scored"] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(caller, range(callers)))
    elapsed = time.perf_counter() - start
    return {
        "callers": callers,
        "seconds": elapsed,
        "counts": dict(counts),
        "rate": counts["scored"] / elapsed,
    }


def sustainable_rate(rt, seconds: float, start_rate: float = 1.0, keep: float = 0.9) -> dict:
    """The highest of the rates start_rate x 1.5^k at which ``keep`` of the requests are scored."""
    steps, rate, sustainable = [], start_rate, None
    while True:
        run = asyncio.run(open_loop(rt, rate, seconds, seed=len(steps)))
        scored = run["share"].get("scored", 0.0)
        steps.append({"arrival_rate": rate, "share_scored": scored, "share": run["share"]})
        print(json.dumps(steps[-1]), flush=True)
        if scored < keep:
            break
        sustainable, rate = rate, rate * 1.5
    return {"rate": sustainable or start_rate, "keep": keep, "steps": steps}


async def open_loop(rt, rate: float, seconds: float, seed: int = 0) -> dict:
    """Poisson arrivals at ``rate``/s for ``seconds``; every request's decision and timing."""
    rng = random.Random(seed)
    work = questions(int(rate * seconds * 2) + 10)
    tasks, depth, memory = [], [], []
    start = time.perf_counter()
    next_at, i = start, 0
    while next_at < start + seconds:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        tasks.append(asyncio.create_task(rt.aroute(work[i])))
        i += 1
        if i % 10 == 0:
            depth.append(rt.stats()["queued"])
            memory.append(rss_mib())
        next_at += rng.expovariate(rate)
    decisions = await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    by_reason: dict[str, list[float]] = {}
    for d in decisions:
        by_reason.setdefault(d.reason or "scored", []).append(d.gatekeeper_ms)
    total = len(decisions)
    return {
        "arrival_rate": rate,
        "requests": total,
        "seconds": elapsed,
        "share": {reason: len(ms) / total for reason, ms in sorted(by_reason.items())},
        "latency_ms": {reason: _percentiles(ms) for reason, ms in sorted(by_reason.items())},
        "max_queue_depth": max(depth, default=0),
        "rss_mib": {"min": min(memory, default=None), "max": max(memory, default=None)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--calibrate-seconds", type=float, default=15.0)
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--factor", type=float, default=2.0)
    args = parser.parse_args()

    gk = IntroLM.from_pretrained()
    unbudgeted = router(gk, "capacity")
    unlimited = capacity_without_budget(unbudgeted, args.callers, args.calibrate_seconds)
    unlimited["mean_batch_size"] = unbudgeted.stats()["mean_batch_size"]
    unbudgeted.close()
    print(json.dumps(unlimited), flush=True)
    rt = router(gk, "overload", timeout_ms=BUDGET_MS)
    within_budget = sustainable_rate(rt, args.step_seconds)
    rss_before = rss_mib()
    load = asyncio.run(open_loop(rt, args.factor * unlimited["rate"], args.seconds))
    stats = rt.stats()
    rt.close()
    shed_p95 = load["latency_ms"].get("overload", {}).get("p95_ms")
    result = {
        "benchmark": "overload",
        "base": gk.base_name,
        "goal": "p95 latency of shed requests < 10% of the budget; memory bounded",
        "budget_ms": BUDGET_MS,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "sustainable": unlimited,
        "within_budget": within_budget,
        "load_factor": args.factor,
        "overloaded": load,
        "shed_p95_share_of_budget": shed_p95 / BUDGET_MS if shed_p95 is not None else None,
        "rss_mib_before_load": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "router_stats": stats,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
