"""Compare scorers (the gatekeeper, baselines) on the same records and targets: numbers and plots.

For every target and scorer: ROC-AUC, PR-AUC, Brier score and ECE (15 bins) pooled and per
dataset, each with a bootstrap 95% CI (:mod:`introroute.evaluation.metrics`); within-task ROC-AUC; and
ROC-AUC on the unseen MMLU subjects (split ``test_unseen``).

Why within-task AUC is the headline: pooled AUC partly rewards recognising the task (datasets
and MMLU subjects differ in base rate), which the content-blind ``prior`` baseline already does.
Within-task AUC is the mean of per-task AUCs (task = MMLU subject, else dataset), weighted by
the task's size so that a 30-question subject moves it less than a 300-question one; its CI
resamples inside each task. Outputs: ``report.json``, ``report.md``, ``predictions.jsonl`` and,
per target, ``roc_<target>.png`` and ``reliability_<target>.png``. The within-task CI
reuses the stratified bootstrap of :mod:`introroute.evaluation.metrics` (``bootstrap``).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from introroute.data.records import to_examples
from introroute.data.schema import RoutingRecord
from introroute.errors import DataError
from introroute.evaluation.metrics import ECE_BINS, bootstrap, bootstrap_ci, ece, report, roc_auc

UNSEEN_SPLIT = "test_unseen"
METRIC_NAMES = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "brier": "Brier", "ece": "ECE"}


def task_path(record: RoutingRecord) -> tuple[str, ...]:
    """A record's task, most general first: ``(dataset, subject)``, or ``(dataset,)``."""
    return (record.dataset, record.subject) if record.subject else (record.dataset,)


