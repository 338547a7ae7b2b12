"""Fitting a policy knob to a target on held-out logs (``introroute calibrate``): the fit meets its
target and generalises on a synthetic log, the YAML it writes loads and keeps its comments,
``--diff`` writes nothing, and impossible or malformed requests fail with typed errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from routing_support import TWO_TIER_YAML, synthetic, write_setup

from introroute.cli import main as cli
from introroute.data.jsonl import write_records
from introroute.data.schema import TargetOutcome
from introroute.errors import PolicyError
from introroute.fitting.config_edit import edit_router_yaml
from introroute.fitting.knob import FitTarget, ThresholdFitter, shortest_in
from introroute.policies import Policy, PolicyChoice, TierInfo
from introroute.router.config import load_config
from introroute.routing_eval.replay import build_scored_log

TIERS2 = (
    TierInfo("small", "weak", input_per_1m=1.0, output_per_1m=2.0, ttft_ms=100, per_output_token_ms=10),
    TierInfo("big", "strong", input_per_1m=10.0, output_per_1m=30.0, ttft_ms=800, per_output_token_ms=80),
)
TIERS3 = (TierInfo("local", "self", local=True, input_per_1m=0.0, output_per_1m=0.0), *TIERS2)


@pytest.fixture(scope="module")
def log2():
    records, scores = synthetic(2000, seed=3)
    return build_scored_log(records, TIERS2, scores)


def fitted(log, kind, value, policy="threshold", params=None, **kwargs):
    return ThresholdFitter(policy, params or {}, FitTarget(kind, value), "good", n_boot=200, **kwargs).fit(
        log.split("validation")
    )


def test_reliability_fit_meets_its_target_and_generalises(log2):
    fitter = fitted(log2, "reliability", 0.74)
    assert fitter.fit_report_["quality"]["value"] >= 0.74
    assert fitter.fit_report_["share"]["value"] < 1.0  # cheaper than always-strong
    held_out = fitter.evaluate(log2.split("test"))
    assert abs(held_out["quality"]["value"] - 0.74) < 0.03
    assert held_out["quality"]["lo"] < 0.74 + 0.03 and held_out["n"] == 1000
    # The fitted tau routes the fit split exactly as the chosen grid point did.
    assert fitter.params_ == {"tau": fitter.value_}


@pytest.mark.parametrize(
    ("kind", "value", "metric"),
    [
        ("max_expensive_share", 0.3, "share"),
        ("max_cost_per_query", 0.006, "cost_per_query"),
        ("pgr", 0.5, "pgr"),
    ],
)
def test_every_target_kind_is_met_on_the_fit_split(log2, kind, value, metric):
    fitter = fitted(log2, kind, value)
    achieved = fitter.fit_report_[metric]["value"]
    assert achieved <= value + 1e-12 if kind.startswith("max") else achieved >= value
    assert fitter.fit_report_["target_met"]


def test_ceiling_fit_takes_the_best_quality_within_it(log2):
    fitter = fitted(log2, "max_expensive_share", 0.3)
    loose = fitted(log2, "max_expensive_share", 0.6)
    assert loose.fit_report_["quality"]["value"] >= fitter.fit_report_["quality"]["value"]


def test_cost_aware_lam_is_fitted_over_three_tiers():
    records, scores = synthetic(800, seed=4, targets=("self", "weak", "strong"))
    log = build_scored_log(records, TIERS3, scores)
    fitter = fitted(log, "reliability", 0.72, policy="cost_aware", params={"output_tokens": 400})
    assert fitter.knob_ == "lam" and fitter.value_ > 0
    assert fitter.fit_report_["quality"]["value"] >= 0.72
    assert set(fitter.fit_report_["tier_shares"]) == {"local", "small", "big"}


def test_an_impossible_target_names_the_best_achievable_value(log2):
    with pytest.raises(PolicyError, match=r"cannot be met.*best achievable quality is 0\.\d+"):
        fitted(log2, "reliability", 0.99)


def test_small_fit_sets_and_thin_slack_warn(log2):
    fitter = fitted(log2.take(np.arange(300)), "reliability", 0.74)
    assert any("only 150 queries" in w for w in fitter.warnings_)
    assert any("wider than its slack" in w for w in fitter.warnings_)


def test_bad_targets_and_policies_are_policy_errors():
    with pytest.raises(PolicyError, match="share in"):
        FitTarget("reliability", 1.5)
    with pytest.raises(PolicyError, match="budget"):
        ThresholdFitter("budget", {}, FitTarget("reliability", 0.5))


class FloorPolicy(Policy):
    """A user's plugin policy: ``threshold``'s rule under another knob name, with only ``decide``.

    It declares its knob and nothing else, so replay loops over ``decide`` and the grid samples
    ``knob_range``: the fit must still meet its target, as for the built-ins.
    """

    name = "floor"
    knob = "floor"

    def __init__(self, floor: float = 0.5) -> None:
        self.floor = floor

    def decide(self, scores, context):
        cheap, expensive = context.tiers[0], context.tiers[-1]
        return PolicyChoice(cheap.name if context.score(cheap, scores) >= self.floor else expensive.name)


def test_a_plugin_policy_with_a_declared_knob_is_calibrated(log2):
    plugin = fitted(log2, "reliability", 0.74, policy="test_calibrate:FloorPolicy")
    builtin = fitted(log2, "reliability", 0.74)
    assert plugin.knob_ == "floor" and plugin.params_ == {"floor": plugin.value_}
    assert plugin.fit_report_["quality"]["value"] >= 0.74 and plugin.fit_report_["target_met"]
    # Sampled every 0.005 instead of at every score: as cheap as the exact fit, within a few queries.
    share = plugin.fit_report_["share"]["value"]
    assert builtin.fit_report_["share"]["value"] <= share <= builtin.fit_report_["share"]["value"] + 0.02


def test_a_policy_without_a_knob_is_refused_before_any_fit():
    with pytest.raises(PolicyError, match="declares no knob"):
        ThresholdFitter("test_policies:FixedPolicy", {}, FitTarget("reliability", 0.5))


def test_shortest_number_in_an_interval():
    assert shortest_in(0.41234, 0.41567, include_high=True) == 0.414
    assert shortest_in(0.3, 0.4, include_high=True) == 0.4
    assert shortest_in(float("-inf"), 0.2, include_high=True) == 0.0
    assert shortest_in(12.5, float("inf"), include_high=False) > 12.5


# -- YAML edits --------------------------------------------------------------------------------


def test_block_edit_keeps_comments_and_their_column():
    text, note = edit_router_yaml(TWO_TIER_YAML, {"tau": 0.37})
    assert note is None
    assert "    tau: 0.37  # to be fitted" in text and "# A test router" in text
    assert yaml.safe_load(text)["policy"]["params"] == {"tau": 0.37}


def test_flow_and_missing_params_are_edited_in_place():
    flow = TWO_TIER_YAML.replace(
        "  params:\n    tau: 0.5   # to be fitted\n", "  params: {tau: 0.5}  # inline\n"
    )
    text, note = edit_router_yaml(flow, {"tau": 0.25})
    assert note is None and "params: {tau: 0.25} # inline" in text  # the comment keeps its column
    bare = TWO_TIER_YAML.replace("  params:\n    tau: 0.5   # to be fitted\n", "")
    text, note = edit_router_yaml(bare, {"tau": 1.0e-05})
    assert note is None and yaml.safe_load(text)["policy"]["params"] == {"tau": 1.0e-05}


def test_calibration_block_is_added_then_replaced():
    first, note = edit_router_yaml(
        TWO_TIER_YAML, {"tau": 0.4}, {"weak": {"method": "platt", "a": 1.0, "b": 0.0}}
    )
    assert note is None and yaml.safe_load(first)["gatekeeper"]["calibration"]["weak"]["method"] == "platt"
    again, note = edit_router_yaml(first, {"tau": 0.4}, {"strong": {"method": "platt", "a": 2.0, "b": 0.5}})
    assert note is None and list(yaml.safe_load(again)["gatekeeper"]["calibration"]) == ["strong"]


def test_a_flow_style_policy_is_edited_in_place():
    flow_policy = TWO_TIER_YAML.replace(
        "policy:\n  type: threshold\n  params:\n    tau: 0.5   # to be fitted\n",
        "policy: {type: threshold, params: {tau: 0.5}}  # one line\n",
    )
    text, note = edit_router_yaml(flow_policy, {"tau": 0.3})
    assert note is None and "policy: {type: threshold, params: {tau: 0.3}}  # one line" in text
    assert yaml.safe_load(text)["policy"]["params"]["tau"] == 0.3


def test_comments_around_the_edited_line_survive():
    commented = "# Top of file: why this router exists.\n" + TWO_TIER_YAML.replace(
        "  type: threshold\n", "  type: threshold  # the line above\n"
    ).replace("fail_safe: big\n", "fail_safe: big  # the line below\nrouting_log: null  # logging off\n")
    calibration = {"weak": {"method": "platt", "a": 1.0, "b": -1.3}}
    text, note = edit_router_yaml(commented, {"tau": 0.42}, calibration)
    assert note is None and text.startswith("# Top of file: why this router exists.\n")
    assert "  type: threshold  # the line above\n  params:\n    tau: 0.42  # to be fitted\n" in text
    assert "fail_safe: big  # the line below\nrouting_log: null  # logging off\n" in text
    assert "    weak: {method: platt, a: 1.0, b: -1.3}\n" in text


# -- CLI ---------------------------------------------------------------------------------------


def calibrate_args(paths, *extra):
    base = ["calibrate", "--log", str(paths["log"]), "--router", str(paths["router"])]
    return [
        *base,
        "--predictions",
        str(paths["predictions"]),
        "--scorer",
        "good",
        "--bootstrap",
        "50",
        *extra,
    ]


def test_calibrate_writes_a_loadable_yaml_with_the_fitted_value(tmp_path):
    paths = write_setup(tmp_path, n=600)
    out, report = tmp_path / "fitted.yaml", tmp_path / "fit.json"
    argv = calibrate_args(paths, "--reliability", "0.72", "--out", str(out), "--json", str(report))
    assert cli(argv) == 0
    result = json.loads(report.read_text())
    config = load_config(out)
    assert config.policy.params["tau"] == result["value"]
    assert result["fit"]["quality"]["value"] >= 0.72 and result["fit"]["split"] == "validation"
    assert result["report"]["split"] == "test" and result["report"]["n"] == 300
    assert "# to be fitted" in out.read_text() and paths["router"].read_text() == TWO_TIER_YAML


def test_calibrate_refuses_to_replace_outputs_without_overwrite(tmp_path, capsys):
    """Checked before the fit; with --overwrite both are replaced whole (temp file + rename)."""
    paths = write_setup(tmp_path, n=400)
    out, report = tmp_path / "fitted.yaml", tmp_path / "fit.json"
    out.write_text("mine\n")
    report.write_text("{}\n")
    argv = calibrate_args(paths, "--reliability", "0.72", "--out", str(out), "--json", str(report))
    assert cli(argv) == 2
    assert "--out" in capsys.readouterr().err and out.read_text() == "mine\n"
    out.unlink()
    assert cli(argv) == 2
    assert "--json" in capsys.readouterr().err and report.read_text() == "{}\n" and not out.exists()
    assert (
        cli(calibrate_args(paths, "--reliability", "0.72", "--out", str(tmp_path / "fit.json" / "x.yaml")))
        == 2
    )
    assert "is not a directory" in capsys.readouterr().err
    assert cli([*argv, "--overwrite"]) == 0
    assert load_config(out) and json.loads(report.read_text())["value"] is not None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp left


def test_calibrate_fits_a_plugin_policy_named_in_the_yaml(tmp_path):
    paths = write_setup(tmp_path, n=600)
    paths["router"].write_text(
        TWO_TIER_YAML.replace("type: threshold", "type: test_calibrate:FloorPolicy").replace("tau:", "floor:")
    )
    out, report = tmp_path / "fitted.yaml", tmp_path / "fit.json"
    assert cli(calibrate_args(paths, "--reliability", "0.72", "--out", str(out), "--json", str(report))) == 0
    result = json.loads(report.read_text())
    assert result["knob"] == "floor" and result["fit"]["quality"]["value"] >= 0.72
    assert load_config(out).policy.params["floor"] == result["value"]


def test_calibrate_diff_prints_and_writes_nothing(tmp_path, capsys):
    paths = write_setup(tmp_path, n=400)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli(calibrate_args(paths, "--max-expensive-share", "0.25", "--diff")) == 0
    diff = capsys.readouterr().out
    assert diff.startswith("--- ") and "-    tau: 0.5" in diff and "+    tau: " in diff
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert paths["router"].read_text() == TWO_TIER_YAML


def test_calibrate_refuses_to_overwrite_its_input_without_in_place(tmp_path, capsys):
    paths = write_setup(tmp_path, n=200)
    assert cli(calibrate_args(paths, "--reliability", "0.7", "--out", str(paths["router"]))) == 2
    assert "--in-place" in capsys.readouterr().err
    assert cli(calibrate_args(paths, "--reliability", "0.7", "--in-place")) == 0
    assert load_config(paths["router"]).policy.params["tau"] != 0.5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--reliability", "0.999"], "best achievable quality"),
        (["--reliability", "0.7", "--scorer", "nope"], "unknown scorer(s) ['nope']"),
        (["--reliability", "0.7", "--fit-split", "train"], "split(s) ['train']"),
    ],
)
def test_calibrate_bad_requests_exit_2_naming_the_problem(tmp_path, capsys, extra, message):
    paths = write_setup(tmp_path, n=200)
    assert cli(calibrate_args(paths, *extra, "--diff")) == 2
    assert message in capsys.readouterr().err


def test_calibrate_rejects_predictions_of_another_log(tmp_path, capsys):
    paths = write_setup(tmp_path, n=50)
    records, _ = synthetic(50, seed=9)
    records[7].outcomes["strong"] = TargetOutcome(
        model="strong", correct=not records[7].outcomes["strong"].correct
    )
    write_records(paths["log"], records)
    assert cli(calibrate_args(paths, "--reliability", "0.7", "--diff")) == 2
    assert "has label" in capsys.readouterr().err


def test_calibrate_recalibrates_scores_and_stores_the_maps(tmp_path):
    pytest.importorskip("introroute.fitting.calibration")
    paths = write_setup(tmp_path, n=600)
    out, report = tmp_path / "fitted.yaml", tmp_path / "fit.json"
    argv = calibrate_args(paths, "--max-expensive-share", "0.3", "--recalibrate", "platt")
    assert cli([*argv, "--out", str(out), "--json", str(report)]) == 0
    config = load_config(out, check_heads=False)  # offline targets (weak, strong)
    assert set(config.gatekeeper.calibration) == {"weak", "strong"}
    result = json.loads(report.read_text())
    assert set(result["recalibration"]["ece"]) == {"weak", "strong"}
    assert result["fit"]["share"]["value"] <= 0.3
    # Refitting the written YAML applies its calibration (the router will): the same tau again.
    again = tmp_path / "again.json"
    paths["router"] = out
    assert cli(calibrate_args(paths, "--max-expensive-share", "0.3", "--diff", "--json", str(again))) == 0
    assert json.loads(again.read_text())["value"] == result["value"]


def test_calibrate_scores_on_the_fly_with_the_routers_gatekeeper(tmp_path, tiny_base_dir):
    records, _ = synthetic(60, seed=5, targets=("self", "strong"))
    write_records(tmp_path / "log.jsonl", records)
    router = tmp_path / "router.yaml"
    router.write_text(
        f"gatekeeper:\n  base: {tiny_base_dir}\n"
        "tiers:\n  - name: local\n    target: self\n"
        "  - name: big\n    target: strong\n    litellm_params: {model: openai/gpt-4o}\n"
        "    price: {input_per_1m: 10.0, output_per_1m: 30.0}\n"
        "policy:\n  type: threshold\n  params:\n    tau: 0.5\n"
    )
    report = tmp_path / "fit.json"
    argv = ["calibrate", "--log", str(tmp_path / "log.jsonl"), "--router", str(router), "--bootstrap", "20"]
    argv += ["--max-expensive-share", "0.5", "--diff", "--json", str(report), "--batch-size", "4"]
    assert cli(argv) == 0
    result = json.loads(report.read_text())
    assert result["scorer"] == "gatekeeper" and result["fit"]["n"] == 30
    assert any("only 30 queries" in w for w in result["warnings"])


def test_calibrate_needs_no_api_key_and_keeps_env_references(tmp_path, monkeypatch):
    monkeypatch.delenv("INTROROUTE_TEST_UNSET_KEY", raising=False)
    paths = write_setup(tmp_path, n=200)
    paths["router"].write_text(
        TWO_TIER_YAML.replace(
            "{model: openai/gpt-4o}", "{model: openai/gpt-4o, api_key: '${INTROROUTE_TEST_UNSET_KEY}'}"
        )
    )
    out = tmp_path / "fitted.yaml"
    assert cli(calibrate_args(paths, "--reliability", "0.7", "--out", str(out))) == 0
    assert "api_key: '${INTROROUTE_TEST_UNSET_KEY}'}" in out.read_text()


def test_readme_form_works_on_predictions_of_a_default_eval(tmp_path, capsys):
    """README: `calibrate --log LOGS --router policy.yaml --predictions P --reliability R --out F`, with P
    from an `introroute eval` without --splits (test and test_unseen rows): the auto splits fit on
    test and report on test_unseen, and a report split below the target says MISSED."""
    from routing_support import write_predictions, write_records

    records, scores = synthetic(600, seed=3)
    records = [
        r.model_copy(update={"split": "test" if i % 2 else "test_unseen"}) for i, r in enumerate(records)
    ]
    write_records(tmp_path / "log.jsonl", records)
    write_predictions(tmp_path / "p.jsonl", records, {"introlm": scores["good"]})
    (tmp_path / "policy.yaml").write_text(TWO_TIER_YAML)
    argv = ["calibrate", "--log", str(tmp_path / "log.jsonl"), "--router", str(tmp_path / "policy.yaml")]
    argv += [
        "--predictions",
        str(tmp_path / "p.jsonl"),
        "--reliability",
        "0.7",
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert cli([*argv, "--out", str(tmp_path / "fitted.yaml"), "--bootstrap", "20"]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["fit"]["split"], result["report"]["split"]) == ("test", "test_unseen")
    assert not result["report"]["target_met"]  # 0.683 on test_unseen (fitted 0.7 on test)
    assert "MISSED quality >= 0.7" in capsys.readouterr().out
    assert any(w.startswith("MISSED") for w in result["warnings"])
