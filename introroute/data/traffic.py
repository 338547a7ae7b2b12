"""The router's own log (:class:`~introroute.decision_log.DecisionRecord` lines) as offline data.

Why a converter instead of a second schema everywhere: ``label``, ``eval``, ``calibrate`` and
``train`` all read :class:`RoutingRecord`; a routing log the router wrote is turned into those
records when it is loaded (:func:`introroute.data.records.load_log` detects it), so the router's
log goes through the same commands as any imported log, without glue:

* ``id`` is the record's prompt hash: the same question asked twice is one query (the first
  answered call is kept);
* ``split`` is the record's own when set, else assigned by the seeded hash of the id
  (:func:`introroute.data.splits.assign_split`: 70/10/20, stable when the log grows);
* ``outcomes`` hold the answering tier's target when the answer was graded (the record's
  ``outcome`` slot: a user's own feedback); ``introroute label --judge`` grades the rest;
* ``meta.scores`` keeps the gatekeeper's scores as logged (before any calibration), so
  ``calibrate`` can re-fit the threshold without running the gatekeeper again.

Calls that no tier answered (``error``) carry no answer to learn from and are skipped, counted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from introroute.data.graders import Grade
from introroute.data.jsonl import RecordAppender, finished_ids, iter_models, open_text
from introroute.data.schema import Message, RoutingRecord, TargetOutcome
from introroute.data.splits import DEFAULT_SEED, assign_split
from introroute.decision_log import DecisionRecord, PromptMessage
from introroute.errors import DataError

DATASET = "traffic"
NOT_CAPTURED = "prompt not captured (set log_prompts: true in the router YAML)"


def is_decision_log(path: str | Path) -> bool:
    """Whether ``path``'s first line is a router decision record (it has ``version`` and ``decision``)."""
    path = Path(path)
    if not path.is_file():
        return False
    with open_text(path) as fh:
        for line in fh:
            if line.strip():
                try:
                    first = json.loads(line)
                except ValueError:
                    return False
                return isinstance(first, dict) and "version" in first and "decision" in first
    return False


def read_decisions(path: str | Path) -> list[DecisionRecord]:
    """Every record of a routing log the router wrote (a bad line is a :class:`DataError`)."""
    return list(iter_models(DecisionRecord, path))


def answered(records: Iterable[DecisionRecord], skipped: dict[str, int]) -> list[DecisionRecord]:
    """The first answered call of each prompt; the others are counted in ``skipped`` by reason."""
    seen: set[str] = set()
    out = []
    for record in records:
        reason = None
        if record.error is not None:
            reason = "no tier answered"
        elif record.decision is None:
            reason = "no decision recorded (log_error, or scores that were not finite)"
        elif record.id in seen:
            reason = "a repeat of an earlier prompt"
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        seen.add(record.id)
        out.append(record)
    return out


def base_record(record: DecisionRecord, seed: int = DEFAULT_SEED) -> RoutingRecord:
    """The :class:`RoutingRecord` of one answered call, without outcomes (see the module doc)."""
    assert record.decision is not None
    decision = record.decision
    messages = [Message(role=m.role, content=m.content) for m in record.messages or []]  # type: ignore[arg-type]
    return RoutingRecord(
        id=record.id,
        dataset=DATASET,
        split=record.split or assign_split(record.id, seed),  # type: ignore[arg-type]
        messages=messages or [Message(role="user", content="")],
        outcomes={},
        meta={
            "source": "routing log",
            "router": record.router,
            "tier": decision.tier,
            "scores": decision.raw_scores if decision.raw_scores is not None else decision.scores,
            "prompt_captured": bool(messages),
        },
    )


def answer_outcome(record: DecisionRecord, **grade: Any) -> TargetOutcome:
    """The answering tier's outcome: its model, answer text, tokens, latency, and ``grade``."""
    assert record.decision is not None
    usage = record.usage
    return TargetOutcome(
        model=record.decision.model,
        response=record.response,
        latency_s=record.latency_ms / 1000.0 if record.latency_ms is not None else None,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        **grade,
    )


