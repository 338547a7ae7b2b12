"""Router unit tests on LiteLLM's ``mock_response``: routing, decisions, fail-safe, local tier, log."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest
import yaml
from router_support import FakeGatekeeper, ScoresOnly, router_config

import introroute
from introroute.errors import ConfigError
from introroute.policies import Policy
from introroute.router import Router

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LOW = {"self": 0.2, "gpt-4": 0.9}


class ExplodingPolicy(Policy):
    name = "exploding"

    def decide(self, scores, context):
        raise ZeroDivisionError("bad policy")


def _content(response) -> str:
    return response.choices[0].message.content


def test_confident_gatekeeper_routes_to_local_tier_with_one_prefill(router_fake_gatekeeper):
    gk = router_fake_gatekeeper
    response = Router.from_dict(router_config(), gatekeeper=gk).completion(messages=QUESTION)
    assert _content(response) == gk.answer
    assert response.usage.completion_tokens == len(gk.answer.split())
    assert gk.prefills == 1 and gk.generations[0]["prefill"].used  # generation continued that prefill

    d = introroute.decision(response)
    assert response._hidden_params["introroute"] == d.model_dump(mode="json")
    assert (d.tier, d.model, d.policy_tier) == ("local", "introroute/t/local", "local")
    assert d.scores == {"self": 0.9, "gpt-4": 0.95} and d.raw_scores is None  # no calibration configured
    assert (d.policy, d.policy_params, d.policy_detail) == ("threshold", {"tau": 0.5}, {"p": 0.9})
    assert d.gatekeeper_ms is not None and d.gatekeeper_ms >= 0
    assert (d.attempts, d.fallbacks_used, d.errors, d.fail_safe_reason) == (1, [], [], None)


def test_unconfident_gatekeeper_routes_to_large_tier():
    response = Router.from_dict(router_config(), gatekeeper=FakeGatekeeper(LOW)).completion(messages=QUESTION)
    assert _content(response) == "large answer"
    d = introroute.decision(response)
    assert (d.tier, d.model, d.policy_detail) == ("large", "openai/gpt-4o", {})


def test_local_generation_maps_openai_sampling_parameters(router_fake_gatekeeper):
    gk = router_fake_gatekeeper
    router = Router.from_dict(router_config(), gatekeeper=gk)
    response = router.completion(messages=QUESTION, max_tokens=3, stop="\n", temperature=0.7)
    assert _content(response) == "The capital of"
    assert response.choices[0].finish_reason == "length"
    assert gk.generations[-1] | {"prefill": None} == {
        "prefill": None,
        "max_new_tokens": 3,
        "temperature": 0.7,
        "top_p": 1.0,
        "seed": None,
        "stop": ["\n"],
    }
    router.completion(messages=QUESTION)
    assert gk.generations[-1]["temperature"] == 0.0  # greedy unless asked otherwise


def test_multi_turn_conversation_is_scored_whole(router_fake_gatekeeper):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And its population?"},
    ]
    Router.from_dict(router_config(), gatekeeper=router_fake_gatekeeper).completion(messages=conversation)
    assert router_fake_gatekeeper.seen == [conversation]


@pytest.mark.parametrize(
    ("gatekeeper", "reason", "code"),
    [
        (
            FakeGatekeeper(fail=RuntimeError("model exploded")),
            "gatekeeper error: RuntimeError: model exploded",
            "error",
        ),
        (
            FakeGatekeeper({"self": float("nan"), "gpt-4": 0.9}),
            "gatekeeper returned invalid scores: 'self': nan is not a probability in [0, 1]",
            "invalid_scores",
        ),
        (FakeGatekeeper({}, heads=["self", "gpt-4"]), "gatekeeper returned no scores", "invalid_scores"),
        (
            FakeGatekeeper({"self": 0.9}, heads=["self", "gpt-4"]),
            "gatekeeper gave no score for target(s) ['gpt-4']",
            "missing_head",
        ),
    ],
)
def test_gatekeeper_failure_routes_to_fail_safe(gatekeeper, reason, code):
    response = Router.from_dict(router_config(), gatekeeper=gatekeeper).completion(messages=QUESTION)
    d = introroute.decision(response)
    assert (d.tier, d.policy_tier, d.fail_safe_reason, d.reason) == ("large", None, reason, code)
    assert _content(response) == "large answer"


def test_policy_failure_routes_to_fail_safe(router_fake_gatekeeper):
    router = Router(
        introroute.load_config(router_config(fail_safe="large")),
        gatekeeper=router_fake_gatekeeper,
        policy=ExplodingPolicy(),
    )
    d = introroute.decision(router.completion(messages=QUESTION))
    assert d.tier == "large" and d.fail_safe_reason == "policy error: ZeroDivisionError: bad policy"


def test_gatekeeper_over_time_budget_routes_to_fail_safe_without_waiting():
    config = router_config(gatekeeper={"timeout_ms": 50})
    router = Router.from_dict(config, gatekeeper=FakeGatekeeper(delay_s=0.6))
    start = time.perf_counter()
    d = introroute.decision(router.completion(messages=QUESTION))
    assert time.perf_counter() - start < 0.45
    assert d.tier == "large"
    assert d.fail_safe_reason == "gatekeeper exceeded its time budget of 50 ms"
    assert d.reason == "timeout" and 50 <= d.gatekeeper_ms < 400

    async def scored_async():
        return introroute.decision(await router.acompletion(messages=QUESTION))

    # The worker is still busy with the first forward (0.6 s): the next request is shed at once
    # instead of waiting its whole budget first.
    shed = asyncio.run(scored_async())
    assert (shed.tier, shed.reason) == ("large", "overload")
    assert shed.fail_safe_reason.startswith("gatekeeper overloaded: expected wait")
    assert shed.gatekeeper_ms < 25  # decided up front, not after the 50 ms budget
    stats = router.stats()
    assert (stats["scored"], stats["shed"], stats["failed"]) == (0, 1, 1)
    assert stats["by_reason"] == {"overload": 1, "timeout": 1}


# Raw self=0.9 routes locally at tau=0.5; sigmoid(logit(0.9) - 3) = 0.31 does not. Raw self=0.2
# routes to large; the isotonic map lifts it to 0.6 + 0.1 * 0.3 / 0.9 = 0.633.
DEFLATE = {"self": {"method": "platt", "a": 1.0, "b": -3.0}}
INFLATE = {"self": {"method": "isotonic", "x": [0.1, 1.0], "y": [0.6, 0.9]}}


@pytest.mark.parametrize(
    ("raw", "calibration", "calibrated", "tier"),
    [(0.9, DEFLATE, 1 / (1 + math.exp(3) / 9), "large"), (0.2, INFLATE, 0.6 + 0.1 / 3, "local")],
)
def test_policy_decides_on_calibrated_scores_and_decision_keeps_raw_ones(
    tmp_path, raw, calibration, calibrated, tier
):
    log = tmp_path / "routing.jsonl"
    config = router_config(gatekeeper={"calibration": calibration}, routing_log=str(log))
    gk = FakeGatekeeper({"self": raw, "gpt-4": 0.95})
    assert Router.from_dict(router_config(), gatekeeper=gk).route(QUESTION).tier != tier  # raw decision

    d = introroute.decision(Router.from_dict(config, gatekeeper=gk).completion(messages=QUESTION))
    assert (d.tier, d.policy_tier) == (tier, tier)
    assert d.scores == pytest.approx({"self": calibrated, "gpt-4": 0.95})  # uncalibrated target passes
    assert d.raw_scores == {"self": raw, "gpt-4": 0.95}
    logged = json.loads(log.read_text())["decision"]
    assert (logged["scores"], logged["raw_scores"]) == (d.scores, d.raw_scores)


def test_calibration_leaves_fail_safe_unchanged():
    config = router_config(gatekeeper={"calibration": DEFLATE})
    router = Router.from_dict(config, gatekeeper=FakeGatekeeper({"self": float("nan"), "gpt-4": 0.9}))
    d = router.route(QUESTION)
    assert (d.tier, d.policy_tier, d.raw_scores) == ("large", None, None)
    assert (
        d.fail_safe_reason == "gatekeeper returned invalid scores: 'self': nan is not a probability in [0, 1]"
    )


def test_truncated_flag_is_reported():
    router = Router.from_dict(router_config(), gatekeeper=FakeGatekeeper(truncated=True))
    assert introroute.decision(router.completion(messages=QUESTION)).truncated


def test_local_tier_failure_falls_back(router_fake_gatekeeper, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(router_fake_gatekeeper, "generate_from", broken)
    router = Router.from_dict(router_config(fallbacks={"local": "large"}), gatekeeper=router_fake_gatekeeper)
    response = router.completion(messages=QUESTION)
    d = introroute.decision(response)
    assert _content(response) == "large answer"
    assert (d.tier, d.policy_tier, d.attempts, d.fallbacks_used) == ("large", "local", 2, ["large"])
    assert len(d.errors) == 1 and d.errors[0].startswith("local: ")


def test_local_tier_is_skipped_when_the_request_has_tools(router_fake_gatekeeper):
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    router = Router.from_dict(router_config(), gatekeeper=router_fake_gatekeeper)
    d = introroute.decision(router.completion(messages=QUESTION, tools=tools))
    assert (d.tier, d.policy_tier, d.overrides) == (
        "large",
        "local",
        ["tier 'local' cannot call tools: skipped"],
    )


def test_streaming_local_tier_carries_decision_on_wrapper_and_first_chunk(router_fake_gatekeeper):
    gk = router_fake_gatekeeper
    stream = Router.from_dict(router_config(), gatekeeper=router_fake_gatekeeper).completion(
        messages=QUESTION, stream=True
    )
    assert introroute.decision(stream).tier == "local"
    chunks = list(stream)
    assert introroute.decision(chunks[0]).tier == "local"
    assert all(introroute.decision(c) is None for c in chunks[1:])
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == gk.answer
    assert gk.prefills == 1  # the stream continued the scoring prefill


def test_async_completion_and_stream(router_fake_gatekeeper):
    router = Router.from_dict(router_config(), gatekeeper=router_fake_gatekeeper)

    async def run():
        response = await router.acompletion(messages=QUESTION)
        stream = await router.acompletion(messages=QUESTION, stream=True)
        return response, [chunk async for chunk in stream]

    response, chunks = asyncio.run(run())
    assert _content(response) == router_fake_gatekeeper.answer
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == router_fake_gatekeeper.answer
    assert introroute.decision(chunks[0]).tier == "local"
    assert router_fake_gatekeeper.prefills == 2


def test_routing_log_records_each_request(tmp_path, router_fake_gatekeeper):
    log = tmp_path / "logs" / "routing.jsonl"
    router = Router.from_dict(router_config(routing_log=str(log)), gatekeeper=router_fake_gatekeeper)
    router.completion(messages=QUESTION)
    router.completion(messages=QUESTION, stream=True)
    first, second = (json.loads(line) for line in log.read_text().splitlines())
    assert first["router"] == "t" and first["decision"]["tier"] == "local" and not first["stream"]
    assert first["usage"] == {"prompt_tokens": 9, "completion_tokens": 6}
    assert first["latency_ms"] > 0 and first["error"] is None
    assert second["stream"] and second["usage"] is None
    assert "capital" not in log.read_text()  # no message text in the log


def test_dry_run_route_and_repr(router_fake_gatekeeper):
    router = Router.from_dict(router_config(), gatekeeper=router_fake_gatekeeper)
    d = router.route(QUESTION)
    assert (d.tier, d.attempts) == ("local", 0)
    assert router_fake_gatekeeper.generations == []
    assert repr(router) == "Router(name='t', tiers=['local', 'large'], policy=ThresholdPolicy(tau=0.5))"


def test_local_tier_needs_a_gatekeeper_that_generates():
    with pytest.raises(ConfigError, match="cannot generate"):
        Router.from_dict(router_config(), gatekeeper=ScoresOnly({"self": 0.9}))


def test_drop_in_completion_finds_the_router(tmp_path, monkeypatch):
    single = {
        "name": "solo",
        "tiers": [{"name": "only", "target": "x", "litellm_params": {"model": "openai/m"}}],
    }
    path = tmp_path / "introroute.yaml"
    path.write_text(yaml.safe_dump(single))
    ask = {"messages": QUESTION, "mock_response": "hi"}

    assert introroute.decision(introroute.completion(router=path, **ask)).router == "solo"
    monkeypatch.setenv("INTROROUTE_CONFIG", str(path))
    assert introroute.decision(introroute.completion(**ask)).tier == "only"
    assert introroute.decision(introroute.completion(model="introroute/solo", **ask)).tier == "only"
    monkeypatch.delenv("INTROROUTE_CONFIG")
    monkeypatch.chdir(tmp_path)  # ./introroute.yaml
    assert _content(asyncio.run(introroute.acompletion(**ask))) == "hi"
    monkeypatch.chdir(tmp_path / "..")
    with pytest.raises(ConfigError, match="no router configured"):
        introroute.completion(**ask)
    with pytest.raises(ConfigError, match="no router named 'ghost'"):
        introroute.completion(model="introroute/ghost", **ask)
