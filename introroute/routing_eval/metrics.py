"""How good a router is, measured the way the routing literature measures it (pure numpy).

Why curves and not one accuracy: a router is a family of operating points (one per threshold or
cost weight), and deployments pick the point, so a router is judged by the whole trade-off
between quality and how often (or how expensively) it calls the strong model. The measures here
are the published ones, so numbers compare with the papers:

* **Deferral curve** (2 tiers, weak/strong): sweep the threshold over every distinct score,
  routing to the strong model when P(weak answers well) < tau, so the lowest-scored queries go
  up first; x = share of queries on the strong model, y = share answered correctly. Tied scores
  cannot be split by a threshold, so a tie block moves up as one; the straight segment across
  the block is the expected curve under random tie-breaking.
* **PGR / APGR** (RouteLLM, arXiv 2406.18665): performance gap recovered,
  ``(quality - q_weak) / (q_strong - q_weak)``, and its area over strong-call share in [0, 1]
  (exact trapezoid over all points; RouteLLM's released code samples 10 shares).
* **CPT(p)** (RouteLLM): the smallest strong-call share at which PGR reaches p.
* **AIQ** (RouterBench, arXiv 2403.12031): area under the non-decreasing convex hull of the
  (cost, quality) operating points, divided by the cost range.
* **Matched reliability**: the cheapest operating point whose quality is within ``delta`` of the
  always-strong quality, reported as expensive-call and latency reductions.
* **Reference curves**: random routing (the straight line between the endpoints: its expected
  value) and the oracle (weak when the weak model is right, else strong).

Every function takes per-query arrays, so bootstrap CIs are a resample of the query indices
(:func:`bootstrap_metric`, reusing :func:`introroute.evaluation.metrics.bootstrap`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from introroute.evaluation.metrics import bootstrap

DEFAULT_DELTA = 0.01  # "always-strong quality minus 1 point"


@dataclass(frozen=True)
class OperatingCurve:
    """Operating points of one router, sorted by expensive-call share (then by knob).

    ``share``: share of queries answered by the most expensive tier; ``quality``: share answered
    correctly; ``cost``: mean USD per query (NaN when a price is unknown); ``latency``: mean
    seconds per query (NaN when unknown); ``knob``: the parameter value of each point (threshold
    or cost weight; NaN where the point is not reachable by one value, e.g. the 100% endpoint of
    a threshold curve when the top score is 1).
    """

    share: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    latency: np.ndarray
    knob: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.share)

    def sorted(self) -> OperatingCurve:
        """The same points ordered by share, then knob (sweeps of N-tier policies come unordered)."""
        order = np.lexsort((self.knob, self.share))
        return OperatingCurve(
            self.share[order],
            self.quality[order],
            self.cost[order],
            self.latency[order],
            self.knob[order],
            {k: v[order] for k, v in self.extra.items()},
        )

    def point(self, index: int) -> dict[str, float]:
        """One operating point as plain floats (for reports)."""
        out = {
            "share": float(self.share[index]),
            "quality": float(self.quality[index]),
            "cost_per_query": float(self.cost[index]),
            "latency_s": float(self.latency[index]),
            "knob": float(self.knob[index]),
        }
        return out | {k: float(v[index]) for k, v in self.extra.items()}


def _column(values: np.ndarray | None, n: int) -> np.ndarray:
    """A per-query [N, 2] array, or NaNs when unknown (costs and latencies are optional)."""
    if values is None:
        return np.full((n, 2), np.nan)
    array = np.asarray(values, dtype=float)
    if array.shape != (n, 2):
        raise ValueError(f"expected a per-query [N, 2] (weak, strong) array, got shape {array.shape}")
    return array


def deferral_curve(
    weak_score: np.ndarray,
    correct: np.ndarray,
    cost: np.ndarray | None = None,
    latency: np.ndarray | None = None,
) -> OperatingCurve:
    """The 2-tier threshold curve: every distinct threshold, both endpoints included.

    ``weak_score``: [N] P(the weak model answers well); ``correct``, ``cost``, ``latency``: [N, 2]
    per query for (weak, strong). Point k sends the queries of the k lowest distinct scores to
    the strong model; its ``knob`` is the threshold tau that does so with ``p < tau -> strong``
    (the next distinct score; NaN for the all-strong point: no tau in [0, 1] exceeds a score of
    1, and any tau above the top score does it otherwise). O(N log N).
    """
    score = np.asarray(weak_score, dtype=float)
    n = len(score)
    right = np.asarray(correct, dtype=float)
    if right.shape != (n, 2) or np.isnan(right).any():
        raise ValueError(f"correct must be a complete [N, 2] 0/1 array for N={n} scores")
    cost_arr, latency_arr = _column(cost, n), _column(latency, n)
    order = np.argsort(score, kind="mergesort")
    ranked = score[order]
    # The curve after moving the first k queries (by score) to the strong model: prefix sums.
    moved = np.r_[0, np.flatnonzero(np.diff(ranked)) + 1, n] if n else np.array([0])

    def mean_after(values: np.ndarray) -> np.ndarray:
        gain = np.r_[0.0, np.cumsum(values[order, 1] - values[order, 0])]
        return (values[:, 0].sum() + gain[moved]) / max(n, 1)

    knob = np.r_[ranked[moved[:-1]], math.nan] if n else np.array([math.nan])
    if n and ranked[-1] < 1.0:
        knob[-1] = 1.0
    return OperatingCurve(
        share=moved / max(n, 1),
        quality=mean_after(right),
        cost=mean_after(cost_arr),
        latency=mean_after(latency_arr),
        knob=knob,
    )


def random_curve(
    correct: np.ndarray, cost: np.ndarray | None = None, latency: np.ndarray | None = None
) -> OperatingCurve:
    """Random routing's expected curve: the straight line between always-weak and always-strong.

    It is the deferral curve of a constant score (one tie block moved up all at once).
    """
    n = len(np.asarray(correct))
    return deferral_curve(np.zeros(n), correct, cost, latency)


def oracle_curve(
    correct: np.ndarray, cost: np.ndarray | None = None, latency: np.ndarray | None = None
) -> OperatingCurve:
    """The oracle: weak when the weak model is right, else strong, extended to both endpoints.

    Ordering queries by ``weak - strong`` sends up first those only the strong model gets right
    (+1 quality each), then those where both agree (no change), last those only the weak model
    gets right; the oracle's own routing is the point after the first block.
    """
    right = np.asarray(correct, dtype=float)
    return deferral_curve(right[:, 0] - right[:, 1], right, cost, latency)


def area(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under ``y(x)`` for points sorted by ``x``; nan for fewer than 2 points."""
    if len(x) < 2:
        return math.nan
    return float(np.trapezoid(y, x))


