"""``introroute eval --routing``: routing quality of each scorer, as the routing papers report it.

For every pair of tiers (weak, strong) and every scorer: APGR, the area under the deferral
curve, CPT(50%) and CPT(80%), RouterBench's AIQ, and the expensive-call and latency reductions
at the always-strong quality minus ``delta`` (default 1 point), each with a bootstrap 95% CI
that re-runs the threshold sweep on every resample; random routing (its expected curve) and the
oracle are reported as references. With three or more tiers it also compares, per scorer, the
cost per query at matched quality (quality >= the best single tier's minus ``delta``) of

* (a) ``cost_aware`` over every tier's own head (one probability per tier from one prefill),
* (b) the ``threshold`` cascade (one tau against each tier's probability, cheap -> expensive),
* (c) RouteLLM-style routing between the two most expensive tiers only (the remote pair),

with CIs of the chosen operating point's cost and quality (the knob fixed, the queries
resampled: selection noise is not in them). Outputs: ``routing.json``, ``routing.md`` and one
``deferral_<weak>__<strong>.png`` per tier pair.

The metric definitions live in :mod:`introroute.routing_eval.metrics`; the replay in
:mod:`introroute.routing_eval.replay`. This module only assembles and writes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from introroute.errors import DataError, IntrorouteError
from introroute.evaluation.metrics import bootstrap
from introroute.evaluation.report import json_safe, slug
from introroute.policies import build_policy
from introroute.routing_eval.metrics import (
    DEFAULT_DELTA,
    OperatingCurve,
    cheapest_at_quality,
    curve_report,
    deferral_curve,
    oracle_curve,
    random_curve,
)
from introroute.routing_eval.replay import ScoredLog, knob_of, replay, sweep

CURVE_POINTS = 101  # shares 0%, 1%, ..., 100% stored per curve in routing.json
REFERENCES = ("random-routing", "oracle")


def _pair_builder(
    log: ScoredLog, weak: int, strong: int, scorer: str | None
) -> Callable[[np.ndarray], OperatingCurve]:
    """``indices -> curve`` for one tier pair: a scorer's deferral curve, or a reference's."""
    cols = [weak, strong]
    correct, cost, latency = log.correct[:, cols], log.cost[:, cols], log.latency[:, cols]
    if scorer == "random-routing":
        return lambda idx: random_curve(correct[idx], cost[idx], latency[idx])
    if scorer == "oracle":
        return lambda idx: oracle_curve(correct[idx], cost[idx], latency[idx])
    score = log.scorer(scorer)[:, weak]
    return lambda idx: deferral_curve(score[idx], correct[idx], cost[idx], latency[idx])


def _sampled(curve: OperatingCurve) -> dict[str, list[float]]:
    """The curve at shares 0, 1, ..., 100% (share is strictly increasing on a deferral curve)."""
    shares = np.linspace(0.0, 1.0, CURVE_POINTS)
    out = {"share": shares.round(4).tolist()}
    for name in ("quality", "cost", "latency"):
        values = getattr(curve, name)
        out[name] = (
            np.interp(shares, curve.share, values).round(8).tolist() if np.isfinite(values).all() else None
        )
    return out


def evaluate_pair(
    log: ScoredLog, weak: int, strong: int, scorers: Sequence[str], n_boot: int, seed: int, delta: float
) -> dict[str, Any]:
    """Every metric of every scorer (and the references) for routing between two tiers."""
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in [*scorers, *REFERENCES]:
        if name not in REFERENCES and np.isnan(log.scorer(name)[:, weak]).any():
            skipped[name] = f"no score for {log.tiers[weak].target!r}"
            continue
        build = _pair_builder(log, weak, strong, name)
        curve = build(np.arange(len(log)))
        results[name] = {
            "metrics": curve_report(build, len(log), n_boot, seed, delta),
            "curve": _sampled(curve),
        }
    return {
        "weak": log.tiers[weak].name,
        "strong": log.tiers[strong].name,
        "q_weak": float(log.correct[:, weak].mean()),
        "q_strong": float(log.correct[:, strong].mean()),
        "scorers": results,
        "skipped": skipped,
    }


def _fixed_point_ci(
    correct: np.ndarray, cost: np.ndarray, n_boot: int, seed: int
) -> dict[str, dict[str, float]]:
    """CIs of mean quality and cost for fixed per-query choices (queries resampled)."""
    out = {}
    for name, values in (("quality", correct), ("cost_per_query", cost)):
        point, lo, hi = bootstrap(lambda idx, v=values: float(v[idx].mean()), len(values), n_boot, seed)
        out[name] = {"value": point, "lo": lo, "hi": hi}
    return out


def _method_at(
    log: ScoredLog,
    policy_type: str,
    params: Mapping[str, Any],
    scorer: str,
    min_quality: float,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The cheapest operating point of a policy family with quality >= ``min_quality``."""
    curve = sweep(policy_type, params, log, scorer)
    index = cheapest_at_quality(curve, min_quality)
    if index is None:
        best = int(np.nanargmax(curve.quality))
        return {"met": False, "best_quality": float(curve.quality[best]), "points": len(curve)}
    knob = knob_of(policy_type)
    point = curve.point(index)
    result = replay(build_policy(policy_type, {**params, knob: point["knob"]}), log, scorer)
    return {
        "met": True,
        "policy": policy_type,
        knob: point["knob"],
        "points": len(curve),
        "shares": {t.name: point[f"share_{i}"] for i, t in enumerate(log.tiers)},
        "latency_s": point["latency_s"],
        **_fixed_point_ci(result.correct, result.cost, n_boot, seed),
    }


