"""The gatekeeper's contracts, on tiny random models (fast) with a perturbed adapter.

The adapter is perturbed (non-zero LoRA B, moved [INTRO] row, random head) so "the adapter does
not touch prompt positions" is tested against an adapter that really changes the [INTRO] state.
The invariants (prompt logits and KV cache, generation, batch equality, save/load, spoof-proof
prompting) take ``arch_dir`` and so run on every supported architecture (tests/arch_support.py);
the rest run on the tiny word-level Llama. Precision: fp32 on CPU unless a test says otherwise;
where a test compares against a *different* computation (a prefill of the prompt alone, another
batch shape) it says which tolerance holds and why.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from introroute.errors import (
    AdapterError,
    BaseModelMismatchError,
    GatekeeperError,
    MessagesError,
    UnknownTargetError,
)
from introroute.gatekeeper import IntroConfig, IntroLM, load_base
from introroute.gatekeeper.loading import weights_fingerprint

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


def _gatekeeper(base_dir, dtype: str = "float32", **config) -> IntroLM:
    base = load_base(base_dir, dtype=dtype)
    return _perturb(IntroLM.build(base, IntroConfig(targets=TARGETS, **config)))


# Where a test compares two *different* computations (a prefill of the prompt alone, another batch
# shape), the tolerance of the precision it runs in: fp32 rounding, or a few bf16 ulps (2^-8).
# Measured on this project's CPU: bf16 and fp16 were bit-identical there too (their CPU matmuls
# accumulate in fp32 and round once), but another CPU's kernels may block differently.
CLOSE = {"float32": {"rtol": 1e-5, "atol": 1e-6}, "bfloat16": {"rtol": 2e-2, "atol": 1e-4}}
SCORES_ATOL = {"float32": 1e-5, "bfloat16": 1e-3}


@pytest.fixture
def gk(tiny_base_dir) -> IntroLM:
    return _gatekeeper(tiny_base_dir)


@pytest.fixture
def arch_gk(arch_dir) -> IntroLM:
    return _gatekeeper(arch_dir)


@pytest.mark.parametrize(
    ("batch_rows", "dtype"),
    [([0], "float32"), ([0, 1], "float32"), ([2, 0, 1], "float32"), ([2, 0, 1], "bfloat16")],
)
def test_prompt_logits_and_cache_equal_base(arch_dir, batch_rows, dtype):
    gk = _gatekeeper(arch_dir, dtype=dtype)
    assert gk.dtype == getattr(torch, dtype) and gk.head.weight.dtype == torch.float32
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
        # Full-length caches, as the gatekeeper keeps (a sliding-window layer's own cache would
        # hold only the last window of positions; the generation test covers that equivalence).
        with gk.peft_model.disable_adapter():
            base_out = gk.peft_model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=gk._positions(mask),
                cache=DynamicCache(),
                use_cache=True,
            )
            base_head = gk.forward_batch(batch).head_logits
        plain = gk.plain(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=gk._positions(batch.attention_mask),
            cache=DynamicCache(),
            use_cache=True,
        )
    vocab = gk.base_vocab_size
    # Bit-identical in any precision: the adapter changes nothing at the prompt positions of the
    # same token sequence (same kernels, same inputs), logits and every layer's cache.
    assert torch.equal(logits[:, :width, :vocab], base_out.logits[:, :width, :vocab])
    for ours, theirs in zip(cache.layers, base_out.cache.layers, strict=True):
        assert torch.equal(ours.keys, theirs.keys[:, :, :width])
        assert torch.equal(ours.values, theirs.values[:, :, :width])
    # Against a prefill of the prompt alone (one position fewer in every matmul) the kernels may
    # round differently: equal to the precision's rounding (identical on SmolLM2, see the slow test).
    close = CLOSE[dtype]
    torch.testing.assert_close(logits[:, :width, :vocab], plain.logits[:, :, :vocab], **close)
    torch.testing.assert_close(next_logits[:, :vocab], logits[:, width - 1, :vocab], **close)
    assert cache.get_seq_length() == width
    for ours, theirs in zip(cache.layers, plain.cache.layers, strict=True):
        torch.testing.assert_close(ours.keys, theirs.keys, **close)
        torch.testing.assert_close(ours.values, theirs.values, **close)
    # ...while the adapter really changes what the head reads at [INTRO].
    assert not torch.allclose(head_logits, base_head)
    assert logits.shape[1] == width + k


def _assert_greedy_up_to_rounding(model, prompt_ids: torch.Tensor, tokens: list[int]) -> None:
    """Each generated token is the reference model's argmax, or within bf16 rounding of it, given
    the same prefix (a tiny random model's logits are nearly flat, so exact ties are common)."""
    ids = torch.cat([prompt_ids, torch.tensor([tokens])], dim=1)
    with torch.inference_mode():
        logits = model(ids).logits[0, prompt_ids.shape[1] - 1 : -1].float()
    chosen = logits.gather(1, torch.tensor(tokens)[:, None])[:, 0]
    gap = logits.max(dim=1).values - chosen
    assert (gap <= 0.02 * logits.abs().max(dim=1).values).all(), gap.tolist()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_generate_from_equals_plain_generate(arch_dir, dtype):
    """The same tokens as the base model's own greedy ``generate`` in the same precision."""
    reference = AutoModelForCausalLM.from_pretrained(arch_dir, dtype=getattr(torch, dtype)).eval()
    gk = _gatekeeper(arch_dir, dtype=dtype)
    for messages in PROMPTS:
        prefill = gk.prefill(messages)
        ours = gk.generate_from(prefill, max_new_tokens=24)
        with torch.inference_mode():
            theirs = reference.generate(
                prefill.input_ids, max_new_tokens=24, do_sample=False, pad_token_id=gk.pad_id
            )[0, prefill.prompt_tokens :].tolist()
        if theirs and theirs[-1] in gk.eos_ids:
            theirs = theirs[:-1]
        if dtype == "float32":
            assert ours.token_ids == theirs
        else:  # bf16 kernels differ by CPU (AVX512-BF16 or not) and may break a near-tie either way
            _assert_greedy_up_to_rounding(reference, prefill.input_ids, ours.token_ids)
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


@pytest.mark.parametrize(("num_intro_tokens", "dtype"), [(1, "float32"), (3, "float32"), (1, "bfloat16")])
def test_score_batch_equals_score(arch_dir, num_intro_tokens, dtype):
    """Left padding changes every matmul's shape: equal to the precision's rounding."""
    gk = _gatekeeper(arch_dir, dtype=dtype, num_intro_tokens=num_intro_tokens)
    batch = gk.scores_batch(PROMPTS, batch_size=3)
    single = np.array([[gk.scores(m)[t] for t in gk.targets] for m in PROMPTS])
    atol = SCORES_ATOL[dtype]
    np.testing.assert_allclose(batch, single, atol=atol, rtol=0)
    np.testing.assert_allclose(gk.score_batch(PROMPTS, target=TARGETS[1]), single[:, 1], atol=atol, rtol=0)
    assert gk.score(PROMPTS[0]) == pytest.approx(single[0, 0], abs=1e-6)
    assert gk.prefill(PROMPTS[0]).score == pytest.approx(single[0, 0], abs=1e-6)
    with pytest.raises(UnknownTargetError, match="unknown target"):
        gk.score(PROMPTS[0], target="nope")


def test_special_token_text_cannot_spoof(arch_gk):
    gk = arch_gk
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
        ([], "at least one message"),
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


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_save_load_round_trip(arch_dir, tmp_path, dtype):
    """Bit-identical scores after a round trip in the same precision; loadable in another one."""
    gk, tiny_base_dir = _gatekeeper(arch_dir, dtype=dtype), arch_dir
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
    loaded = IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir), dtype=dtype)
    assert loaded.targets == TARGETS
    np.testing.assert_array_equal(loaded.scores_batch(PROMPTS), gk.scores_batch(PROMPTS))
    loaded_again = IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir), dtype=dtype)
    assert loaded_again.score(PROMPTS[1]) == gk.score(PROMPTS[1])
    # the base is identified by its checkpoint, not by the tensors as loaded: other precision, same base
    other = "bfloat16" if dtype == "float32" else "float32"
    crossed = IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir), dtype=other)
    np.testing.assert_allclose(crossed.scores_batch(PROMPTS), gk.scores_batch(PROMPTS), atol=0.05)


