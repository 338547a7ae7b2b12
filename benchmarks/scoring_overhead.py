"""Scoring overhead of the gatekeeper: prefill() vs a plain base-model prefill (SmolLM2 by default).

Both sides produce what the next step needs: the plain side a KV cache and last-position
logits; ours additionally the [INTRO] score, from the same forward. Timings are interleaved
(plain, ours, plain, ours, ...) so background load hits both alike; ratios are of medians.
Also: cold load (GGUF dequantisation into an empty cache) vs cached load.

The same script runs unchanged on a GPU (``--device cuda --dtype bfloat16``, any ``--base``);
the JSON records the device, its name and the dtype, and GPU timings synchronise the device.

    python benchmarks/scoring_overhead.py --out benchmarks/results/scoring_overhead.json
    python benchmarks/scoring_overhead.py --base gemma-3-270m --out benchmarks/results/scoring_gemma3.json
    python benchmarks/scoring_overhead.py --base /models/Qwen3-8B --device cuda --dtype bf16 --out gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from introroute.gatekeeper import DEFAULT_BASE, IntroLM
from introroute.gatekeeper.model import Batch

FILLER = "Explain, step by step and with examples, how photosynthesis turns light into chemical energy. "


def _batch(gk: IntroLM, tokens: int, rows: int) -> Batch:
    """``rows`` prompts of exactly ``tokens`` tokens (left-truncated real chat prompts)."""
    gk.config.max_context = tokens + len(gk.intro_ids)
    prompts = [
        gk.encode([{"role": "user", "content": f"{i} " + FILLER * (tokens // 10)}]) for i in range(rows)
    ]
    assert all(len(p.ids) == tokens for p in prompts)
    return gk.collate(prompts)


def _plain_prefill(gk: IntroLM, batch: Batch) -> None:
    """The base model alone (the plain view, no adapter wrappers): KV cache + last logits."""
    gk.prompt_cache(batch)


def _ours(gk: IntroLM, batch: Batch) -> None:
    gk.next_token_logits(gk.forward_batch(batch, use_cache=True))


def _synchronize(gk: IntroLM) -> None:
    """Wait for queued GPU kernels, so a timing covers the work and not just its launch."""
    if gk.device.type == "cuda":
        torch.cuda.synchronize(gk.device)
    elif gk.device.type == "mps":
        torch.mps.synchronize()


def _timed(fn, gk: IntroLM, *args) -> float:
    _synchronize(gk)
    start = time.perf_counter()
    fn(gk, *args)
    _synchronize(gk)
    return time.perf_counter() - start


def device_report(gk: IntroLM) -> dict:
    """What the numbers were measured on: device, its name, dtype, torch threads."""
    device = gk.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".replace("  ", " ")
    return {
        "device": str(device),
        "device_name": name,
        "dtype": str(gk.dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def overhead(gk: IntroLM, tokens: int, rows: int, repeats: int) -> dict:
    batch = _batch(gk, tokens, rows)
    plain, ours = [], []
    with torch.inference_mode():
        _plain_prefill(gk, batch)
        _ours(gk, batch)
        for _ in range(repeats):
            plain.append(_timed(_plain_prefill, gk, batch))
            ours.append(_timed(_ours, gk, batch))
    return {
        "prompt_tokens": tokens,
        "batch": rows,
        "repeats": repeats,
        "plain_prefill_s": statistics.median(plain),
        "introlm_prefill_s": statistics.median(ours),
        "ratio": statistics.median(ours) / statistics.median(plain),
        "ratio_of_minima": min(ours) / min(plain),
    }


def _load_seconds(cache: str | None, args: argparse.Namespace) -> float:
    """Time a gatekeeper load in a fresh process (so nothing is reused from this one)."""
    env = dict(os.environ)
    if cache is not None:
        env["INTROROUTE_CACHE"] = cache
    options = f"base={args.base!r}, device={args.device!r}, dtype={args.dtype!r}"
    code = (
        "import time; t = time.perf_counter(); from introroute.gatekeeper import IntroLM; "
        f"IntroLM.from_pretrained({options}); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-load", action="store_true", help="skip the cold/cached load timing")
    parser.add_argument("--base", default=DEFAULT_BASE, help="packaged name, .gguf file or HF directory")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    args = parser.parse_args()

    gk = IntroLM.from_pretrained(base=args.base, device=args.device, dtype=args.dtype)
    rows = []
    for tokens in args.tokens:
        for batch in args.batches:
            repeats = max(2, args.repeats if tokens * batch <= 2048 else args.repeats // 2)
            rows.append(overhead(gk, tokens, batch, repeats))
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "benchmark": "scoring_overhead",
        "base": gk.base_name,
        "trained_adapter": gk.trained,
        "goal": "introlm_prefill_s / plain_prefill_s <= 1.10",
        **device_report(gk),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "results": rows,
    }
    if not args.skip_load:
        with tempfile.TemporaryDirectory() as empty:
            result["load_cold_s"] = _load_seconds(empty, args)
        result["load_cached_s"] = _load_seconds(None, args)
        print(f"load: cold {result['load_cold_s']:.1f} s, cached {result['load_cached_s']:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
