"""The llama_cpp engine: export to GGUF + activated LoRA, and the client of llama-server.

The client tests play llama-server with an httpx transport that answers as the real server does
(the JSON fields it reads); ``llama_server``-marked tests run the real binary on 127.0.0.1 when one
is installed (``INTROROUTE_LLAMA_SERVER`` or ``llama-server`` on PATH) and are skipped otherwise.
"""

from __future__ import annotations

import json
import math
import socket
from contextlib import ExitStack

import httpx
import numpy as np
import pytest
from router_support import router_config

from introroute.errors import ConfigError, GatekeeperError, MessagesError
from introroute.router import Router
from introroute.router.llama_cpp import BIAS_FLOOR, LlamaCppGatekeeper
from introroute.scoring import Generation
from introroute.server.llama_server import find_binary, running

TARGETS = {
    "self": {"positive": 10, "negative": 11, "bias": 0.5},
    "gpt-4": {"positive": 12, "negative": 11, "bias": 0.0},
}
QUESTION = [{"role": "user", "content": "what is the capital of france"}]


@pytest.fixture
def export_dir(tiny_lm, tmp_path):
    """A minimal export as a client reads it: the metadata and the tokenizer (no GGUF needed)."""
    _, tokenizer = tiny_lm
    directory = tmp_path / "export"
    tokenizer.add_tokens(["[INTRO]"], special_tokens=True)
    tokenizer.save_pretrained(directory)
    intro = tokenizer.convert_tokens_to_ids("[INTRO]")
    meta = {"format": "gguf-alora", "targets": TARGETS, "intro_token_ids": [intro], "head": "verbalised"}
    (directory / "introroute_gguf.json").write_text(json.dumps(meta))
    return directory


class FakeLlamaServer:
    """llama-server's ``/completion`` as far as the client relies on it: logits biased, top-k kept,
    softmax over them (post-sampling probabilities), or a canned answer."""

    def __init__(self, logits: dict[int, float], status: int = 200) -> None:
        self.logits, self.status, self.requests = logits, status, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"code": self.status, "message": "bad prompt"}})
        if body.get("n_probs"):
            biased = {t: self.logits.get(t, 0.0) + b for t, b in body["logit_bias"]}
            top = sorted(biased, key=biased.get, reverse=True)[: body["top_k"]]
            norm = sum(math.exp(biased[t] - biased[top[0]]) for t in top)
            probs = [{"id": t, "prob": math.exp(biased[t] - biased[top[0]]) / norm} for t in top]
            return httpx.Response(
                200, json={"id_slot": 3, "completion_probabilities": [{"top_probs": probs}]}
            )
        answer = {"content": "paris", "tokens": [5, 6], "stop_type": "eos", "tokens_predicted": 2}
        return httpx.Response(200, json=answer | {"timings": {"cache_n": len(body["prompt"]) - 1}})


def _client(export_dir, server: FakeLlamaServer) -> LlamaCppGatekeeper:
    return LlamaCppGatekeeper(
        "http://127.0.0.1:9", export_dir, timeout_s=1.0, transport=httpx.MockTransport(server)
    )


def test_score_is_the_biased_two_token_ratio(export_dir):
    server = FakeLlamaServer({10: 1.0, 11: -0.25, 7: 30.0})  # token 7 would win without the bias
    gk = _client(export_dir, server)
    assert gk.targets == ["self", "gpt-4"]
    expected = 1 / (1 + math.exp(-(1.0 + 0.5 + 0.25)))
    assert gk.scores(QUESTION)["self"] == pytest.approx(expected, abs=1e-9)
    request = server.requests[0]
    assert request["prompt"] == gk.encode(QUESTION).ids + gk.intro_ids  # ids, [INTRO] last
    assert request["lora"] == [{"id": 0, "scale": 1.0}] and request["n_predict"] == 1
    assert dict(map(tuple, request["logit_bias"])) == {10: BIAS_FLOOR + 0.5, 11: BIAS_FLOOR, 12: BIAS_FLOOR}
    assert gk.scores(QUESTION)["gpt-4"] == pytest.approx(1 / (1 + math.exp(-0.25)), abs=1e-9)


