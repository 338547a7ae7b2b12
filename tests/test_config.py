"""Router config: strict schema, error messages (file, key path, expected), ${ENV}, shipped YAMLs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from router_support import FakeGatekeeper

from introroute.errors import ConfigError
from introroute.router import Router, load_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [*sorted((ROOT / "policies").glob("*.yaml")), ROOT / "examples" / "openai_and_local.yaml"]
SECRET = "sk-very-secret-value-123"

MINIMAL = {
    "tiers": [
        {"name": "local", "target": "self"},
        {
            "name": "large",
            "target": "gpt-4",
            "litellm_params": {"model": "openai/gpt-4o", "api_key": "${TEST_KEY}"},
        },
    ],
}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_load_and_validate(path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    config = load_config(path)  # tier targets checked against the adapter's heads (when it exists)
    assert config.name == path.stem
    assert all(t.target == "self" for t in config.tiers if t.local)
    assert config.gatekeeper is not None  # validated only: the real model is never loaded here
    assert (SECRET in config.secrets()) == (len(config.tiers) > 1)
    fake = FakeGatekeeper({t.target: 0.5 for t in config.tiers})
    Router(config, gatekeeper=fake)  # policy params and tier prices check out


def test_shipped_cost_aware_config_builds_with_catalog_prices(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    fake = FakeGatekeeper(
        {"self": 0.5, "mistralai/Mixtral-8x7B-Instruct-v0.1": 0.5, "gpt-4-1106-preview": 0.5}
    )
    router = Router.from_yaml(ROOT / "policies" / "cost_aware.yaml", gatekeeper=fake)
    mini = router.config.tier("mini").info()
    assert mini.input_per_1m and mini.input_per_1m > 0  # from litellm.model_cost
    assert router.config.tier("local").info().input_per_1m == 0.0


def test_env_substitution_and_secret_tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", SECRET)
    config = load_config(_write(tmp_path, MINIMAL))
    params = config.tiers[1].litellm_params
    assert params.api_key.get_secret_value() == SECRET
    assert SECRET not in repr(config)
    assert params.call_kwargs()["api_key"] == SECRET


def test_unset_env_var_names_file_key_path_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_KEY", raising=False)
    path = _write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert (
        str(err.value) == f"{path}: tiers[1].litellm_params.api_key: environment variable TEST_KEY is not set"
    )


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"fallback": {}}, "fallback: unknown key; expected one of ['audit', 'fail_safe', 'fallbacks',"),
        (
            {"policy": {"type": "threshold", "params": {"tua": 1}}},
            "policy: policy 'threshold' got invalid parameters",
        ),
        (
            {"policy": {"type": "threshold", "params": {"tau": 2}}},
            "policy: tau must be a number between 0.0 and 1.0",
        ),
        ({"policy": {"type": "magic"}}, "policy: unknown policy 'magic'"),
        ({"fallbacks": {"local": "nowhere"}}, "fallbacks.local: 'nowhere' is not another tier"),
        ({"fail_safe": "nowhere"}, "fail_safe: unknown tier 'nowhere'"),
        ({"retries": {"errors": ["Nope"]}}, "retries.errors[0]: 'Nope' is not a litellm exception class"),
        ({"retries": {"attempts": 0}}, "retries.attempts: Input should be greater than or equal to 1"),
        (
            {"gatekeeper": {"timeout": 5}},
            "gatekeeper.timeout: unknown key; expected one of ['adapter', 'api_key', 'backend', 'base',",
        ),
        ({"tiers": []}, "tiers: List should have at least 1 item"),
        (
            {"gatekeeper": {"calibration": {"gpt-4": {"method": "platt", "a": 1}}}},
            "gatekeeper.calibration.gpt-4: method 'platt' takes exactly ['a', 'b']; missing ['b']",
        ),
        (
            {"gatekeeper": {"calibration": {"self": {"method": "isotonic", "x": [0.5, 0.2], "y": [0, 1]}}}},
            "gatekeeper.calibration.self.x: must be strictly increasing",
        ),
        (
            {"gatekeeper": {"calibration": {"self": {"method": "isotonic", "x": [0, 1], "y": [0, 2]}}}},
            "gatekeeper.calibration.self.y[1]: Input should be less than or equal to 1",
        ),
        (
            {"gatekeeper": {"calibration": {"self": {"method": "platt", "a": 1, "b": 0, "slope": 1}}}},
            "gatekeeper.calibration.self.slope: unknown key; expected one of ['a', 'b', 'method', 'x', 'y']",
        ),
        (
            {"gatekeeper": {"calibration": {"gpt4": {"method": "platt", "a": 1, "b": 0}}}},
            "gatekeeper.calibration.gpt4: no tier uses this target; expected one of ['gpt-4', 'self']",
        ),
    ],
)
def test_errors_name_file_key_path_and_expectation(tmp_path, monkeypatch, patch, expected):
    monkeypatch.setenv("TEST_KEY", SECRET)
    path = _write(tmp_path, {**MINIMAL, **patch})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}: {expected}" in str(err.value)


def test_gatekeeper_calibration_loads_from_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", SECRET)
    calibration = {
        "self": {"method": "isotonic", "x": [0.1, 0.9], "y": [0.2, 0.7]},
        "gpt-4-1106-preview": {"method": "platt", "a": 0.5, "b": -0.25},
    }
    tiers = [MINIMAL["tiers"][0], {**MINIMAL["tiers"][1], "target": "gpt-4-1106-preview"}]
    config = load_config(_write(tmp_path, {"tiers": tiers, "gatekeeper": {"calibration": calibration}}))
    stored = config.gatekeeper.calibration
    assert {target: c.model_dump(exclude_none=True) for target, c in stored.items()} == calibration
    assert load_config(MINIMAL).gatekeeper is None  # calibration is optional


def test_tier_errors_and_unknown_litellm_params(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", SECRET)
    tiers = [
        {"name": "local", "target": "self", "pricee": 1},
        {
            "name": "local",
            "target": "gpt-4",
            "litellm_params": {"model": "openai/m", "api_kee": "${TEST_KEY}"},
        },
    ]
    path = _write(tmp_path, {"tiers": tiers})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert f"{path}: tiers[0].pricee: unknown key; expected one of ['latency', 'litellm_params'," in message
    assert f"{path}: tiers[1].litellm_params: unknown LiteLLM parameter(s) ['api_kee']" in message
    assert SECRET not in message  # values are never echoed


def test_duplicate_and_second_local_tier(tmp_path):
    dup = {"tiers": [{"name": "a", "target": "self"}, {"name": "a", "target": "self"}]}
    with pytest.raises(ConfigError, match="tier names must be unique"):
        load_config(dup)
    two_local = {"tiers": [{"name": "a", "target": "self"}, {"name": "b", "target": "self"}]}
    with pytest.raises(ConfigError, match="at most one tier may omit litellm_params"):
        load_config(two_local)


def test_yaml_problems(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiers: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML \(line"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_defaults_and_fallback_lists():
    tiers = [
        {"name": "local", "target": "self"},
        {"name": "large", "target": "gpt-4", "litellm_params": {"model": "openai/m"}},
    ]
    config = load_config({"tiers": tiers, "fallbacks": {"local": "large"}})
    assert config.fail_safe_tier == "large"  # default: the last tier
    assert config.fallbacks == {"local": ["large"]}
    assert config.policy.type == "threshold" and config.retries.attempts == 2


def test_router_needs_a_gatekeeper_for_several_tiers():
    remote = {"target": "x", "litellm_params": {"model": "openai/m"}}
    config = load_config({"tiers": [{"name": "a", **remote}, {"name": "b", **remote}]})
    with pytest.raises(ConfigError, match="gatekeeper: required"):
        Router(config)


def test_gatekeeper_prefix_cache_setting_reaches_the_model(monkeypatch):
    import introroute.gatekeeper

    strong = "gpt-4-1106-preview"  # a head of the shipped adapter, which the config is checked against
    tiers = [
        {"name": "local", "target": "self"},
        {"name": "large", "target": strong, "litellm_params": {"model": "openai/m"}},
    ]
    assert load_config({"tiers": tiers, "gatekeeper": {}}).gatekeeper.prefix_cache is None  # the adapter's
    loaded = []

    def from_pretrained(adapter, **options):
        loaded.append(options)
        return FakeGatekeeper(score_spec={"self": 0.9, strong: 0.95})

    monkeypatch.setattr(introroute.gatekeeper.IntroLM, "from_pretrained", from_pretrained)
    router = Router(load_config({"tiers": tiers, "gatekeeper": {"prefix_cache": False}}))
    router.close()
    assert loaded[0]["prefix_cache"] is False
    remote = {"tiers": tiers[1:], "gatekeeper": {"url": "http://127.0.0.1:1", "prefix_cache": True}}
    with pytest.raises(ConfigError, match=r"\['prefix_cache'\] configure the model of a local gatekeeper"):
        load_config(remote)
