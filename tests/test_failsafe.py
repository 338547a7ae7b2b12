"""Nothing lost, nothing crashes after the provider was paid (issue 11, items 4, 5, 6, 9, 10).

Scores are validated once (numpy floats in, bools and garbage out, to the fail-safe tier); the
routing log is strict JSON and never raises; every routed call leaves exactly one record,
cancelled ones included; malformed input of any shape ends in a typed error or the fail-safe;
a request the local tier cannot read goes elsewhere; ``Retry-After`` is honoured and 4xx and
local encoding errors are not retried. Hypothesis drives the message shapes.
"""

from __future__ import annotations

import asyncio
import json

import litellm
import numpy as np
import pytest
from fault_server import TYPED_ERRORS, FaultServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from router_support import FakeGatekeeper, router_config

import introroute
from introroute.errors import MessagesError, RoutingError
from introroute.messages import normalize_messages
from introroute.policies import Policy, PolicyChoice
from introroute.router import Router
from introroute.router.dispatch import Attempts
from introroute.router.gatekeeping import validate_scores
from introroute.router.router import estimate_tokens

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LOW = {"self": 0.2, "gpt-4": 0.9}
IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    }
]


def _strict(line: str) -> dict:
    def refuse(constant: str) -> float:
        raise ValueError(f"non-JSON constant {constant}")

    return json.loads(line, parse_constant=refuse)


def _records(path) -> list[dict]:
    return [_strict(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- item 4: scores ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        ({"self": np.float32(0.9)}, True),
        ({"self": np.float64(1.0), "x": np.int64(0)}, True),
        ({"self": 1, "x": 0.0}, True),
        ({"self": True}, False),
        ({"self": np.bool_(True)}, False),
        ({"self": "abc"}, False),
        ({"self": None}, False),
        ({"self": float("nan")}, False),
        ({"self": float("inf")}, False),
        ({"self": -0.1}, False),
        ({"self": 0.5, 3: 0.5}, False),
        ([0.5], False),
        ({}, False),
    ],
)
def test_scores_are_validated_once(raw, ok):
    scores, failure = validate_scores(raw)
    assert (failure is None) == ok
    if ok:
        assert all(type(v) is float for v in scores.values())
    else:
        assert scores == {} and failure


@pytest.mark.parametrize("bad", ["abc", None, float("nan"), float("inf"), True])
def test_bad_scores_still_answer_and_leave_one_strict_record(bad, tmp_path):
    log = tmp_path / "log.jsonl"
    gatekeeper = FakeGatekeeper({"self": bad, "gpt-4": 0.9})
    router = Router.from_dict(router_config(routing_log=str(log)), gatekeeper=gatekeeper)
    response = router.completion(messages=QUESTION)
    assert response.choices[0].message.content == "large answer"  # the fail-safe tier answered
    d = introroute.decision(response)
    assert d.tier == "large" and d.scores == {} and "invalid scores" in d.fail_safe_reason
    (record,) = _records(log)
    assert record["decision"]["fail_safe_reason"] == d.fail_safe_reason


def test_numpy_scores_route_normally():
    gatekeeper = FakeGatekeeper({"self": np.float32(0.9), "gpt-4": np.float32(0.2)})
    d = introroute.decision(
        Router.from_dict(router_config(), gatekeeper=gatekeeper).completion(messages=QUESTION)
    )
    assert d.tier == "local" and d.fail_safe_reason is None and d.scores["self"] == pytest.approx(0.9)


class DetailPolicy(Policy):
    """A user policy whose numbers behind the choice are not all JSON."""

    name = "detail"

    def __init__(self, detail: object = None) -> None:
        self.detail = detail

    def decide(self, scores, context):
        return PolicyChoice("large", dict(self.detail))


