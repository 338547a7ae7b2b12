"""Scoring and decoding with one torch thread vs two on a shared 2-core machine, interleaved.

Why: with as many torch threads as cores, every operator waits at a barrier for all of its
threads; on a machine whose cores are also busy with other work, one descheduled thread stalls
the whole forward. The shipped presets set ``threads: 1`` because of this measurement.
Reported per setting: the median time of a score-only forward over 8 short questions, and of
one decode step (greedy, 20 new tokens, from a single prefill). The settings alternate, so
background load hits both alike; the load average is recorded.

    python benchmarks/thread_contention.py --out benchmarks/results/thread_contention.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from support import questions, write_result

from introroute.gatekeeper import IntroLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    gk = IntroLM.from_pretrained()
    prompts = [gk.encode(q) for q in questions(8)]
    gk.scores_encoded(prompts)  # warm
    batch: dict[int, list[float]] = {n: [] for n in args.threads}
    step: dict[int, list[float]] = {n: [] for n in args.threads}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for n in args.threads:
            torch.set_num_threads(n)
            start = time.perf_counter()
            gk.scores_encoded(prompts)
            batch[n].append((time.perf_counter() - start) * 1000.0)
            prefill = gk.prefill(questions(1)[0])
            start = time.perf_counter()
            generation = gk.generate_from(prefill, max_new_tokens=20)
            step[n].append((time.perf_counter() - start) * 1000.0 / max(1, generation.completion_tokens))
        load.append(os.getloadavg()[0])
    write_result(
        args.out,
        {
            "benchmark": "thread_contention",
            "machine": f"{platform.machine()} {os.cpu_count()} cpus",
            "load_average": load,
            "rounds": args.rounds,
            "score_batch8_median_ms": {n: statistics.median(v) for n, v in batch.items()},
            "decode_step_median_ms": {n: statistics.median(v) for n, v in step.items()},
            "raw": {"score_batch8_ms": batch, "decode_step_ms": step},
        },
    )


if __name__ == "__main__":
    main()
