"""introroute as LiteLLM's complexity-router classifier plugin, in process (``litellm.Router``): the
tier it picks is the deployment that answers, visible in ``_hidden_params`` and in LiteLLM's own
routing decision (``router_model_name``, ``routed_model``); failures decline to LiteLLM's
``fallback_tier``; the module-level instances LiteLLM resolves by dotted path."""

from __future__ import annotations

import asyncio
import copy

import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger
from router_support import FakeGatekeeper

from introroute.errors import ConfigError
from introroute.integrations import litellm_complexity
from introroute.integrations.litellm_complexity import IntrorouteClassifier, MessageGuard, check_messages
from introroute.router import Router

TIER_HEADER = "x-litellm-complexity-router-tier"
CAUSE_HEADER = "x-litellm-complexity-router-cause"


def _scores(messages) -> dict[str, float]:
    text = " ".join(str(m.get("content")) for m in messages)
    return {"self": 0.1 if "hard" in text else 0.9, "gpt-4": 0.9}


def _introroute(gatekeeper=None) -> Router:
    return Router.from_dict(
        {
            "name": "plugin",
            "tiers": [
                {"name": "cheap", "target": "self", "litellm_params": {"model": "openai/gpt-4o-mini"}},
                {"name": "strong", "target": "gpt-4", "litellm_params": {"model": "openai/gpt-4o"}},
            ],
            "policy": {"type": "threshold", "params": {"tau": 0.5}},
            "fail_safe": "strong",
        },
        gatekeeper=gatekeeper or FakeGatekeeper(_scores),
    )


def _litellm_router(plugin: IntrorouteClassifier) -> litellm.Router:
    def deployment(name: str, model: str) -> dict:
        return {
            "model_name": name,
            "litellm_params": {"model": model, "api_key": "x", "mock_response": model},
        }

    complexity = {
        "classifier_type": "custom",
        "classifier_plugin": plugin,
        "fallback_tier": "strong",
        "tiers": {"cheap": "cheap-model", "strong": "strong-model"},
    }
    return litellm.Router(
        model_list=[
            {
                "model_name": "smart",
                "litellm_params": {
                    "model": "auto_router/complexity_router",
                    "complexity_router_config": complexity,
                },
            },
            deployment("cheap-model", "openai/fake-cheap"),
            deployment("strong-model", "openai/fake-strong"),
        ]
    )


class RoutingDecisions(CustomLogger):
    """Captures LiteLLM's routing decision from each call's standard logging payload."""

    def __init__(self) -> None:
        super().__init__()
        self.decisions: list[dict] = []

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time) -> None:
        # Only calls that carry a routing decision: LiteLLM's logging worker may still deliver
        # success events of earlier tests' calls to whatever callbacks are registered now.
        payload = kwargs.get("standard_logging_object") or {}
        if decision := (payload.get("metadata") or {}).get("routing_decision"):
            self.decisions.append(decision)


async def _ask(router: litellm.Router, text: str):
    return await router.acompletion(model="smart", messages=[{"role": "user", "content": text}])


def test_the_plugins_tier_answers_and_litellm_records_it(monkeypatch):
    decisions = RoutingDecisions()
    monkeypatch.setattr(litellm, "callbacks", [decisions])
    router = _litellm_router(IntrorouteClassifier(_introroute()))

    async def run():
        easy, hard = await _ask(router, "what is 2+2?"), await _ask(router, "a hard proof")
        for _ in range(100):  # success callbacks run as tasks after the response
            if len(decisions.decisions) == 2:
                break
            await asyncio.sleep(0.02)
        return easy, hard

    easy, hard = asyncio.run(run())
    assert easy.choices[0].message.content == "openai/fake-cheap"
    assert hard.choices[0].message.content == "openai/fake-strong"
    assert easy._hidden_params["additional_headers"][TIER_HEADER] == "cheap"
    assert hard._hidden_params["additional_headers"][TIER_HEADER] == "strong"
    assert hard._hidden_params["additional_headers"][CAUSE_HEADER] == "classifier_plugin"
    assert hard._hidden_params["litellm_model_name"] == "openai/fake-strong"
    by_tier = {d["tier"]: d for d in decisions.decisions}
    assert by_tier["strong"]["router_model_name"] == "smart"
    assert (
        by_tier["strong"]["routed_model"] == "strong-model"
        and by_tier["cheap"]["routed_model"] == "cheap-model"
    )