@pytest.mark.parametrize(
    ("detail", "logged"),
    [
        (
            {"utility": float("-inf"), "ratio": float("nan"), "p": 0.5},
            {"utility": None, "ratio": None, "p": 0.5},
        ),
        ({"odd": object()}, {"unserialisable": "PydanticSerializationError"}),
    ],
    ids=["non-finite", "not-json"],
)
def test_policy_details_that_are_not_json_keep_the_log_strict(tmp_path, detail, logged):
    log = tmp_path / "log.jsonl"
    router = Router(
        introroute.load_config(router_config(routing_log=str(log))),
        gatekeeper=FakeGatekeeper(LOW),
        policy=DetailPolicy(detail),
    )
    response = router.completion(messages=QUESTION)
    assert response.choices[0].message.content == "large answer"
    (record,) = _records(log)
    assert record["decision"]["tier"] == "large" and record["decision"]["policy_detail"] == logged


# -- item 5: one record per call ---------------------------------------------------------------


def test_a_surrogate_in_an_error_text_is_still_logged(tmp_path):
    log = tmp_path / "log.jsonl"
    gatekeeper = FakeGatekeeper(LOW, fail=RuntimeError("broken \ud800 text"))
    router = Router.from_dict(router_config(routing_log=str(log)), gatekeeper=gatekeeper)
    assert router.completion(messages=QUESTION).choices[0].message.content == "large answer"
    (record,) = _records(log)
    assert record["decision"]["fail_safe_reason"].startswith("gatekeeper error: RuntimeError: broken")


def test_a_log_that_breaks_after_build_drops_records_without_failing_calls(tmp_path, caplog):
    log = tmp_path / "log.jsonl"
    router = Router.from_dict(router_config(routing_log=str(log)), gatekeeper=FakeGatekeeper(LOW))
    log.mkdir()  # the path becomes a directory after the router was built
    assert router.completion(messages=QUESTION).choices[0].message.content == "large answer"
    assert "cannot write routing log" in caplog.text


def _slow_server_router(server: FaultServer, log, **extra) -> Router:
    remote = {"model": "openai/slow", "api_base": server.url, "api_key": "k", "timeout": 30}
    config = router_config(large=remote, routing_log=str(log), **extra)
    return Router.from_dict(config, gatekeeper=FakeGatekeeper(LOW))


def test_cancelled_async_calls_each_leave_a_record(tmp_path):
    log = tmp_path / "log.jsonl"
    with FaultServer(fault_rate=1.0, faults=("hang",), hang_s=3.0) as server:
        router = _slow_server_router(server, log)

        async def main() -> list[BaseException | object]:
            tasks = [asyncio.create_task(router.acompletion(messages=QUESTION)) for _ in range(20)]
            for _ in range(3000):  # until every call reached the provider (bounded)
                if len(server.requests) >= 20:
                    break
                await asyncio.sleep(0.01)
            assert len(server.requests) == 20
            for task in tasks:
                task.cancel()
            return await asyncio.gather(*tasks, return_exceptions=True)

        results = asyncio.run(main())
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    records = _records(log)
    assert len(records) == 20
    assert {r["error"] for r in records} == {"cancelled (CancelledError)"}
    assert {r["decision"]["attempts"] for r in records} == {1}


def test_a_call_cancelled_while_scoring_leaves_a_record(tmp_path):
    log = tmp_path / "log.jsonl"
    gatekeeper = FakeGatekeeper(LOW, delay_s=0.5)
    router = Router.from_dict(router_config(routing_log=str(log)), gatekeeper=gatekeeper)

    async def main() -> None:
        task = asyncio.create_task(router.acompletion(messages=QUESTION))
        for _ in range(3000):
            if gatekeeper.seen:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    (record,) = _records(log)
    assert record["error"] == "cancelled (CancelledError)" and record["decision"]["attempts"] == 0


# -- item 6: malformed input --------------------------------------------------------------------


def _deep_tool_calls(depth: int = 5000) -> list[dict]:
    arguments: dict = {}
    for _ in range(depth):
        arguments = {"a": arguments}
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]}]


