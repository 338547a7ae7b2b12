"""From routing-log records to gatekeeper training data: conversations and a label matrix.

A target's label is its graded outcome (``correct``, else ``quality >= 0.5``); a record without
an outcome for a target leaves NaN there, which the masked loss skips.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from introroute.data import traffic
from introroute.data.jsonl import read_records
from introroute.data.paths import VENDORED_DIR, vendored_path
from introroute.data.schema import RoutingRecord
from introroute.errors import DataError


def load_log(spec: str, *, need_messages: bool = True) -> list[RoutingRecord]:
    """``spec`` is a JSONL(.gz) path, or the name of a vendored log (``routellm_mmlu``...).

    A log the router wrote (decision records) is converted (:mod:`introroute.data.traffic`);
    ``need_messages=False`` keeps its calls whose prompt was not captured.
    """
    if (VENDORED_DIR / f"{spec}.jsonl.gz").is_file():
        return read_records(vendored_path(spec))
    if traffic.is_decision_log(spec):
        return traffic.to_routing_records(traffic.read_decisions(spec), spec, need_messages=need_messages)
    return read_records(spec)


def load_logs(specs: Sequence[str], *, need_messages: bool = True) -> list[RoutingRecord]:
    """Several logs as one: records with the same id are one query, their outcomes are merged.

    Why merge instead of concatenate: a self-labelled file adds the local model's outcome to
    queries another log already has (RouteLLM's MMLU rows); concatenating would make the same
    query two half-labelled examples. The first log's order is kept, new ids follow in order,
    so a seeded :func:`select` on the merged list picks what it picks on the first log alone.
    A second record must carry the same messages and may not redefine an existing target.
    """
    merged: dict[str, RoutingRecord] = {}
    for spec in specs:
        for record in load_log(spec, need_messages=need_messages):
            seen = merged.get(record.id)
            if seen is None:
                merged[record.id] = record
                continue
            if seen.messages != record.messages:
                raise DataError(f"{spec}: record {record.id!r} has other messages than an earlier log")
            clash = sorted(set(seen.outcomes) & set(record.outcomes))
            if clash:
                raise DataError(f"{spec}: record {record.id!r} repeats outcome(s) {clash} of an earlier log")
            merged[record.id] = seen.model_copy(update={"outcomes": {**seen.outcomes, **record.outcomes}})
    return list(merged.values())


def outcome_label(record: RoutingRecord, target: str) -> float:
    outcome = record.outcomes.get(target)
    if outcome is None:
        return float("nan")
    if outcome.correct is not None:
        return float(outcome.correct)
    if outcome.quality is not None:
        return float(outcome.quality >= 0.5)
    return float("nan")


def to_examples(
    records: Sequence[RoutingRecord], targets: Sequence[str]
) -> tuple[list[list[dict[str, str]]], np.ndarray]:
    """Conversations and labels ``[N, targets]``; an unknown target name is an error, not all-NaN."""
    known = {t for r in records for t in r.outcomes}
    missing = [t for t in targets if t not in known]
    if records and missing:
        raise DataError(f"no record has an outcome for target(s) {missing}; the log has {sorted(known)}")
    conversations = [[m.model_dump() for m in r.messages] for r in records]
    labels = np.array([[outcome_label(r, t) for t in targets] for r in records], dtype=np.float32)
    return conversations, labels.reshape(len(records), len(targets))


def select(
    records: Sequence[RoutingRecord], splits: Sequence[str], limit: int | None = None, seed: int = 0
) -> list[RoutingRecord]:
    """Records of the given splits; a seeded random subset of ``limit`` of them when given."""
    chosen = [r for r in records if r.split in splits]
    if limit is not None and limit < len(chosen):
        chosen = random.Random(seed).sample(chosen, limit)
    return chosen
