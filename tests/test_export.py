"""The no-LoRA serving path: an exported plain model's last hidden state + the head = the gatekeeper.

The engine is played by transformers itself (``output_hidden_states``: the final, normed hidden
state at the last position, which is what vLLM's LAST pooling without normalisation returns), on
the exported directory only: nothing of introroute's model code runs on the engine side.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_gatekeeper import PROMPTS, TARGETS, _perturb
from transformers import AutoModelForCausalLM

from introroute.errors import GatekeeperError
from introroute.gatekeeper import IntroConfig, IntroLM, load_base
from introroute.gatekeeper.export import engine_prompt_ids, export_plain, head_scores


@pytest.mark.parametrize("arch_dir", ["llama", "gemma3"], indirect=True)
def test_exported_plain_model_scores_like_the_gatekeeper(arch_dir, tmp_path):
    gk = _perturb(IntroLM.build(load_base(arch_dir), IntroConfig(targets=TARGETS, lora_r=0)))
    exported = export_plain(gk, tmp_path / "engine")
    # an engine loads every top-level safetensors file as model weights: only the model's are there
    assert [p.name for p in exported.glob("*.safetensors")] == ["model.safetensors"]
    engine = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    hidden = []
    with torch.inference_mode():
        for messages in PROMPTS:
            ids = torch.tensor([engine_prompt_ids(gk, messages)])
            out = engine(input_ids=ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-1][0, -1].numpy())
    scores = head_scores(np.stack(hidden), exported)
    expected = gk.scores_batch(PROMPTS, batch_size=1)
    for column, target in enumerate(TARGETS):
        np.testing.assert_allclose(scores[target], expected[:, column], atol=1e-6, rtol=0)


def test_lora_gatekeeper_cannot_be_exported(tiny_base_dir, tmp_path):
    gk = IntroLM.build(load_base(tiny_base_dir), IntroConfig(targets=TARGETS))
    with pytest.raises(GatekeeperError, match="without LoRA"):
        export_plain(gk, tmp_path / "engine")
