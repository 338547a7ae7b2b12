"""The router at twice the load its gatekeeper can sustain: who is scored, who is shed, how fast.

Setup: the shipped adapter, the threshold router of ``policies/threshold.yaml`` (500 ms
scoring budget, ``overload: shed``, default batching), short factual questions. First the
sustainable load is measured: the rate of requests scored within the budget when ``--callers``
closed-loop callers keep the gatekeeper saturated; a caller that is not scored waits 1 s before
its next request (its request went to the fail-safe tier, which takes about that long to answer;
without the pause a shed caller would spin and starve the forward). For reference, the rate
without a budget (every request scored, batches full) is measured too. Then requests arrive
open-loop (Poisson) at ``--factor`` times the sustainable rate for ``--seconds``, each one
``Router.aroute`` on one event loop.
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

BUDGET_MS = 500.0  # policies/threshold.yaml


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None}
    ordered = sorted(values)
    return {
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[int(0.95 * (len(ordered) - 1))],
        "max_ms": ordered[-1],
    }


FAIL_SAFE_S = 1.0  # how long a caller that was not scored is busy elsewhere


def sustainable_rate(rt, callers: int, seconds: float) -> dict:
    """Scored requests per second with ``callers`` back-to-back callers."""
    work = questions(100_000)
    stop = time.perf_counter() + seconds
    counts: Counter[str] = Counter()

    def caller(offset: int) -> None:
        i = offset
        while time.perf_counter() < stop:
            reason = rt.route(work[i]).reason
            counts[reason or "scored"] += 1
            if reason is not None:
                time.sleep(FAIL_SAFE_S)
            i += callers

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
    parser.add_argument("--calibrate-seconds", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--factor", type=float, default=2.0)
    args = parser.parse_args()

    gk = IntroLM.from_pretrained()
    unbudgeted = router(gk, "capacity")
    unlimited = sustainable_rate(unbudgeted, args.callers, args.calibrate_seconds)
    unlimited["mean_batch_size"] = unbudgeted.stats()["mean_batch_size"]
    unbudgeted.close()
    print(json.dumps(unlimited), flush=True)
    rt = router(gk, "overload", timeout_ms=BUDGET_MS)
    capacity = sustainable_rate(rt, args.callers, args.calibrate_seconds)
    capacity["mean_batch_size"] = rt.stats()["mean_batch_size"]
    print(json.dumps(capacity), flush=True)
    rss_before = rss_mib()
    load = asyncio.run(open_loop(rt, args.factor * capacity["rate"], args.seconds))
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
        "sustainable": capacity,
        "without_budget": unlimited,
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
