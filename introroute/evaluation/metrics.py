"""How well predicted success probabilities rank and calibrate real outcomes, with bootstrap CIs.

Why single-class input returns ``nan`` instead of raising: evaluation slices data by target,
dataset and subject, and some slices (a tiny subject, GPT-4 on an easy set) have only successes.
Such a slice has no ranking to measure; ``nan`` says so without killing a long report.

Why within-group AUC matters most: pooled AUC over several datasets partly rewards recognising
which dataset a prompt comes from (datasets differ in base rate), which any bag-of-words model
can do. :func:`report` gives both; judge a gatekeeper by the per-group and within-group numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

Metric = Callable[[np.ndarray, np.ndarray], float]
ECE_BINS = 15
Array = Sequence[float] | np.ndarray


def _arrays(y: Array, p: Array) -> tuple[np.ndarray, np.ndarray]:
    y_arr, p_arr = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if y_arr.shape != p_arr.shape or y_arr.ndim != 1:
        raise ValueError(f"labels and probabilities need one 1-D shape, got {y_arr.shape} and {p_arr.shape}")
    if not np.isin(y_arr, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1 (or False/True)")
    if not (np.isfinite(p_arr).all() and (p_arr >= 0).all() and (p_arr <= 1).all()):
        raise ValueError("probabilities must be finite and within [0, 1]")
    return y_arr, p_arr


# The unchecked versions below run inside the bootstrap (thousands of calls per slice), where
# sklearn's input validation costs 10-20x the computation. They equal sklearn's roc_auc_score and
# average_precision_score exactly, ties included (tests/test_metrics.py checks against sklearn).


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    positives = y.sum()
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(p)  # ties get their average rank: the Mann-Whitney U statistic
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _pr_auc(y: np.ndarray, p: np.ndarray) -> float:
    if not 0 < y.sum() < len(y):
        return math.nan
    order = np.argsort(-p, kind="mergesort")
    ranked_p = p[order]
    block_ends = np.r_[np.flatnonzero(np.diff(ranked_p)), len(ranked_p) - 1]  # one threshold per value
    true_pos = np.cumsum(y[order])[block_ends]
    precision = true_pos / (block_ends + 1)
    recall = true_pos / true_pos[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2)) if len(y) else math.nan


def _ece(y: np.ndarray, p: np.ndarray, n_bins: int = ECE_BINS) -> float:
    if not len(y):
        return math.nan
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    gaps = np.abs(np.bincount(bins, weights=y - p, minlength=n_bins))
    return float(gaps.sum() / len(y))


def roc_auc(y: Array, p: Array) -> float:
    """Area under the ROC curve; nan when only one class is present."""
    return _roc_auc(*_arrays(y, p))


def pr_auc(y: Array, p: Array) -> float:
    """Average precision (area under precision-recall for the success class); nan for one class."""
    return _pr_auc(*_arrays(y, p))


def brier(y: Array, p: Array) -> float:
    """Mean squared error of the probabilities; nan for empty input."""
    return _brier(*_arrays(y, p))


def ece(y: Array, p: Array, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins of [0, 1] (p = 1 joins the last):
    the weighted mean over bins of |observed success rate - mean predicted probability|."""
    return _ece(*_arrays(y, p), n_bins)


def _pr_auc_failure(y: np.ndarray, p: np.ndarray) -> float:
    """PR-AUC of the failure class (1 - p ranks failures): the paper's measure of catching the
    queries the model will get wrong, which matters most when failures are the minority."""
    return _pr_auc(1 - y, 1 - p)


METRICS: dict[str, Metric] = {
    "roc_auc": _roc_auc,
    "pr_auc": _pr_auc,
    "pr_auc_failure": _pr_auc_failure,
    "brier": _brier,
    "ece": _ece,
}


