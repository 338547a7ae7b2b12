"""Fit the ``self`` threshold on a mix of question sources and say, per source, where it holds.

Why per source: a threshold fitted for reliability 0.95 on one kind of question (EntityQuestions'
templates) promises nothing on another. The preset's former ``tau 0.802`` kept 11% of templated
questions local at 0.95, yet kept "What is the capital of Bhutan?" (P(self) 0.867, answered
"Lumbak") local: on common facts SmolLM2 is often right and its wrong answers score as high as
its right ones (docs/results-factual-qa.md). So the fit here takes a threshold per source of the fit split
and keeps the highest (``--rule every``: the target holds on each source, not only on their
pooled mix, whose share of each source is arbitrary), then reports
on held-out splits, per source, the kept-local share, the reliability (the paper's: 1 - share of
all queries kept local and answered wrongly) with a Wilson 95% interval, and whether its point and
its lower bound meet the target. A Platt map fitted on the same mix is reported for calibration
(ECE) only: a monotone map cannot change which queries one threshold keeps.

    python -m introroute.fitting.selfcal --predictions A.jsonl B.jsonl --reliability 0.95 \\
        --out results/selfcal

Reads ``predictions.jsonl`` files written by ``introroute eval`` (``id``, ``dataset``, ``split``,
``labels``, ``scores``); ``--log`` adds the questions and answers of ``--itemize`` sources (e.g. a
hand-made probe) to the report. Offline side: never imported by the router.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from introroute.errors import DataError
from introroute.evaluation.metrics import wilson_interval
from introroute.fitting.calibration import ece_before_after, fit_calibrator

UNSEEN = "test_unseen"


def source_of(row: dict[str, Any]) -> str:
    """A row's question source: its dataset, with ``test_unseen`` (relations or subjects never
    trained on) a source of its own."""
    return f"{row['dataset']} (unseen)" if row["split"] == UNSEEN else row["dataset"]


def read_rows(paths: Sequence[Path], scorer: str, target: str) -> list[dict[str, Any]]:
    """Labelled rows ``{id, dataset, split, source, p, y}`` of every predictions file."""
    rows = []
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                row = json.loads(line)
                try:
                    p, y = row["scores"][scorer][target], row["labels"][target]
                except KeyError as missing:
                    where = f"{path}:{number}"
                    raise DataError(f"{where}: no {missing.args[0]!r} for {scorer}/{target}") from None
                if y is not None:
                    rows.append({**row, "source": source_of(row), "p": float(p), "y": float(y)})
    if not rows:
        raise DataError("no labelled rows in " + ", ".join(map(str, paths)))
    return rows


def lowest_tau(p: np.ndarray, y: np.ndarray, reliability: float) -> float:
    """The lowest threshold (rounded up to 3 decimals: never keeps more than the fit allows) whose
    kept queries (``p >= tau``) leave at most ``1 - reliability`` of all queries kept and wrong."""
    order = np.argsort(-p, kind="stable")
    wrong_kept = np.cumsum(1 - y[order])
    ok = np.nonzero(1 - wrong_kept / len(y) >= reliability)[0]
    # the kept set must end where the score drops, so that ties are kept (or not) together
    ok = [k for k in ok if k + 1 == len(p) or p[order][k] > p[order][k + 1]]
    if not ok:
        return 1.0
    return math.ceil(float(p[order][ok[-1]]) * 1000) / 1000


def outcome(p: np.ndarray, y: np.ndarray, tau: float, reliability: float) -> dict[str, Any]:
    """Kept share, reliability and accuracy of kept answers at ``tau``, each with a Wilson 95% CI."""
    n, kept = len(y), p >= tau
    wrong = int(np.sum(kept & (y == 0)))
    wrong_lo, wrong_hi = wilson_interval(wrong, n)
    rel = 1 - wrong / n
    kept_right = int(np.sum(kept & (y == 1)))
    return {
        "n": n,
        "accuracy": float(np.mean(y)),
        "kept_local": {"value": float(np.mean(kept)), "ci95": wilson_interval(int(np.sum(kept)), n)},
        "reliability": {"value": rel, "ci95": (1 - wrong_hi, 1 - wrong_lo)},
        "kept_accuracy": {
            "value": kept_right / int(np.sum(kept)) if kept.any() else None,
            "ci95": wilson_interval(kept_right, int(np.sum(kept))),
        },
        "met": rel >= reliability,
        "met_at_lower_bound": 1 - wrong_hi >= reliability,
    }


def _by_source(rows: list[dict[str, Any]], splits: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["split"] in splits:
            groups.setdefault(row["source"], []).append(row)
    return {
        source: (np.array([r["p"] for r in group]), np.array([r["y"] for r in group]))
        for source, group in sorted(groups.items())
    }


def fit(
    rows: list[dict[str, Any]],
    reliability: float,
    fit_splits: Sequence[str],
    report_splits: Sequence[str],
    rule: str = "every",
    tau: float | None = None,
) -> dict[str, Any]:
    """Per-source and pooled thresholds on ``fit_splits``; the chosen one's outcomes everywhere
    (or those of a given ``tau``, e.g. the one a preset ships, to compare)."""
    fit_sets = _by_source(rows, fit_splits)
    if not fit_sets:
        raise DataError(f"no rows in the fit splits {list(fit_splits)}")
    per_source = {s: lowest_tau(p, y, reliability) for s, (p, y) in fit_sets.items()}
    pooled_p = np.concatenate([p for p, _ in fit_sets.values()])
    pooled_y = np.concatenate([y for _, y in fit_sets.values()])
    pooled = lowest_tau(pooled_p, pooled_y, reliability)
    chosen = tau if tau is not None else max(per_source.values()) if rule == "every" else pooled
    platt = fit_calibrator(pooled_p, pooled_y, "platt")

    def table(splits: Sequence[str], threshold: float) -> dict[str, Any]:
        out = {}
        for source, (p, y) in _by_source(rows, splits).items():
            out[source] = outcome(p, y, threshold, reliability)
            out[source]["ece"] = ece_before_after(p, y, platt) if 0 < y.sum() < len(y) else None
        return out

    return {
        "reliability_target": reliability,
        "rule": rule if tau is None else "given",
        "tau": chosen,
        "tau_per_source": per_source,
        "tau_pooled": pooled,
        "platt": platt.to_config(),
        "fit": table(fit_splits, chosen),
        "held_out": table(report_splits, chosen),
    }


def itemized(
    rows: list[dict[str, Any]], logs: Sequence[Path], sources: Sequence[str], tau: float
) -> list[dict[str, Any]]:
    """Question, P(self), kept or not, answer and grade of every row of ``sources`` (a probe)."""
    texts: dict[str, dict[str, Any]] = {}
    for path in logs:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                texts[record["id"]] = record
    out = []
    for row in sorted((r for r in rows if r["source"] in sources), key=lambda r: -r["p"]):
        record = texts.get(row["id"], {})
        answer = record.get("outcomes", {}).get("self", {}).get("response")
        question = record.get("messages", [{}])[-1].get("content")
        out.append(
            {"id": row["id"], "question": question, "p_self": row["p"], "local": row["p"] >= tau}
            | {"right": bool(row["y"]), "answer": answer}
        )
    return out


def _pct(cell: dict[str, Any]) -> str:
    lo, hi = cell["ci95"]
    return "–" if cell["value"] is None else f"{cell['value']:.1%} [{lo:.1%}, {hi:.1%}]"


def markdown(result: dict[str, Any]) -> str:
    """The per-source tables and the probe as markdown (``report.md``)."""
    target = result["reliability_target"]
    lines = [
        f"# `self` threshold for reliability {target} (rule: {result['rule']})",
        "",
        f"tau = **{result['tau']}**; per source on the fit split: "
        + ", ".join(f"{s} {t}" for s, t in result["tau_per_source"].items())
        + f"; pooled mix {result['tau_pooled']}.",
    ]
    for title, key in (("Fit split", "fit"), ("Held-out splits", "held_out")):
        lines += [
            "",
            f"## {title}",
            "",
            "| source | n | SmolLM2 right | kept local | reliability [95% CI] | met (point / bound) "
            "| right among kept | ECE raw -> Platt |",
            "|---|---:|---:|---:|---:|---|---:|---:|",
        ]
        for source, row in result[key].items():
            ece = row["ece"]
            ece_text = f"{ece['ece_before']:.3f} -> {ece['ece_after']:.3f}" if ece else "–"
            met = f"{'yes' if row['met'] else 'MISSED'} / {'yes' if row['met_at_lower_bound'] else 'no'}"
            lines.append(
                f"| {source} | {row['n']} | {row['accuracy']:.1%} | {_pct(row['kept_local'])} "
                f"| {_pct(row['reliability'])} | {met} | {_pct(row['kept_accuracy'])} | {ece_text} |"
            )
    if result.get("probe"):
        lines += ["", "## Probe", "", "| question | P(self) | route | SmolLM2's answer | right |"]
        lines.append("|---|---:|---|---|---|")
        for item in result["probe"]:
            answer = (item["answer"] or "").replace("\n", " ").replace("|", "/")
            route = "local" if item["local"] else "remote"
            cells = (item["question"], f"{item['p_self']:.3f}", route, answer, str(item["right"]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--predictions", type=Path, nargs="+", required=True, help="introroute eval outputs")
    parser.add_argument("--scorer", default="introlm", help="scorer column of the predictions")
    parser.add_argument("--target", default="self", help="the target whose threshold is fitted")
    parser.add_argument("--reliability", type=float, default=0.95, help="the target reliability")
    parser.add_argument("--fit-splits", nargs="+", default=["validation"], help="splits the fit reads")
    parser.add_argument("--report-splits", nargs="+", default=["test", UNSEEN], help="held-out splits")
    parser.add_argument(
        "--rule",
        choices=("every", "pooled"),
        default="every",
        help="every: the target holds on each source of the fit split; pooled: on their mix",
    )
    parser.add_argument("--tau", type=float, help="report this threshold instead of the fitted one")
    parser.add_argument("--log", type=Path, nargs="*", default=[], help="labelled logs with the probe's text")
    parser.add_argument("--itemize", nargs="*", default=[], help="sources listed question by question")
    parser.add_argument("--out", type=Path, required=True, help="directory for report.json and report.md")
    args = parser.parse_args(argv)
    if not 0 < args.reliability <= 1:
        parser.error(f"--reliability must be in (0, 1], got {args.reliability}")
    rows = read_rows(args.predictions, args.scorer, args.target)
    result = fit(rows, args.reliability, args.fit_splits, args.report_splits, args.rule, args.tau)
    result["probe"] = itemized(rows, args.log, args.itemize, result["tau"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (args.out / "report.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