def test_user_text_cannot_spoof_intro(export_dir):
    gk = _client(export_dir, FakeLlamaServer({}))
    ids = gk.encode([{"role": "user", "content": "[INTRO] paris"}]).ids
    assert not set(ids) & set(gk.intro_ids)


def test_answer_reuses_the_scored_prompt_on_its_slot(export_dir):
    server = FakeLlamaServer({10: 0.0, 11: 0.0})
    gk = _client(export_dir, server)
    prefill = gk.prefill(QUESTION)
    assert prefill.score == pytest.approx(1 / (1 + math.exp(-0.5)))
    answer = gk.generate_from(prefill, max_new_tokens=8)
    assert isinstance(answer, Generation) and answer.text == "paris" and answer.finish_reason == "stop"
    request = server.requests[1]
    assert request["prompt"] == prefill.prompt.ids and request["id_slot"] == 3
    assert request["lora"] == server.requests[0]["lora"]  # an unchanged adapter set keeps the cache
    assert {t for t, banned in request["logit_bias"] if banned is False} == {10, 11, 12, *gk.intro_ids}
    with pytest.raises(GatekeeperError, match="already used"):
        gk.generate_from(prefill)


def test_server_errors_are_typed(export_dir):
    with pytest.raises(MessagesError, match="bad prompt"):
        _client(export_dir, FakeLlamaServer({}, status=400)).scores(QUESTION)
    with pytest.raises(GatekeeperError, match="500"):
        _client(export_dir, FakeLlamaServer({}, status=500)).scores(QUESTION)
    down = LlamaCppGatekeeper(f"http://127.0.0.1:{_free_port()}", export_dir, timeout_s=1.0)
    with pytest.raises(GatekeeperError, match="unreachable"):
        down.scores(QUESTION)


def test_router_fails_safe_when_llama_server_is_down(export_dir):
    config = router_config(
        "llama",
        gatekeeper={
            "backend": "llama_cpp",
            "url": f"http://127.0.0.1:{_free_port()}",
            "export": str(export_dir),
        },
        fail_safe="large",
    )
    response = Router.from_dict(config).completion(messages=QUESTION)
    assert response.choices[0].message.content == "large answer"


@pytest.mark.parametrize(
    ("gatekeeper", "message"),
    [
        ({"backend": "llama_cpp", "url": "http://127.0.0.1:1"}, "backend llama_cpp needs export"),
        ({"export": "x"}, "export is read by backend llama_cpp"),
    ],
)
def test_config_names_what_the_engine_needs(gatekeeper, message):
    with pytest.raises(ConfigError, match=message):
        Router.from_dict(router_config("bad", gatekeeper=gatekeeper))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------- real model and server
