"""The verbalised head: P(success) is the LM's own yes/no next-token odds at [INTRO]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_gatekeeper import PROMPTS

from introroute.errors import GatekeeperError
from introroute.gatekeeper import IntroConfig, IntroLM, load_base
from introroute.training.gatekeeper import TrainConfig, fit, make_dataset, trainable_parameters


def _verbalised(base_dir, **config) -> IntroLM:
    gk = IntroLM.build(load_base(base_dir), IntroConfig(head="verbalised", **config))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        gk.train()
        for name, param in gk.peft_model.named_parameters():
            if "lora_B" in name or "trainable_tokens_delta" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
        gk.eval()
    return gk


def _lm_odds(gk: IntroLM, messages) -> float:
    """P(yes) / (P(yes) + P(no)) from the adapter-on LM's full next-token distribution at [INTRO]."""
    yes, no = gk.head.token_ids
    ids = torch.tensor([gk.encode(messages).ids + gk.intro_ids])
    with torch.inference_mode():
        probs = torch.softmax(gk.peft_model(input_ids=ids).logits[0, -1].float(), dim=-1)
    return float(probs[yes] / (probs[yes] + probs[no]))


def test_score_is_the_lms_yes_no_odds_at_intro(tiny_base_dir):
    gk = _verbalised(tiny_base_dir)
    scores = gk.score_batch(PROMPTS, batch_size=2)
    expected = [_lm_odds(gk, m) for m in PROMPTS]
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    assert len(set(np.round(scores, 6))) == len(PROMPTS)  # the adapter moves the odds per prompt
    assert gk.prefill(PROMPTS[0]).score == pytest.approx(expected[0], abs=1e-5)


def test_verbalised_adapter_round_trips(tiny_base_dir, tmp_path):
    gk = _verbalised(tiny_base_dir)
    gk.save_pretrained(str(tmp_path / "adapter"))
    loaded = IntroLM.from_pretrained(str(tmp_path / "adapter"), base=str(tiny_base_dir))
    assert loaded.config.head == "verbalised"
    np.testing.assert_allclose(loaded.score_batch(PROMPTS), gk.score_batch(PROMPTS), atol=1e-6)


def test_training_moves_only_lora_and_intro_rows(tiny_base_dir):
    gk = IntroLM.build(load_base(tiny_base_dir), IntroConfig(head="verbalised", lora_r=4))
    assert not list(gk.head.parameters())  # nothing but the adapter learns
    conversations = PROMPTS * 4
    labels = np.array([[1.0], [0.0], [1.0]] * 4, dtype=np.float32)
    before = [p.detach().clone() for p in trainable_parameters(gk)]
    lm_rows = gk.plain.get_output_embeddings().weight[list(gk.head.token_ids)].detach().clone()
    data = make_dataset(gk, conversations, labels)
    fit(gk, data, data, TrainConfig(epochs=2, batch_size=4, lr=5e-2, patience=5))
    after = trainable_parameters(gk)
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert torch.equal(gk.plain.get_output_embeddings().weight[list(gk.head.token_ids)], lm_rows)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"targets": ["self", "gpt-4"]}, "one target"),
        ({"verbalised_tokens": ["yes", "yes"]}, "two distinct"),
    ],
)
def test_bad_verbalised_configs_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        IntroConfig(head="verbalised", **config)


def test_a_word_that_is_not_one_token_is_refused(tiny_base_dir):
    with pytest.raises(GatekeeperError, match="not one"):
        config = IntroConfig(head="verbalised", verbalised_tokens=["yes no", "no"])
        IntroLM.build(load_base(tiny_base_dir), config)
