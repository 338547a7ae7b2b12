"""Fit a score recalibration (Platt or isotonic) on routing logs, and measure what it changed.

The map is fitted here, offline, with scikit-learn, and applied per request by
:class:`introroute.router.calibration.ScoreCalibrator`, which the router rebuilds from the plain
numbers :meth:`~introroute.router.calibration.ScoreCalibrator.to_config` writes into the YAML.
Platt scaling is logistic regression on ``logit(p)`` (two parameters: suits a few hundred
outcomes and smooth miscalibration); isotonic regression is a step function that fixes any
monotone distortion but needs more data and overfits small logs.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from introroute.errors import ConfigError, DataError
from introroute.evaluation.metrics import ECE_BINS, ece
from introroute.router.calibration import ArrayLike, CalibrationConfig, Method, ScoreCalibrator, logit

#: Fewer labelled outcomes than this give a calibration map that is mostly noise.
MIN_SAMPLES = 20


def _labelled(p: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate scores and 0/1 outcomes; drop unlabelled (NaN) rows: logs hold unjudged requests."""
    try:
        p_arr, y_arr = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    except (TypeError, ValueError):
        raise DataError("scores and labels must be numeric 1-D arrays of one length") from None
    if p_arr.ndim != 1 or p_arr.shape != y_arr.shape:
        raise DataError(f"scores and labels need one 1-D shape, got {p_arr.shape} and {y_arr.shape}")
    keep = ~np.isnan(y_arr)
    p_arr, y_arr = p_arr[keep], y_arr[keep]
    if not np.isin(y_arr, (0.0, 1.0)).all():
        raise DataError("labels must be 0/1 (or NaN for unlabelled rows)")
    if not (np.isfinite(p_arr).all() and (p_arr >= 0).all() and (p_arr <= 1).all()):
        raise DataError("scores of labelled rows must be finite probabilities within [0, 1]")
    return p_arr, y_arr


def fit_calibrator(p: ArrayLike, y: ArrayLike, method: Method = "platt") -> ScoreCalibrator:
    """Fit on raw scores ``p`` and outcomes ``y`` (1 = answered well; NaN = unlabelled, dropped).

    Raises :class:`ConfigError` for an unknown method and :class:`DataError` for mismatched
    shapes, non-0/1 labels, scores outside [0, 1], fewer than :data:`MIN_SAMPLES` labelled rows,
    one outcome class only, or constant scores.
    """
    if method not in ("platt", "isotonic"):
        raise ConfigError(f"calibration method must be 'platt' or 'isotonic', got {method!r}")
    p_arr, y_arr = _labelled(p, y)
    if len(y_arr) < MIN_SAMPLES:
        raise DataError(f"calibration needs at least {MIN_SAMPLES} labelled rows, got {len(y_arr)}")
    if y_arr.min() == y_arr.max():
        only = "successes (1)" if y_arr[0] else "failures (0)"
        raise DataError(f"calibration needs both outcomes, but the labels are all {only}")
    if p_arr.min() == p_arr.max():
        raise DataError("all scores are equal: there is no ranking to calibrate")
    fitted = _fit_platt(p_arr, y_arr) if method == "platt" else _fit_isotonic(p_arr, y_arr)
    return ScoreCalibrator(fitted)


def _fit_platt(p: np.ndarray, y: np.ndarray) -> CalibrationConfig:
    """Logistic regression on logit(p). sklearn's default L2 penalty (C=1) acts on the slope
    only: negligible with hundreds of rows, and it keeps the slope finite when the logs
    separate perfectly. A negative slope (scores ranking outcomes backwards) is replaced by
    the constrained optimum a=0, b=logit(base rate), so the map never reverses the ranking."""
    model = LogisticRegression().fit(logit(p).reshape(-1, 1), y)
    a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
    if a < 0:
        warnings.warn(
            "gatekeeper scores rank outcomes backwards on these logs; calibrating to the base rate",
            stacklevel=3,
        )
        rate = float(y.mean())
        a, b = 0.0, math.log(rate / (1.0 - rate))
    return CalibrationConfig(method="platt", a=a, b=b)


def _fit_isotonic(p: np.ndarray, y: np.ndarray) -> CalibrationConfig:
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return CalibrationConfig(
        method="isotonic",
        x=[float(v) for v in model.X_thresholds_],
        y=[float(v) for v in model.y_thresholds_],
    )


def ece_before_after(
    p_raw: ArrayLike, y: ArrayLike, calibrator: ScoreCalibrator, n_bins: int = ECE_BINS
) -> dict[str, Any]:
    """ECE of the raw and the calibrated scores on the same labelled rows (NaN labels dropped).

    ``n_bins`` defaults to :data:`introroute.evaluation.metrics.ECE_BINS`, the bins of every
    other ECE this project reports. Measured on the logs the calibrator was fitted on,
    ``ece_after`` is optimistic (isotonic regression in particular fits the noise); pass
    held-out rows for an honest number. Returns ``{"n", "n_bins", "ece_before", "ece_after"}``.
    """
    p_arr, y_arr = _labelled(p_raw, y)
    return {
        "n": len(y_arr),
        "n_bins": n_bins,
        "ece_before": ece(y_arr, p_arr, n_bins),
        "ece_after": ece(y_arr, calibrator.predict(p_arr), n_bins),
    }