def test_legacy_fingerprint_is_accepted_in_fp32(gk, tiny_base_dir, tmp_path):
    """Adapters saved before the checkpoint fingerprint recorded the fp32 weights' statistics."""
    adapter = tmp_path / "adapter"
    gk.save_pretrained(str(adapter))
    meta = json.loads((adapter / "introroute.json").read_text())
    meta["base"]["fingerprint"] = weights_fingerprint(load_base(tiny_base_dir).model)
    (adapter / "introroute.json").write_text(json.dumps(meta))
    loaded = IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir))
    np.testing.assert_array_equal(loaded.scores_batch(PROMPTS), gk.scores_batch(PROMPTS))
    with pytest.raises(BaseModelMismatchError, match="was trained on base"):
        IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir), dtype="bfloat16")


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


class _Boom:
    """Unpickling this would run code: a loader that unpickles is caught by the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_adapters_are_read_from_safetensors_only(gk, tiny_base_dir, tmp_path):
    adapter = tmp_path / "adapter"
    gk.save_pretrained(str(adapter))
    weights = adapter / "adapter_model.safetensors"
    marker = tmp_path / "unpickled"
    torch.save({"boom": _Boom(str(marker))}, adapter / "adapter_model.bin")
    good = weights.read_bytes()
    weights.unlink()
    with pytest.raises(
        AdapterError, match=r"adapter_model\.safetensors is missing \(found \['adapter_model\.bin'\]"
    ):
        IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir))
    assert not marker.exists()

    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(AdapterError, match=r"adapter_model\.safetensors is not a readable safetensors file"):
        IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir))
    weights.write_bytes(good)

    head = adapter / "introroute_head.safetensors"
    torch.save({"boom": _Boom(str(marker))}, head)  # a pickle under the safetensors name
    with pytest.raises(
        AdapterError, match=r"introroute_head\.safetensors is not a readable safetensors file"
    ):
        IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir))
    assert not marker.exists()

    (adapter / "introroute.json").write_text("[1, 2]")
    with pytest.raises(AdapterError, match=r"introroute\.json must hold a JSON object, not a list"):
        IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir))


# -- the shared template head (introroute.gatekeeper.prefix) ------------------------------------

# Like SmolLM2's: a default system prompt in front of every conversation that has none.
SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nyou are a helpful assistant "
    "that answers the question<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HEAD_PROMPTS = [
    [{"role": "user", "content": "paris"}],
    [{"role": "user", "content": "solve the problem step by step then give the final number 2 3 " * 2}],
    PROMPTS[2][1:],  # multi-turn, no system message: the default one, so the whole head
    PROMPTS[2],  # its own system message: shares the head's first tokens only
]


def _head_gatekeeper(base_dir, **config) -> IntroLM:
    """A gatekeeper with :data:`SYSTEM_TEMPLATE`, its head scaled down so that scores sit mid-range
    (where a difference in the logits shows in the probabilities)."""
    gk = _gatekeeper(base_dir, **config)
    gk.tokenizer.chat_template = SYSTEM_TEMPLATE
    with torch.no_grad():
        gk.head.weight.mul_(0.02)
    return gk


def _full_forward_scores(gk: IntroLM, prompt) -> np.ndarray:
    """The reference: one prompt alone, one left-padded full forward (no head cache)."""
    with torch.inference_mode():
        return gk._probabilities(gk.forward_batch(gk.collate([prompt])).head_logits)[0]


def _prompts(gk: IntroLM) -> list:
    from introroute.gatekeeper.prompting import PromptIds

    prompts = [gk.encode(m) for m in HEAD_PROMPTS]
    return [*prompts, PromptIds(ids=prompts[1].ids[7:], truncated=True)]  # left-truncated: no head


def test_prefix_helpers_lay_out_each_row_after_its_part_of_the_head():
    from introroute.gatekeeper.prefix import HeadCache, common_prefix, suffix_layout

    assert common_prefix([[1, 2, 3, 4], [1, 2, 3]]) == 2 and common_prefix([[1, 2], [1, 2]], keep=0) == 2
    assert common_prefix([[1, 2, 3], [4, 2, 3]]) == 0 and common_prefix([]) == 0
    head = HeadCache((1, 2, 3), ())
    assert [head.reuse(p) for p in ([1, 2, 3, 4], [1, 2, 3], [1, 2, 9], [7], [])] == [3, 2, 2, 0, 0]
    layout = suffix_layout([[1, 2, 3, 4], [1, 2, 9], [7, 8]], [3, 2, 0], 3, pad_id=0, tail=[99])
    assert layout.input_ids.tolist() == [[0, 4, 99], [0, 9, 99], [7, 8, 99]]
    assert layout.attention_mask.tolist() == [[1, 1, 1, 0, 1, 1], [1, 1, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]]
    assert layout.position_ids[:, 1:].tolist() == [[3, 4], [2, 3], [1, 2]]  # continuing each own prefix


def test_template_head_is_detected_from_the_chat_template(tiny_base_dir):
    gk = _gatekeeper(tiny_base_dir)
    prompt = gk.encode([{"role": "user", "content": "paris"}]).ids
    paris = gk.tokenizer.convert_tokens_to_ids("paris")
    assert gk.shared_head().ids == tuple(prompt[: prompt.index(paris)])  # "<|im_start|> user"
    with_system = _head_gatekeeper(tiny_base_dir)
    prompt = with_system.encode([{"role": "user", "content": "paris"}]).ids
    head = with_system.shared_head()
    assert head.ids == tuple(prompt[: prompt.index(paris)]) and len(head) > 10  # the system prompt too
    assert len(head.layers) == with_system.plain.config.num_hidden_layers
    assert head.layers[0][0].shape[:3] == (1, with_system.plain.config.num_key_value_heads, len(head))
    nothing_in_front = _gatekeeper(tiny_base_dir)
    nothing_in_front.tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    assert nothing_in_front.shared_head() is None
    prompt = nothing_in_front.encode(PROMPTS[0])
    assert nothing_in_front.scores_encoded([prompt])[0] == pytest.approx(
        dict(zip(TARGETS, _full_forward_scores(nothing_in_front, prompt), strict=True)), abs=1e-6
    )
    off = _gatekeeper(tiny_base_dir, prefix_cache=False)
    assert off.shared_head() is None


@pytest.mark.parametrize("num_intro_tokens", [1, 3])
def test_scores_on_the_shared_head_equal_the_full_forward(tiny_base_dir, monkeypatch, num_intro_tokens):
    gk = _head_gatekeeper(tiny_base_dir, num_intro_tokens=num_intro_tokens)
    prompts = _prompts(gk)
    expected = np.array([_full_forward_scores(gk, p) for p in prompts])
    assert expected.min() > 0.05 and expected.max() < 0.95  # mid-range: differences would show
    head = gk.shared_head()
    assert [head.reuse(p.ids) for p in prompts] == [len(head)] * 3 + [2, 0]  # "<|im_start|> system"

    full_forwards = []
    forward_batch = gk.forward_batch
    monkeypatch.setattr(
        gk, "forward_batch", lambda b, **kw: full_forwards.append(b) or forward_batch(b, **kw)
    )
    batched = gk.scores_encoded(prompts)  # mixed lengths, partial and no reuse, one forward
    np.testing.assert_allclose([list(s.values()) for s in batched], expected, atol=1e-5, rtol=0)
    assert full_forwards == []  # all on top of the head
    for prompt, want in zip(prompts, expected, strict=True):
        np.testing.assert_allclose(list(gk.scores_encoded([prompt])[0].values()), want, atol=1e-5, rtol=0)
    assert len(full_forwards) == 1  # only the truncated prompt, which shares nothing, ran in full
    rows = gk.prefill_batch(prompts)  # a multi-row prefill keeps scores only: on the head too
    np.testing.assert_allclose([list(r.scores.values()) for r in rows], expected, atol=1e-5, rtol=0)
    assert all(r.cache is None for r in rows) and len(full_forwards) == 1
    np.testing.assert_allclose(gk.scores_batch(HEAD_PROMPTS, batch_size=3), expected[:4], atol=1e-5, rtol=0)
    # A single prefill keeps its cache for generation: a full forward, as before.
    alone = gk.prefill_batch(prompts[:1])[0]
    assert alone.cache.get_seq_length() == len(prompts[0].ids) and len(full_forwards) == 2
    gk.config.prefix_cache = False  # the switch: every forward in full, same scores
    np.testing.assert_allclose(
        [list(s.values()) for s in gk.scores_encoded(prompts)], expected, atol=1e-5, rtol=0
    )
    assert len(full_forwards) == 3


def test_concurrent_scorers_compute_the_head_once_and_never_change_it(tiny_base_dir, monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from introroute.gatekeeper.prefix import HeadCache

    gk = _head_gatekeeper(tiny_base_dir)
    prompts = _prompts(gk)
    expected = np.array([_full_forward_scores(gk, p) for p in prompts])
    prefills = []
    prefill = HeadCache.prefill
    monkeypatch.setattr(HeadCache, "prefill", lambda model, ids: prefills.append(ids) or prefill(model, ids))
    assert gk._head_cache is None
    start = threading.Barrier(8)

    def caller(index: int) -> list[tuple[int, dict[str, float]]]:
        start.wait()  # all at once, before the head exists
        out = []
        for step in range(4):
            chosen = [(index + step + j) % len(prompts) for j in range(1 + (index + step) % len(prompts))]
            out += list(zip(chosen, gk.scores_encoded([prompts[i] for i in chosen]), strict=True))
        return out

    with ThreadPoolExecutor(8) as pool:
        results = [r for rows in pool.map(caller, range(8)) for r in rows]
    assert len(prefills) == 1  # prefilled once, under the lock
    head = gk.shared_head()
    snapshot = [(k.clone(), v.clone()) for k, v in head.layers]
    for index, scores in results:
        np.testing.assert_allclose(list(scores.values()), expected[index], atol=1e-5, rtol=0)
    gk.scores_encoded(prompts)
    assert gk.shared_head() is head
    for (k, v), (k0, v0) in zip(head.layers, snapshot, strict=True):
        assert torch.equal(k, k0) and torch.equal(v, v0)  # read-only: forwards extend copies


def test_prefix_cache_setting_loads_and_the_head_follows_the_dtype(gk, tiny_base_dir, tmp_path):
    adapter = tmp_path / "adapter"
    gk.save_pretrained(str(adapter))
    assert IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir)).config.prefix_cache
    off = IntroLM.from_pretrained(str(adapter), base=str(tiny_base_dir), prefix_cache=False)
    assert off.shared_head() is None
    np.testing.assert_allclose(off.scores_batch(PROMPTS), gk.scores_batch(PROMPTS), atol=1e-5, rtol=0)
    assert gk.shared_head() is not None
    gk.to(torch.float64)  # a cast drops the head; it is prefilled again in the new dtype
    assert gk._head_cache is None and gk.shared_head().layers[0][0].dtype == torch.float64


def test_a_short_max_context_still_finds_the_whole_head(tiny_base_dir):
    gk = _head_gatekeeper(tiny_base_dir, max_context=12)
    head = gk.shared_head()
    assert head.ids == _head_gatekeeper(tiny_base_dir).shared_head().ids and len(head) > 11
    prompts = [gk.encode(m) for m in HEAD_PROMPTS]
    # Cut from the left, a prompt may still start like the head ("<|im_start|> system"): it reuses
    # that much, at the same positions 0, 1 (the head's KV depends only on its own first tokens).
    assert all(p.truncated for p in prompts) and max(head.reuse(p.ids) for p in prompts) < len(head)
    expected = [_full_forward_scores(gk, p) for p in prompts]
    np.testing.assert_allclose(
        [list(s.values()) for s in gk.scores_encoded(prompts)], expected, atol=1e-5, rtol=0
    )
