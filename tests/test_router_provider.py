"""``litellm.completion(model="introroute/<router>")``: the LiteLLM-native path, sync/async/stream."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import litellm
import pytest
import yaml
from router_support import FakeGatekeeper, router_config

import introroute
from introroute.router import Router

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LOW = {"self": 0.1, "gpt-4": 0.9}


@pytest.fixture
def http_router(router_server):
    """Router "prov": local tier + an HTTP tier on the test server; scores set per test."""
    large = {"model": "openai/fake-large", "api_base": router_server.url, "api_key": "sk-x", "timeout": 5}
    gatekeeper = FakeGatekeeper()
    return Router.from_dict(router_config("prov", large=large), gatekeeper=gatekeeper), gatekeeper


def _streamed(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks)


def test_importing_introroute_registers_the_provider():
    assert any(p["provider"] == "introroute" for p in litellm.custom_provider_map)


def test_sync_completion_routes_locally_and_remotely(http_router):
    _, gatekeeper = http_router
    response = litellm.completion(model="introroute/prov", messages=QUESTION)
    assert response.choices[0].message.content == gatekeeper.answer
    assert introroute.decision(response).tier == "local"

    gatekeeper.score_spec = LOW
    response = litellm.completion(model="introroute/prov", messages=QUESTION, temperature=0.1)
    assert response.choices[0].message.content == "echo(1): What is the capital of France?"
    d = introroute.decision(response)
    assert (d.tier, d.model) == ("large", "openai/fake-large")


@pytest.mark.parametrize("scores", [{"self": 0.9, "gpt-4": 0.9}, LOW], ids=["local", "http"])
def test_sync_stream_carries_decision_on_first_chunk_and_wrapper(http_router, scores):
    _, gatekeeper = http_router
    gatekeeper.score_spec = scores
    stream = litellm.completion(model="introroute/prov", messages=QUESTION, stream=True)
    chunks = list(stream)
    tier = "local" if scores["self"] > 0.5 else "large"
    expected = gatekeeper.answer if tier == "local" else "echo(1): What is the capital of France?"
    assert _streamed(chunks) == expected
    assert introroute.decision(chunks[0]).tier == tier
    assert introroute.decision(stream).tier == tier
    assert gatekeeper.prefills == 1


@pytest.mark.parametrize("scores", [{"self": 0.9, "gpt-4": 0.9}, LOW], ids=["local", "http"])
def test_async_completion_and_stream(http_router, scores):
    _, gatekeeper = http_router
    gatekeeper.score_spec = scores

    async def run():
        response = await litellm.acompletion(model="introroute/prov", messages=QUESTION)
        stream = await litellm.acompletion(model="introroute/prov", messages=QUESTION, stream=True)
        return response, [c async for c in stream]

    response, chunks = asyncio.run(run())
    assert response.choices[0].message.content == _streamed(chunks)
    tier = introroute.decision(response).tier
    assert tier == ("local" if scores["self"] > 0.5 else "large")
    assert introroute.decision(chunks[0]).tier == tier
    assert gatekeeper.prefills == 2


def test_tools_through_the_provider_reach_the_server_untouched(http_router, router_server):
    _, gatekeeper = http_router
    gatekeeper.score_spec = LOW
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    response = litellm.completion(
        model="introroute/prov",
        messages=QUESTION,
        tools=tools,
        # LiteLLM 1.106 imports its MCP gateway for any `tools` unless told the call has none.
        _skip_mcp_handler=True,
    )
    assert response.choices[0].message.tool_calls[0].function.name == "lookup"
    assert router_server.requests[0]["tools"] == tools


def test_local_tier_model_string_answers_without_routing(http_router):
    _, gatekeeper = http_router
    response = litellm.completion(model="introroute/prov/local", messages=QUESTION, max_tokens=2)
    assert response.choices[0].message.content == "The capital"
    assert introroute.decision(response) is None
    assert gatekeeper.prefills == 1


def test_router_defined_only_in_yaml_is_found_via_env(tmp_path, monkeypatch, router_server):
    config = {
        "name": "from_yaml",
        "tiers": [
            {
                "name": "only",
                "target": "x",
                "litellm_params": {"model": "openai/m", "api_base": router_server.url, "api_key": "k"},
            }
        ],
    }
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("INTROROUTE_CONFIG", str(path))
    response = litellm.completion(model="introroute/from_yaml", messages=QUESTION)
    assert introroute.decision(response).router == "from_yaml"


def test_unknown_router_fails_clearly():
    with pytest.raises(Exception, match="no router named 'nobody'"):
        litellm.completion(model="introroute/nobody", messages=QUESTION)


def test_import_registers_the_provider_without_loading_torch():
    code = (
        "import sys, litellm, introroute; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert any(p['provider'] == 'introroute' for p in litellm.custom_provider_map)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(
    ("messages", "cause"),
    [
        ([], "messages must contain at least one message"),
        ([{"role": "usr", "content": "hi"}], "messages[0].role is 'usr'"),
        (
            [{"role": "user", "content": 5}],
            "messages[0].content must be a string or a list of parts, got int",
        ),
    ],
)
def test_bad_messages_are_refused_before_any_upstream_call(http_router, router_server, messages, cause):
    router, gatekeeper = http_router
    gatekeeper.score_spec = LOW  # the paid tier would be chosen
    with pytest.raises(introroute.MessagesError, match=re.escape(cause)):
        router.completion(messages=messages)
    with pytest.raises(introroute.MessagesError, match=re.escape(cause)):
        asyncio.run(router.acompletion(messages=messages))
    # Through LiteLLM: a 400 no retry loop repeats, with the typed error as its cause. (LiteLLM's
    # own preprocessing fails on `content: 5` before any provider; the proxy's guard answers 400.)
    if "content" not in cause:
        with pytest.raises(litellm.BadRequestError, match=re.escape(cause)) as caught:
            litellm.completion(model="introroute/prov", messages=messages, num_retries=2)
        assert isinstance(caught.value.__cause__, introroute.MessagesError)
    assert router_server.requests == []
    assert router.completion(messages=[{"role": "system", "content": "be brief"}, *QUESTION]) is not None


def test_an_unknown_router_is_a_bad_request_naming_introroute_config(monkeypatch, tmp_path):
    monkeypatch.delenv("INTROROUTE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./introroute.yaml either
    for call in (
        lambda: litellm.completion(model="introroute/nowhere", messages=QUESTION),
        lambda: asyncio.run(litellm.acompletion(model="introroute/nowhere", messages=QUESTION)),
        lambda: list(litellm.completion(model="introroute/nowhere", messages=QUESTION, stream=True)),
    ):
        with pytest.raises(litellm.BadRequestError, match="INTROROUTE_CONFIG") as caught:
            call()
        assert not isinstance(caught.value, litellm.APIConnectionError)  # not retryable
        assert isinstance(caught.value.__cause__, introroute.ConfigError)
