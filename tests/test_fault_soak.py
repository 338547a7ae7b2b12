"""Fault and soak suite (issue 11): many routed calls against a fault-injecting loopback server.

1000 sync calls (from 8 threads) and 300 async calls (50 at a time) go through LiteLLM's real
``openai/`` HTTP path to :class:`FaultServer` on 127.0.0.1, which injects a fault into about a
quarter of the requests: 500, 429 with ``Retry-After``, connection resets, hangs past the
client's timeout, malformed JSON, responses and streams that break mid-way. Every call must end
answered or with a typed error (never a hang, never a raw exception), and leave exactly one strict
JSON line in the routing log. Bounded for CI on 2 cores: tiny waits (``Retry-After: 0.01``,
backoff 1 ms, client timeout 2 s) and a per-call guard instead of wall-clock assertions. The timeout
is not tighter because on 2 busy cores 50 concurrent healthy requests can take over 0.3 s each, and
those would count as faults the server never injected.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
from concurrent.futures import ThreadPoolExecutor

import litellm
import pytest
from fault_server import TYPED_ERRORS, FaultServer
from router_support import FakeGatekeeper

import introroute
from introroute.router import Router

SYNC_CALLS = 1000
ASYNC_CALLS = 300
CONCURRENCY = 50
FAULT_RATE = 0.25
CLIENT_TIMEOUT_S = 2.0
GUARD_S = 120.0  # a call that takes this long is hung (the client timeout is 2 s)


def _router(server: FaultServer, log) -> Router:
    remote = {"api_base": server.url, "api_key": "sk-soak", "timeout": CLIENT_TIMEOUT_S}
    config = {
        "name": "soak",
        "tiers": [
            {"name": "local", "target": "self"},
            {"name": "primary", "target": "gpt-4", "litellm_params": {"model": "openai/p", **remote}},
            {"name": "backup", "target": "gpt-4", "litellm_params": {"model": "openai/b", **remote}},
        ],
        "retries": {"attempts": 2, "backoff": {"initial_s": 0.001, "max_s": 0.01, "jitter_s": 0}},
        "fallbacks": {"primary": "backup"},
        "fail_safe": "primary",
        "routing_log": str(log),
    }

    def scores(messages) -> dict[str, float]:  # mostly remote; some local (in-process) answers
        text = str(messages[-1].get("content"))
        return {"self": 0.9 if text.endswith("7") else 0.1, "gpt-4": 0.9}

    return Router.from_dict(config, gatekeeper=FakeGatekeeper(scores))


def _question(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i}"}]


def _outcome(call, *args, **kwargs) -> str:
    """``"answered"``, or the typed error's class name; anything untyped fails the test."""
    try:
        response = call(*args, **kwargs)
        if kwargs.get("stream"):
            text = "".join(c.choices[0].delta.content or "" for c in response)
        else:
            text = response.choices[0].message.content
            assert introroute.decision(response) is not None
        assert text, "an answer with no text"
        return "answered"
    except TYPED_ERRORS as exc:
        return type(exc).__name__


async def _aoutcome(router: Router, i: int, gate: asyncio.Semaphore) -> str:
    async with gate:
        stream = i % 10 == 3
        try:
            response = await router.acompletion(messages=_question(i), stream=stream)
            if stream:
                text = "".join([c.choices[0].delta.content or "" async for c in response])
            else:
                text = response.choices[0].message.content
            assert text, "an answer with no text"
            return "answered"
        except TYPED_ERRORS as exc:
            return type(exc).__name__


def _check_log(log, calls: int) -> collections.Counter[str]:
    def refuse(constant: str) -> float:
        raise ValueError(f"non-JSON constant {constant}")

    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == calls, f"{len(lines)} routing-log records for {calls} calls"
    tiers: collections.Counter[str] = collections.Counter()
    for line in lines:
        record = json.loads(line, parse_constant=refuse)
        assert record["router"] == "soak" and record["decision"]["router"] == "soak"
        tiers[record["decision"]["tier"] if record["error"] is None else "error"] += 1
    return tiers


@pytest.mark.parametrize("seed", [11])
def test_soak_sync_and_async_under_injected_faults(tmp_path, seed, monkeypatch):
    monkeypatch.setattr(litellm, "suppress_debug_info", True)  # no "Give Feedback" per failure
    log = tmp_path / "routing.jsonl"
    hang_s = CLIENT_TIMEOUT_S + 0.5
    with FaultServer(fault_rate=FAULT_RATE, seed=seed, hang_s=hang_s, retry_after="0.01") as server:
        router = _router(server, log)
        rng = random.Random(seed)
        plan = [(i, rng.random() < 0.1) for i in range(SYNC_CALLS)]  # ~10% streamed
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [
                pool.submit(_outcome, router.completion, messages=_question(i), stream=s) for i, s in plan
            ]
            sync = collections.Counter(f.result(timeout=GUARD_S) for f in futures)

        async def run_async() -> collections.Counter[str]:
            gate = asyncio.Semaphore(CONCURRENCY)
            tasks = [_aoutcome(router, SYNC_CALLS + i, gate) for i in range(ASYNC_CALLS)]
            return collections.Counter(await asyncio.wait_for(asyncio.gather(*tasks), GUARD_S * 5))

        concurrent = asyncio.run(run_async())
        requests, injected, faults = len(server.requests), server.injected, dict(server.counts)

    print(f"\nsync {dict(sync)}\nasync {dict(concurrent)}\nserver {requests} requests, {faults}")
    assert sum(sync.values()) == SYNC_CALLS and sum(concurrent.values()) == ASYNC_CALLS
    assert injected / requests >= 0.2, f"only {injected} of {requests} requests had a fault injected"
    assert {k for k in faults if k != "ok"} == {"500", "429", "reset", "hang", "malformed", "midway"}
    assert sync["answered"] / SYNC_CALLS > 0.9 and concurrent["answered"] / ASYNC_CALLS > 0.9
    tiers = _check_log(log, SYNC_CALLS + ASYNC_CALLS)
    routing_errors = sync["RoutingError"] + concurrent["RoutingError"]
    assert tiers["error"] == routing_errors  # every call that failed says so in its record
    assert tiers["local"] > 0 and tiers["primary"] > 0 and tiers["backup"] > 0
