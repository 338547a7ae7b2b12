"""Descriptive statistics of labels: accuracy per dataset and target, and whether labels carry signal.

Why a "signal" verdict: a weak model's success can be an artefact. SmolLM2-135M-Instruct answers
"A" about 2/3 of the time, so on multiple choice its accuracy tracks how often the gold is A,
not which questions it can answer. A task's labels are worth training on only when accuracy
beats, with a 95% binomial CI, both chance and the best constant answer (always giving the
model's most frequent answer), and when both outcomes occur often enough to learn from.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from introroute.data.schema import RoutingRecord
from introroute.evaluation.metrics import wilson_interval

MIN_PER_CLASS = 20
"""Fewer successes (or failures) than this and a task's labels are too lopsided to learn from."""
UNPARSED = "unparsed"
CHANCE = {"yesno": 0.5, "number": 0.0, "short": 0.0}


def accuracy_table(records: Iterable[RoutingRecord]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{dataset: {target: {n, correct, accuracy, ci95, missing}}}`` over graded outcomes.

    ``missing`` counts outcomes whose correctness is unknown (not logged), which are not in ``n``.
    """
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for record in records:
        for target, outcome in record.outcomes.items():
            cell = counts[(record.dataset, target)]
            if outcome.correct is None:
                cell[2] += 1
            else:
                cell[0] += int(outcome.correct)
                cell[1] += 1
    table: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (dataset, target), (correct, n, missing) in sorted(counts.items()):
        table[dataset][target] = {
            "n": n,
            "correct": correct,
            "accuracy": correct / n if n else None,
            "ci95": list(wilson_interval(correct, n)) if n else None,
            "missing": missing,
        }
    return dict(table)


def _chance(records: list[RoutingRecord]) -> float:
    kind = records[0].meta.get("kind", "mc")
    if kind in CHANCE:
        return CHANCE[kind]
    return sum(1 / int(r.meta.get("n_options", 4)) for r in records) / len(records)


def _verdict(correct: int, n: int, lo: float, baseline: float) -> tuple[str, str]:
    if min(correct, n - correct) < MIN_PER_CLASS:
        return "too_lopsided", f"{correct} successes of {n}: too few of one outcome to learn from"
    if lo > baseline:
        return "signal", f"95% CI lower bound {lo:.3f} beats the best no-knowledge baseline {baseline:.3f}"
    return (
        "no_signal",
        f"95% CI lower bound {lo:.3f} does not beat the best no-knowledge baseline {baseline:.3f}: "
        "successes mostly record where the gold answer sits, not what the model knows",
    )


def task_summary(records: Iterable[RoutingRecord], target: str) -> dict[str, dict[str, Any]]:
    """Per dataset, for one target: accuracy with CI, answer vs gold distributions, and a verdict.

    ``constant_baseline`` is the accuracy of always giving the model's most frequent answer;
    ``accuracy_when_gold_is_not_modal`` is accuracy on the questions where that answer is wrong,
    the part of the accuracy that answer bias cannot explain.
    """
    by_dataset: dict[str, list[RoutingRecord]] = defaultdict(list)
    for record in records:
        outcome = record.outcomes.get(target)
        if outcome is not None and outcome.correct is not None:
            # factual QA is summarised per relation: accuracy differs 0-40% between relations
            short = record.meta.get("kind") == "short" and record.subject
            by_dataset[f"{record.dataset}/{record.subject}" if short else record.dataset].append(record)
    summary = {}
    for dataset, rows in sorted(by_dataset.items()):
        n = len(rows)
        correct = sum(bool(r.outcomes[target].correct) for r in rows)
        answers = Counter(r.outcomes[target].parsed or UNPARSED for r in rows)
        golds = Counter(r.gold or UNPARSED for r in rows)
        parsed = [a for a, _ in answers.most_common() if a != UNPARSED]
        modal = parsed[0] if parsed else None
        constant = golds[modal] / n if modal else 0.0
        off_modal = [r for r in rows if r.gold != modal]
        off_correct = sum(bool(r.outcomes[target].correct) for r in off_modal)
        lo, hi = wilson_interval(correct, n)
        chance = _chance(rows)
        verdict, reason = _verdict(correct, n, lo, max(chance, constant))
        summary[dataset] = {
            "n": n,
            "accuracy": correct / n,
            "ci95": [lo, hi],
            "chance": chance,
            "modal_answer": modal,
            "modal_answer_share": answers[modal] / n if modal else 0.0,
            "constant_baseline": constant,
            "accuracy_when_gold_is_not_modal": off_correct / len(off_modal) if off_modal else None,
            "unparsed_rate": answers[UNPARSED] / n,
            "answer_distribution": dict(answers.most_common(12)),
            "gold_distribution": dict(golds.most_common(12)),
            "verdict": verdict,
            "reason": reason,
        }
    return summary
