"""Configs that cannot stall, crash or silently misroute (issue 11, items 3, 5, 7, 8).

YAML alias bombs and self-referencing aliases are a fast ``ConfigError``; a tier target that is
not a head of the adapter, a model LiteLLM cannot resolve and an unwritable routing log fail when
the config is loaded or the router built, not per request; hypothesis feeds arbitrary configs and
YAML text to ``load_config``, which must answer with a config or a ``ConfigError``, nothing else.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from router_support import FakeGatekeeper

from introroute.errors import ConfigError
from introroute.router import Router, RouterConfig, load_config
from introroute.router.config import MAX_YAML_NODES

ROOT = Path(__file__).resolve().parents[1]
PACKAGED_HEADS = ["self", "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]
LARGE = {"model": "openai/gpt-4o", "mock_response": "large answer"}


def _two_tier(target: str = "gpt-4-1106-preview", **extra) -> dict:
    return {
        "gatekeeper": {"base": "smollm2-135m-instruct"},
        "tiers": [
            {"name": "local", "target": "self"},
            {"name": "large", "target": target, "litellm_params": LARGE},
        ],
        **extra,
    }


# -- YAML ------------------------------------------------------------------------------------


def _alias_bomb(levels: int = 7, fan_out: int = 10) -> str:
    """``fan_out ** levels`` leaves (10^7) in about 500 bytes."""
    lines = ["a0: &a0 [" + ", ".join(["x"] * fan_out) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan_out) + "]")
    lines.append(f"tiers: [{{name: local, target: self, extra: *a{levels - 1}}}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_rejected_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    assert path.stat().st_size < 700
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"expands to more than {MAX_YAML_NODES} values"):
        load_config(path)
    print(f"alias bomb of {path.stat().st_size} bytes rejected in {time.perf_counter() - start:.3f} s")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: &a [*a]\ntiers: []\n", "contains itself"),
        ("tiers: &t [{name: local, target: self, x: *t}]\n", "contains itself"),
        ("tiers: " + "[" * 200 + "]" * 200 + "\n", "nested more than"),
        ("tiers: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than"),  # stopped while parsing
    ],
    ids=["self-alias", "tier-alias", "deep", "very-deep"],
)
def test_recursive_or_deep_yaml_is_a_config_error(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_cyclic_or_deep_mappings_are_a_config_error():
    cyclic: dict = {"tiers": []}
    cyclic["tiers"].append({"name": "local", "target": "self", "x": cyclic})
    with pytest.raises(ConfigError, match="contains itself"):
        load_config(cyclic)
    deep: list = []
    for _ in range(3000):
        deep = [deep]
    with pytest.raises(ConfigError, match="nested more than"):
        load_config({"tiers": deep})


def test_unreadable_files_are_config_errors(tmp_path):
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)  # a directory


# -- targets and models ----------------------------------------------------------------------


@pytest.mark.parametrize("target", ["slef", "gpt-3.5-turbo-1106"])
def test_a_target_without_a_head_fails_at_load_naming_the_heads(target):
    with pytest.raises(ConfigError) as err:
        load_config(_two_tier(target))
    message = str(err.value)
    assert f"tiers[1].target: {target!r} is not a head of adapter" in message
    assert str(PACKAGED_HEADS) in message


def test_an_injected_gatekeeper_is_checked_against_its_own_heads():
    with pytest.raises(ConfigError, match=r"'gpt-4' is not a head of the gatekeeper FakeGatekeeper"):
        Router.from_dict(_two_tier("gpt-4"), gatekeeper=FakeGatekeeper({"self": 0.5, "gpt-5": 0.5}))
    Router.from_dict(_two_tier("gpt-4"), gatekeeper=FakeGatekeeper({"self": 0.5, "gpt-4": 0.5}))


def test_a_missing_adapter_loads_for_offline_use_but_cannot_route(tmp_path):
    config = load_config({**_two_tier("anything"), "gatekeeper": {"adapter": str(tmp_path / "todo")}})
    with pytest.raises(ConfigError, match="no adapter at"):
        Router(config)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"introroute\.json is missing"):
        load_config({**_two_tier(), "gatekeeper": {"adapter": str(tmp_path / "empty")}})
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "introroute.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(ConfigError, match="cannot read the heads"):
        load_config({**_two_tier(), "gatekeeper": {"adapter": str(broken)}})


SHIPPED = [*sorted((ROOT / "policies").glob("*.yaml")), ROOT / "examples" / "openai_and_local.yaml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_preset_uses_only_heads_it_has(path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-shipped")
    config = load_config(path)
    if config.gatekeeper.adapter is None:  # the packaged adapter
        assert {t.target for t in config.tiers} <= set(PACKAGED_HEADS)
        Router(config)  # builds without loading the model (lazy), heads checked again
    else:  # routerbench_3tier names an adapter to train first: fine offline, refused live
        with pytest.raises(ConfigError, match="no adapter at 'adapters/routerbench'"):
            Router(config)


@pytest.mark.parametrize(
    ("model", "hint"),
    [("gtp-4o", "did you mean 'gpt-4o'?"), ("opnai/gpt-4o", "did you mean 'openai/gpt-4o'?")],
)
def test_a_model_litellm_cannot_resolve_fails_at_load_with_the_cause(model, hint):
    config = _two_tier()
    config["tiers"][1]["litellm_params"] = {"model": model}
    with pytest.raises(ConfigError) as err:
        load_config(config)
    message = str(err.value)
    assert f"tiers[1].litellm_params: LiteLLM cannot resolve model {model!r}" in message
    assert "LLM Provider NOT provided" in message and hint in message


def test_a_model_its_provider_does_not_list_warns_at_load(caplog):
    """``openai/gtp-4o`` resolves (the prefix names the provider) but is no OpenAI model LiteLLM
    knows: a warning with the likely name. Not an error: a model newer than the installed LiteLLM
    is unlisted too, and an own endpoint (``api_base``) serves its own names."""
    import logging

    config = _two_tier()
    with caplog.at_level(logging.WARNING, logger="introroute.router.config"):
        for params in (
            {"model": "openai/gtp-4o"},
            {"model": "openai/gpt-4o"},
            {"model": "openai/my-finetune", "api_base": "http://127.0.0.1:9/v1"},
            {"model": "anthropic/claude-sonet-4-5"},
        ):
            config["tiers"][1]["litellm_params"] = params
            load_config(config)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2, warned
    assert (
        "'openai/gtp-4o': 'gtp-4o' is not one of LiteLLM's openai models; did you mean 'openai/gpt-4o'?"
        in warned[0]
    )
    assert (
        "'anthropic/claude-sonet-4-5'" in warned[1]
        and "did you mean 'anthropic/claude-sonnet-4-5" in warned[1]
    )


def test_custom_providers_resolve():
    config = _two_tier()
    config["tiers"][1]["litellm_params"] = {"model": "introroute/other-router"}
    load_config(config)


# -- routing log -----------------------------------------------------------------------------


def test_an_unwritable_routing_log_fails_at_build(tmp_path):
    config = {**_two_tier(), "routing_log": str(tmp_path)}  # a directory
    with pytest.raises(ConfigError, match="not a regular file"):
        Router.from_dict(config, gatekeeper=FakeGatekeeper({"self": 0.9, "gpt-4-1106-preview": 0.9}))
    blocker = tmp_path / "file"
    blocker.write_text("")
    config["routing_log"] = str(blocker / "sub" / "log.jsonl")  # below a regular file
    with pytest.raises(ConfigError, match="is not a directory"):
        Router.from_dict(config, gatekeeper=FakeGatekeeper({"self": 0.9, "gpt-4-1106-preview": 0.9}))
    config["routing_log"] = str(tmp_path / "new" / "dir" / "log.jsonl")  # creatable: fine, not created
    Router.from_dict(config, gatekeeper=FakeGatekeeper({"self": 0.9, "gpt-4-1106-preview": 0.9}))
    assert not (tmp_path / "new").exists()


# -- property tests --------------------------------------------------------------------------

KEYS = [
    "name", "gatekeeper", "tiers", "policy", "retries", "fallbacks", "fail_safe", "routing_log",
    "target", "litellm_params", "model", "api_key", "api_base", "timeout", "price", "latency",
    "modalities", "type", "params", "tau", "attempts", "backoff", "errors", "base", "adapter",
    "calibration", "extra_headers", "input_per_1m", "ttft_ms", "local", "large", "self",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["self", "local", "large", "openai/gpt-4o", "gtp-4o", "threshold", "${HOME}", "text"]),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=6), st.integers()), inner, max_size=5
        ),
    ),
    max_leaves=25,
)
tier = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["local", "large", "x y"]),
        "target": st.sampled_from([*PACKAGED_HEADS, "slef"]),
    },
    optional={"litellm_params": values | st.just(LARGE), "modalities": values, "price": values},
)
configs = st.fixed_dictionaries(
    {"tiers": st.lists(tier, max_size=3) | values},
    optional={k: values for k in ["name", "gatekeeper", "policy", "retries", "fallbacks", "fail_safe"]},
)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(configs)
def test_any_mapping_loads_or_is_a_config_error(data):
    try:
        config = load_config(data)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(config, RouterConfig)


@PROPERTY
@given(st.one_of(values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)), st.text(max_size=200)))
def test_any_yaml_text_loads_or_is_a_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "router.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(ConfigError):  # anything else fails the test
        load_config(path)