def bootstrap(
    statistic: Callable[[np.ndarray], Any],
    n_items: int,
    n: int,
    seed: int,
    strata: np.ndarray | None = None,
    alpha: float = 0.05,
) -> tuple[Any, Any, Any]:
    """Percentile bootstrap of ``statistic(indices)``; resamples within each stratum when given.

    ``statistic`` returns one number, or a 1-D array of several read off the same resample (every
    metric of one rebuilt routing curve: the expensive rebuild then runs once per resample); the
    interval is then per entry. Resamples whose value is nan (a single-class draw) are left out.
    """
    point = statistic(np.arange(n_items))
    scalar = np.ndim(point) == 0
    lo = np.full(np.shape(point) or (1,), math.nan)
    hi = lo.copy()
    if n_items:
        rng = np.random.default_rng(seed)
        groups = (
            [np.arange(n_items)]
            if strata is None
            else [np.flatnonzero(strata == s) for s in np.unique(strata)]
        )
        draws = np.array(
            [
                statistic(np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups]))
                for _ in range(n)
            ],
            dtype=float,
        ).reshape(n, -1)
        for column in range(draws.shape[1]):
            finite = draws[np.isfinite(draws[:, column]), column]
            if len(finite):
                lo[column], hi[column] = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    if scalar:
        return point, float(lo[0]), float(hi[0])
    return point, lo, hi


def bootstrap_ci(
    metric: Metric,
    y: Array,
    p: Array,
    n: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(point estimate, 2.5th, 97.5th percentile)`` of ``metric`` over ``n`` bootstrap resamples."""
    y_arr, p_arr = _arrays(y, p)
    return bootstrap(lambda idx: metric(y_arr[idx], p_arr[idx]), len(y_arr), n, seed)


def _within_group_auc(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> float:
    aucs = [_roc_auc(y[groups == g], p[groups == g]) for g in np.unique(groups)]
    finite = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(finite)) if finite else math.nan


def _groups(groups: Sequence[Any] | np.ndarray, y: np.ndarray) -> np.ndarray:
    g_arr = np.asarray(groups)
    if g_arr.shape != y.shape:
        raise ValueError(f"groups need the same length as labels, got {g_arr.shape} and {y.shape}")
    return g_arr


def within_group_auc(y: Array, p: Array, groups: Sequence[Any] | np.ndarray) -> float:
    """Unweighted mean of per-group ROC-AUC over groups that have both classes; nan if none do.

    Unlike pooled AUC it cannot be raised by telling groups apart, only by ranking within them.
    """
    y_arr, p_arr = _arrays(y, p)
    return _within_group_auc(y_arr, p_arr, _groups(groups, y_arr))


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sane at 0 and n, unlike the normal one)."""
    if n <= 0:
        return math.nan, math.nan
    phat = successes / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _slice_report(y: np.ndarray, p: np.ndarray, n: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(y), "positives": int(y.sum()), "base_rate": float(y.mean())}
    for name, metric in METRICS.items():
        value, lo, hi = bootstrap_ci(metric, y, p, n, seed)
        out[name] = {"value": value, "lo": lo, "hi": hi}
    return out


def report(
    y: Array,
    p: Array,
    groups: Sequence[Any] | np.ndarray,
    n: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics with 95% bootstrap CIs for one target: per group, pooled, and within-group AUC.

    ``{"pooled": {...}, "groups": {group: {...}}, "within_group_auc": {"value", "lo", "hi"}}``;
    each slice has ``n``, ``positives``, ``base_rate`` and ``{"value", "lo", "hi"}`` for
    roc_auc, pr_auc, brier and ece. The within-group CI resamples inside each group.
    """
    y_arr, p_arr = _arrays(y, p)
    g_arr = np.asarray(groups)
    if g_arr.shape != y_arr.shape:
        raise ValueError(f"groups need the same length as labels, got {g_arr.shape} and {y_arr.shape}")
    value, lo, hi = bootstrap(
        lambda idx: within_group_auc(y_arr[idx], p_arr[idx], g_arr[idx]), len(y_arr), n, seed, strata=g_arr
    )
    return {
        "pooled": _slice_report(y_arr, p_arr, n, seed),
        "groups": {
            str(g): _slice_report(y_arr[g_arr == g], p_arr[g_arr == g], n, seed) for g in np.unique(g_arr)
        },
        "within_group_auc": {"value": value, "lo": lo, "hi": hi},
    }
