"""Scoring throughput of the router with the shipped adapter: concurrent callers vs one at a time.

Each caller thread sends routing requests (``Router.route``: score + decide, no model call) back
to back; the router's micro-batcher gathers concurrent ones into padded forwards. The sequential
baseline is the same router at concurrency 1, run between every concurrent measurement so that
background load on this shared machine hits both alike; each speed-up is over the mean of the
sequential runs on either side. No budget (``timeout_ms`` unset), so nothing is shed.

With ``--tiers local`` (the default) the router has a local tier, so a lone request is prefilled in
full (its KV cache is kept for a local answer) while the rows of a batch of several are scores
only and run on top of the chat template head's cached KV (``IntroConfig.prefix_cache``).
``--prefix-cache both`` (the default) measures every concurrent point with the head cache and
without it, each between two sequential runs, so the two columns see the same background load.
``--tiers remote`` has no local tier: a lone request is then scores only as well and uses the
head cache too (a harder baseline).

    python benchmarks/scoring_throughput.py --out benchmarks/results/scoring_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from support import questions, router, write_result

from introroute.gatekeeper import IntroLM


def run(rt, concurrency: int, requests: int) -> dict:
    """``requests`` routing calls from ``concurrency`` threads; requests/s and batch sizes."""
    work = questions(requests)
    start = time.perf_counter()
    if concurrency == 1:
        decisions = [rt.route(m) for m in work]
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            decisions = list(pool.map(rt.route, work))
    elapsed = time.perf_counter() - start
    assert all(d.reason is None for d in decisions), {d.reason for d in decisions}
    return {
        "concurrency": concurrency,
        "requests": requests,
        "seconds": elapsed,
        "requests_per_s": requests / elapsed,
        "mean_batch_size": statistics.mean(d.batch_size for d in decisions),
        "p50_gatekeeper_ms": statistics.median(d.gatekeeper_ms for d in decisions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--max-batch-size", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--sequential-requests", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="requests per caller thread (at least)")
    parser.add_argument(
        "--prefix-cache",
        choices=["on", "off", "both"],
        default="both",
        help="batches on top of the template head's KV cache (on), in full (off), or both, interleaved",
    )
    parser.add_argument(
        "--tiers",
        choices=["local", "remote"],
        default="local",
        help="local: the cheap tier is the local model (a lone request keeps its KV cache, so it is "
        "prefilled in full); remote: both tiers are remote (every request is scores only)",
    )
    args = parser.parse_args()

    gk = IntroLM.from_pretrained()
    default = gk.config.prefix_cache
    settings = {"on": [True], "off": [False], "both": [True, False]}[args.prefix_cache]
    rows = []
    for max_batch in args.max_batch_size:
        rt = router(
            gk, f"throughput{max_batch}", local=args.tiers == "local", max_batch_size=max_batch, max_wait_ms=2
        )
        before = run(rt, 1, args.sequential_requests)
        print(json.dumps(before), flush=True)
        for concurrency in args.concurrency:
            requests = max(args.rounds * concurrency, 4 * max_batch)
            for setting in settings:
                gk.config.prefix_cache = setting
                row = run(rt, concurrency, requests)
                gk.config.prefix_cache = default
                after = run(rt, 1, args.sequential_requests)
                sequential = (before["requests_per_s"] + after["requests_per_s"]) / 2
                row.update(
                    max_batch_size=max_batch,
                    prefix_cache=setting,
                    sequential_requests_per_s=sequential,
                    speedup=row["requests_per_s"] / sequential,
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
                before = after
        rt.close()
    result = {
        "benchmark": "scoring_throughput",
        "base": gk.base_name,
        "goal": "requests/s at concurrency 32 >= 3x sequential",
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "prompt_tokens": sorted({len(gk.encode(m).ids) for m in questions(32)}),
        "template_head_tokens": len(gk.shared_head() or ()),
        "tiers": args.tiers,
        "results": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