def to_routing_records(
    records: Sequence[DecisionRecord], where: str, *, seed: int = DEFAULT_SEED, need_messages: bool = True
) -> list[RoutingRecord]:
    """Routing-log records of a decision log (see the module doc); skips are said on stderr.

    ``need_messages=False`` keeps calls whose prompt was not captured (an empty message stands
    in): enough to re-fit a threshold on logged scores and user outcomes, not to train or label.
    """
    skipped: dict[str, int] = {}
    out = []
    for record in answered(records, skipped):
        if not record.messages and need_messages:
            skipped[NOT_CAPTURED] = skipped.get(NOT_CAPTURED, 0) + 1
            continue
        converted = base_record(record, seed)
        grade = record.outcome
        if record.target and grade is not None and (grade.correct is not None or grade.quality is not None):
            outcome = answer_outcome(record, correct=grade.correct, quality=grade.quality)
            converted = converted.model_copy(update={"outcomes": {record.target: outcome}})
        out.append(converted)
    for reason, count in skipped.items():
        print(f"introroute: {where}: skipped {count} record(s): {reason}", file=sys.stderr)
    if not out:
        raise DataError(f"{where}: no usable record in this routing log (skipped: {skipped})")
    return out


Judge = Callable[[str, str, str | None], Grade]
"""``(question, answer, reference answer or None) -> Grade``: an LLM judge (``--judge``)."""


def _question(messages: Sequence[PromptMessage]) -> str:
    if len(messages) == 1:
        return messages[0].content
    return "\n".join(f"{m.role}: {m.content}" for m in messages)


def _graded(record: DecisionRecord, judge: Judge, question: str) -> dict[str, TargetOutcome]:
    """Outcomes of the logged answers: the user's own grade when given, else the judge's.

    The answering tier is judged against the audit's reference answer when there is one; the
    reference answer itself is judged on its own.
    """
    outcomes: dict[str, TargetOutcome] = {}
    audit = record.audit if record.audit is not None and record.audit.response is not None else None
    own = record.outcome
    if record.target and own is not None and (own.correct is not None or own.quality is not None):
        outcomes[record.target] = answer_outcome(record, correct=own.correct, quality=own.quality)
    elif record.target and record.response is not None:
        reference = audit.response if audit is not None and audit.target != record.target else None
        grade = judge(question, record.response, reference)
        outcomes[record.target] = answer_outcome(record, correct=grade.correct, parsed=grade.parsed)
    if audit is not None and audit.target not in outcomes:
        grade = judge(question, audit.response or "", None)
        usage = audit.usage
        outcomes[audit.target] = TargetOutcome(
            model=audit.model,
            response=audit.response,
            correct=grade.correct,
            parsed=grade.parsed,
            latency_s=audit.latency_ms / 1000.0 if audit.latency_ms is not None else None,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )
    return outcomes


def label_answers(
    records: Sequence[DecisionRecord],
    judge: Judge,
    out: str | Path,
    *,
    judge_name: str,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
) -> dict[str, int]:
    """Grade the answers a routing log holds and append one labelled record per prompt to ``out``.

    Resumable like ``introroute label``: prompts already in ``out`` are skipped. Returns counts:
    ``written`` and one entry per skip reason.
    """
    counts: dict[str, int] = {}
    done = finished_ids(out)
    todo = [r for r in answered(records, counts) if r.id not in done]
    written = 0
    with (
        RecordAppender(out) as sink,
        tqdm(total=len(todo), unit="q", desc="judge", disable=not progress) as bar,
    ):
        for record in todo:
            bar.update(1)
            if not record.messages:
                counts[NOT_CAPTURED] = counts.get(NOT_CAPTURED, 0) + 1
                continue
            outcomes = _graded(record, judge, _question(record.messages))
            if not outcomes:
                counts["no answer text logged (a stream)"] = (
                    counts.get("no answer text logged (a stream)", 0) + 1
                )
                continue
            base = base_record(record, seed)
            sink.append(
                base.model_copy(update={"outcomes": outcomes, "meta": {**base.meta, "judge": judge_name}})
            )
            written += 1
    return {"written": written, **counts}