def test_deeply_nested_tool_calls_are_a_typed_error_not_a_recursion_error(tmp_path):
    messages = _deep_tool_calls()
    with pytest.raises(MessagesError, match="nested too deeply"):
        normalize_messages(messages)
    assert estimate_tokens(messages) == 0
    log = tmp_path / "log.jsonl"
    router = Router.from_dict(router_config(routing_log=str(log)), gatekeeper=Normalizing(LOW))
    try:
        response = router.completion(messages=messages)
    except Exception as exc:
        assert isinstance(exc, TYPED_ERRORS)
    else:
        assert "nested too deeply" in introroute.decision(response).fail_safe_reason
    assert len(_records(log)) == 1


class Normalizing(FakeGatekeeper):
    """A gatekeeper that validates messages as IntroLM does before scoring."""

    def scores(self, messages):
        normalize_messages(messages)
        return super().scores(messages)


json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(st.text(max_size=20), json_like)}),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["image_url", "input_audio", "file", "weird"]), "image_url": json_like}
    ),
    json_like,
)
message = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool", "robot"]), json_like),
            "content": st.one_of(st.text(max_size=40), st.lists(part, max_size=3), json_like),
        },
        optional={"tool_calls": st.one_of(st.lists(json_like, max_size=2), json_like), "name": json_like},
    ),
    json_like,
)
messages_strategy = st.one_of(st.lists(message, max_size=4), json_like)
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(messages_strategy)
def test_any_messages_normalise_or_raise_messages_error(messages):
    try:
        normalized = normalize_messages(messages)
    except MessagesError:
        assert estimate_tokens(messages) == 0
    else:
        assert all(isinstance(m["content"], str) for m in normalized.messages)


def _routed_once(tmp_path_factory, local_first: bool, **kwargs) -> None:
    """One call ends answered or with a typed error, and leaves exactly one record."""
    log = tmp_path_factory.mktemp("log") / "log.jsonl"
    scores = {"self": 0.9, "gpt-4": 0.1} if local_first else LOW
    router = Router.from_dict(router_config(routing_log=str(log)), gatekeeper=Normalizing(scores))
    try:
        response = router.completion(**kwargs)
        assert introroute.decision(response) is not None
        if kwargs.get("stream") is True:
            list(response)
    except Exception as exc:  # a typed error: introroute's own or LiteLLM's
        assert isinstance(exc, TYPED_ERRORS), repr(exc)
    assert len(_records(log)) == 1


@PROPERTY
@given(messages_strategy, st.booleans())
def test_any_messages_end_answered_or_typed_with_one_record(tmp_path_factory, messages, local_first):
    _routed_once(tmp_path_factory, local_first, messages=messages)


call_kwargs = st.fixed_dictionaries(
    {},
    optional={
        "tools": json_like,
        "functions": json_like,
        "max_tokens": json_like,
        "stream": st.booleans(),
        "metadata": json_like,
        "temperature": json_like,
        "stop": json_like,
    },
)


@PROPERTY
@given(call_kwargs, st.booleans())
def test_any_call_arguments_end_answered_or_typed_with_one_record(tmp_path_factory, kwargs, local_first):
    _routed_once(tmp_path_factory, local_first, messages=QUESTION, **kwargs)


# -- item 9: modalities -------------------------------------------------------------------------


def test_an_image_request_skips_the_text_only_local_tier(router_fake_gatekeeper):
    router = Router.from_dict(router_config(), gatekeeper=router_fake_gatekeeper)  # scores pick local
    response = router.completion(messages=IMAGE)
    d = introroute.decision(response)
    assert response.choices[0].message.content == "large answer"
    assert (d.policy_tier, d.tier) == ("local", "large")
    assert d.overrides == [
        "tier 'local' cannot read ['image'] input: skipped",
        "sent to 'large', which reads it",
    ]
    assert router_fake_gatekeeper.generations == []  # the local model never answered it


