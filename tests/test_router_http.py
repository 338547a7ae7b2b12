"""The router over LiteLLM's real ``openai/`` HTTP path against a local OpenAI-compatible server:
streaming (SSE), async, tools, multi-turn, retries then fallbacks on injected 500s and timeouts,
and secrets kept out of decisions, logs and errors."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from router_support import FakeGatekeeper

import introroute
from introroute.errors import RoutingError
from introroute.router import Router

SECRET = "sk-http-secret-4242"
TOKEN = "tok-header-secret-777"
LOW = {"self": 0.1, "gpt-4": 0.9}  # the policy picks "primary"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def _remote(server, model: str, **extra) -> dict:
    return {
        "model": f"openai/{model}",
        "api_base": server.url,
        "api_key": "${ROUTER_TEST_KEY}",
        "timeout": 5,
        **extra,
    }


@pytest.fixture
def make_router(router_server, monkeypatch):
    monkeypatch.setenv("ROUTER_TEST_KEY", SECRET)
    monkeypatch.setenv("ROUTER_TEST_TOKEN", TOKEN)

    def make(gatekeeper=None, *, attempts=2, primary=None, fallbacks=None, **extra) -> Router:
        config = {
            "name": "http",
            "tiers": [
                {"name": "local", "target": "self"},
                {
                    "name": "primary",
                    "target": "gpt-4",
                    "litellm_params": _remote(router_server, "fake-primary", **(primary or {})),
                },
                {
                    "name": "backup",
                    "target": "gpt-4",
                    "litellm_params": _remote(router_server, "fake-backup"),
                },
            ],
            "retries": {"attempts": attempts, "backoff": {"initial_s": 0.01, "jitter_s": 0}},
            "fallbacks": {"primary": "backup"} if fallbacks is None else fallbacks,
            **extra,
        }
        return Router.from_dict(config, gatekeeper=gatekeeper or FakeGatekeeper(LOW))

    return make


def _text(response) -> str:
    return response.choices[0].message.content


def _streamed(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks)


def test_http_completion_reaches_the_server_with_the_tier_model_and_key(make_router, router_server):
    response = make_router().completion(messages=QUESTION, temperature=0.2)
    assert _text(response) == "echo(1): What is the capital of France?"
    assert response.usage.prompt_tokens == 11
    (body,) = router_server.requests
    assert body["model"] == "fake-primary" and body["messages"] == QUESTION and body["temperature"] == 0.2
    assert router_server.headers[0]["authorization"] == f"Bearer {SECRET}"
    d = introroute.decision(response)
    assert (d.tier, d.model, d.attempts) == ("primary", "openai/fake-primary", 1)


def test_http_streaming_sse(make_router):
    stream = make_router().completion(messages=QUESTION, stream=True)
    chunks = list(stream)
    assert _streamed(chunks) == "echo(1): What is the capital of France?"
    assert introroute.decision(stream).tier == "primary"
    assert introroute.decision(chunks[0]).tier == "primary"


def test_http_async_and_async_stream(make_router):
    router = make_router()

    async def run():
        response = await router.acompletion(messages=QUESTION)
        stream = await router.acompletion(messages=QUESTION, stream=True)
        return response, [c async for c in stream]

    response, chunks = asyncio.run(run())
    assert _text(response) == _streamed(chunks) == "echo(1): What is the capital of France?"
    assert introroute.decision(chunks[0]).tier == "primary"


def test_tools_pass_through_untouched(make_router, router_server):
    response = make_router().completion(messages=QUESTION, tools=TOOLS, tool_choice="auto")
    call = response.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert router_server.requests[0]["tools"] == TOOLS
    assert router_server.requests[0]["tool_choice"] == "auto"

    chunks = list(make_router().completion(messages=QUESTION, tools=TOOLS, stream=True))
    streamed_calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert streamed_calls[0].function.name == "get_weather"


def test_multi_turn_with_tool_results_is_scored_whole_and_forwarded_unchanged(make_router, router_server):
    gatekeeper = FakeGatekeeper(LOW)
    conversation = [
        {"role": "system", "content": "You can look up weather."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
    ]
    response = make_router(gatekeeper).completion(messages=conversation, tools=TOOLS)
    assert _text(response) == "echo(4): Weather in Paris?"
    assert gatekeeper.seen == [conversation]
    sent = router_server.requests[0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[2]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    assert sent[3]["tool_call_id"] == "call_1"


def test_retry_recovers_on_the_same_tier(make_router, router_server):
    router_server.faults.extend([500])
    d = introroute.decision(make_router().completion(messages=QUESTION))
    assert (d.tier, d.attempts, d.fallbacks_used) == ("primary", 2, [])
    assert d.errors == ["primary: InternalServerError"]
    assert [r["model"] for r in router_server.requests] == ["fake-primary", "fake-primary"]  # SDK retries off


def test_retries_then_fallback_on_injected_500s(make_router, router_server):
    router_server.faults.extend([500, 500])
    response = make_router(attempts=2).completion(messages=QUESTION)
    d = introroute.decision(response)
    assert _text(response).startswith("echo(1)")
    assert (d.tier, d.model, d.attempts, d.fallbacks_used) == ("backup", "openai/fake-backup", 3, ["backup"])
    assert d.errors == ["primary: InternalServerError", "primary: InternalServerError"]
    assert [r["model"] for r in router_server.requests] == ["fake-primary", "fake-primary", "fake-backup"]


def test_timeout_then_fallback(make_router, router_server):
    router_server.faults.extend(["hang"])
    router = make_router(attempts=1, primary={"timeout": 0.3})
    start = time.perf_counter()
    d = introroute.decision(router.completion(messages=QUESTION))
    assert time.perf_counter() - start < 1.5
    assert (d.tier, d.errors) == ("backup", ["primary: Timeout"])


def test_non_retryable_error_falls_back_at_once(make_router, router_server):
    router_server.faults.extend([400])
    d = introroute.decision(make_router(attempts=3).completion(messages=QUESTION))
    assert (d.tier, d.attempts, d.errors) == ("backup", 2, ["primary: BadRequestError"])


def test_async_retries_then_fallback_to_local_reuses_the_prefill(make_router, router_server):
    gatekeeper = FakeGatekeeper(LOW)
    router_server.faults.extend([503, 503])
    router = make_router(gatekeeper, fallbacks={"primary": "local"})
    response = asyncio.run(router.acompletion(messages=QUESTION))
    d = introroute.decision(response)
    assert _text(response) == gatekeeper.answer
    assert (d.tier, d.attempts, d.fallbacks_used) == ("local", 3, ["local"])
    assert d.errors == ["primary: ServiceUnavailableError"] * 2
    assert gatekeeper.prefills == 1


def test_secrets_never_appear_in_decisions_logs_or_errors(make_router, router_server, tmp_path, caplog):
    log = tmp_path / "routing.jsonl"
    router = make_router(
        FakeGatekeeper(fail=RuntimeError(f"leaked {SECRET}")),  # even a gatekeeper echoing one
        attempts=1,
        primary={"extra_headers": {"X-Token": "${ROUTER_TEST_TOKEN}"}},
        fail_safe="primary",
        routing_log=str(log),
    )
    caplog.set_level(logging.DEBUG, logger="introroute")
    response = router.completion(messages=QUESTION)
    assert router_server.headers[0]["x-token"] == TOKEN  # the secrets were used...
    router_server.faults.extend([500, 500])
    with pytest.raises(RoutingError) as err:
        router.completion(messages=QUESTION)

    emitted = [
        json.dumps(response._hidden_params["introroute"]),
        introroute.decision(response).model_dump_json(),
        log.read_text(),
        str(err.value),
        caplog.text,
    ]
    for text in emitted:  # ...but never written anywhere
        assert SECRET not in text and TOKEN not in text
    assert "leaked ***" in introroute.decision(response).fail_safe_reason
    assert str(err.value) == (
        "every tier failed (2 attempts): primary: InternalServerError; backup: InternalServerError"
    )
    failed = json.loads(log.read_text().splitlines()[-1])
    assert failed["error"] == str(err.value) and failed["decision"]["tier"] == "backup"
