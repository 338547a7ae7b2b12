"""Every built-in policy's contract, the registry, and the scikit-learn-style parameters."""

from __future__ import annotations

import math
from importlib.metadata import EntryPoint

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from introroute.errors import PolicyError
from introroute.policies import Policy, PolicyChoice, RequestContext, TierInfo, build_policy, policy_class
from introroute.policies.budget import BudgetPolicy
from introroute.policies.cost_aware import CostAwarePolicy
from introroute.policies.threshold import ThresholdPolicy

LOCAL = TierInfo("local", "self", local=True, input_per_1m=0.0, output_per_1m=0.0)
MID = TierInfo("mid", "gpt-3.5", input_per_1m=0.5, output_per_1m=1.5)
LARGE = TierInfo("large", "gpt-4", input_per_1m=10.0, output_per_1m=30.0)
TWO = RequestContext(tiers=(LOCAL, LARGE), prompt_tokens=1000)
THREE = RequestContext(tiers=(LOCAL, MID, LARGE), prompt_tokens=1000)


class FixedPolicy(Policy):
    """A user policy loaded by ``module:Class`` path in the registry tests."""

    name = "fixed"

    def __init__(self, tier: str = "large") -> None:
        self.tier = tier

    def decide(self, scores, context):
        return PolicyChoice(self.tier)


# -- threshold ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "tier"), [(0.7, "local"), (0.7000001, "local"), (0.6999999, "large"), (0.0, "large")]
)
def test_threshold_boundary_is_inclusive(p, tier):
    assert ThresholdPolicy(tau=0.7).decide({"self": p}, TWO).tier == tier


def test_threshold_cascades_over_three_tiers_and_last_needs_no_score():
    policy = ThresholdPolicy(tau=0.5)
    assert policy.decide({"self": 0.2, "gpt-3.5": 0.8}, THREE).tier == "mid"
    assert policy.decide({"self": 0.2, "gpt-3.5": 0.3}, THREE).tier == "large"


def test_threshold_names_a_missing_target():
    with pytest.raises(PolicyError, match="'self'"):
        ThresholdPolicy().decide({"gpt-4": 0.9}, TWO)


@pytest.mark.parametrize("tau", [-0.1, 1.5, "high", True])
def test_threshold_rejects_bad_tau(tau):
    with pytest.raises(PolicyError, match="tau"):
        ThresholdPolicy(tau=tau)


# -- cost_aware --------------------------------------------------------------------------------


def _utility(p, tier, lam, ctx=THREE, out=256):
    return p - lam * tier.cost_usd(ctx.prompt_tokens, out)


@given(
    p_local=st.floats(0, 1),
    p_mid=st.floats(0, 1),
    p_large=st.floats(0, 1),
    lam=st.floats(0, 1000),
)
@settings(max_examples=200, deadline=None)
def test_cost_aware_chooses_the_argmax_of_expected_value_minus_cost(p_local, p_mid, p_large, lam):
    scores = {"self": p_local, "gpt-3.5": p_mid, "gpt-4": p_large}
    choice = CostAwarePolicy(lam=lam).decide(scores, THREE)
    utilities = {t.name: _utility(scores[t.target], t, lam) for t in THREE.tiers}
    assert math.isclose(utilities[choice.tier], max(utilities.values()), abs_tol=1e-12)
    assert choice.detail["utility"] == pytest.approx(utilities)


def test_cost_aware_lambda_trades_quality_for_cost():
    scores = {"self": 0.6, "gpt-3.5": 0.8, "gpt-4": 0.95}
    assert CostAwarePolicy(lam=0.0).decide(scores, THREE).tier == "large"  # quality only
    assert CostAwarePolicy(lam=10.0).decide(scores, THREE).tier == "mid"
    assert CostAwarePolicy(lam=1000.0).decide(scores, THREE).tier == "local"  # cost dominates


def test_cost_aware_uses_unscored_p_and_caps_output_tokens_by_max_tokens():
    policy = CostAwarePolicy(lam=10.0, unscored_p=0.5, output_tokens=1000)
    choice = policy.decide(
        {"self": 0.4}, RequestContext(tiers=(LOCAL, LARGE), prompt_tokens=0, max_tokens=10)
    )
    assert choice.detail["p"] == {"local": 0.4, "large": 0.5}
    assert choice.detail["utility"]["large"] == pytest.approx(0.5 - 10.0 * 10 * 30.0 / 1e6)