@pytest.mark.parametrize("decline", [True, False])
def test_a_failing_gatekeeper_declines_to_litellms_fallback_tier_or_uses_introroutes(decline):
    broken = FakeGatekeeper(fail=RuntimeError("model not loaded"))
    router = _litellm_router(IntrorouteClassifier(_introroute(broken), decline_on_failure=decline))
    response = asyncio.run(_ask(router, "what is 2+2?"))
    headers = response._hidden_params["additional_headers"]
    assert headers[TIER_HEADER] == "strong"  # LiteLLM's fallback_tier, or introroute's fail_safe
    assert headers[CAUSE_HEADER] == ("classifier_fallback" if decline else "classifier_plugin")


def test_structured_content_parts_are_scored():
    gatekeeper = FakeGatekeeper(_scores)
    router = _litellm_router(IntrorouteClassifier(_introroute(gatekeeper)))
    parts = [{"type": "text", "text": "a hard one"}, {"type": "text", "text": "with parts"}]
    response = asyncio.run(router.acompletion(model="smart", messages=[{"role": "user", "content": parts}]))
    assert response._hidden_params["additional_headers"][TIER_HEADER] == "strong"
    assert gatekeeper.seen  # the gatekeeper saw the request


def test_copies_are_the_same_plugin():
    """LiteLLM deep-copies its model_list: a copy must not get its own gatekeeper and budget."""
    plugin = IntrorouteClassifier(_introroute())
    assert copy.deepcopy({"plugin": plugin})["plugin"] is plugin and copy.copy(plugin) is plugin


def test_module_classifier_loads_introroute_config_at_resolution(tmp_path, monkeypatch):
    path = tmp_path / "router.yaml"
    path.write_text(
        "name: from-env\ntiers:\n  - name: only\n    target: self\n    litellm_params: {model: openai/x}\n"
    )
    monkeypatch.setenv("INTROROUTE_CONFIG", str(path))
    monkeypatch.delitem(litellm_complexity.__dict__, "classifier", raising=False)
    plugin = litellm_complexity.classifier
    assert isinstance(plugin, IntrorouteClassifier) and plugin.router().name == "from-env"
    assert litellm_complexity.classifier is plugin  # resolved once
    monkeypatch.delitem(litellm_complexity.__dict__, "classifier")
    path.write_text("name: broken\ntiers: []\n")
    monkeypatch.setenv("INTROROUTE_CONFIG", str(tmp_path / "elsewhere.yaml"))
    with pytest.raises(ConfigError, match="no such config file"):
        _ = litellm_complexity.classifier  # the proxy fails to start, naming the file
    with pytest.raises(AttributeError):
        _ = litellm_complexity.no_such_thing


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([], "messages must contain at least one message, got []"),
        ("hi", "messages must be a list of message objects, got str"),
        ([{"role": "user", "content": "ok"}, "x"], "messages[1] must be an object"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role is 'wizard'"),
        (
            [{"role": "user", "content": 5}],
            "messages[0].content must be a string or a list of parts, got int",
        ),
        ([{"role": "user", "content": [7]}], "messages[0].content[0] must be a content-part object, got int"),
        ([{"role": "system", "content": "be brief"}], None),  # legal for OpenAI: never refused
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], None),
    ],
)
def test_message_guard_rejects_only_what_every_provider_rejects(messages, problem):
    from fastapi import HTTPException

    assert (problem is None) == (check_messages(messages) is None)
    if problem is None:
        return
    assert problem in check_messages(messages)
    guard = MessageGuard()
    with pytest.raises(HTTPException) as caught:
        asyncio.run(guard.async_pre_call_hook(None, None, {"messages": messages}, "acompletion"))
    assert caught.value.status_code == 400 and problem in caught.value.detail["error"]
    data = {"input": "embeddings carry no messages"}
    assert asyncio.run(guard.async_pre_call_hook(None, None, data, "aembedding")) is data


def test_the_proxy_examples_agree_on_tier_names():
    """The plugin returns introroute tier names; the proxy config must map each to a model group."""
    import yaml
    from server_support import ROOT

    from introroute.router import load_config

    router = load_config(ROOT / "examples" / "proxy_router.yaml")
    proxy = yaml.safe_load((ROOT / "examples" / "litellm_proxy_config.yaml").read_text())
    complexity = proxy["model_list"][0]["litellm_params"]["complexity_router_config"]
    groups = {m["model_name"] for m in proxy["model_list"]}
    assert set(complexity["tiers"]) == {t.name for t in router.tiers}
    assert (
        set(complexity["tiers"].values()) <= groups and complexity["fallback_tier"] == router.fail_safe_tier
    )
    assert router.gatekeeper is not None and router.gatekeeper.url is not None  # the proxy stays torch-free
    assert proxy["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