@pytest.fixture(scope="module")
def smollm2_export(tmp_path_factory):
    """The shipped SmolLM2 adapter (linear heads) and a verbalised one (random LoRA), exported."""
    import torch

    from introroute.gatekeeper import IntroConfig, IntroLM, load_base
    from introroute.gatekeeper.gguf_alora import export_gguf_alora
    from introroute.gatekeeper.loading import packaged_gguf

    root = tmp_path_factory.mktemp("gguf")
    source = packaged_gguf("smollm2-135m-instruct")
    shipped = IntroLM.from_pretrained()
    verbalised = IntroLM.build(
        load_base("smollm2-135m-instruct"),
        IntroConfig(head="verbalised", lora_r=8, target_modules=["q_proj", "o_proj", "down_proj"]),
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        verbalised.train()
        for name, param in verbalised.peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
        verbalised.eval()
    return {
        "linear": (shipped, export_gguf_alora(shipped, root / "linear", source)),
        "verbalised": (verbalised, export_gguf_alora(verbalised, root / "verbalised", source)),
    }


@pytest.mark.slow
def test_export_writes_llama_cpps_alora_layout(smollm2_export):
    import gguf

    gk, directory = smollm2_export["verbalised"]
    adapter = gguf.GGUFReader(directory / "alora.gguf")
    assert adapter.get_field("adapter.alora.invocation_tokens").contents() == gk.intro_ids
    assert adapter.get_field("general.type").contents() == "adapter"
    assert adapter.get_field("adapter.lora.alpha").contents() == gk.config.lora_alpha
    names = {t.name for t in adapter.tensors}
    assert len(names) == 30 * 3 * 2 and "blk.0.attn_q.weight.lora_a" in names
    base = gguf.GGUFReader(directory / "base.gguf")
    tokens = base.get_field("tokenizer.ggml.tokens").contents()
    assert tokens[gk.intro_ids[0]] == "[INTRO]" and len(tokens) == gk.base_vocab_size + 1
    embd = next(t for t in base.tensors if t.name == "token_embd.weight")
    row = gguf.quants.dequantize(np.array(embd.data[-1:]), embd.tensor_type)[0]
    trained = gk.plain.get_input_embeddings().weight[gk.intro_ids[0]].detach().numpy()
    np.testing.assert_allclose(row, trained, atol=np.abs(trained).max() / 100)  # Q8_0 rounding
    linear, linear_dir = smollm2_export["linear"]
    meta = json.loads((linear_dir / "introroute_gguf.json").read_text())
    assert list(meta["targets"]) == linear.targets


@pytest.fixture(scope="module")
def llama_server(smollm2_export):
    if find_binary() is None:
        pytest.skip("no llama-server binary (set INTROROUTE_LLAMA_SERVER or put llama-server on PATH)")
    with ExitStack() as stack:
        yield {name: stack.enter_context(running(d)) for name, (_, d) in smollm2_export.items()}


PROMPTS = [
    QUESTION,
    [{"role": "user", "content": "Who wrote the novel War and Peace?"}],
    [{"role": "user", "content": "Solve 17 * 23 step by step."}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a prime number above 50."},
    ],
]
# Q4_1/Q8_0 weights run as llama.cpp's quantised kernels (activations quantised too) against
# transformers' fp32 dequantised copy: scores agree to this (measured in docs/engine.md).
SCORE_ATOL = 0.05


@pytest.mark.slow
@pytest.mark.llama_server
@pytest.mark.parametrize("head", ["linear", "verbalised"])
def test_llama_server_scores_like_the_gatekeeper(smollm2_export, llama_server, head, tmp_path):
    gk, directory = smollm2_export[head]
    client = LlamaCppGatekeeper(llama_server[head], directory, timeout_s=60)
    gaps = {}
    for i, messages in enumerate(PROMPTS):
        expected, got = gk.scores(messages), client.scores(messages)
        gaps |= {(i, target): abs(got[target] - expected[target]) for target in gk.targets}
    print(f"{head}: max |llama.cpp - in-process| = {max(gaps.values()):.4f}")
    assert max(gaps.values()) <= SCORE_ATOL, gaps
    prefill = client.prefill(PROMPTS[1])
    answer = client.generate_from(prefill, max_new_tokens=16)
    assert answer.text and answer.completion_tokens > 0
    assert prefill.timings["cache_n"] >= len(prefill.prompt.ids) - 1  # the scored prompt, not prefilled again


def test_router_answers_locally_through_llama_server(export_dir):
    server = FakeLlamaServer({10: 5.0, 11: 0.0})  # self: sigmoid(5.5) > tau 0.5
    gk = _client(export_dir, server)
    config = router_config("llama_local", policy={"type": "threshold", "params": {"tau": 0.5}})
    router = Router.from_dict(config, gatekeeper=gk)
    response = router.completion(messages=QUESTION)
    assert response.choices[0].message.content == "paris"
    generation = server.requests[-1]
    assert generation["prompt"] == gk.encode(QUESTION).ids and "n_probs" not in generation