def test_declared_modalities_are_honoured(router_fake_gatekeeper):
    config = router_config()
    config["tiers"][0]["modalities"] = ["text", "image"]  # e.g. a local vision model
    d = introroute.decision(
        Router.from_dict(config, gatekeeper=router_fake_gatekeeper).completion(messages=IMAGE)
    )
    assert d.tier == "local" and d.overrides == []

    config = router_config(fallbacks={"large": "local"})
    config["tiers"][1]["modalities"] = ["text"]  # text-only everywhere
    router = Router.from_dict(config, gatekeeper=router_fake_gatekeeper)
    with pytest.raises(RoutingError, match=r"no tier reads \['image', 'text'\] input"):
        router.completion(messages=IMAGE)


def test_local_only_router_refuses_what_it_cannot_read(tmp_path, router_fake_gatekeeper):
    log = tmp_path / "log.jsonl"
    config = {"name": "lo", "tiers": [{"name": "local", "target": "self"}], "routing_log": str(log)}
    router = Router.from_dict(config, gatekeeper=router_fake_gatekeeper)
    with pytest.raises(RoutingError, match="no tier reads"):
        router.completion(messages=IMAGE)
    (record,) = _records(log)
    assert "no tier reads" in record["error"]


# -- item 10: retries ---------------------------------------------------------------------------


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    """Every wait the retry loop asked tenacity for (no wall clock involved)."""
    recorded: list[float] = []
    original = Attempts._wait

    def spy(self, state):
        recorded.append(original(self, state))
        return recorded[-1]

    monkeypatch.setattr(Attempts, "_wait", spy)
    return recorded


def _fault_router(server: FaultServer, *, retry_after_max_s: float = 1.0, attempts: int = 3) -> Router:
    remote = {"api_base": server.url, "api_key": "k", "timeout": 5}
    config = {
        "name": "retry",
        "tiers": [
            {"name": "primary", "target": "gpt-4", "litellm_params": {"model": "openai/p", **remote}},
            {"name": "backup", "target": "gpt-4", "litellm_params": {"model": "openai/b", **remote}},
        ],
        "retries": {
            "attempts": attempts,
            "backoff": {"initial_s": 0.001, "jitter_s": 0, "retry_after_max_s": retry_after_max_s},
        },
        "fallbacks": {"primary": "backup"},
    }
    return Router.from_dict(config, gatekeeper=FakeGatekeeper(LOW))


def test_retry_after_is_honoured(waits):
    with FaultServer(fault_rate=0.0, retry_after="0.2") as server:
        server.faults.extend(["429"])
        d = introroute.decision(_fault_router(server).completion(messages=QUESTION))
    assert (d.tier, d.attempts, d.errors) == ("primary", 2, ["primary: RateLimitError"])
    assert waits == [pytest.approx(0.2)]


def test_a_retry_after_beyond_the_cap_moves_to_the_fallback(waits):
    with FaultServer(fault_rate=0.0, retry_after="120") as server:
        server.faults.extend(["429"])
        d = introroute.decision(_fault_router(server, retry_after_max_s=1.0).completion(messages=QUESTION))
    assert (d.tier, d.attempts, d.fallbacks_used) == ("backup", 2, ["backup"])
    assert waits == [0.0]


@pytest.mark.parametrize("status", ["400", "401"])
def test_4xx_is_never_retried_even_when_listed(status, waits):
    with FaultServer(fault_rate=0.0) as server:
        server.faults.extend([status, status])
        router = _fault_router(server)
        router.config.retries.errors.append("BadRequestError")  # even when listed as retryable
        router.config.retries.errors.append("AuthenticationError")
        with pytest.raises(RoutingError) as err:
            router.completion(messages=QUESTION)
    assert "(2 attempts)" in str(err.value) and len(server.requests) == 2


