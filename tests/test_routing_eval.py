"""Routing metrics on hand-computed curves, replay == policy.decide, the scored-log join, and
``introroute eval --routing`` end to end on a synthetic log."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from routing_support import synthetic, write_predictions, write_setup

from introroute.cli import main as cli
from introroute.data.jsonl import write_records
from introroute.data.schema import TargetOutcome
from introroute.errors import DataError, PolicyError
from introroute.policies import Policy, PolicyChoice, TierInfo, build_policy
from introroute.policies.threshold import ThresholdPolicy
from introroute.router.calibration import ScoreCalibrator
from introroute.router.config import load_config
from introroute.routing_eval.metrics import (
    OperatingCurve,
    aiq,
    apgr,
    cpt,
    deferral_auc,
    deferral_curve,
    first_crossing,
    matched_reliability,
    nondecreasing_hull,
    oracle_curve,
    pareto_front,
    random_curve,
)
from introroute.routing_eval.replay import (
    build_scored_log,
    choices,
    cost_aware_utilities,
    knob_grid,
    knob_of,
    load_scored_log,
    replay,
    sweep,
)

# -- hand-computed 2-tier curve ----------------------------------------------------------------
# Queries by score: 0.1 (weak wrong, strong right), 0.2 (wrong, right), 0.3 (right, wrong),
# 0.4 (right, right): q_weak = 0.5, q_strong = 0.75; sending up 0..4 queries gives quality
# 0.5, 0.75, 1.0, 0.75, 0.75, so PGR = 0, 1, 2, 1, 1 at shares 0, .25, .5, .75, 1.
SCORE = np.array([0.1, 0.4, 0.2, 0.3])
CORRECT = np.array([[0, 1], [1, 1], [0, 1], [1, 0]], dtype=float)
LATENCY = np.tile([1.0, 3.0], (4, 1))
COST = np.tile([0.001, 0.01], (4, 1))


def hand_curve() -> OperatingCurve:
    return deferral_curve(SCORE, CORRECT, COST, LATENCY)


def test_deferral_curve_by_hand():
    curve = hand_curve()
    np.testing.assert_allclose(curve.share, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(curve.quality, [0.5, 0.75, 1.0, 0.75, 0.75])
    np.testing.assert_allclose(curve.knob, [0.1, 0.2, 0.3, 0.4, 1.0])  # p < tau -> strong
    np.testing.assert_allclose(curve.latency, [1, 1.5, 2, 2.5, 3])
    assert deferral_auc(curve) == pytest.approx(0.25 * (0.625 + 0.875 + 0.875 + 0.75))
    assert apgr(curve) == pytest.approx(0.125 + 0.375 + 0.375 + 0.25)
    assert cpt(curve, 0.5) == pytest.approx(0.125)
    assert cpt(curve, 2.5) != cpt(curve, 2.5)  # never reached: nan


def test_tied_scores_move_up_together():
    curve = deferral_curve(np.array([0.3, 0.3, 0.9]), np.array([[0, 1], [1, 1], [1, 0]], dtype=float))
    np.testing.assert_allclose(curve.share, [0, 2 / 3, 1])
    np.testing.assert_allclose(curve.quality, [2 / 3, 1.0, 2 / 3])


def test_cpt_is_the_first_crossing_not_an_inverse_interpolation():
    share = np.array([0, 0.25, 0.5, 0.75, 1])
    pgr_values = np.array([0, 0.6, 0.2, 0.9, 1.0])  # not monotone
    assert first_crossing(share, pgr_values, 0.5) == pytest.approx(0.25 * 0.5 / 0.6)
    # 0.8 is first reached between share .5 (PGR .2) and .75 (PGR .9).
    assert first_crossing(share, pgr_values, 0.8) == pytest.approx(0.5 + 0.6 / 0.7 * 0.25)
    # Interpolating the monotone envelope (running max) would report .5 + .2 / .3 * .25 instead.
    envelope = np.interp(0.8, np.maximum.accumulate(pgr_values), share)
    assert envelope == pytest.approx(0.5 + 0.2 / 0.3 * 0.25)
    assert first_crossing(share, pgr_values, 0.8) != pytest.approx(envelope)
    # The same through cpt(): quality = q_weak + PGR * gap.
    curve = OperatingCurve(share, 0.6 + 0.2 * pgr_values, share * 0, share * 0, share)
    assert cpt(curve, 0.8) == pytest.approx(0.5 + 0.6 / 0.7 * 0.25)


def test_random_and_oracle_references():
    random = random_curve(CORRECT, COST, LATENCY)
    np.testing.assert_allclose(random.share, [0, 1])
    np.testing.assert_allclose(random.quality, [0.5, 0.75])
    assert apgr(random) == pytest.approx(0.5)
    assert cpt(random, 0.3) == pytest.approx(0.3)
    oracle = oracle_curve(CORRECT, COST, LATENCY)
    assert oracle.quality[0] == pytest.approx(0.5) and oracle.quality[-1] == pytest.approx(0.75)
    # The oracle's own routing: the 2 queries only the strong tier gets right go up; all 4 right.
    assert oracle.quality.max() == pytest.approx(1.0)
    assert oracle.share[np.argmax(oracle.quality)] == pytest.approx(0.5)


def test_aiq_hull_and_pareto_front_by_hand():
    cost = np.array([0.0, 1.0, 1.5, 2.0, 3.0, 4.0])
    quality = np.array([0.5, 0.6, 0.55, 0.9, 0.85, 0.8])
    xs, ys = nondecreasing_hull(cost, quality)
    # (1, .6) lies below the chord (0, .5)-(2, .9); past the peak the hull stays flat at .9.
    np.testing.assert_allclose(xs, [0, 2, 4])
    np.testing.assert_allclose(ys, [0.5, 0.9, 0.9])
    assert aiq(cost, quality) == pytest.approx((2 * 0.7 + 2 * 0.9) / 4)
    assert pareto_front(cost, quality).tolist() == [0, 1, 3]
    assert aiq(np.array([1.0]), np.array([0.7])) == pytest.approx(0.7)


def test_matched_reliability_interpolates_to_the_first_crossing():
    point = matched_reliability(hand_curve(), delta=0.01)
    # 0.74 is reached on the segment (0, .5) -> (.25, .75): share .24, latency 1 + 2 * .24.
    assert point.share == pytest.approx(0.24)
    assert point.call_reduction == pytest.approx(0.76)
    assert point.latency_reduction == pytest.approx(1 - 1.48 / 3)


# -- replay ------------------------------------------------------------------------------------

TIERS3 = (
    TierInfo(
        "local", "self", local=True, input_per_1m=0.0, output_per_1m=0.0, ttft_ms=50, per_output_token_ms=20
    ),
    TierInfo("small", "weak", input_per_1m=1.0, output_per_1m=2.0, ttft_ms=100, per_output_token_ms=10),
    TierInfo("big", "strong", input_per_1m=10.0, output_per_1m=30.0, ttft_ms=800, per_output_token_ms=80),
)


@pytest.fixture(scope="module")
def log3():
    records, scores = synthetic(300, seed=1, targets=("self", "weak", "strong"))
    scores["good"]["self"][:20] = 0.5  # exact ties with tau = 0.5
    return build_scored_log(records, TIERS3, scores)


@pytest.mark.parametrize(
    ("policy_type", "params"),
    [
        ("threshold", {"tau": 0.5}),
        ("threshold", {"tau": 0.0}),
        ("threshold", {"tau": 0.83}),
        ("cost_aware", {"lam": 0.0}),
        ("cost_aware", {"lam": 20.0, "output_tokens": 100}),
        ("cost_aware", {"lam": 300.0, "latency_weight": 0.01, "unscored_p": 0.9}),
    ],
)
def test_vectorised_replay_equals_policy_decide(log3, policy_type, params):
    policy = build_policy(policy_type, params)
    fast = choices(policy, log3, "good", fast=True)
    slow = choices(policy, log3, "good", fast=False)
    np.testing.assert_array_equal(fast, slow)


class PickyThreshold(ThresholdPolicy):
    """A subclass that changes ``decide``: the inherited vectorised form must not be used for it."""

    def decide(self, scores, context):
        return PolicyChoice(context.tiers[-1].name)


def test_a_subclass_that_overrides_decide_is_replayed_through_it(log3):
    assert (choices(PickyThreshold(tau=0.0), log3, "good") == 2).all()
    assert (choices(ThresholdPolicy(tau=0.0), log3, "good") == 0).all()


def test_the_default_decide_many_names_a_tier_the_policy_made_up(log3):
    class Lost(Policy):
        def decide(self, scores, context):
            return PolicyChoice("nowhere")

    with pytest.raises(PolicyError, match="'nowhere'"):
        choices(Lost(), log3, "good")


def test_knobs_are_declared_by_the_policies():
    assert (knob_of("threshold"), knob_of("cost_aware")) == ("tau", "lam")
    with pytest.raises(PolicyError, match="declares no knob"):
        knob_of("budget")
    with pytest.warns(DeprecationWarning, match="Policy.knob"):
        from introroute.routing_eval.replay import KNOBS
    assert KNOBS == {"threshold": "tau", "cost_aware": "lam"}


def test_cost_aware_utilities_is_deprecated_for_the_policys_own(log3):
    policy = build_policy("cost_aware", {"lam": 20.0})
    with pytest.warns(DeprecationWarning, match="CostAwarePolicy.utilities"):
        old = cost_aware_utilities(policy, log3.tiers, log3.scorer("good"), log3.prompt_tokens)
    new = policy.utilities(log3.scorer("good"), log3.tiers, log3.prompt_tokens)
    for before, now in zip(old, new, strict=True):
        np.testing.assert_array_equal(before, now)


def test_replay_returns_the_chosen_tiers_outcomes(log3):
    result = replay(build_policy("threshold", {"tau": 0.6}), log3, "good")
    rows = np.arange(len(log3))
    np.testing.assert_array_equal(result.correct, log3.correct[rows, result.choice])
    summary = result.summary()
    assert summary["share"] == pytest.approx(np.mean(result.choice == 2))
    assert sum(summary[f"share_{t}"] for t in range(3)) == pytest.approx(1.0)


def test_unscored_target_in_threshold_cascade_is_a_policy_error(log3):
    missing = log3.with_scores("partial", np.where(np.arange(3) == 0, np.nan, log3.scorer("good")))
    with pytest.raises(PolicyError, match="'self'"):
        replay(build_policy("threshold", {"tau": 0.5}), missing, "partial")


def test_threshold_sweep_equals_the_deferral_curve(log3):
    pair = log3.tier_subset([1, 2])
    curve = sweep("threshold", {}, pair, "good")
    direct = deferral_curve(pair.scorer("good")[:, 0], pair.correct, pair.cost, pair.latency)
    # A top score of exactly 1 cannot be sent up by any tau <= 1: that endpoint has no knob.
    assert pair.scorer("good")[:, 0].max() == 1.0 and math.isnan(direct.knob[-1])
    reachable = np.isfinite(direct.knob)
    np.testing.assert_allclose(curve.knob, direct.knob[reachable])
    np.testing.assert_allclose(curve.share, direct.share[reachable])
    np.testing.assert_allclose(curve.quality, direct.quality[reachable])
    np.testing.assert_allclose(curve.cost, direct.cost[reachable])


def test_cost_aware_grid_covers_every_routing(log3):
    grid = knob_grid("cost_aware", {"output_tokens": 400}, log3, "good")
    seen = {
        tuple(choices(build_policy("cost_aware", {"lam": v, "output_tokens": 400}), log3, "good"))
        for v in grid.values
    }
    dense = np.r_[0.0, np.geomspace(1e-3, grid.values[-1] * 4, 300)]
    for lam in dense:
        picked = choices(build_policy("cost_aware", {"lam": float(lam), "output_tokens": 400}), log3, "good")
        assert tuple(picked) in seen


def test_scored_log_costs_latency_and_drops(tmp_path):
    records, scores = synthetic(10, targets=("weak", "strong"))
    records[0].outcomes["strong"] = TargetOutcome(model="strong", correct=True, cost_usd=0.5, latency_s=9.0)
    del records[1].outcomes["strong"]
    tiers = (
        TierInfo("small", "weak", input_per_1m=1.0, output_per_1m=2.0),
        TierInfo("big", "strong", input_per_1m=10.0, output_per_1m=30.0, ttft_ms=800, per_output_token_ms=80),
    )
    log = build_scored_log(records, tiers, scores, output_tokens=100)
    assert len(log) == 9 and log.dropped == {"no outcome for 'strong'": 1}
    assert log.cost[0, 1] == 0.5  # logged cost wins
    assert log.latency[0, 1] == pytest.approx(0.8 + 0.08 * 100)  # a configured latency model wins
    assert math.isnan(log.latency[0, 0])  # no model, nothing logged
    prompt = log.prompt_tokens[1]
    assert log.cost[1, 0] == pytest.approx((prompt * 1.0 + 100 * 2.0) / 1e6)


def test_join_rejects_foreign_predictions_and_unknown_scorers(tmp_path):
    paths = write_setup(tmp_path, n=20)
    tiers = [TierInfo("small", "weak"), TierInfo("big", "strong")]
    with pytest.raises(DataError, match=r"unknown scorer\(s\) \['nope'\]"):
        load_scored_log([str(paths["log"])], paths["predictions"], tiers, ["nope"])
    records, scores = synthetic(20)
    records[3] = records[3].model_copy(update={"id": "elsewhere/3"})
    write_predictions(tmp_path / "foreign.jsonl", records, scores)
    with pytest.raises(DataError, match="elsewhere/3"):
        load_scored_log([str(paths["log"])], tmp_path / "foreign.jsonl", tiers)
    records, _ = synthetic(20)
    records[5].outcomes["weak"] = TargetOutcome(model="weak", correct=not records[5].outcomes["weak"].correct)
    write_records(tmp_path / "relabelled.jsonl", records)
    with pytest.raises(DataError, match=r"'q/5' has label"):
        load_scored_log([str(tmp_path / "relabelled.jsonl")], paths["predictions"], tiers)


# -- CLI ---------------------------------------------------------------------------------------


def test_eval_routing_two_tiers_end_to_end(tmp_path, capsys):
    paths = write_setup(tmp_path, n=200)
    out = tmp_path / "out"
    argv = ["eval", "--routing", "--predictions", str(paths["predictions"]), "--log", str(paths["log"])]
    argv += ["--router", str(paths["router"]), "--out", str(out), "--bootstrap", "30", "--splits", "test"]
    assert cli(argv) == 0
    result = json.loads((out / "routing.json").read_text())
    assert result["n_queries"] == 100 and len(result["pairs"]) == 1
    pair = result["pairs"][0]
    assert set(pair["scorers"]) == {"good", "random", "random-routing", "oracle"}
    good = pair["scorers"]["good"]["metrics"]
    assert good["apgr"]["lo"] <= good["apgr"]["value"] <= good["apgr"]["hi"]
    assert good["apgr"]["value"] > pair["scorers"]["random-routing"]["metrics"]["apgr"]["value"]
    assert result["multi_tier"] is None
    assert (out / "deferral_small__big.png").stat().st_size > 0
    assert "| good |" in (out / "routing.md").read_text()


def test_eval_routing_three_tiers_compares_policies(tmp_path):
    paths = write_setup(tmp_path, n=200, three=True)
    out = tmp_path / "out"
    argv = ["eval", "--routing", "--predictions", str(paths["predictions"]), "--log", str(paths["log"])]
    argv += ["--router", str(paths["router"]), "--out", str(out), "--bootstrap", "20", "--scorers", "good"]
    assert cli(argv) == 0
    result = json.loads((out / "routing.json").read_text())
    assert len(result["pairs"]) == 3 and len(list(out.glob("deferral_*.png"))) == 3
    methods = result["multi_tier"]["scorers"]["good"]
    assert set(methods) == {"cost_aware", "threshold_cascade", "remote_pair"}
    for data in methods.values():
        if data["met"]:
            assert data["quality"]["value"] >= result["multi_tier"]["min_quality"] - 1e-9
    assert "Cost per query at matched quality" in (out / "routing.md").read_text()


def test_eval_routing_names_an_unknown_scorer(tmp_path, capsys):
    paths = write_setup(tmp_path, n=20)
    argv = ["eval", "--routing", "--predictions", str(paths["predictions"]), "--log", str(paths["log"])]
    argv += ["--router", str(paths["router"]), "--out", str(tmp_path / "o"), "--scorers", "introlm"]
    assert cli(argv) == 2
    assert "unknown scorer(s) ['introlm']" in capsys.readouterr().err


def test_eval_routing_replays_the_routers_calibration(tmp_path, capsys):
    """--calibrated-scorer maps that scorer's scores as the router would; no calibration is an error."""
    paths = write_setup(tmp_path, n=200)
    base = ["eval", "--routing", "--predictions", str(paths["predictions"]), "--log", str(paths["log"])]
    base += ["--bootstrap", "10", "--splits", "test", "--scorers", "good", "--calibrated-scorer", "good"]
    assert cli([*base, "--router", str(paths["router"]), "--out", str(tmp_path / "a")]) == 2
    assert "has no gatekeeper.calibration" in capsys.readouterr().err

    calibrated = tmp_path / "calibrated.yaml"
    # a map that squeezes every score into [0.9, 1]: threshold decisions change, rankings do not
    mapping = "gatekeeper:\n  calibration:\n    weak: {method: isotonic, x: [0.0, 1.0], y: [0.9, 1.0]}\n"
    calibrated.write_text(paths["router"].read_text().replace("tiers:\n", mapping + "tiers:\n", 1))
    assert cli([*base, "--router", str(calibrated), "--out", str(tmp_path / "b")]) == 0
    raw = [*base[:-2], "--router", str(calibrated), "--out", str(tmp_path / "c")]
    assert cli(raw) == 0
    with_map = json.loads((tmp_path / "b" / "routing.json").read_text())["pairs"][0]["scorers"]["good"]
    without = json.loads((tmp_path / "c" / "routing.json").read_text())["pairs"][0]["scorers"]["good"]
    assert with_map["metrics"]["apgr"]["value"] == pytest.approx(without["metrics"]["apgr"]["value"])
    tiers = [t.info() for t in load_config(calibrated, check_heads=False).tiers]
    log = load_scored_log([str(paths["log"])], paths["predictions"], tiers, ["good"])
    squeezed = log.calibrated(
        "good",
        {
            "weak": ScoreCalibrator.from_config(
                load_config(calibrated, check_heads=False).gatekeeper.calibration["weak"]
            )
        },
    )
    assert squeezed.scorer("good")[:, 0].min() >= 0.9 and log.scorer("good")[:, 0].min() < 0.9
    np.testing.assert_array_equal(squeezed.scorer("good")[:, 1], log.scorer("good")[:, 1])
