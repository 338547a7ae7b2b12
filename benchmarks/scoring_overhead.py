"""Scoring overhead of the gatekeeper: prefill() vs a plain base-model prefill (SmolLM2 by default).

Both sides produce what the next step needs: the plain side a KV cache and last-position
logits; ours additionally the [INTRO] score, from the same forward. ``peft`` is the same forward
through the PEFT model (the path before introroute.gatekeeper.fastpath), for a before/after
from one run. Timings are interleaved (plain, ours, peft, plain, ...) so background load hits
all alike; ratios are of medians (and of minima). ``--clock cpu`` times process CPU seconds
instead of wall-clock ones: on a machine shared with other jobs a forward's wall time mostly
measures how often it was preempted. Also: cold load (GGUF dequantisation into an empty cache)
vs cached load.

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
from introroute.training.forward import prompt_cache

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
    prompt_cache(gk, batch)


def _plain_plus_one(gk: IntroLM, batch: Batch) -> None:
    """A plain prefill one token longer: the floor for any forward that scores at an extra token.

    On CPU a matrix product over 33 rows can cost ~10% more than over 32 (the kernels work in
    blocks of rows), well above 1/32, so this is measured rather than assumed.
    """
    intro, mask = gk.intro_inputs(batch)
    longer = Batch(torch.cat([batch.input_ids, intro], dim=1), mask, batch.lengths + len(gk.intro_ids))
    prompt_cache(gk, longer)


def _ours(gk: IntroLM, batch: Batch) -> None:
    gk.next_token_logits(gk.forward_batch(batch, use_cache=True))


def _peft(gk: IntroLM, batch: Batch) -> None:
    """``_ours`` through the PEFT model (activated-LoRA hooks, LM head at [INTRO])."""
    view, gk._view = gk._view, None
    try:
        gk.next_token_logits(gk.forward_batch(batch, logits_to_keep=1, use_cache=True))
    finally:
        gk._view = view


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _synchronize(gk: IntroLM) -> None:
    """Wait for queued GPU kernels, so a timing covers the work and not just its launch."""
    if gk.device.type == "cuda":
        torch.cuda.synchronize(gk.device)
    elif gk.device.type == "mps":
        torch.mps.synchronize()


def _timed(fn, gk: IntroLM, batch: Batch, clock=time.perf_counter) -> float:
    _synchronize(gk)
    start = clock()
    fn(gk, batch)
    _synchronize(gk)
    return clock() - start


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


def overhead(gk: IntroLM, tokens: int, rows: int, repeats: int, clock=time.perf_counter) -> dict:
    batch = _batch(gk, tokens, rows)
    sides = {"plain": _plain_prefill, "plain_plus_one": _plain_plus_one, "introlm": _ours, "peft": _peft}
    times: dict[str, list[float]] = {name: [] for name in sides}
    with torch.inference_mode():
        for fn in sides.values():
            fn(gk, batch)
        for _ in range(repeats):
            for name, fn in sides.items():
                times[name].append(_timed(fn, gk, batch, clock))
    med = {name: statistics.median(t) for name, t in times.items()}
    return {
        "prompt_tokens": tokens,
        "batch": rows,
        "repeats": repeats,
        "plain_prefill_s": med["plain"],
        "introlm_prefill_s": med["introlm"],
        "peft_prefill_s": med["peft"],
        "plain_plus_one_s": med["plain_plus_one"],
        "ratio": med["introlm"] / med["plain"],
        "ratio_of_minima": min(times["introlm"]) / min(times["plain"]),
        "peft_ratio": med["peft"] / med["plain"],
        "peft_ratio_of_minima": min(times["peft"]) / min(times["plain"]),
        "plain_plus_one_ratio": med["plain_plus_one"] / med["plain"],
        "ratio_to_plain_plus_one": med["introlm"] / med["plain_plus_one"],
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
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 64, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--skip-load", action="store_true", help="skip the cold/cached load timing")
    parser.add_argument("--base", default=DEFAULT_BASE, help="packaged name, .gguf file or HF directory")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    gk = IntroLM.from_pretrained(base=args.base, device=args.device, dtype=args.dtype)
    rows = []
    for tokens in args.tokens:
        for batch in args.batches:
            repeats = max(2, args.repeats if tokens * batch <= 2048 else args.repeats // 2)
            rows.append(overhead(gk, tokens, batch, repeats, CLOCKS[args.clock]))
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "benchmark": "scoring_overhead",
        "base": gk.base_name,
        "trained_adapter": gk.trained,
        "goal": "introlm_prefill_s / plain_prefill_s <= 1.05 at 32, 64 and 256 tokens, batch 1 and 8",
        "clock": args.clock,
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