def endpoints(curve: OperatingCurve) -> tuple[float, float]:
    """``(q_weak, q_strong)``: the quality at the curve's lowest and highest strong-call share."""
    return float(curve.quality[0]), float(curve.quality[-1])


def pgr(quality: np.ndarray | float, q_weak: float, q_strong: float) -> np.ndarray:
    """Performance gap recovered; nan when the two models are equally good (no gap to recover)."""
    gap = q_strong - q_weak
    if gap == 0 or not math.isfinite(gap):
        return np.full(np.shape(quality), math.nan)
    return (np.asarray(quality, dtype=float) - q_weak) / gap


def deferral_auc(curve: OperatingCurve) -> float:
    """Area under quality vs strong-call share on [0, 1] (the curve must span both endpoints)."""
    return area(curve.share, curve.quality)


def apgr(curve: OperatingCurve) -> float:
    """Average PGR: area under PGR vs strong-call share (RouteLLM), exact trapezoid on [0, 1].

    Random routing scores 0.5 and the strong model alone 0.5 too, whatever the models.
    """
    q_weak, q_strong = endpoints(curve)
    return area(curve.share, pgr(curve.quality, q_weak, q_strong))


def first_crossing(x: np.ndarray, y: np.ndarray, level: float, tol: float = 1e-12) -> float:
    """The smallest x at which ``y`` first reaches ``level``, walking the points in order of x.

    Why the first crossing: an empirical curve is not monotone, and interpolating its inverse
    (``np.interp(level, y, x)``) silently assumes it is, which can report a later crossing (or a
    meaningless one). Between the last point below ``level`` and the first point at or above it,
    the answer is linearly interpolated (the straight segment is achievable by mixing the two
    operating points at random). nan when the curve never reaches ``level``; a point within
    ``tol`` below it counts as reaching it (shares of queries are ratios, not exact decimals).
    """
    reached = np.flatnonzero(np.asarray(y) >= level - tol)
    if not len(reached):
        return math.nan
    i = int(reached[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = float(x[i - 1]), float(x[i]), float(y[i - 1]), float(y[i])
    return x0 + min(1.0, (level - y0) / (y1 - y0)) * (x1 - x0)


def cpt(curve: OperatingCurve, p: float) -> float:
    """Call-performance threshold: the strong-call share at which PGR first reaches ``p``."""
    q_weak, q_strong = endpoints(curve)
    return first_crossing(curve.share, pgr(curve.quality, q_weak, q_strong), p)


def nondecreasing_hull(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing upper convex hull of (cost, quality) points, as RouterBench defines it.

    Why a hull: any point on a segment between two operating points is achievable by routing a
    matching share of queries with each; why non-decreasing: past the best point, spending more
    need not lower quality (keep using the best point). Returns the hull's vertices sorted by
    cost, ending with a flat segment to the largest cost. Only Pareto-optimal points can be
    vertices of the rising part, so the hull is built over :func:`pareto_front` (fast enough to
    run inside a bootstrap).
    """
    c, q = np.asarray(cost, dtype=float), np.asarray(quality, dtype=float)
    front = pareto_front(c, q)
    if not len(front):
        return np.array([]), np.array([])
    hull: list[tuple[float, float]] = []
    for point in zip(c[front].tolist(), q[front].tolist(), strict=True):
        # Monotone-chain upper hull: drop the last vertex while it lies on or below the chord.
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (point[1] - y1) - (y2 - y1) * (point[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(point)
    xs, ys = np.array([h[0] for h in hull]), np.array([h[1] for h in hull])
    c_max = float(np.max(c[np.isfinite(c) & np.isfinite(q)]))
    if xs[-1] < c_max:  # the front ends at its best point; flat from there to the largest cost
        xs, ys = np.r_[xs, c_max], np.r_[ys, ys[-1]]
    return xs, ys


def aiq(cost: np.ndarray, quality: np.ndarray) -> float:
    """RouterBench's AIQ: ``1 / (c_max - c_min) * integral of the hull`` over the points' cost range.

    (RouterBench's released code divides by ``c_max`` instead; the paper's formula is used here.)
    With one distinct cost the range is empty and the AIQ is that point's quality; nan without
    any finite point.
    """
    xs, ys = nondecreasing_hull(cost, quality)
    if not len(xs):
        return math.nan
    if xs[-1] == xs[0]:
        return float(ys.max())
    return area(xs, ys) / float(xs[-1] - xs[0])


def pareto_front(cost: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Indices of the operating points no other point beats on both cost and quality, by cost.

    A point is dominated when another costs no more and is no worse, and is strictly better on
    one of the two (of identical points, one is kept). Points with a NaN cost or quality are
    left out. Vectorised: sorted by cost (best quality first among equal costs), a point is on
    the front when its quality beats every cheaper point's.
    """
    c, q = np.asarray(cost, dtype=float), np.asarray(quality, dtype=float)
    candidates = np.flatnonzero(np.isfinite(c) & np.isfinite(q))
    order = candidates[np.lexsort((-q[candidates], c[candidates]))]
    ranked = q[order]
    best_before = np.r_[-np.inf, np.maximum.accumulate(ranked)[:-1]] if len(ranked) else ranked
    return order[ranked > best_before].astype(int)


@dataclass(frozen=True)
class MatchedPoint:
    """The fewest expensive calls at quality >= ``reference - delta`` on the (piecewise-linear) curve.

    ``call_reduction``: 1 - that share (always-expensive makes every call expensive);
    ``latency_reduction``: 1 - the mean latency there / the always-expensive mean latency.
    """

    share: float
    quality: float
    latency_s: float
    call_reduction: float
    latency_reduction: float


def _at_share(curve: OperatingCurve, values: np.ndarray, share: float) -> float:
    """``values`` linearly interpolated at ``share`` between the curve's bracketing points."""
    upper = min(int(np.searchsorted(curve.share, share, side="left")), len(curve) - 1)
    if upper == 0 or curve.share[upper] == share:
        return float(values[upper])
    x0, x1 = curve.share[upper - 1], curve.share[upper]
    return float(values[upper - 1] + (share - x0) / (x1 - x0) * (values[upper] - values[upper - 1]))


def matched_reliability(
    curve: OperatingCurve,
    reference_quality: float | None = None,
    reference_latency: float | None = None,
    delta: float = DEFAULT_DELTA,
) -> MatchedPoint | None:
    """Savings at matched reliability (default reference: the curve's always-expensive endpoint).

    The share is the first crossing of ``reference - delta`` (:func:`first_crossing`: the segment
    between two operating points is achievable by mixing them, and random routing, a straight
    line, would otherwise save nothing). ``None`` when the curve never gets there.
    """
    q_ref = float(curve.quality[-1]) if reference_quality is None else reference_quality
    lat_ref = float(curve.latency[-1]) if reference_latency is None else reference_latency
    level = q_ref - delta
    share = first_crossing(curve.share, curve.quality, level)
    if math.isnan(share):
        return None
    latency = _at_share(curve, curve.latency, share)
    return MatchedPoint(
        share=share,
        quality=max(level, _at_share(curve, curve.quality, share)),
        latency_s=latency,
        call_reduction=1.0 - share,
        latency_reduction=1.0 - latency / lat_ref if lat_ref > 0 else math.nan,
    )


def cheapest_at_quality(curve: OperatingCurve, min_quality: float) -> int | None:
    """Index of the lowest-cost point with quality >= ``min_quality`` (ties: better quality)."""
    ok = np.flatnonzero((curve.quality >= min_quality - 1e-12) & np.isfinite(curve.cost))
    if not len(ok):
        return None
    return int(ok[np.lexsort((-curve.quality[ok], curve.cost[ok]))[0]])


# ---------------------------------------------------------------------------- bootstrap

CurveStatistic = Callable[[OperatingCurve], float]


def bootstrap_metric(
    statistic: CurveStatistic,
    build: Callable[[np.ndarray], OperatingCurve],
    n_items: int,
    n: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """``{"value", "lo", "hi"}``: a curve metric with a percentile-bootstrap 95% CI over queries.

    ``build(indices)`` rebuilds the curve from the resampled queries (the threshold sweep is
    re-run on each resample, so the CI covers the curve's own noise, not just the point's).
    """
    point, lo, hi = bootstrap(lambda idx: statistic(build(idx)), n_items, n, seed)
    return {"value": point, "lo": lo, "hi": hi}


STANDARD_METRICS: dict[str, CurveStatistic] = {
    "apgr": apgr,
    "deferral_auc": deferral_auc,
    "cpt_50": lambda c: cpt(c, 0.5),
    "cpt_80": lambda c: cpt(c, 0.8),
    "aiq": lambda c: aiq(c.cost, c.quality),
}


def matched_metrics(delta: float = DEFAULT_DELTA) -> dict[str, CurveStatistic]:
    """Expensive-call and latency reduction at always-strong quality minus ``delta``."""

    def calls(curve: OperatingCurve) -> float:
        point = matched_reliability(curve, delta=delta)
        return point.call_reduction if point else math.nan

    def latency(curve: OperatingCurve) -> float:
        point = matched_reliability(curve, delta=delta)
        return point.latency_reduction if point else math.nan

    return {"call_reduction": calls, "latency_reduction": latency}


def curve_report(
    build: Callable[[np.ndarray], OperatingCurve],
    n_items: int,
    n_boot: int = 1000,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
) -> dict[str, dict[str, float]]:
    """Every standard metric of one 2-tier curve with its bootstrap CI.

    One bootstrap of the vector of all metrics: each resample's curve is built once and every
    metric is read off it.
    """
    metrics = STANDARD_METRICS | matched_metrics(delta)

    def all_metrics(idx: np.ndarray) -> np.ndarray:
        curve = build(idx)
        return np.array([statistic(curve) for statistic in metrics.values()])

    point, lo, hi = bootstrap(all_metrics, n_items, n_boot, seed)
    return {
        name: {"value": float(point[i]), "lo": float(lo[i]), "hi": float(hi[i])}
        for i, name in enumerate(metrics)
    }