def _oracle_cascade(log: ScoredLog) -> dict[str, Any]:
    """The cheapest tier that answers correctly (the first tier when none does): a lower bound."""
    right = log.correct.astype(bool)
    choice = np.where(right.any(axis=1), right.argmax(axis=1), 0)
    rows = np.arange(len(log))
    return {
        "quality": float(right.any(axis=1).mean()),
        "cost_per_query": float(log.cost[rows, choice].mean()),
        "shares": {t.name: float((choice == i).mean()) for i, t in enumerate(log.tiers)},
    }


def compare_multi_tier(
    log: ScoredLog,
    scorers: Sequence[str],
    cost_aware_params: Mapping[str, Any],
    n_boot: int,
    seed: int,
    delta: float,
) -> dict[str, Any]:
    """(a) cost_aware, (b) threshold cascade, (c) remote pair: cost per query at matched quality."""
    always = {t.name: log.always(i) for i, t in enumerate(log.tiers)}
    best_quality = max(a["quality"] for a in always.values())
    min_quality = best_quality - delta
    cheapest_single = min(  # an unknown (NaN) cost sorts last
        (a["cost_per_query"] if math.isfinite(a["cost_per_query"]) else math.inf, name)
        for name, a in always.items()
        if a["quality"] >= min_quality - 1e-12
    )
    remote = log.tier_subset([len(log.tiers) - 2, len(log.tiers) - 1])
    methods: dict[str, Callable[[str], dict[str, Any]]] = {
        "cost_aware": lambda s: _method_at(
            log, "cost_aware", cost_aware_params, s, min_quality, n_boot, seed
        ),
        "threshold_cascade": lambda s: _method_at(log, "threshold", {}, s, min_quality, n_boot, seed),
        "remote_pair": lambda s: _method_at(remote, "threshold", {}, s, min_quality, n_boot, seed),
    }
    per_scorer: dict[str, Any] = {}
    for scorer in scorers:
        per_scorer[scorer] = {}
        for method, run in methods.items():
            try:
                per_scorer[scorer][method] = run(scorer)
            except IntrorouteError as exc:  # e.g. a tier without a price, a target without a score
                per_scorer[scorer][method] = {"met": False, "error": str(exc)}
    return {
        "best_tier_quality": best_quality,
        "min_quality": min_quality,
        "cheapest_single_tier": {"tier": cheapest_single[1], "cost_per_query": cheapest_single[0]},
        "oracle": _oracle_cascade(log),
        "cost_aware_params": dict(cost_aware_params),
        "scorers": per_scorer,
    }