def task_aucs(y: np.ndarray, p: np.ndarray, tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC (nan with one class) and size of every task code ``0..max(tasks)``, in one sort.

    The Mann-Whitney statistic, as :func:`introroute.evaluation.metrics.roc_auc` computes it (ties get the
    average rank), vectorised over tasks: the within-task bootstrap needs it thousands of times
    for dozens of subjects, where a rank per subject would take minutes.
    """
    count = int(tasks.max()) + 1 if len(tasks) else 0
    order = np.lexsort((p, tasks))
    t, p, y = tasks[order], p[order], y[order]
    sizes = np.bincount(t, minlength=count)
    starts = np.cumsum(sizes) - sizes
    new_value = np.r_[True, (t[1:] != t[:-1]) | (p[1:] != p[:-1])]
    first = np.flatnonzero(new_value)
    last = np.r_[first[1:], len(t)] - 1
    block = np.cumsum(new_value) - 1
    ranks = (first + last)[block] / 2 - starts[t] + 1  # 1-based, ties averaged, within the task
    positives = np.bincount(t, weights=y, minlength=count)
    negatives = sizes - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        aucs = (np.bincount(t, weights=ranks * y, minlength=count) - positives * (positives + 1) / 2) / (
            positives * negatives
        )
    aucs[(positives == 0) | (negatives == 0)] = np.nan
    return aucs, sizes


def weighted_within_auc(y: np.ndarray, p: np.ndarray, tasks: np.ndarray) -> float:
    """Mean of per-task ROC-AUCs weighted by task size, over tasks with both classes; nan if none.

    ``tasks`` are integer codes (``np.unique(..., return_inverse=True)``)."""
    aucs, sizes = task_aucs(y, p, tasks)
    finite = ~np.isnan(aucs)
    return float(np.average(aucs[finite], weights=sizes[finite])) if finite.any() else math.nan


def _interval(point: float, lo: float, hi: float) -> dict[str, float]:
    return {"value": point, "lo": lo, "hi": hi}


def _within_task(y: np.ndarray, p: np.ndarray, tasks: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    names, codes = np.unique(tasks, return_inverse=True)
    point, lo, hi = bootstrap(
        lambda idx: weighted_within_auc(y[idx], p[idx], codes[idx]), len(y), n_boot, seed, strata=codes
    )
    return _interval(point, lo, hi) | {"tasks": len(names)}


def evaluate_target(
    y: np.ndarray,
    p: np.ndarray,
    datasets: np.ndarray,
    tasks: np.ndarray,
    unseen: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """One target, one scorer: pooled and per-dataset metrics, within-task and unseen-task AUC."""
    base = report(y, p, datasets, n_boot, seed)
    result: dict[str, Any] = {
        "pooled": base["pooled"] | {"within_task_auc": _within_task(y, p, tasks, n_boot, seed)},
        "datasets": {},
        "unseen": None,
    }
    for name, metrics in base["groups"].items():
        rows = datasets == name
        within = _within_task(y[rows], p[rows], tasks[rows], n_boot, seed)
        result["datasets"][name] = metrics | {"within_task_auc": within}
    if unseen.any() and (~unseen).any():  # tasks seen in training, apart from the held-out ones
        result["seen"] = {
            "n": int((~unseen).sum()),
            "within_task_auc": _within_task(y[~unseen], p[~unseen], tasks[~unseen], n_boot, seed),
        }
    if unseen.any():
        y_u, p_u = y[unseen], p[unseen]
        result["unseen"] = {
            "n": int(unseen.sum()),
            "positives": int(y_u.sum()),
            "roc_auc": _interval(*bootstrap_ci(roc_auc, y_u, p_u, n_boot, seed)),
            "within_task_auc": _within_task(y_u, p_u, tasks[unseen], n_boot, seed),
        }
    return result


def _checked(predictions: Mapping[str, np.ndarray], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    checked = {}
    for name, probabilities in predictions.items():
        array = np.asarray(probabilities, dtype=np.float64)
        if array.shape != shape:
            raise DataError(f"scorer {name!r}: predictions of shape {array.shape}, expected {shape}")
        if not (np.isfinite(array).all() and (array >= 0).all() and (array <= 1).all()):
            raise DataError(f"scorer {name!r}: predictions must be finite probabilities in [0, 1]")
        checked[name] = array
    return checked


def evaluate(
    records: Sequence[RoutingRecord],
    targets: Sequence[str],
    predictions: Mapping[str, np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The full report: every target x scorer (``predictions[scorer]`` is ``[N, targets]``)."""
    _, labels = to_examples(records, targets)
    predictions = _checked(predictions, labels.shape)
    datasets = np.array([r.dataset for r in records])
    tasks = np.array(["/".join(task_path(r)) for r in records])
    unseen = np.array([r.split == UNSEEN_SPLIT for r in records])
    results: dict[str, dict[str, Any]] = {}
    for column, target in enumerate(targets):
        observed = ~np.isnan(labels[:, column])
        y = labels[observed, column].astype(np.float64)
        results[target] = {
            name: evaluate_target(
                y, p[observed, column], datasets[observed], tasks[observed], unseen[observed], n_boot, seed
            )
            for name, p in predictions.items()
        }
    return {
        "targets": list(targets),
        "scorers": list(predictions),
        "n_records": len(records),
        "splits": dict(Counter(r.split for r in records)),
        "datasets": dict(Counter(r.dataset for r in records)),
        "bootstrap_resamples": n_boot,
        "ece_bins": ECE_BINS,
        "results": results,
    }


# ---------------------------------------------------------------------------- writing


def _cell(interval: Mapping[str, float] | None) -> str:
    if interval is None or interval["value"] is None or math.isnan(interval["value"]):
        return "–"
    if interval["lo"] is None or math.isnan(interval["lo"]):
        return f"{interval['value']:.3f}"
    return f"{interval['value']:.3f} [{interval['lo']:.3f}, {interval['hi']:.3f}]"


def _slice_row(
    label: str,
    data: Mapping[str, Any],
    unseen: Mapping[str, Any] | None,
    seen: Mapping[str, Any] | None = None,
) -> str:
    cells = [label, str(data["n"]), f"{data['base_rate']:.3f}", _cell(data["roc_auc"])]
    cells += [_cell(data["within_task_auc"]), _cell(seen["within_task_auc"] if seen else None)]
    cells += [_cell(unseen[k] if unseen else None) for k in ("roc_auc", "within_task_auc")]
    cells += [_cell(data.get(m)) for m in ("pr_auc", "pr_auc_failure", "brier", "ece")]
    return "| " + " | ".join(cells) + " |"


def markdown(result: Mapping[str, Any]) -> str:
    """Tables per target: pooled (one row per scorer), then per dataset when there are several."""
    header = (
        "| scorer | n | base rate | ROC-AUC | within-task AUC | seen-task within AUC | unseen-task AUC | "
        "unseen-task within AUC | PR-AUC | PR-AUC (failure) | Brier | ECE |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    splits = ", ".join(f"{s} {n}" for s, n in result["splits"].items())
    lines = [
        f"# Gatekeeper evaluation: {result['n_records']} records ({splits})",
        "",
        f"Values with bootstrap 95% CIs ({result['bootstrap_resamples']} resamples); ECE over "
        f"{result['ece_bins']} bins. Within-task AUC: per-subject (MMLU) / per-dataset ROC-AUC, "
        "mean weighted by size; seen-task: the same over tasks that training saw. Unseen-task AUC: "
        "ROC-AUC on split test_unseen (pooled, and within task). PR-AUC (failure): the failure "
        "class ranked by 1 - p, the paper's measure.",
    ]
    for target, scorers in result["results"].items():
        lines += ["", f"## {target}", "", header]
        lines += [_slice_row(name, r["pooled"], r["unseen"], r.get("seen")) for name, r in scorers.items()]
        datasets = sorted({d for r in scorers.values() for d in r["datasets"]})
        if len(datasets) > 1:
            lines += [
                "",
                f"### {target}: per dataset",
                "",
                header.replace("| scorer |", "| scorer / dataset |"),
            ]
            lines += [
                _slice_row(f"{name} / {d}", r["datasets"][d], None)
                for d in datasets
                for name, r in scorers.items()
            ]
    return "\n".join(lines) + "\n"


def json_safe(value: Any) -> Any:
    """NaN becomes null, so the report is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def slug(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", target)


Draw = Callable[[Any, np.ndarray, dict[str, np.ndarray]], None]


def _plot_per_target(
    labels: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    targets: Sequence[str],
    out_dir: Path,
    prefix: str,
    draw: Draw,
) -> list[Path]:
    """``<prefix>_<target>.png`` per target: ``draw(axes, y, {scorer: p})`` on the target's
    observed rows, over the diagonal (chance line / perfect calibration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for column, target in enumerate(targets):
        observed = ~np.isnan(labels[:, column])
        fig, ax = plt.subplots(figsize=(5.5, 5))
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        draw(ax, labels[observed, column], {name: p[observed, column] for name, p in predictions.items()})
        ax.set_title(target, fontsize="medium")
        ax.legend(fontsize="small")
        paths.append(out_dir / f"{prefix}_{slug(target)}.png")
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
        plt.close(fig)
    return paths


def _draw_roc(ax: Any, y: np.ndarray, scores: dict[str, np.ndarray]) -> None:
    from sklearn.metrics import roc_curve

    if len(np.unique(y)) == 2:
        for name, p in scores.items():
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y, p):.3f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate")


def reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int = ECE_BINS) -> tuple[np.ndarray, ...]:
    """Per non-empty bin (the ECE's equal-width bins): mean probability, success rate, count."""
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    filled = counts > 0
    mean_p = np.bincount(bins, weights=p, minlength=n_bins)[filled] / counts[filled]
    rate = np.bincount(bins, weights=y, minlength=n_bins)[filled] / counts[filled]
    return mean_p, rate, counts[filled]


def _draw_reliability(ax: Any, y: np.ndarray, scores: dict[str, np.ndarray]) -> None:
    """Observed success rate against mean predicted probability per bin; marker area ~ bin size."""
    for name, p in scores.items():
        mean_p, rate, counts = reliability_curve(y, p)
        (line,) = ax.plot(mean_p, rate, label=f"{name} (ECE {ece(y, p):.3f})")
        ax.scatter(mean_p, rate, s=10 + 200 * counts / counts.sum(), color=line.get_color())
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed success rate")


def prediction_line(
    record: RoutingRecord, labels: Mapping[str, float], scores: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    """One ``predictions.jsonl`` line: the record's identity, its labels and every scorer's scores.

    The format ``introroute eval --routing`` and ``introroute calibrate`` read back.
    """
    return {
        "id": record.id,
        "dataset": record.dataset,
        "subject": record.subject,
        "split": record.split,
        "labels": dict(labels),
        "scores": {name: dict(by_target) for name, by_target in scores.items()},
    }


def write_outputs(
    out_dir: str | Path,
    records: Sequence[RoutingRecord],
    targets: Sequence[str],
    predictions: Mapping[str, np.ndarray],
    result: Mapping[str, Any],
) -> list[Path]:
    """``report.json``, ``report.md``, ``predictions.jsonl`` (labels and every scorer's
    probabilities per record, to re-plot or re-test without re-scoring) and the PNGs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, labels = to_examples(records, targets)
    (out / "report.json").write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(markdown(result))
    with (out / "predictions.jsonl").open("w") as handle:
        for row, record in enumerate(records):
            line = prediction_line(
                record,
                dict(zip(targets, labels[row].tolist(), strict=True)),
                {name: dict(zip(targets, p[row].tolist(), strict=True)) for name, p in predictions.items()},
            )
            handle.write(json.dumps(json_safe(line)) + "\n")
    written = [out / "report.json", out / "report.md", out / "predictions.jsonl"]
    written += _plot_per_target(labels, predictions, targets, out, "roc", _draw_roc)
    return written + _plot_per_target(labels, predictions, targets, out, "reliability", _draw_reliability)