def test_cost_aware_latency_weight_penalises_slow_tiers():
    slow = TierInfo("slow", "gpt-4", input_per_1m=0, output_per_1m=0, ttft_ms=1000, per_output_token_ms=10)
    ctx = RequestContext(tiers=(LOCAL, slow))
    scores = {"self": 0.8, "gpt-4": 0.9}
    assert CostAwarePolicy(lam=0).decide(scores, ctx).tier == "slow"
    assert CostAwarePolicy(lam=0, latency_weight=0.1).decide(scores, ctx).tier == "local"


def test_cost_aware_requires_prices_at_startup():
    with pytest.raises(PolicyError, match="'mystery' has no price"):
        CostAwarePolicy().check_tiers([LOCAL, TierInfo("mystery", "x")])


# -- budget ------------------------------------------------------------------------------------


@given(
    scores=st.lists(st.floats(0, 1), min_size=1, max_size=300),
    share=st.floats(0, 1),
    window=st.integers(1, 60),
    warmup=st.integers(0, 30),
)
@settings(max_examples=150, deadline=None)
def test_budget_expensive_share_never_exceeds_target_in_any_window(scores, share, window, warmup):
    policy = BudgetPolicy(target_share=share, window=window, tau=0.9, warmup=warmup)
    went_up = [policy.decide({"self": p}, TWO).tier == "large" for p in scores]
    limit = math.floor(share * window + 1e-9)
    for start in range(max(1, len(went_up) - window + 1)):
        assert sum(went_up[start : start + window]) <= limit


def test_budget_adapts_tau_so_the_least_confident_requests_go_up():
    policy = BudgetPolicy(target_share=0.25, window=100, tau=0.99, warmup=20)
    scores = [(i * 37 % 100) / 100 for i in range(400)]  # uniform-ish over [0, 1)
    tiers = [policy.decide({"self": p}, TWO).tier for p in scores]
    late = list(zip(scores[200:], tiers[200:], strict=True))
    assert 0.15 <= sum(t == "large" for _, t in late) / len(late) <= 0.25
    assert all(p < 0.3 for p, t in late if t == "large")  # only low scores escalate
    assert policy.current_tau() == pytest.approx(0.25, abs=0.02)


def test_budget_single_tier_and_bad_params():
    assert BudgetPolicy().decide({}, RequestContext(tiers=(LOCAL,))).tier == "local"
    with pytest.raises(PolicyError, match="window"):
        BudgetPolicy(window=0)


# -- interface and registry --------------------------------------------------------------------


def test_get_params_reports_constructor_arguments():
    assert CostAwarePolicy(lam=5).get_params() == {
        "lam": 5.0,
        "value": 1.0,
        "output_tokens": 256,
        "unscored_p": 1.0,
        "latency_weight": 0.0,
    }
    assert repr(ThresholdPolicy(0.3)) == "ThresholdPolicy(tau=0.3)"


def test_registry_builtins_module_paths_and_entry_points(monkeypatch):
    assert policy_class("threshold") is ThresholdPolicy
    assert policy_class("cost_aware") is CostAwarePolicy
    assert policy_class("budget") is BudgetPolicy
    assert isinstance(build_policy("test_policies:FixedPolicy", {"tier": "mid"}), FixedPolicy)

    plugin = EntryPoint(name="fixed", value="test_policies:FixedPolicy", group="introroute.policies")
    monkeypatch.setattr("introroute.policies.registry.entry_points", lambda group: [plugin])
    assert policy_class("fixed") is FixedPolicy


@pytest.mark.parametrize(
    ("type_name", "params", "message"),
    [
        ("nope", {}, "unknown policy 'nope'"),
        ("no_such_module:X", {}, "cannot import policy"),
        ("pathlib:Path", {}, "not a subclass"),
        ("threshold", {"tua": 0.5}, "invalid parameters"),
    ],
)
def test_registry_errors_say_what_is_wrong(type_name, params, message):
    with pytest.raises(PolicyError, match=message):
        build_policy(type_name, params)


def test_score_explain_says_where_the_threshold_preset_routes() -> None:
    """``make demo`` (introroute score --explain) reads only the tiers and the policy: no API key."""
    from pathlib import Path

    from introroute.cli.score import _would_route

    preset = Path(__file__).resolve().parents[1] / "policies" / "threshold.yaml"
    tau = __import__("yaml").safe_load(preset.read_text())["policy"]["params"]["tau"]
    high = _would_route(preset, {"self": min(1.0, tau + 0.01), "gpt-4-1106-preview": 0.5}, 10)
    low = _would_route(preset, {"self": max(0.0, tau - 0.01), "gpt-4-1106-preview": 0.5}, 10)
    assert (high["tier"], high["local"]) == ("local", True)
    assert (low["tier"], low["local"]) == ("large", False)