def test_local_encoding_errors_are_not_retried():
    with FaultServer(fault_rate=0.0) as server:
        router = _fault_router(server, attempts=3)
        with pytest.raises(RoutingError) as err:
            router.completion(messages=[{"role": "user", "content": "broken \ud800 text"}])
    assert str(err.value) == (
        "every tier failed (2 attempts): primary: InternalServerError; backup: InternalServerError"
    )
    assert server.requests == []  # nothing could even be sent


async def _astreamed(router: Router) -> tuple[introroute.Decision, str]:
    stream = await router.acompletion(messages=QUESTION, stream=True)
    return introroute.decision(stream), "".join([c.choices[0].delta.content or "" async for c in stream])


def _streamed(router: Router) -> tuple[introroute.Decision, str]:
    stream = router.completion(messages=QUESTION, stream=True)
    return introroute.decision(stream), "".join(c.choices[0].delta.content or "" for c in stream)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stream_that_fails_before_any_chunk_is_retried_then_falls_back(mode, waits, monkeypatch):
    """HTTP 200, then a broken event before any token: nothing reached the caller, so it is a
    failed attempt (retried, then the fallback), and the answer streams whole, decision first."""
    monkeypatch.setattr(litellm, "suppress_debug_info", True)
    run = _streamed if mode == "sync" else lambda router: asyncio.run(_astreamed(router))
    with FaultServer(fault_rate=0.0) as server:
        router = _fault_router(server, attempts=2)
        server.faults.extend(["malformed"])
        d, text = run(router)
        assert (d.tier, d.attempts, d.errors) == ("primary", 2, ["primary: MidStreamFallbackError"])
        assert text == "answer to: What is the capital of France?"
        server.faults.extend(["malformed", "malformed"])
        d, text = run(router)
        assert (d.tier, d.attempts, d.fallbacks_used) == ("backup", 3, ["backup"])
        assert text == "answer to: What is the capital of France?"
    assert len(server.requests) == 5


def test_a_stream_that_breaks_after_its_first_chunk_is_the_callers_error(monkeypatch):
    """Once a token is out, the stream is not retried (the caller would see it twice)."""
    monkeypatch.setattr(litellm, "suppress_debug_info", True)
    with FaultServer(fault_rate=0.0) as server:
        server.faults.extend(["midway"])
        stream = _fault_router(server).completion(messages=QUESTION, stream=True)
        assert introroute.decision(stream).attempts == 1
        with pytest.raises(TYPED_ERRORS):
            list(stream)
    assert len(server.requests) == 1


def test_a_stream_with_no_chunk_read_ahead_stays_ended():
    """An empty stream read ahead ends for the caller, sync or async, without asking LiteLLM's
    wrapper again (its state after the end is not ours to rely on)."""
    from litellm import CustomStreamWrapper

    from introroute.router.decision import aread_ahead, read_ahead

    class Empty(CustomStreamWrapper):
        def __init__(self) -> None:  # no LiteLLM state: only the end of the stream is needed
            self._hidden_params, self.asked = {}, 0

        def __next__(self):
            self.asked += 1
            raise StopIteration

        async def __anext__(self):
            self.asked += 1
            raise StopAsyncIteration

    stream = read_ahead(Empty())
    assert list(stream) == [] and list(stream) == [] and stream.asked == 1

    async def drained() -> list:
        stream = await aread_ahead(Empty())
        return [[c async for c in stream], [c async for c in stream], stream.asked]

    assert asyncio.run(drained()) == [[], [], 1]


def test_retry_after_parsing():
    from introroute.router.dispatch import retry_after_s

    class Err(Exception):
        def __init__(self, headers):
            self.litellm_response_headers = headers

    assert retry_after_s(Err({"retry-after": "2"})) == 2.0
    assert retry_after_s(Err({"retry-after-ms": "150"})) == 0.15
    assert retry_after_s(Err({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0  # in the past
    assert retry_after_s(Err({"retry-after": "soon"})) is None
    assert retry_after_s(Err({"retry-after": "-1"})) is None
    assert retry_after_s(Exception()) is None
