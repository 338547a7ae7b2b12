"""The llama_cpp engine: one prefill for score + answer, and scoring throughput vs parallel slots.

Needs a llama-server binary (``INTROROUTE_LLAMA_SERVER`` or on PATH) and exports the shipped
SmolLM2 adapter (``introroute export --format gguf-alora``) unless ``--export`` names one.

- ``shared``: the llama_cpp gatekeeper's score request, then the answer on the same slot (the
  scored prompt's KV cache reused: ``timings.cache_n``);
- ``two_prefills``: the same two requests with ``cache_prompt: false`` on the answer, i.e. an
  external scorer followed by an engine that prefills the prompt again.

Interleaved (shared, two_prefills, ...), medians; then scoring throughput (requests/s) with 1, 8
and 32 concurrent callers against a server with ``--parallel`` slots.

    python benchmarks/llama_cpp_engine.py --out benchmarks/results/llama_cpp_engine.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from support import questions, write_result

from introroute.router.llama_cpp import LlamaCppGatekeeper
from introroute.server.llama_server import find_binary, running

NOTE = "Note {i}: the committee reviewed item {i} and deferred the decision to the next meeting."


def long_prompt(notes: int) -> str:
    notes_text = " ".join(NOTE.format(i=i) for i in range(notes))
    return "Summarise the following notes in two sentences. " + notes_text


def shared_vs_two_prefills(gk: LlamaCppGatekeeper, rounds: int, max_new: int, notes: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"shared": [], "two_prefills": []}
    cached: list[int] = []
    for round_ in range(rounds):
        for mode in times:
            # a prompt of its own per measurement: a repeated one would make the score request a
            # prompt-cache hit on the slot that scored it before
            messages = [{"role": "user", "content": f"Round {round_}, {mode}. {long_prompt(notes)}"}]
            start = time.perf_counter()
            prefill = gk.prefill(messages)
            if mode == "shared":
                gk.generate_from(prefill, max_new_tokens=max_new)
                cached.append(int(prefill.timings.get("cache_n", 0)))
            else:
                # the answer as a second engine would serve it: the prompt prefilled again
                payload = {"prompt": prefill.prompt.ids, "n_predict": max_new, "cache_prompt": False}
                payload |= {"temperature": 0.0, "lora": gk.lora, "id_slot": prefill.slot}
                httpx.post(f"{gk.url}/completion", json=payload, timeout=300).raise_for_status()
            times[mode].append(time.perf_counter() - start)
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    return {
        "prompt_tokens": len(
            gk.encode([{"role": "user", "content": f"Round 0, shared. {long_prompt(notes)}"}]).ids
        ),
        "max_new_tokens": max_new,
        "median_s": medians,
        "shared_over_two_prefills": medians["shared"] / medians["two_prefills"],
        "answer_cache_n_median": statistics.median(cached),
    }


def throughput(gk: LlamaCppGatekeeper, callers: int, requests: int) -> float:
    # Every request of every phase distinct from the start of the user turn: a repeated prompt
    # would be a prompt-cache hit on a slot that already holds it (one token evaluated).
    prompts = [
        [{"role": "user", "content": f"Question {callers}.{i}: {q[0]['content']}"}]
        for i, q in enumerate(questions(requests))
    ]
    with ThreadPoolExecutor(callers) as pool:
        start = time.perf_counter()
        list(pool.map(gk.scores, prompts))
    return requests / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, help="a gguf-alora export (default: the shipped adapter's)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--notes", type=int, default=40, help="length of the long prompt (~17 tokens a note)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=8, help="llama-server slots for the throughput part")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/llama_cpp_engine.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        export = args.export or _export_shipped(Path(scratch) / "export")
        with running(export, threads=args.threads) as url:
            gk = LlamaCppGatekeeper(url, export, timeout_s=120)
            latency = shared_vs_two_prefills(gk, args.rounds, args.max_new_tokens, args.notes)
            print(latency, flush=True)
        with running(export, threads=args.threads, parallel=args.parallel) as url:
            gk = LlamaCppGatekeeper(url, export, timeout_s=120)
            gk.scores([{"role": "user", "content": "Warm-up: what is the capital of Peru?"}])
            rates = {}
            for callers in (1, 8, 32):
                rates[str(callers)] = throughput(gk, callers, args.requests)
                print(callers, rates[str(callers)], flush=True)
    write_result(
        args.out,
        {
            "benchmark": "llama_cpp_engine",
            "binary": find_binary(),
            "machine": platform.machine(),
            "threads": args.threads,
            "score_plus_answer": latency,
            "scoring_requests_per_s": {"parallel_slots": args.parallel, "by_callers": rates},
        },
    )


def _export_shipped(directory: Path) -> Path:
    from introroute.gatekeeper import IntroLM
    from introroute.gatekeeper.gguf_alora import export_gguf_alora
    from introroute.gatekeeper.loading import packaged_gguf

    return export_gguf_alora(IntroLM.from_pretrained(), directory, packaged_gguf("smollm2-135m-instruct"))


if __name__ == "__main__":
    main()
