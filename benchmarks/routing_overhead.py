"""What the router adds to a request beyond the gatekeeper forward: policy, config, dispatch, log.

The gatekeeper is a constant scorer (no forward pass at all), the tiers are LiteLLM
``mock_response`` models, and the routing log is on. Each iteration times the same request
twice, interleaved: ``litellm.completion`` of the chosen tier directly, and
``Router.completion``; the overhead is their difference per pair, in wall-clock time and in
process CPU time (all threads: the work the router adds, whatever else runs on the machine).
The router's time includes handing the request to the gatekeeper's worker thread and back
(``gatekeeper_ms``, reported too: two thread wake-ups), which a real deployment pays on top of
the forward; ``overhead_beyond_scoring`` takes it out (per pair: routed - direct -
gatekeeper_ms), leaving policy, config, dispatch and logging.

    python benchmarks/routing_overhead.py --out benchmarks/results/routing_overhead.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline, no price-map fetch
sys.path.insert(0, str(Path(__file__).parent))
import litellm
from support import questions, write_result

from introroute.router import Router


class ConstantScorer:
    """Scores without a model: the small tier is confident on every request."""

    @property
    def targets(self) -> list[str]:
        return ["small", "large"]

    def scores(self, messages: object) -> dict[str, float]:
        return {"small": 0.9, "large": 0.95}


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": statistics.median(ordered) * 1000.0,
        "p95_ms": ordered[int(0.95 * (len(ordered) - 1))] * 1000.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()

    small = {"model": "openai/gpt-4o-mini", "mock_response": "Paris."}
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "name": "overhead",
            "gatekeeper": {},
            "tiers": [
                {"name": "small", "target": "small", "litellm_params": small},
                {
                    "name": "large",
                    "target": "large",
                    "litellm_params": {"model": "openai/gpt-4o", "mock_response": "Paris."},
                },
            ],
            "policy": {"type": "threshold", "params": {"tau": 0.5}},
            "routing_log": str(Path(tmp) / "routing.jsonl"),
        }
        router = Router.from_dict(config, gatekeeper=ConstantScorer())
        work = questions(args.requests + args.warmup)
        keys = ("direct", "routed", "overhead", "beyond", "cpu", "gk")
        times: dict[str, list[float]] = {k: [] for k in keys}
        for i, messages in enumerate(work):
            start, cpu_start = time.perf_counter(), time.process_time()
            litellm.completion(messages=messages, max_retries=0, **small)
            mid, cpu_mid = time.perf_counter(), time.process_time()
            response = router.completion(messages=messages)
            end, cpu_end = time.perf_counter(), time.process_time()
            if i < args.warmup:
                continue
            times["direct"].append(mid - start)
            times["routed"].append(end - mid)
            times["overhead"].append((end - mid) - (mid - start))
            times["cpu"].append((cpu_end - cpu_mid) - (cpu_mid - cpu_start))
            scoring_s = response._hidden_params["introroute"]["gatekeeper_ms"] / 1000.0
            times["gk"].append(scoring_s)
            times["beyond"].append(times["overhead"][-1] - scoring_s)
        with open(config["routing_log"]) as log:
            log_lines = sum(1 for _ in log)
        router.close()
    result = {
        "benchmark": "routing_overhead",
        "goal": "router overhead per request p50 and p95 < 1 ms",
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "requests": args.requests,
        "litellm_direct": _percentiles(times["direct"]),
        "routed": _percentiles(times["routed"]),
        "overhead": _percentiles(times["overhead"]),
        "overhead_beyond_scoring": _percentiles(times["beyond"]),
        "overhead_cpu": _percentiles(times["cpu"]),
        "gatekeeper_handoff": _percentiles(times["gk"]),
        "routing_log_records": log_lines,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
