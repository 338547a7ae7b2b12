"""Epoch time of IntroLM training on SmolLM2: the fast path vs the naive full forward+backward.

Same prompts (RouteLLM MMLU, vendored), same batch size, same optimiser step. Modes:
  naive   one adapter-active forward over prompt+[INTRO] with gradients, backward through it all
  epoch   prompt KV cache under no_grad every epoch, then only [INTRO] with gradients
  memory  as epoch, but the prompt caches kept from epoch 1 (timed: a later epoch)
Each mode runs in its own process so its peak memory (VmHWM, or the GPU's peak) is its own.
Runs unchanged on a GPU (``--device cuda --dtype bfloat16 --base DIR``); the JSON says where.

    python benchmarks/training_speed.py --out benchmarks/results/training_speed.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

MIXTRAL, GPT4 = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


def _peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_mode(mode: str, examples: int, batch_size: int, args: argparse.Namespace) -> dict:
    from introroute.data.jsonl import read_records
    from introroute.data.paths import vendored_path
    from introroute.gatekeeper import IntroConfig, IntroLM, load_base
    from introroute.training.forward import fast_head_logits, intro_forward, naive_head_logits
    from introroute.training.gatekeeper import (
        _CacheStore,
        make_dataset,
        masked_bce,
        pos_weights,
        trainable_parameters,
    )

    records = [r for r in read_records(vendored_path("routellm_mmlu")) if r.split == "train"][:examples]
    base = load_base(args.base, device=args.device, dtype=args.dtype)
    gk = IntroLM.build(base, IntroConfig(targets=[MIXTRAL, GPT4]))
    labels = np.array(
        [[float(r.outcomes[t].correct) for t in (MIXTRAL, GPT4)] for r in records], dtype=np.float32
    )
    data = make_dataset(gk, [[m.model_dump() for m in r.messages] for r in records], labels)
    weight = pos_weights(labels).to(gk.device)
    optimizer = torch.optim.AdamW(trainable_parameters(gk), lr=1e-4)
    store = _CacheStore(torch.float32)
    batches = [list(range(i, min(i + batch_size, len(data)))) for i in range(0, len(data), batch_size)]
    gk.train()

    def epoch() -> float:
        _sync(gk.device)
        start = time.perf_counter()
        for rows in batches:
            batch = gk.collate([data.prompts[i] for i in rows])
            if mode == "naive":
                logits = naive_head_logits(gk, batch)
            elif mode == "memory":
                logits = intro_forward(gk, batch, store.get(gk, tuple(rows), batch))
            else:
                logits = fast_head_logits(gk, batch)
            loss = masked_bce(logits, torch.from_numpy(labels[rows]).to(gk.device), weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(gk.device)
        return time.perf_counter() - start

    first = epoch()
    timed = epoch()
    return {
        "mode": mode,
        "examples": len(data),
        "batch_size": batch_size,
        "mean_prompt_tokens": float(np.mean([len(p.ids) for p in data.prompts])),
        "first_epoch_s": first,
        "epoch_s": timed,
        "peak_rss_gib": _peak_rss_gib(),
        "cache_gib": store.gib,
        "device": str(gk.device),
        "dtype": str(gk.dtype).removeprefix("torch."),
    } | _gpu_peak(gk.device)


def _gpu_peak(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    return {"peak_gpu_gib": peak, "gpu": torch.cuda.get_device_name(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--base", default="smollm2-135m-instruct", help="packaged name, .gguf or HF dir")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--mode", choices=["naive", "epoch", "memory"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # child process: one mode, result on stdout
        print(json.dumps(run_mode(args.mode, args.examples, args.batch_size, args)))
        return
    rows = {}
    for mode in ("naive", "epoch", "memory"):
        command = [sys.executable, __file__, "--mode", mode, "--examples", str(args.examples)]
        command += ["--batch-size", str(args.batch_size), "--base", args.base]
        command += ["--device", args.device, "--dtype", args.dtype]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(rows[mode]), flush=True)
    result = {
        "benchmark": "training_speed",
        "goal": "naive epoch_s / fast epoch_s >= 4",
        "speedup_epoch_mode": rows["naive"]["epoch_s"] / rows["epoch"]["epoch_s"],
        "speedup_memory_mode": rows["naive"]["epoch_s"] / rows["memory"]["epoch_s"],
        "modes": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k.startswith("speedup")}))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