def evaluate_routing(
    log: ScoredLog,
    scorers: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
    cost_aware_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole routing report as a JSON-ready dict (see the module docstring)."""
    for name in scorers:
        log.scorer(name)  # an unknown scorer fails before any work
        if name in REFERENCES:
            raise DataError(f"scorer name {name!r} is taken by a reference curve; rename the scorer")
    n_tiers = len(log.tiers)
    result: dict[str, Any] = {
        "n_queries": len(log),
        "splits": {str(s): int(c) for s, c in zip(*np.unique(log.splits, return_counts=True), strict=True)},
        "dropped": dict(log.dropped),
        "output_tokens": log.output_tokens,
        "delta": delta,
        "bootstrap_resamples": n_boot,
        "tiers": [
            {
                "name": t.name,
                "target": t.target,
                "local": t.local,
                "input_per_1m": t.input_per_1m,
                "output_per_1m": t.output_per_1m,
                "ttft_ms": t.ttft_ms,
                "per_output_token_ms": t.per_output_token_ms,
                **log.always(i),
            }
            for i, t in enumerate(log.tiers)
        ],
        "scorers": list(scorers),
        "pairs": [
            evaluate_pair(log, weak, strong, scorers, n_boot, seed, delta)
            for weak in range(n_tiers)
            for strong in range(weak + 1, n_tiers)
        ],
        "multi_tier": None,
    }
    if n_tiers >= 3:
        params = {"output_tokens": log.output_tokens, **(cost_aware_params or {})}
        params.pop("lam", None)
        result["multi_tier"] = compare_multi_tier(log, scorers, params, n_boot, seed, delta)
    return result


# ---------------------------------------------------------------------------- writing


def _ci(cell: Mapping[str, float] | None, percent: bool = False, digits: int = 3) -> str:
    if cell is None or cell.get("value") is None or not math.isfinite(cell["value"]):
        return "–"
    scale, unit, digits = (100.0, "%", 1) if percent else (1.0, "", digits)
    text = f"{cell['value'] * scale:.{digits}f}{unit}"
    if cell.get("lo") is not None and math.isfinite(cell["lo"]):
        text += f" [{cell['lo'] * scale:.{digits}f}, {cell['hi'] * scale:.{digits}f}]"
    return text


def _money(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"${value * 1000:.4f}"


PAIR_COLUMNS = (
    ("apgr", "APGR", False),
    ("deferral_auc", "deferral AUC", False),
    ("cpt_50", "CPT(50%)", True),
    ("cpt_80", "CPT(80%)", True),
    ("aiq", "AIQ", False),
    ("call_reduction", "strong-call reduction", True),
    ("latency_reduction", "latency reduction", True),
)


def markdown(result: Mapping[str, Any]) -> str:
    """Tier table, one metrics table per tier pair (a row per scorer), the N-tier comparison."""
    splits = ", ".join(f"{s} {n}" for s, n in result["splits"].items())
    delta_pts = result["delta"] * 100
    lines = [
        f"# Routing evaluation: {result['n_queries']} queries ({splits})",
        "",
        f"Replayed offline from logged outcomes; costs and latencies assume {result['output_tokens']} output "
        "tokens unless the log has them (see introroute/routing_eval/replay.py). 95% bootstrap CIs over "
        f"queries ({result['bootstrap_resamples']} resamples; curve metrics re-run the threshold sweep "
        "per resample).",
    ]
    if result["dropped"]:
        lines += ["", "Dropped records: " + ", ".join(f"{k}: {v}" for k, v in result["dropped"].items())]
    lines += [
        "",
        "| tier | target | $ / 1M in, out | latency model | accuracy alone | cost / 1k queries "
        "| mean latency |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in result["tiers"]:
        price = "–" if t["input_per_1m"] is None else f"{t['input_per_1m']:g}, {t['output_per_1m']:g}"
        latency = (
            "–" if t["ttft_ms"] is None else f"{t['ttft_ms']:g} ms + {t['per_output_token_ms']:g} ms/token"
        )
        mean_latency = "–" if not math.isfinite(t["latency_s"]) else f"{t['latency_s']:.2f} s"
        lines.append(
            f"| {t['name']} | {t['target']} | {price} | {latency} | {t['quality']:.3f} | "
            f"{_money(t['cost_per_query'])} | {mean_latency} |"
        )
    header = "| scorer | " + " | ".join(label for _, label, _ in PAIR_COLUMNS) + " |"
    for pair in result["pairs"]:
        lines += [
            "",
            f"## {pair['weak']} -> {pair['strong']}",
            "",
            f"Accuracy alone: {pair['weak']} {pair['q_weak']:.3f}, {pair['strong']} {pair['q_strong']:.3f}. "
            "CPT: share of queries sent to the strong tier at which PGR first reaches 50% / 80% (first "
            f"crossing, linear between the bracketing points). Reductions: at the fewest strong calls "
            f"with accuracy >= {pair['strong']} alone minus {delta_pts:g} point(s). random-routing: "
            "expected curve of random routing; oracle: weak when it is right, else strong.",
            "",
            header,
            "|---" * (len(PAIR_COLUMNS) + 1) + "|",
        ]
        for name, data in pair["scorers"].items():
            cells = [_ci(data["metrics"][key], percent) for key, _, percent in PAIR_COLUMNS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for name, why in pair["skipped"].items():
            lines.append(f"| {name} | skipped: {why} |" + " |" * (len(PAIR_COLUMNS) - 1))
        lines += ["", f"![deferral curves]({_plot_name(pair['weak'], pair['strong'])})"]
    if result["multi_tier"]:
        lines += _multi_tier_markdown(result["multi_tier"], delta_pts)
    return "\n".join(lines) + "\n"


def _multi_tier_markdown(multi: Mapping[str, Any], delta_pts: float) -> list[str]:
    single = multi["cheapest_single_tier"]
    oracle = multi["oracle"]
    lines = [
        "",
        "## Cost per query at matched quality (accuracy >= best single tier "
        f"{multi['best_tier_quality']:.3f} minus {delta_pts:g} point(s) = {multi['min_quality']:.3f})",
        "",
        f"Cheapest single tier meeting it: {single['tier']} at {_money(single['cost_per_query'])} per 1k "
        f"queries. Oracle (cheapest correct tier): accuracy {oracle['quality']:.3f} at "
        f"{_money(oracle['cost_per_query'])} per 1k queries. (a) cost_aware over every tier's head, (b) "
        "threshold cascade, (c) 2-model routing between the two most expensive tiers. CIs: the chosen "
        "knob fixed, queries resampled.",
    ]
    for scorer, methods in multi["scorers"].items():
        lines += [
            "",
            f"### {scorer}",
            "",
            "| method | knob | cost / 1k queries | accuracy | tier shares |",
            "|---|---|---|---|---|",
        ]
        for method, data in methods.items():
            if not data.get("met"):
                why = (
                    data.get("error")
                    or f"not reached; best accuracy {data.get('best_quality', math.nan):.3f}"
                )
                lines.append(f"| {method} | – | – | – | {why} |")
                continue
            knob = knob_of(data["policy"])
            cost = data["cost_per_query"]
            cost_text = f"{_money(cost['value'])} [{_money(cost['lo'])}, {_money(cost['hi'])}]"
            shares = ", ".join(f"{k} {v:.0%}" for k, v in data["shares"].items())
            lines.append(
                f"| {method} | {knob}={data[knob]:.4g} | {cost_text} | {_ci(data['quality'])} | {shares} |"
            )
    return lines


def _plot_name(weak: str, strong: str) -> str:
    return f"deferral_{slug(weak)}__{slug(strong)}.png"


def plot_pairs(log: ScoredLog, result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per tier pair: every scorer's deferral curve, random and oracle, at full resolution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = log.tier_names
    paths = []
    for pair in result["pairs"]:
        weak, strong = names.index(pair["weak"]), names.index(pair["strong"])
        fig, ax = plt.subplots(figsize=(6, 5))
        for name, data in pair["scorers"].items():
            curve = _pair_builder(log, weak, strong, name)(np.arange(len(log)))
            style = {"random-routing": ("grey", "--"), "oracle": ("black", ":")}.get(name, (None, "-"))
            label = f"{name} (APGR {data['metrics']['apgr']['value']:.3f})"
            ax.plot(curve.share * 100, curve.quality, color=style[0], linestyle=style[1], label=label, lw=1.2)
        ax.axhline(pair["q_strong"] - result["delta"], color="grey", lw=0.6, alpha=0.6)
        ax.set(
            xlabel=f"queries sent to {pair['strong']} (%)",
            ylabel="accuracy",
            title=f"{pair['weak']} -> {pair['strong']} ({len(log)} queries)",
        )
        ax.legend(fontsize="small", loc="lower right")
        paths.append(out_dir / _plot_name(pair["weak"], pair["strong"]))
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
        plt.close(fig)
    return paths


def write_routing(out_dir: str | Path, log: ScoredLog, result: Mapping[str, Any]) -> list[Path]:
    """``routing.json``, ``routing.md`` and the deferral-curve PNGs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "routing.json").write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n")
    (out / "routing.md").write_text(markdown(result))
    return [out / "routing.json", out / "routing.md", *plot_pairs(log, result, out)]
