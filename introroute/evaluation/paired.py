"""Paired comparison of two scorers' ROC-AUC on the same records (e.g. IntroLM with and without LoRA).

Reads two ``predictions.jsonl`` files written by ``introroute eval`` and, on the records both hold,
reports per target the pooled and within-subject ROC-AUC of each scorer and their difference, with
a paired percentile bootstrap (the same resampled records for both, stratified by subject as
``introroute eval`` does; within-subject AUC size-weighted as there), which is tighter than
comparing two separately bootstrapped intervals. ``introroute paired-auc A:SCORER B:SCORER``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from introroute.evaluation.metrics import bootstrap, roc_auc
from introroute.evaluation.report import weighted_within_auc


def _read(spec: str) -> tuple[str, dict[str, dict]]:
    path, _, scorer = spec.rpartition(":")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return scorer, {row["id"]: row for row in rows if scorer in row["scores"]}


def compare(a: str, b: str, resamples: int, seed: int, splits: list[str] | None = None) -> dict:
    """The paired report of ``PREDICTIONS.jsonl:SCORER`` ``a`` against ``b`` (see the module doc),
    on the records of ``splits`` only when given (held-out entities apart from unseen relations)."""
    (name_a, rows_a), (name_b, rows_b) = _read(a), _read(b)
    ids = sorted(i for i in set(rows_a) & set(rows_b) if splits is None or rows_a[i].get("split") in splits)
    if not ids:
        raise ValueError(f"{a} and {b} share no records" + (f" in splits {splits}" if splits else ""))
    targets = [t for t in rows_a[ids[0]]["scores"][name_a] if t in rows_b[ids[0]]["scores"][name_b]]
    report: dict = {"a": name_a, "b": name_b, "records": len(ids), "resamples": resamples, "targets": {}}
    if splits is not None:
        report["splits"] = list(splits)
    subjects = np.array([rows_a[i].get("subject") or rows_a[i]["dataset"] for i in ids])
    for target in targets:
        keep = np.array([rows_a[i]["labels"].get(target) is not None for i in ids])
        y = np.array([rows_a[i]["labels"].get(target) or 0.0 for i in ids])[keep]
        pa = np.array([rows_a[i]["scores"][name_a][target] for i in ids])[keep]
        pb = np.array([rows_b[i]["scores"][name_b][target] for i in ids])[keep]
        codes = np.unique(subjects[keep], return_inverse=True)[1]

        def statistic(idx: np.ndarray, y=y, pa=pa, pb=pb, codes=codes) -> np.ndarray:
            pooled = [roc_auc(y[idx], pa[idx]), roc_auc(y[idx], pb[idx])]
            within = [weighted_within_auc(y[idx], p[idx], codes[idx]) for p in (pa, pb)]
            return np.array([*pooled, pooled[0] - pooled[1], *within, within[0] - within[1]])

        point, lo, hi = bootstrap(statistic, int(keep.sum()), resamples, seed, strata=codes)
        names = ["pooled_a", "pooled_b", "pooled_diff", "within_a", "within_b", "within_diff"]
        report["targets"][target] = {
            n: {"value": float(v), "lo": float(low), "hi": float(high)}
            for n, v, low, high in zip(names, point, lo, hi, strict=True)
        }
    return report
