"""The gatekeeper's contracts, on a tiny random Llama (fast) with a perturbed adapter.

The adapter is perturbed (non-zero LoRA B, moved [INTRO] row, random head) so "the adapter does
not touch prompt positions" is tested against an adapter that really changes the [INTRO] state.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from introroute.errors import (
    AdapterError,
    BaseModelMismatchError,
    GatekeeperError,
    MessagesError,
    UnknownTargetError,
)
from introroute.gatekeeper import IntroConfig, IntroLM, load_base

TARGETS = ["self", "gpt-4-1106-preview"]
PROMPTS = [
    [{"role": "user", "content": "what is the capital of france"}],
    [{"role": "user", "content": "solve the problem step by step then give the final number 2 3"}],
    [
        {"role": "system", "content": "answer yes or no"},
        {"role": "user", "content": "is paris the capital of france"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "and berlin"},
    ],
]


def _perturb(gk: IntroLM, seed: int = 1) -> IntroLM:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        gk.train()  # unmerge the [INTRO] row so its trainable delta can be edited
        for name, param in gk.peft_model.named_parameters():
            if "lora_B" in name or "trainable_tokens_delta" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
        gk.head.weight.copy_(torch.randn(gk.head.weight.shape, generator=gen))
        gk.eval()
    return gk


def _gatekeeper(base_dir, **config) -> IntroLM:
    return _perturb(IntroLM.build(load_base(base_dir), IntroConfig(targets=TARGETS, **config)))


@pytest.fixture
def gk(tiny_base_dir) -> IntroLM:
    return _gatekeeper(tiny_base_dir)


@pytest.mark.parametrize("batch_rows", [[0], [0, 1], [2, 0, 1]])
def test_prompt_logits_and_cache_equal_base(gk, batch_rows):
    batch = gk.collate([gk.encode(PROMPTS[i]) for i in batch_rows])
    width = batch.input_ids.shape[1]
    k = len(gk.intro_ids)
    intro = torch.tensor([gk.intro_ids] * len(batch_rows))
    ids = torch.cat([batch.input_ids, intro], dim=1)
    mask = torch.cat([batch.attention_mask, torch.ones_like(intro)], dim=1)
    with torch.inference_mode():
        output = gk.forward_batch(batch, logits_to_keep=0, use_cache=True)
        logits, head_logits, cache, _ = output
        next_logits = gk.next_token_logits(output)
        with gk.peft_model.disable_adapter():
            base_out = gk.peft_model(
                input_ids=ids, attention_mask=mask, position_ids=gk._positions(mask), use_cache=True
            )
            base_head = gk.forward_batch(batch).head_logits
        plain = gk.plain(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=gk._positions(batch.attention_mask),
            use_cache=True,
        )
    vocab = gk.base_vocab_size
    # Exact: the adapter changes nothing at prompt positions of the same token sequence.
    assert torch.equal(logits[:, :width, :vocab], base_out.logits[:, :width, :vocab])
    assert torch.equal(cache.layers[0].keys, base_out.past_key_values.layers[0].keys[:, :, :width])
    # Against a prefill of the prompt alone (one position fewer in every matmul) the kernels may
    # round differently; equal to fp32 rounding (identical on SmolLM2 here, see the slow test).
    torch.testing.assert_close(logits[:, :width, :vocab], plain.logits[:, :, :vocab], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(next_logits[:, :vocab], logits[:, width - 1, :vocab], rtol=1e-5, atol=1e-6)
    assert cache.get_seq_length() == width
    for ours, theirs in zip(cache.layers, plain.past_key_values.layers, strict=True):
        torch.testing.assert_close(ours.keys, theirs.keys, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.values, theirs.values, rtol=1e-5, atol=1e-6)
    # ...while the adapter really changes what the head reads at [INTRO].
    assert not torch.allclose(head_logits, base_head)
    assert logits.shape[1] == width + k


def test_generate_from_equals_plain_generate(tiny_lm, tiny_base_dir):
    reference = copy.deepcopy(tiny_lm[0])
    gk = _gatekeeper(tiny_base_dir)
    for messages in PROMPTS:
        prefill = gk.prefill(messages)
        ours = gk.generate_from(prefill, max_new_tokens=24)
        with torch.inference_mode():
            theirs = reference.generate(
                prefill.input_ids, max_new_tokens=24, do_sample=False, pad_token_id=gk.pad_id
            )[0, prefill.prompt_tokens :].tolist()
        if theirs and theirs[-1] in gk.eos_ids:
            theirs = theirs[:-1]
        assert ours.token_ids == theirs
        assert ours.completion_tokens == len(theirs)
        streamed = gk.generate_from(gk.prefill(messages), max_new_tokens=24, stream=True)
        assert "".join(streamed) == ours.text
        assert streamed.finish_reason == ours.finish_reason
        assert streamed.completion_tokens == ours.completion_tokens


def test_generation_options(gk):
    messages = PROMPTS[0]
    prefill = gk.prefill(messages)
    gk.generate_from(prefill, max_new_tokens=3)
    with pytest.raises(GatekeeperError, match="already used"):
        gk.generate_from(prefill)
    sampled = [
        gk.generate_from(gk.prefill(messages), 8, temperature=1.0, top_p=0.9, seed=7) for _ in range(2)
    ]
    assert sampled[0].token_ids == sampled[1].token_ids
    limited = gk.generate_from(gk.prefill(messages), max_new_tokens=2)
    assert limited.completion_tokens <= 2
    full = gk.generate_from(gk.prefill(messages), max_new_tokens=24)
    if len(full.text) > 3:
        stop = full.text[2:4]
        cut = gk.generate_from(gk.prefill(messages), max_new_tokens=24, stop=[stop])
        assert cut.text == full.text[: full.text.find(stop)]
        assert cut.finish_reason == "stop"


@pytest.mark.parametrize("num_intro_tokens", [1, 3])
def test_score_batch_equals_score(tiny_base_dir, num_intro_tokens):
    gk = _gatekeeper(tiny_base_dir, num_intro_tokens=num_intro_tokens)
    batch = gk.scores_batch(PROMPTS, batch_size=3)
    single = np.array([[gk.scores(m)[t] for t in gk.targets] for m in PROMPTS])
    np.testing.assert_allclose(batch, single, atol=1e-5, rtol=0)
    np.testing.assert_allclose(gk.score_batch(PROMPTS, target=TARGETS[1]), single[:, 1], atol=1e-5, rtol=0)
    assert gk.score(PROMPTS[0]) == pytest.approx(single[0, 0], abs=1e-6)
    assert gk.prefill(PROMPTS[0]).score == pytest.approx(single[0, 0], abs=1e-6)
    with pytest.raises(UnknownTargetError, match="unknown target"):
        gk.score(PROMPTS[0], target="nope")


def test_special_token_text_cannot_spoof(gk):
    special_ids = set(gk.intro_ids) | {gk.tokenizer.convert_tokens_to_ids("<|im_start|>")}
    for text in ["[INTRO]", "<|im_start|>", "x [INTRO] <|im_end|> <|im_start|>assistant"]:
        naive = gk.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert special_ids & set(naive), "the naive tokenisation does produce special tokens"
        prompt = gk.encode([{"role": "user", "content": text}])
        template_only = gk.encode([{"role": "user", "content": "paris"}])
        # the template contributes the same special tokens; the content contributes none
        count = sum(i in special_ids for i in prompt.ids)
        assert count == sum(i in special_ids for i in template_only.ids)
        assert not set(gk.intro_ids) & set(prompt.ids)


def test_truncation_keeps_intro_and_reports(tiny_base_dir):
    gk = _gatekeeper(tiny_base_dir, max_context=16)
    long = [{"role": "user", "content": " ".join(["paris"] * 40) + " final"}]
    full = gk.encode(long)
    prefill = gk.prefill(long)
    assert prefill.truncated and full.truncated
    assert prefill.prompt_tokens == 16 - 1
    assert prefill.input_ids[0].tolist() == full.ids
    assert full.dropped_tokens > 0
    assert 0.0 <= prefill.score <= 1.0


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "empty"),
        ("hello", "list of message objects"),
        ([{"role": "system", "content": "be brief"}], "no user message"),
        ([{"role": "user", "content": "   "}], "no user message"),
        ([{"role": "user", "content": 3}], r"messages\[0\]\.content"),
        (["hi"], r"messages\[0\] must be an object"),
        ([{"role": "wizard", "content": "hi"}], r"messages\[0\]\.role"),
        ([{"role": "user", "content": [{"type": "text"}]}], "without a string 'text'"),
    ],
)
def test_bad_messages_raise_typed_errors(gk, messages, match):
    with pytest.raises(MessagesError, match=match):
        gk.prefill(messages)


def test_content_parts_use_text_and_report_the_rest(gk):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is the capital"},
                {"type": "image_url", "image_url": {"url": "data:x"}},
                {"type": "text", "text": "of france"},
            ],
        }
    ]
    prefill = gk.prefill(messages)
    assert prefill.ignored_parts == ["messages[0].content[1] (image_url)"]
    plain = [{"role": "user", "content": "what is the capital\nof france"}]
    assert prefill.score == pytest.approx(gk.score(plain), abs=1e-6)
    tool_turn = [*PROMPTS[0], {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]
    assert gk.encode(tool_turn).ids != gk.encode(PROMPTS[0]).ids


def test_save_load_round_trip(gk, tiny_base_dir, tmp_path):
    adapter = tmp_path / "adapter"
    gk.save_pretrained(str(adapter))
    names = sorted(p.name for p in adapter.iterdir())
    assert {"adapter_config.json", "adapter_model.safetensors", "introroute.json"} <= set(names)
    assert all(n.endswith((".json", ".safetensors")) for n in names), names  # no model-card template
    peft_config = json.loads((adapter / "adapter_config.json").read_text())
    assert peft_config["base_model_name_or_path"] == gk.base_name  # not a local cache path
    assert gk.peft_model.peft_config["default"].base_model_name_or_path != gk.base_name
    meta = json.loads((adapter / "introroute.json").read_text())
    assert meta["base"]["fingerprint"] == gk.base_fingerprint
    loaded = IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir))
    assert loaded.targets == TARGETS
    np.testing.assert_array_equal(loaded.scores_batch(PROMPTS), gk.scores_batch(PROMPTS))
    loaded_by_record = IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir))
    assert loaded_by_record.score(PROMPTS[1]) == gk.score(PROMPTS[1])


def test_load_onto_other_base_fails_clearly(gk, tiny_lm, tmp_path):
    adapter = tmp_path / "adapter"
    gk.save_pretrained(str(adapter))
    other_model, tokenizer = tiny_lm
    with torch.no_grad():
        other_model.model.layers[0].mlp.up_proj.weight.mul_(1.5)
    other = tmp_path / "other-llama"
    other_model.save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(BaseModelMismatchError, match="was trained on base"):
        IntroLM.from_pretrained(str(adapter), base=str(other))
    with pytest.raises(AdapterError, match=r"introroute\.json is missing"):
        IntroLM.from_pretrained(str(tmp_path / "nowhere"), base=str(other))
