"""gatekeeper.backend: one choice of where the scores come from, and the fields each backend reads."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import httpx
import pytest
from router_support import FakeGatekeeper, ScoresOnly, router_config

from introroute.errors import ConfigError
from introroute.router import Router
from introroute.router.backends import BACKENDS, Backend, register_backend
from introroute.router.config import GatekeeperConfig, load_config
from introroute.router.gatekeeping import Gatekeeping
from introroute.router.remote import RemoteGatekeeping

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
REMOTE_TIERS = [
    {"name": "small", "target": "self", "litellm_params": {"model": "openai/s", "mock_response": "small"}},
    {"name": "large", "target": "gpt-4", "litellm_params": {"model": "openai/l", "mock_response": "large"}},
]


# -- factories a config names as backend: "test_backends:<name>" -------------------------------------


def fake() -> FakeGatekeeper:
    return FakeGatekeeper(score_spec={"self": 0.9, "gpt-4": 0.95})


def scores_only() -> ScoresOnly:
    return ScoresOnly({"self": 0.2, "gpt-4": 0.9})


class AsyncFake(ScoresOnly):
    """A service client: its own async path, so the router awaits it without a worker thread."""

    async def ascores(self, messages: Any) -> dict[str, float]:
        return self.scores(messages)


def async_fake() -> AsyncFake:
    return AsyncFake({"self": 0.9, "gpt-4": 0.9})


def wrong_heads() -> FakeGatekeeper:
    return FakeGatekeeper(score_spec={"other": 0.5})


NOT_CALLABLE = 3


def broken() -> FakeGatekeeper:
    raise RuntimeError("no model here")


# -- which backend a section means ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "backend"),
    [
        ({}, "local"),
        ({"url": "http://127.0.0.1:1"}, "http"),
        ({"backend": "http", "url": "http://127.0.0.1:1"}, "http"),
        ({"backend": "llama_cpp", "url": "http://127.0.0.1:1", "export": "x"}, "llama_cpp"),
        ({"backend": "pkg.mod:make"}, "pkg.mod:make"),
    ],
)
def test_backend_is_named_or_implied_by_the_older_spelling(section, backend):
    assert GatekeeperConfig(**section).backend == backend


def test_engine_still_means_llama_cpp_with_a_deprecation(caplog):
    with pytest.warns(DeprecationWarning, match="backend: llama_cpp"):
        config = GatekeeperConfig(engine="llama_cpp", url="http://127.0.0.1:1", export="x")
    assert "gatekeeper.engine is deprecated" in caplog.text  # also logged: YAML users see it
    assert config.backend == "llama_cpp" and config.backend_info.generates
    with pytest.raises(ValueError, match="contradicts backend 'http'"):
        GatekeeperConfig(engine="llama_cpp", backend="http", url="http://127.0.0.1:1", export="x")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"backend": "vllm"},
            r"'vllm': expected one of \['http', 'llama_cpp', 'local'\] or 'module:factory'",
        ),
        ({"backend": "http"}, "backend http needs url"),
        ({"backend": "local", "url": "http://127.0.0.1:1"}, "url is read by backend http or llama_cpp"),
        ({"api_key": "k"}, "api_key is read by backend http or llama_cpp"),
        ({"url": "http://127.0.0.1:1", "export": "x"}, "export is read by backend llama_cpp"),
        ({"url": "http://127.0.0.1:1", "device": "cpu"}, r"\['device'\] configure the model of a local"),
        ({"backend": "pkg:make", "adapter": "a"}, "backend pkg:make owns its model"),
        ({"backend": "http", "url": "http://127.0.0.1:1", "timeout_ms": "auto"}, "auto measures"),
    ],
)
def test_a_field_of_another_backend_is_named(section, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"tiers": REMOTE_TIERS, "gatekeeper": section})


# -- module:factory -----------------------------------------------------------------------------------


def test_a_factory_backend_is_built_once_and_serves_the_local_tier():
    router = Router.from_dict(router_config(gatekeeper={"backend": "test_backends:fake"}))
    try:
        assert isinstance(router._gatekeeping, Gatekeeping)
        assert not isinstance(router._gatekeeping, RemoteGatekeeping)
        decision = router.route(QUESTION)
        assert (decision.tier, decision.scores) == ("local", {"self": 0.9, "gpt-4": 0.95})
        assert router.completion(messages=QUESTION).choices[0].message.content
    finally:
        router.close()


def test_a_factory_scorer_with_ascores_is_awaited_without_a_worker():
    def workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("introroute")}

    before = workers()
    config = {"tiers": REMOTE_TIERS, "gatekeeper": {"backend": "test_backends:async_fake"}}
    router = Router.from_dict(config)
    try:
        assert isinstance(router._gatekeeping, RemoteGatekeeping)
        assert router.route(QUESTION).tier == "small"
        assert workers() <= before  # no micro-batcher thread for a service that batches itself
    finally:
        router.close()


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("test_backends:scores_only", "cannot generate"),
        ("test_backends:wrong_heads", "'self'"),
        ("test_backends:missing", "cannot import"),
        ("no_such_module_anywhere:make", "cannot import"),
        ("test_backends:NOT_CALLABLE", "not a callable"),
        ("test_backends:broken", "the factory raised RuntimeError: no model here"),
    ],
)
def test_a_factory_that_cannot_serve_the_config_is_a_config_error(factory, message):
    with pytest.raises(ConfigError, match=message):
        Router.from_dict(router_config(gatekeeper={"backend": factory}))


# -- the registry --------------------------------------------------------------------------------------


def test_a_registered_backend_is_chosen_by_name(monkeypatch):
    canned = Backend("canned", frozenset(), lambda config: fake(), generates=True)
    monkeypatch.setitem(BACKENDS, "canned", canned)
    router = Router.from_dict(router_config(gatekeeper={"backend": "canned"}))
    try:
        assert router.route(QUESTION).scores == {"self": 0.9, "gpt-4": 0.95}
    finally:
        router.close()
    with pytest.raises(ValueError, match="would read as module:factory"):
        register_backend(Backend("pkg:thing", frozenset(), lambda config: fake()))


def test_llama_cpp_backend_sends_its_api_key(tiny_lm, tmp_path):
    import json

    from introroute.router.llama_cpp import LlamaCppGatekeeper

    _, tokenizer = tiny_lm
    tokenizer.add_tokens(["[INTRO]"], special_tokens=True)
    tokenizer.save_pretrained(tmp_path)
    intro = tokenizer.convert_tokens_to_ids("[INTRO]")
    targets = {"self": {"positive": 10, "negative": 11, "bias": 0.0}}
    meta = {"format": "gguf-alora", "targets": targets, "intro_token_ids": [intro], "head": "verbalised"}
    (tmp_path / "introroute_gguf.json").write_text(json.dumps(meta))
    seen: list[str | None] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if json.loads(request.content).get("n_probs"):
            probs = [{"id": 10, "prob": 0.5}, {"id": 11, "prob": 0.5}]
            return httpx.Response(
                200, json={"id_slot": 0, "completion_probabilities": [{"top_probs": probs}]}
            )
        return httpx.Response(200, json={"content": "paris", "tokens": [5], "stop_type": "eos"})

    config = GatekeeperConfig(
        backend="llama_cpp", url="http://127.0.0.1:9", export=str(tmp_path), api_key="s3"
    )
    built = config.backend_info.build(config)
    assert isinstance(built, LlamaCppGatekeeper) and "s3" not in repr(built)
    gk = LlamaCppGatekeeper(
        "http://127.0.0.1:9", tmp_path, api_key=config.api_key, transport=httpx.MockTransport(server)
    )
    gk.generate_from(gk.prefill(QUESTION), max_new_tokens=2)
    assert seen == ["Bearer s3", "Bearer s3"]  # the score request and the answer


def test_the_old_client_module_still_imports_with_a_deprecation():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n    import introroute.server.client\nexcept DeprecationWarning as w:\n    print(w)\n"
        "warnings.simplefilter('ignore')\n"
        "from introroute.server.client import RemoteScorer\n"
        "from introroute.router.remote import RemoteScorer as New\n"
        "assert RemoteScorer is New"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "moved to introroute.router.remote" in done.stdout


def test_a_factory_router_scores_every_concurrent_caller_threads_and_asyncio():
    """32 threads and 32 coroutines on one factory-built router: every call scored, none shed."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    router = Router.from_dict(router_config(gatekeeper={"backend": "test_backends:fake"}))
    try:
        with ThreadPoolExecutor(32) as pool:
            threaded = list(pool.map(lambda _: router.route(QUESTION), range(32)))

        async def many() -> list[Any]:
            return await asyncio.gather(*(router.aroute(QUESTION) for _ in range(32)))

        awaited = asyncio.run(many())
        for decision in threaded + awaited:
            assert decision.fail_safe_reason is None and decision.scores == {"self": 0.9, "gpt-4": 0.95}
    finally:
        router.close()
