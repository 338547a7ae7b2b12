"""Recalibrate gatekeeper scores so that a score of 0.7 means a 70% success rate.

Why: a policy threshold or a cost trade-off only means what it says when the probabilities it
reads are calibrated, and the gatekeeper's are not (training with ``pos_weight`` shifts them; a
small model is over- or under-confident). A monotone map fitted on routing logs (score, outcome)
fixes the scale without changing the ranking, so ROC-AUC is unchanged and ECE drops.

Why two halves: fitting uses scikit-learn (Platt scaling = logistic regression on ``logit(p)``;
isotonic regression), imported only inside :meth:`ScoreCalibrator.fit`; applying the map needs a
few numbers and numpy, so the router loads a calibrator from its YAML config without
scikit-learn and without pickles. For the same reason :mod:`introroute.metrics` (scipy, about
a second to import) is imported only by the offline helpers that score a calibrator.
:class:`CalibrationConfig` is the single schema of those numbers: the router config validates
them with it, and :meth:`ScoreCalibrator.fit` builds its result through it, so whatever ``fit``
produces loads.

A calibration map holds only for traffic like the logs it was fitted on: a new prompt mix, a
new adapter or a changed remote model changes the success rates behind the scores.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from introroute.errors import ConfigError, DataError, IntrorouteError

Method = Literal["platt", "isotonic"]
ArrayLike = Sequence[float] | np.ndarray

#: Fewer labelled outcomes than this give a calibration map that is mostly noise.
MIN_SAMPLES = 20
# Scores are clipped to [EPS, 1 - EPS] before logit(): a gatekeeper can return exactly 0 or 1.
_EPS = 1e-6

_Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class CalibrationConfig(BaseModel):
    """The stored parameters of one target's calibration map (``gatekeeper.calibration.<target>``).

    ``platt``: ``sigmoid(a * logit(p) + b)`` with ``a >= 0`` (a negative slope would reverse the
    gatekeeper's ranking). ``isotonic``: ``np.interp(p, x, y)``, with ``x`` strictly increasing
    and ``y`` non-decreasing in [0, 1], constant beyond the ends.
    """

    model_config = ConfigDict(extra="forbid")

    method: Method
    a: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    b: float | None = Field(default=None, allow_inf_nan=False)
    x: list[_Probability] | None = None
    y: list[_Probability] | None = None

    @field_validator("x")
    @classmethod
    def _strictly_increasing(cls, x: list[float] | None) -> list[float] | None:
        if x is not None and any(hi <= lo for lo, hi in itertools.pairwise(x)):
            raise ValueError("must be strictly increasing")
        return x

    @field_validator("y")
    @classmethod
    def _non_decreasing(cls, y: list[float] | None) -> list[float] | None:
        if y is not None and any(hi < lo for lo, hi in itertools.pairwise(y)):
            raise ValueError("must be non-decreasing")
        return y

    @model_validator(mode="after")
    def _fields_of_method(self) -> CalibrationConfig:
        needed, other = (("a", "b"), ("x", "y")) if self.method == "platt" else (("x", "y"), ("a", "b"))
        missing = [k for k in needed if getattr(self, k) is None]
        stray = [k for k in other if getattr(self, k) is not None]
        if missing or stray:
            raise ValueError(
                f"method {self.method!r} takes exactly {list(needed)}; missing {missing}, extra {stray}"
            )
        if self.x is not None and self.y is not None and not 2 <= len(self.x) == len(self.y):
            raise ValueError(f"x and y need the same length >= 2, got {len(self.x)} and {len(self.y)}")
        return self


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # no overflow for large |z|


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


class ScoreCalibrator:
    """A monotone map from raw gatekeeper probabilities to calibrated ones (scikit-learn style).

    ``ScoreCalibrator("platt").fit(p, y).predict(p_new)``; ``to_config()`` gives plain numbers for
    YAML and :meth:`from_config` rebuilds an identical predictor without scikit-learn. Platt
    (two parameters) suits a few hundred outcomes and smooth miscalibration; isotonic (a step
    function) fixes any monotone distortion but needs more data and overfits small logs.
    """

    def __init__(self, method: Method = "platt") -> None:
        self.method = method

    def fit(self, p: ArrayLike, y: ArrayLike) -> ScoreCalibrator:
        """Fit on raw scores ``p`` and outcomes ``y`` (1 = answered well; NaN = unlabelled, dropped).

        Raises :class:`DataError` for mismatched shapes, non-0/1 labels, scores outside [0, 1],
        fewer than :data:`MIN_SAMPLES` labelled rows, one outcome class only, or constant scores.
        """
        if self.method not in ("platt", "isotonic"):
            raise ConfigError(f"calibration method must be 'platt' or 'isotonic', got {self.method!r}")
        p_arr, y_arr = _labelled(p, y)
        if len(y_arr) < MIN_SAMPLES:
            raise DataError(f"calibration needs at least {MIN_SAMPLES} labelled rows, got {len(y_arr)}")
        if y_arr.min() == y_arr.max():
            only = "successes (1)" if y_arr[0] else "failures (0)"
            raise DataError(f"calibration needs both outcomes, but the labels are all {only}")
        if p_arr.min() == p_arr.max():
            raise DataError("all scores are equal: there is no ranking to calibrate")
        fitted = self._fit_platt(p_arr, y_arr) if self.method == "platt" else self._fit_isotonic(p_arr, y_arr)
        return self._load(fitted)

    @staticmethod
    def _fit_platt(p: np.ndarray, y: np.ndarray) -> CalibrationConfig:
        """Logistic regression on logit(p). sklearn's default L2 penalty (C=1) acts on the slope
        only: negligible with hundreds of rows, and it keeps the slope finite when the logs
        separate perfectly. A negative slope (scores ranking outcomes backwards) is replaced by
        the constrained optimum a=0, b=logit(base rate), so the map never reverses the ranking."""
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression().fit(_logit(p).reshape(-1, 1), y)
        a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
        if a < 0:
            warnings.warn(
                "gatekeeper scores rank outcomes backwards on these logs; calibrating to the base rate",
                stacklevel=3,
            )
            rate = float(y.mean())
            a, b = 0.0, math.log(rate / (1.0 - rate))
        return CalibrationConfig(method="platt", a=a, b=b)

    @staticmethod
    def _fit_isotonic(p: np.ndarray, y: np.ndarray) -> CalibrationConfig:
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return CalibrationConfig(
            method="isotonic",
            x=[float(v) for v in model.X_thresholds_],
            y=[float(v) for v in model.y_thresholds_],
        )

    def _load(self, params: CalibrationConfig) -> ScoreCalibrator:
        """Adopt validated parameters; arrays are built once here, not per request."""
        self.method = params.method
        self.params_ = params
        if params.method == "platt":
            self._a, self._b = float(params.a), float(params.b)  # type: ignore[arg-type]
        else:
            self._x, self._y = np.asarray(params.x, dtype=float), np.asarray(params.y, dtype=float)
        return self

    def _params(self) -> CalibrationConfig:
        params = getattr(self, "params_", None)
        if params is None:
            raise IntrorouteError("ScoreCalibrator is not fitted: call fit(p, y) or use from_config(...)")
        return params

    def predict(self, p: ArrayLike | float) -> np.ndarray:
        """Calibrated probabilities, same shape as ``p``, within [0, 1] and non-decreasing in ``p``.

        Never raises for numeric input (the router calls it on every request); NaN stays NaN.
        """
        params = self._params()
        p_arr = np.asarray(p, dtype=float)
        if params.method == "platt":
            out = _sigmoid(self._a * _logit(p_arr) + self._b)
        else:
            out = np.interp(p_arr, self._x, self._y)
        return np.asarray(np.clip(out, 0.0, 1.0))  # an array even for a scalar p

    def score(self, p: ArrayLike, y: ArrayLike) -> float:
        """Negative Brier score of the calibrated probabilities (higher is better, as in sklearn)."""
        from introroute.metrics import brier

        p_arr, y_arr = _labelled(p, y)
        return -brier(y_arr, self.predict(p_arr))

    def to_config(self) -> dict[str, Any]:
        """The parameters as plain floats, for ``gatekeeper.calibration.<target>`` in a router config.

        ``{"method": "platt", "a": .., "b": ..}`` or ``{"method": "isotonic", "x": [..], "y": [..]}``.
        """
        return self._params().model_dump(exclude_none=True)

    @classmethod
    def from_config(cls, config: CalibrationConfig | Mapping[str, Any]) -> ScoreCalibrator:
        """Rebuild a fitted calibrator from :meth:`to_config` output; predictions are identical.

        Raises :class:`ConfigError` naming the offending key when the parameters are invalid.
        """
        try:
            params = CalibrationConfig.model_validate(config)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in err['loc']) or 'calibration'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid calibration: {problems}") from None
        return cls(params.method)._load(params)

    def __repr__(self) -> str:
        return f"ScoreCalibrator(method={self.method!r})"


def ece_before_after(
    p_raw: ArrayLike, y: ArrayLike, calibrator: ScoreCalibrator, n_bins: int = 15
) -> dict[str, Any]:
    """ECE of the raw and the calibrated scores on the same labelled rows (NaN labels dropped).

    ``n_bins`` defaults to :data:`introroute.metrics.ECE_BINS`, the bins of every other ECE this
    project reports. Measured on the logs the calibrator was fitted on, ``ece_after`` is
    optimistic (isotonic regression in particular fits the noise); pass held-out rows for an
    honest number. Returns ``{"n", "n_bins", "ece_before", "ece_after"}``.
    """
    from introroute.metrics import ece

    p_arr, y_arr = _labelled(p_raw, y)
    return {
        "n": len(y_arr),
        "n_bins": n_bins,
        "ece_before": ece(y_arr, p_arr, n_bins),
        "ece_after": ece(y_arr, calibrator.predict(p_arr), n_bins),
    }
