"""Fit a policy's one knob (its :attr:`~introroute.policies.Policy.knob`: ``tau`` of ``threshold``,
``lam`` of ``cost_aware``, whatever a user's policy declares) to a stated target
on held-out logs, and say honestly how well the target will hold on new traffic.

Why fit on logs instead of guessing: tau = 0.5 means nothing unless the scores are calibrated and
the traffic is like the training data; what an operator wants to state is an outcome (at least
95% answered correctly, at most 20% of calls to the expensive model, at most $0.002 per query,
or 80% of the quality gap recovered). Replaying the policy over a scored log
(:mod:`introroute.routing_eval.replay`) gives every outcome of every knob value exactly, so the fit is an
exhaustive search over the distinct routings (:func:`introroute.routing_eval.replay.knob_grid`;
a policy that does not say where its routing changes is searched over evenly sampled values):

* ``reliability`` R / ``pgr`` P (a floor): among the knob values meeting it, the cheapest
  (lowest cost per query; lowest expensive share when prices are unknown), then the best quality;
* ``max_expensive_share`` S / ``max_cost_per_query`` C (a ceiling): among the values within it,
  the best quality, then the cheapest.

A fitted value meets the target on the fit split by construction; on new queries it misses it
about half the time when the fit sits right at the target. :class:`ThresholdFitter` therefore
reports bootstrap 95% CIs and warns when the fit split is small or when the CI's half-width is
larger than the slack between the achieved value and the target (fit with a ``margin`` then).
With ``confidence`` (reliability targets), the fit requires the exact one-sided lower bound of
the reliability (:func:`lower_bound`) to meet the target, and reports it next to the point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from introroute.errors import DataError, PolicyError
from introroute.evaluation.metrics import bootstrap
from introroute.policies import build_policy
from introroute.routing_eval.metrics import pgr
from introroute.routing_eval.replay import ScoredLog, knob_grid, knob_of, replay, sweep

TargetKind = Literal["reliability", "max_expensive_share", "max_cost_per_query", "pgr"]
#: target kind -> (the metric it constrains, +1 for a floor / -1 for a ceiling)
TARGETS: dict[str, tuple[str, int]] = {
    "reliability": ("quality", +1),
    "pgr": ("pgr", +1),
    "max_expensive_share": ("share", -1),
    "max_cost_per_query": ("cost_per_query", -1),
}
MIN_QUERIES = 200  # below this, a proportion's 95% CI is wider than about +-7 points
REPORTED = ("quality", "share", "cost_per_query", "latency_s", "pgr")


@dataclass(frozen=True)
class FitTarget:
    """What the fitted policy must achieve: ``kind`` (see :data:`TARGETS`) and its value.

    ``margin`` tightens the target during the fit (a floor is raised, a ceiling lowered by it),
    buying room for the fit split's sampling noise.
    """

    kind: TargetKind
    value: float
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in TARGETS:
            raise PolicyError(f"unknown target {self.kind!r}; expected one of {sorted(TARGETS)}")
        if not math.isfinite(self.value) or self.value < 0 or self.margin < 0:
            raise PolicyError(f"target {self.kind} needs a finite value >= 0 and margin >= 0")
        if self.kind in ("reliability", "max_expensive_share") and self.value > 1:
            raise PolicyError(f"target {self.kind} is a share in [0, 1], got {self.value}")

    @property
    def metric(self) -> str:
        return TARGETS[self.kind][0]

    @property
    def sense(self) -> int:
        return TARGETS[self.kind][1]

    @property
    def fit_value(self) -> float:
        """The value the fit must reach: the target moved by ``margin`` toward safety."""
        return self.value + self.sense * self.margin

    def met(self, achieved: np.ndarray | float) -> np.ndarray:
        """Whether ``achieved`` values of the metric meet the (margin-adjusted) target."""
        slack = (np.asarray(achieved, dtype=float) - self.fit_value) * self.sense
        return slack >= -1e-12

    def describe(self) -> str:
        bound = ">=" if self.sense > 0 else "<="
        margin = f" (fitted to {self.fit_value:g} with margin {self.margin:g})" if self.margin else ""
        return f"{self.metric} {bound} {self.value:g}{margin}"


def lower_bound(share: np.ndarray, n: int, confidence: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound of a proportion observed as ``share`` of ``n``.

    Why exact (beta quantiles) rather than the bootstrap: audits are few, and near a share of 1
    (reliability 0.95+) the bootstrap's interval collapses onto the point; the exact bound does not.
    """
    from scipy.stats import beta

    k = np.rint(np.asarray(share, dtype=float) * n)
    with np.errstate(invalid="ignore"):
        bound = beta.ppf(1.0 - confidence, k, n - k + 1)
    return np.where(k <= 0, 0.0, bound)


