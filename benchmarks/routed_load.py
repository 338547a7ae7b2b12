"""Routed throughput of the shipped threshold preset under concurrent callers, with its local tier.

Setup: ``policies/threshold.yaml`` as shipped (the packaged adapter, its scoring budget, its
local tier answering up to ``--max-tokens`` new tokens), except that the large tier points at a
fake OpenAI-compatible server on 127.0.0.1 (tests/router_support.py; it answers at once, or after
``--remote-ms``). Short factual questions (benchmarks/support.py), the same ``--requests`` at
every level, sent by 1 (sequential), 8, 16 and 32 closed-loop callers, each one
``Router.completion`` on its own thread.

Reported per level: throughput and its ratio to the sequential level (goal >= 2.5 at 16 and 32),
the share of requests scored (goal >= 0.9 at 16) and why the others were not, the share answered
locally, the p50/p95 latency of local answers and of remote ones, and how long a shed request
waited for its decision (goal: p95 < 10% of the budget).

    python benchmarks/routed_load.py --out benchmarks/results/routed_load.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from router_support import OpenAIServer  # noqa: E402  (the tests' fake provider)
from support import questions, write_result  # noqa: E402

import introroute  # noqa: E402
from introroute.router import Router  # noqa: E402

PRESET = ROOT / "policies" / "threshold.yaml"


class SlowServer(OpenAIServer):
    """The fake provider, answering after ``delay_s`` (a remote model's latency)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def _answer(self, h: Any, body: dict[str, Any], fault: Any) -> None:
        time.sleep(self.delay_s)
        super()._answer(h, body, fault)


def preset_router(api_base: str) -> Router:
    """The shipped threshold preset with its remote tier on ``api_base`` and no routing log."""
    config = yaml.safe_load(PRESET.read_text())
    for tier in config["tiers"]:
        if "litellm_params" in tier:
            tier["litellm_params"].update(api_key="sk-fake", api_base=api_base)
    config["routing_log"] = None
    return Router.from_dict(config)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None}
    ordered = sorted(values)
    return {"p50_ms": statistics.median(ordered), "p95_ms": ordered[round(0.95 * (len(ordered) - 1))]}


def level(router: Router, callers: int, requests: int, max_tokens: int) -> dict[str, Any]:
    """``requests`` completions by ``callers`` closed-loop threads: throughput, shares, latencies."""
    work = questions(requests)

    def one(messages: list[dict[str, str]]) -> tuple[introroute.Decision, float]:
        start = time.perf_counter()
        response = router.completion(messages=messages, max_tokens=max_tokens)
        return introroute.decision(response), (time.perf_counter() - start) * 1000.0

    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        done = list(pool.map(one, work))
    seconds = time.perf_counter() - start
    reasons = Counter(d.reason or "scored" for d, _ in done)
    shed = [d.gatekeeper_ms for d, _ in done if d.reason in ("overload", "loading")]
    return {
        "callers": callers,
        "requests": requests,
        "seconds": seconds,
        "throughput_rps": requests / seconds,
        "share_scored": reasons["scored"] / requests,
        "share_by_reason": {r: n / requests for r, n in sorted(reasons.items())},
        "share_local": sum(d.tier == "local" for d, _ in done) / requests,
        "local_latency": _percentiles([ms for d, ms in done if d.tier == "local"]),
        "remote_latency": _percentiles([ms for d, ms in done if d.tier != "local"]),
        "shed_decision": _percentiles(shed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--requests", type=int, default=64, help="requests at each level")
    parser.add_argument("--max-tokens", type=int, default=128, help="local answers' new-token cap")
    parser.add_argument("--remote-ms", type=float, default=0.0, help="the fake provider's latency")
    args = parser.parse_args()

    server = SlowServer(args.remote_ms / 1000.0).start()
    router = preset_router(server.url)
    levels = [level(router, n, args.requests, args.max_tokens) for n in args.callers]
    stats = router.stats()
    router.close()
    server.stop()
    base = levels[0]["throughput_rps"]
    for result in levels:
        result["throughput_ratio"] = result["throughput_rps"] / base
    write_result(
        args.out,
        {
            "benchmark": "routed_load",
            "preset": str(PRESET.relative_to(ROOT)),
            "goal": "throughput_ratio >= 2.5 at 16 and 32 callers; share_scored >= 0.9 at 16; "
            "shed decision p95 < 10% of the budget",
            "ratio_baseline": f"{args.callers[0]} caller(s)",
            "max_tokens": args.max_tokens,
            "remote_ms": args.remote_ms,
            "machine": f"{platform.machine()} {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}",
            "levels": levels,
            "router_stats": stats,
        },
    )


if __name__ == "__main__":
    main()
