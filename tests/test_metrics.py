"""Metrics equal sklearn's, survive single-class slices, and the bootstrap is reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from introroute.evaluation.metrics import (
    bootstrap_ci,
    brier,
    ece,
    pr_auc,
    report,
    roc_auc,
    wilson_interval,
    within_group_auc,
)

# Probabilities on a coarse grid so that ties (the hard case for ranking metrics) are common.
labelled = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        st.lists(st.integers(0, 10).map(lambda k: k / 10), min_size=n, max_size=n),
    )
)


@settings(max_examples=200, deadline=None)
@given(labelled)
def test_ranking_metrics_equal_sklearn(data: tuple[list[int], list[float]]) -> None:
    y, p = data
    if 0 < sum(y) < len(y):
        assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert pr_auc(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    else:
        assert math.isnan(roc_auc(y, p)) and math.isnan(pr_auc(y, p))
    assert brier(y, p) == pytest.approx(brier_score_loss(y, p, labels=[0, 1]), abs=1e-12)
    assert 0.0 <= ece(y, p) <= 1.0


def test_ece_known_values() -> None:
    assert ece([1, 0], [1.0, 0.0]) == 0.0
    assert ece([1, 1, 0, 0], [0.5, 0.5, 0.5, 0.5]) == 0.0  # one bin, 50% predicted and observed
    assert ece([1, 1, 1, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # two bins: (0.9 predicted, 1.0 observed) and (0.1 predicted, 0.5 observed), equal weight
    assert ece([1, 1, 1, 0], [0.9, 0.9, 0.1, 0.1]) == pytest.approx(0.5 * 0.1 + 0.5 * 0.4)


def test_single_class_and_empty_are_nan_not_errors() -> None:
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert math.isnan(pr_auc([0, 0], [0.1, 0.5]))
    assert math.isnan(brier([], []))
    assert math.isnan(ece([], []))
    point, lo, hi = bootstrap_ci(roc_auc, [1, 1, 1], [0.1, 0.5, 0.9], n=50)
    assert math.isnan(point) and math.isnan(lo) and math.isnan(hi)


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [([0, 1], [0.5], "1-D shape"), ([0, 2], [0.5, 0.5], "0/1"), ([0, 1], [0.5, 1.5], r"\[0, 1\]")],
)
def test_bad_input_is_a_clear_error(y: list[int], p: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        roc_auc(y, p)


def _separable(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)


def test_bootstrap_is_seeded_and_brackets_the_point() -> None:
    y, p = _separable()
    first = bootstrap_ci(roc_auc, y, p, n=200, seed=1)
    assert first == bootstrap_ci(roc_auc, y, p, n=200, seed=1)
    point, lo, hi = first
    assert lo < point < hi
    assert point == pytest.approx(roc_auc_score(y, p))


def test_within_group_auc_ignores_telling_groups_apart() -> None:
    # Inside each group the score is noise; only the group base rates differ. Pooled AUC looks
    # good because the score encodes the group; within-group AUC stays at chance.
    rng = np.random.default_rng(0)
    groups = np.repeat(["easy", "hard"], 500)
    y = np.where(groups == "easy", rng.random(1000) < 0.9, rng.random(1000) < 0.1).astype(int)
    p = np.where(groups == "easy", 0.8, 0.2) + 0.01 * rng.random(1000)
    assert roc_auc(y, p) > 0.85
    assert within_group_auc(y, p, groups) == pytest.approx(0.5, abs=0.08)


def test_report_structure() -> None:
    y, p = _separable()
    groups = np.where(np.arange(len(y)) % 2 == 0, "a", "b")
    y[groups == "b"] = 1  # group b has one class: its AUC is nan, the report still completes
    out = report(y, p, groups, n=50, seed=0)
    assert set(out) == {"pooled", "groups", "within_group_auc"}
    assert set(out["groups"]) == {"a", "b"}
    for slice_ in (out["pooled"], out["groups"]["a"]):
        assert set(slice_) == {
            "n",
            "positives",
            "base_rate",
            "roc_auc",
            "pr_auc",
            "pr_auc_failure",
            "brier",
            "ece",
        }
        assert slice_["roc_auc"]["lo"] <= slice_["roc_auc"]["value"] <= slice_["roc_auc"]["hi"]
    assert math.isnan(out["groups"]["b"]["roc_auc"]["value"])
    assert out["within_group_auc"]["value"] == pytest.approx(out["groups"]["a"]["roc_auc"]["value"])
    with pytest.raises(ValueError, match="groups"):
        report(y, p, groups[:-1])


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.404, abs=1e-3) and hi == pytest.approx(0.596, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
