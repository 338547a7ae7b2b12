"""No key leaks (issue 11, item 2): every output channel is grepped for every secret the config set.

Secrets: an API key, an ``extra_headers`` bearer token, a signature in the ``api_base`` query
string. The provider (a loopback server) echoes the key, the header and the URL back in a 401, as
real providers do; the gatekeeper raises an error quoting the key. Channels: decisions (object and
hidden dict), the routing log, exceptions with their whole chains (``traceback.format_exception``
and every ``__cause__``/``__context__``), reprs and dumps of the router and its config, every log
record at DEBUG (introroute, LiteLLM, openai, httpx), and whatever reached stdout/stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback

import pytest
from fault_server import FaultServer
from router_support import FakeGatekeeper

import introroute
from introroute.errors import ConfigError, ProviderError, RoutingError
from introroute.router import Router, load_config

KEY = "sk-leaktest-0123456789abcdef"
HEADER_TOKEN = "hdr-leaktest-token-5150"
QUERY_TOKEN = "qry-leaktest-sig-8086"
SECRETS = (KEY, HEADER_TOKEN, QUERY_TOKEN)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LOW = {"self": 0.1, "gpt-4": 0.9}


def _config(url: str, log_path) -> dict:
    remote = {
        "api_base": f"{url}?sig=${{LEAK_QUERY}}",
        "api_key": "${LEAK_KEY}",
        "extra_headers": {"X-Token": "${LEAK_HEADER}"},
        "timeout": 5,
    }
    return {
        "name": "leak",
        "tiers": [
            {"name": "local", "target": "self"},
            {"name": "primary", "target": "gpt-4", "litellm_params": {"model": "openai/p", **remote}},
            {"name": "backup", "target": "gpt-4", "litellm_params": {"model": "openai/b", **remote}},
        ],
        "retries": {"attempts": 2, "backoff": {"initial_s": 0, "jitter_s": 0}},
        "fallbacks": {"primary": "backup"},
        "fail_safe": "primary",
        "routing_log": str(log_path),
    }


def _exception_texts(exc: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(exc)), str(exc), repr(exc)]
    seen: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and all(link is not s for s in seen):
        seen.append(link)
        texts += [str(link), repr(link), repr(getattr(link, "__dict__", {}))]
        link = link.__cause__ or link.__context__
    return texts


@pytest.fixture
def leak_env(monkeypatch):
    monkeypatch.setenv("LEAK_KEY", KEY)
    monkeypatch.setenv("LEAK_HEADER", HEADER_TOKEN)
    monkeypatch.setenv("LEAK_QUERY", QUERY_TOKEN)


@pytest.fixture(params=[False, True], ids=["quiet", "set_verbose"])
def litellm_verbose(request, monkeypatch):
    """With ``litellm.set_verbose = True`` LiteLLM print()s upstream error bodies to stdout."""
    import litellm

    logger = logging.getLogger("LiteLLM")
    level = logger.level
    monkeypatch.setattr(litellm, "set_verbose", request.param)
    yield request.param
    logger.setLevel(level)
    if request.param:  # introroute turned the prints into the (masked) DEBUG log
        assert litellm.set_verbose is False


def test_no_secret_reaches_any_output_channel(leak_env, litellm_verbose, tmp_path, caplog, capfd):
    log_path = tmp_path / "routing.jsonl"
    caplog.set_level(logging.DEBUG)
    for name in ("LiteLLM", "openai", "openai._base_client", "httpx", "httpcore", "introroute"):
        caplog.set_level(logging.DEBUG, logger=name)
    emitted: list[str] = []
    with FaultServer(fault_rate=0.0) as server:
        echoing = FakeGatekeeper(LOW, fail=RuntimeError(f"leaked {KEY} and Bearer {HEADER_TOKEN}"))
        router = Router.from_dict(_config(server.url, log_path), gatekeeper=echoing)

        answered = router.completion(messages=QUESTION)  # fail-safe tier, the secrets in use
        assert answered.choices[0].message.content.startswith("answer to:")
        seen = server.headers[-1]
        assert seen["authorization"] == f"Bearer {KEY}" and seen["x-token"] == HEADER_TOKEN

        # primary and backup both quote the credentials back (a 401 is not retried)
        server.faults.extend(["echo401"] * 2)
        with pytest.raises(RoutingError) as sync_error:
            router.completion(messages=QUESTION)
        server.faults.extend(["echo401"] * 2)
        with pytest.raises(RoutingError) as async_error:
            asyncio.run(router.acompletion(messages=QUESTION))
        stream = router.completion(messages=QUESTION, stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in stream)
        assert streamed.startswith("answer to:")

        for error in (sync_error.value, async_error.value):
            assert isinstance(error.__cause__, ProviderError) and error.__cause__.status_code == 401
            assert error.__context__ is None  # the raw provider error is not even the context
            assert "Incorrect API key provided: Bearer ***" in str(error.__cause__)
            emitted += _exception_texts(error)

    decision = introroute.decision(answered)
    assert decision is not None and "leaked ***" in (decision.fail_safe_reason or "")
    emitted += [
        json.dumps(answered._hidden_params["introroute"]),
        decision.model_dump_json(),
        introroute.decision(stream).model_dump_json(),
        log_path.read_text(),
        repr(router),
        repr(router.config),
        str(router.config),
        str(router.config.model_dump()),
        router.config.model_dump_json(),
        repr(router.config.tiers[1].litellm_params),
        caplog.text,
        "\n".join(r.getMessage() for r in caplog.records),
    ]
    out, err = capfd.readouterr()
    emitted += [out, err]
    assert len(log_path.read_text().splitlines()) == 4  # one record per call
    assert any("X-Token" in r.getMessage() for r in caplog.records), "LiteLLM's DEBUG log was captured"
    for text in emitted:
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked into: {text[:300]!r}"


def test_config_errors_and_reprs_never_show_secrets(leak_env, tmp_path):
    url = "http://127.0.0.1:9/v1"  # never called
    config = _config(url, tmp_path / "log.jsonl")
    config["tiers"][1]["litellm_params"]["api_kee"] = "${LEAK_KEY}"  # a typo next to the secrets
    config["tiers"][2]["litellm_params"]["model"] = "${LEAK_KEY}"  # a secret where a model goes
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert "api_kee" in str(err.value) and "cannot resolve" in str(err.value)
    for secret in SECRETS:
        assert secret not in str(err.value)

    good = _config(url, tmp_path / "log.jsonl")
    loaded = load_config(good)
    params = loaded.tiers[1].litellm_params
    shown = [repr(loaded), str(loaded.model_dump()), loaded.model_dump_json(), repr(params)]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text
    assert "127.0.0.1" in repr(params.api_base)  # the endpoint stays recognisable
    revealed = params.call_kwargs()  # ...while LiteLLM still gets every credential
    assert revealed["api_key"] == KEY and revealed["extra_headers"] == {"X-Token": HEADER_TOKEN}
    assert revealed["api_base"].endswith(f"?sig={QUERY_TOKEN}")
    assert {KEY, HEADER_TOKEN, QUERY_TOKEN} <= loaded.secrets()


def test_credential_shapes_are_masked_even_when_unknown():
    from introroute.router.secrets import Redactor

    redact = Redactor().redact_text
    assert redact("Authorization: Bearer abc.def-123") == "Authorization: Bearer ***"
    assert redact("GET https://h/v1?key=AIzaXYZ&x=1") == "GET https://h/v1?key=***&x=1"
    assert redact("https://user:hunter22@h/v1") == "https://user:***@h/v1"
    assert redact("http://127.0.0.1:8000/v1 max_tokens=5") == "http://127.0.0.1:8000/v1 max_tokens=5"
