"""Recalibrate gatekeeper scores so that a score of 0.7 means a 70% success rate.

Why: a policy threshold or a cost trade-off only means what it says when the probabilities it
reads are calibrated, and the gatekeeper's are not (training with ``pos_weight`` shifts them; a
small model is over- or under-confident). A monotone map fitted on routing logs (score, outcome)
fixes the scale without changing the ranking, so ROC-AUC is unchanged and ECE drops.

Why two halves: fitting uses scikit-learn (Platt scaling = logistic regression on ``logit(p)``;
isotonic regression) and lives offline, in :mod:`introroute.fitting.calibration`; applying the
map, this module, needs a few numbers and numpy, so the router loads a calibrator from its YAML
config on the request path without scikit-learn and without pickles.
:class:`CalibrationConfig` is the single schema of those numbers: the router config validates
them with it, and the fit builds its result through it, so whatever the fit produces loads.

A calibration map holds only for traffic like the logs it was fitted on: a new prompt mix, a
new adapter or a changed remote model changes the success rates behind the scores.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from introroute.errors import ConfigError

Method = Literal["platt", "isotonic"]
ArrayLike = Sequence[float] | np.ndarray

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

    method: Method = Field(description="platt or isotonic")
    a: float | None = Field(default=None, ge=0.0, allow_inf_nan=False, description="platt: slope on logit(p)")
    b: float | None = Field(default=None, allow_inf_nan=False, description="platt: intercept")
    x: list[_Probability] | None = Field(default=None, description="isotonic: scores, increasing")
    y: list[_Probability] | None = Field(default=None, description="isotonic: mapped scores")

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


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` with ``p`` clipped, so scores of exactly 0 or 1 stay finite (Platt's input)."""
    q = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # no overflow for large |z|


class ScoreCalibrator:
    """A fitted monotone map from raw gatekeeper probabilities to calibrated ones.

    Built from stored parameters (:meth:`from_config`: the router's path, no scikit-learn) or by
    :func:`introroute.fitting.calibration.fit_calibrator`; :meth:`to_config` gives the plain
    numbers back for YAML, so a stored map predicts exactly what the fitted one did.
    """

    def __init__(self, params: CalibrationConfig) -> None:
        """Adopt validated parameters; arrays are built once here, not per request."""
        self.params = params
        if params.method == "platt":
            self._a, self._b = float(params.a), float(params.b)  # type: ignore[arg-type]
        else:
            self._x, self._y = np.asarray(params.x, dtype=float), np.asarray(params.y, dtype=float)

    @property
    def method(self) -> Method:
        return self.params.method

    def predict(self, p: ArrayLike | float) -> np.ndarray:
        """Calibrated probabilities, same shape as ``p``, within [0, 1] and non-decreasing in ``p``.

        Never raises for numeric input (the router calls it on every request); NaN stays NaN.
        """
        p_arr = np.asarray(p, dtype=float)
        if self.method == "platt":
            out = _sigmoid(self._a * logit(p_arr) + self._b)
        else:
            out = np.interp(p_arr, self._x, self._y)
        return np.asarray(np.clip(out, 0.0, 1.0))  # an array even for a scalar p

    def to_config(self) -> dict[str, Any]:
        """The parameters as plain floats, for ``gatekeeper.calibration.<target>`` in a router config.

        ``{"method": "platt", "a": .., "b": ..}`` or ``{"method": "isotonic", "x": [..], "y": [..]}``.
        """
        return self.params.model_dump(exclude_none=True)

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
        return cls(params)

    def __repr__(self) -> str:
        return f"ScoreCalibrator(method={self.method!r})"
