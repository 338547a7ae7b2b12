"""The local tier with the real IntroLM (on the tiny random Llama): the routed answer continues the
scoring prefill (one prefill per request) and is token-for-token the base model's plain greedy
generation, streamed or not, sync or async."""

from __future__ import annotations

import asyncio
import copy

import pytest
import torch
from router_support import router_config

import introroute
from introroute.gatekeeper import IntroConfig, IntroLM, load_base
from introroute.router import Router

PROMPTS = [
    [{"role": "user", "content": "what is the capital of france"}],
    [
        {"role": "system", "content": "answer yes or no"},
        {"role": "user", "content": "is paris the capital of france"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "and berlin"},
    ],
]
MAX_NEW = 16


@pytest.fixture
def tiny_router(tiny_lm, tmp_path, monkeypatch):
    """(router always routing to local, its IntroLM, an untouched copy of the base, prefill count)."""
    model, tokenizer = tiny_lm
    reference = copy.deepcopy(model)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    gatekeeper = IntroLM.build(load_base(tmp_path / "tiny"), IntroConfig(targets=["self", "gpt-4"]))
    calls = []  # prompts per prefill forward (the router prefills through prefill_batch)
    prefill_batch = gatekeeper.prefill_batch
    monkeypatch.setattr(
        gatekeeper, "prefill_batch", lambda prompts: calls.append(len(prompts)) or prefill_batch(prompts)
    )
    config = router_config("tiny", policy={"type": "threshold", "params": {"tau": 0.0}})
    return Router.from_dict(config, gatekeeper=gatekeeper), gatekeeper, reference, calls


def _plain_greedy(reference, gatekeeper: IntroLM, messages) -> list[int]:
    input_ids = gatekeeper.encode(messages).ids
    with torch.inference_mode():
        out = reference.generate(
            torch.tensor([input_ids]), max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=gatekeeper.pad_id
        )[0, len(input_ids) :].tolist()
    return out[:-1] if out and out[-1] in gatekeeper.eos_ids else out


@pytest.mark.parametrize("messages", PROMPTS, ids=["single", "multi_turn"])
def test_routed_local_answer_is_plain_generation_from_one_prefill(tiny_router, messages):
    router, gatekeeper, reference, calls = tiny_router
    plain = _plain_greedy(reference, gatekeeper, messages)
    expected = gatekeeper.generate_from(gatekeeper.prefill(messages), max_new_tokens=MAX_NEW)
    assert expected.token_ids == plain
    calls.clear()

    response = router.completion(messages=messages, max_tokens=MAX_NEW)
    assert introroute.decision(response).tier == "local"
    assert response.choices[0].message.content == expected.text
    assert response.usage.completion_tokens == len(plain)
    assert calls == [1]  # scoring and generation shared one prefill

    chunks = list(router.completion(messages=messages, max_tokens=MAX_NEW, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text

    async def streamed_async() -> str:
        stream = await router.acompletion(messages=messages, max_tokens=MAX_NEW, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    assert asyncio.run(streamed_async()) == expected.text
    assert calls == [1, 1, 1]