def _reference(log: ScoredLog) -> tuple[float, float]:
    """Quality of always-cheapest and always-most-expensive tier (PGR's endpoints)."""
    return float(log.correct[:, 0].mean()), float(log.correct[:, -1].mean())


def shortest_in(low: float, high: float, include_high: bool) -> float:
    """A number with few digits in ``(low, high)`` (or ``(low, high]``), for a readable YAML.

    Every value in the interval routes the fit log the same way, so the shortest is as good as
    any; ``low = -inf`` means the interval reaches down to 0 (knobs are >= 0).
    """
    if low == -math.inf:
        return 0.0
    if low == high:
        return float(low)
    if high == math.inf:
        high = low * 2 + 1
        include_high = False
    for digits in range(1, 17):
        for candidate in (round((low + high) / 2, digits), round(high, digits)):
            if low < candidate < high or (include_high and candidate == high):
                return float(candidate)
    return float(high if include_high else (low + high) / 2)


class ThresholdFitter:
    """Fit ``knob`` of a policy family on a scored log (scikit-learn style: ``fit`` then ``evaluate``).

    After :meth:`fit`: ``knob_`` (its name), ``value_`` (the fitted number), ``params_`` (the
    policy's full parameters), ``fit_report_`` (achieved metrics with CIs on the fit log) and
    ``warnings_``.
    """

    def __init__(
        self,
        policy_type: str,
        params: Mapping[str, Any] | None = None,
        target: FitTarget | None = None,
        scorer: str = "gatekeeper",
        n_boot: int = 1000,
        seed: int = 0,
        min_queries: int = MIN_QUERIES,
        confidence: float | None = None,
    ) -> None:
        knob_of(policy_type)  # a PolicyError now, not after scoring, for a policy without a knob
        if target is None:
            raise PolicyError("ThresholdFitter needs a target (FitTarget)")
        self.policy_type = policy_type
        self.params = dict(params or {})
        self.target = target
        self.scorer = scorer
        self.n_boot = n_boot
        self.seed = seed
        self.min_queries = min_queries
        if confidence is not None and not (0.5 <= confidence < 1):
            raise PolicyError(f"confidence must be in [0.5, 1), got {confidence}")
        if confidence is not None and target.kind != "reliability":
            raise PolicyError("a confidence bound applies to a reliability target only")
        self.confidence = confidence

    def _metrics(self, log: ScoredLog) -> dict[str, np.ndarray]:
        """Every distinct routing's metrics on ``log`` (one entry per knob value)."""
        grid = knob_grid(self.policy_type, self.params, log, self.scorer)
        curve = sweep(self.policy_type, self.params, log, self.scorer, grid.values)
        position = {float(v): i for i, v in enumerate(grid.values)}
        order = np.array([position[float(k)] for k in curve.knob])
        q_weak, q_strong = _reference(log)
        return {
            "knob": curve.knob,
            "low": grid.low[order],
            "high": grid.high[order],
            "include_high": np.full(len(order), grid.include_high),
            "quality": curve.quality,
            "share": curve.share,
            "cost_per_query": curve.cost,
            "latency_s": curve.latency,
            "pgr": pgr(curve.quality, q_weak, q_strong),
        }

    def _choose(self, metrics: Mapping[str, np.ndarray], log: ScoredLog) -> int:
        achieved = metrics[self.target.metric]
        if self.confidence is not None:  # the bound must meet the target, not only the point
            achieved = lower_bound(achieved, len(log), self.confidence)
        if np.isnan(achieved).all():
            raise DataError(
                f"{self.target.metric} is unknown on this log (no prices for cost, or equal tiers for PGR)"
            )
        feasible = np.flatnonzero(self.target.met(achieved))
        if not len(feasible):
            best = int(np.nanargmax(achieved * self.target.sense))
            knob = knob_of(self.policy_type)
            quality = "" if self.target.metric == "quality" else f", quality {metrics['quality'][best]:.4g}"
            raise PolicyError(
                f"target {self.target.describe()} cannot be met on the fit split ({len(log)} queries): "
                f"the best achievable {self.target.metric} is {achieved[best]:.4g} "
                f"({knob}={metrics['knob'][best]:.4g}{quality})"
            )
        cost = metrics["cost_per_query"] if np.isfinite(metrics["cost_per_query"]).all() else metrics["share"]
        if self.target.sense > 0:  # a floor: the cheapest, then the best quality
            keys = (-metrics["quality"][feasible], cost[feasible])
        else:  # a ceiling: the best quality, then the cheapest
            keys = (cost[feasible], -metrics["quality"][feasible])
        return int(feasible[np.lexsort(keys)[0]])

    def fit(self, log: ScoredLog) -> ThresholdFitter:
        """Search every distinct routing of ``log`` for the best one meeting the target."""
        if not len(log):
            raise DataError("the fit split has no queries")
        metrics = self._metrics(log)
        best = self._choose(metrics, log)
        self.knob_ = knob_of(self.policy_type)
        self.value_ = shortest_in(
            float(metrics["low"][best]), float(metrics["high"][best]), bool(metrics["include_high"][best])
        )
        self.params_ = {**self.params, self.knob_: self.value_}
        self.fit_report_ = self.evaluate(log)
        self.warnings_ = self._warnings(self.fit_report_)
        return self

    def evaluate(self, log: ScoredLog) -> dict[str, Any]:
        """The fitted policy's metrics on ``log``, each ``{"value", "lo", "hi"}`` (bootstrap 95%)."""
        policy = build_policy(self.policy_type, self._fitted_params())
        result = replay(policy, log, self.scorer)
        n = len(log)
        weak, strong = log.correct[:, 0], log.correct[:, -1]
        expensive = (result.choice == len(log.tiers) - 1).astype(float)
        statistics: dict[str, Callable[[np.ndarray], float]] = {
            "quality": lambda idx: float(result.correct[idx].mean()),
            "share": lambda idx: float(expensive[idx].mean()),
            "cost_per_query": lambda idx: float(result.cost[idx].mean()),
            "latency_s": lambda idx: float(result.latency[idx].mean()),
            "pgr": lambda idx: float(pgr(result.correct[idx].mean(), weak[idx].mean(), strong[idx].mean())),
        }
        report: dict[str, Any] = {"n": n}
        for name in REPORTED:
            point, lo, hi = bootstrap(statistics[name], n, self.n_boot, self.seed)
            report[name] = {"value": point, "lo": lo, "hi": hi}
        report["tier_shares"] = {t.name: float((result.choice == i).mean()) for i, t in enumerate(log.tiers)}
        report["target_met"] = bool(self.target.met(report[self.target.metric]["value"]))
        if self.confidence is not None:
            bound = float(lower_bound(np.array([report["quality"]["value"]]), n, self.confidence)[0])
            report["quality"]["bound"] = bound
            report["quality"]["confidence"] = self.confidence
            report["bound_met"] = bool(self.target.met(bound))
        return report

    def _fitted_params(self) -> dict[str, Any]:
        params = getattr(self, "params_", None)
        if params is None:
            raise PolicyError("ThresholdFitter is not fitted: call fit(log) first")
        return params

    def _warnings(self, report: Mapping[str, Any]) -> list[str]:
        """Too few fit queries, or a CI wider than the room between the achieved value and the target."""
        out = []
        n = report["n"]
        if n < self.min_queries:
            out.append(
                f"the fit split has only {n} queries (< {self.min_queries}): its proportions are uncertain "
                "by more than +-7 points; fit on more logged queries"
            )
        cell = report[self.target.metric]
        if math.isfinite(cell["lo"]):
            half = (cell["hi"] - cell["lo"]) / 2
            slack = (cell["value"] - self.target.value) * self.target.sense
            if half > slack:
                out.append(
                    f"{self.target.metric} on the fit split is {cell['value']:.4g} with a 95% CI of "
                    f"+-{half:.3g}, wider than its slack {slack:.3g} over the target {self.target.value:g}: "
                    f"new traffic may miss the target; refit with --margin {half:.2g} or on more queries"
                )
        return out


def preset_tau(p: np.ndarray, y: np.ndarray, reliability: float) -> dict[str, float]:
    """The lowest P(self) threshold whose kept-local queries keep the paper's reliability.

    Reliability is ``1 - share of all queries kept local and answered wrongly`` (an escalated
    query counts as answered well, as the IntroLM paper counts its large model): the measure
    that needs only the local model's labels, so it fits a threshold preset from an ``eval``'s
    predictions alone, where :class:`ThresholdFitter` needs every tier's outcome. The threshold
    is rounded up to 3 decimals: a preset never keeps more than the fit allows.
    """
    order = np.argsort(-p, kind="stable")
    wrong_kept = np.cumsum(1 - y[order])  # kept local = the k highest scores
    ok = np.nonzero(1 - wrong_kept / len(y) >= reliability)[0]
    k = int(ok[-1]) + 1 if len(ok) else 0
    tau = float(p[order][k - 1]) if k else 1.0
    preset = float(np.ceil(tau * 1000) / 1000)
    return {
        "n": len(y),
        "tau": preset,
        "kept_local": float(np.mean(p >= preset)),
        "reliability": 1 - float(np.sum((p >= preset) * (1 - y))) / len(y),
    }
