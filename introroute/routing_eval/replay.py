"""Replay routing over a scored log: what each policy would have chosen, and what that would have
cost, without calling any model.

Why replay: a routing log holds, per query, every target's graded outcome, and a predictions
file holds the gatekeeper's (or a baseline's) probabilities for the same queries. Policies are
pure functions of (scores, request context), so running them over the joined log gives the
quality, cost and latency of any policy and parameter exactly, offline, in milliseconds; that
is what the routing metrics (:mod:`introroute.routing_eval.metrics`) and the threshold fit
(:mod:`introroute.fitting.knob`) are computed from.

Where the numbers come from, per query and tier (the columns of a :class:`ScoredLog` are the
router's tiers, cheap -> expensive):

* correctness: the tier target's graded outcome (``correct``, else ``quality >= 0.5``); a record
  without one for some tier is dropped, and the drop is counted in ``ScoredLog.dropped``;
* cost: the logged ``cost_usd`` when the log has it (a real bill, as in RouterBench), else the
  tier's price x (prompt tokens, ``output_tokens``); prompt tokens are the outcome's logged count,
  else ~4 characters per token of the messages (the router's own estimate); NaN when the tier has
  no price;
* latency: the tier's latency model at ``output_tokens`` when configured (every tier is then
  compared under one assumed answer length), else the logged ``latency_s``, else NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from introroute.data.rawfiles import jsonl_rows
from introroute.data.records import load_logs, outcome_label
from introroute.data.schema import RoutingRecord
from introroute.errors import DataError, PolicyError
from introroute.policies import Policy, TierInfo, build_policy, policy_class
from introroute.policies.base import KnobGrid
from introroute.policies.cost_aware import CostAwarePolicy
from introroute.routing_eval.metrics import OperatingCurve

DEFAULT_OUTPUT_TOKENS = 400  # the IntroLM paper's assumed answer length for its latency model
MAX_GRID = 2000  # knob values replayed per sweep at most (exact below this)


def knob_of(policy_type: str) -> str:
    """The parameter policy ``policy_type`` (built-in, plugin or ``module:Class``) is tuned by."""
    knob = policy_class(policy_type).knob
    if knob is None:
        raise PolicyError(
            f"policy {policy_type!r} declares no knob to fit or sweep (set the class attribute 'knob')"
        )
    return knob


def __getattr__(name: str) -> Any:
    if name == "KNOBS":  # deprecated: each Policy class declares its knob
        warnings.warn(
            "introroute.routing_eval.replay.KNOBS is deprecated; use Policy.knob or knob_of(policy_type)",
            DeprecationWarning,
            stacklevel=2,
        )
        return {"threshold": "tau", "cost_aware": "lam"}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def estimate_prompt_tokens(record: RoutingRecord) -> int:
    """The router's own estimate (~4 characters per token) for a record's messages."""
    from introroute.router.router import estimate_tokens

    return estimate_tokens([m.model_dump() for m in record.messages])


@dataclass(frozen=True)
class ScoredLog:
    """Per-query arrays of a routing log joined with scores; tier ``t`` is column ``t``.

    ``scores[name]`` is ``[N, T]``: that scorer's P(tier t's target answers well), NaN where the
    scorer has no output for the target (a policy then treats the target as unscored).
    """

    tiers: tuple[TierInfo, ...]
    ids: np.ndarray
    splits: np.ndarray
    datasets: np.ndarray
    subjects: np.ndarray
    prompt_tokens: np.ndarray
    correct: np.ndarray
    cost: np.ndarray
    latency: np.ndarray
    scores: dict[str, np.ndarray]
    dropped: dict[str, int] = field(default_factory=dict)
    output_tokens: int = DEFAULT_OUTPUT_TOKENS

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def take(self, rows: np.ndarray) -> ScoredLog:
        """The queries at ``rows`` (indices or a boolean mask), e.g. one split or a resample."""
        return replace(
            self,
            ids=self.ids[rows],
            splits=self.splits[rows],
            datasets=self.datasets[rows],
            subjects=self.subjects[rows],
            prompt_tokens=self.prompt_tokens[rows],
            correct=self.correct[rows],
            cost=self.cost[rows],
            latency=self.latency[rows],
            scores={k: v[rows] for k, v in self.scores.items()},
        )

    def split(self, *names: str) -> ScoredLog:
        """The queries of the given splits; a :class:`DataError` lists the splits present if none."""
        rows = np.isin(self.splits, names)
        if not rows.any():
            present = sorted(set(self.splits.tolist()))
            raise DataError(f"no scored query is in split(s) {list(names)}; the joined log has {present}")
        return self.take(rows)

    def scorer(self, name: str) -> np.ndarray:
        """The ``[N, T]`` scores of one scorer; an unknown name is a :class:`DataError` listing the known."""
        try:
            return self.scores[name]
        except KeyError:
            raise DataError(f"unknown scorer {name!r}; the scores have {sorted(self.scores)}") from None

    def tier_subset(self, columns: Sequence[int]) -> ScoredLog:
        """The same queries with only the tiers at ``columns`` (e.g. routing between two of them)."""
        cols = list(columns)
        return replace(
            self,
            tiers=tuple(self.tiers[c] for c in cols),
            correct=self.correct[:, cols],
            cost=self.cost[:, cols],
            latency=self.latency[:, cols],
            scores={k: v[:, cols] for k, v in self.scores.items()},
        )

    def with_scores(self, name: str, matrix: np.ndarray) -> ScoredLog:
        """A copy with scorer ``name`` set to ``matrix`` (e.g. recalibrated scores)."""
        if matrix.shape != self.correct.shape:
            raise DataError(f"scores of shape {matrix.shape}, expected {self.correct.shape}")
        return replace(self, scores={**self.scores, name: matrix})

    def calibrated(self, name: str, calibrators: Mapping[str, Any]) -> ScoredLog:
        """A copy with scorer ``name``'s columns mapped through the calibrator of their tier's target.

        The router applies ``gatekeeper.calibration`` before its policy decides, so a replay of a
        calibrated router must see the same mapped scores (``calibrators``: target -> object with
        ``predict``, e.g. :class:`introroute.router.calibration.ScoreCalibrator`).
        """
        matrix = self.scorer(name).copy()
        for column, tier in enumerate(self.tiers):
            if tier.target in calibrators:
                matrix[:, column] = calibrators[tier.target].predict(matrix[:, column])
        return self.with_scores(name, matrix)

    def always(self, tier: int) -> dict[str, float]:
        """Quality, mean cost and mean latency when every query goes to ``tier``."""
        return {
            "quality": float(self.correct[:, tier].mean()),
            "cost_per_query": float(self.cost[:, tier].mean()),
            "latency_s": float(self.latency[:, tier].mean()),
        }


def build_scored_log(
    records: Sequence[RoutingRecord],
    tiers: Sequence[TierInfo],
    scores: Mapping[str, Mapping[str, np.ndarray]],
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> ScoredLog:
    """Join records with ``scores[scorer][target]`` (``[N]`` aligned with ``records``, NaN allowed).

    Records without an outcome for some tier's target are dropped and counted per target.
    """
    tiers = tuple(tiers)
    for name, by_target in scores.items():
        for target, values in by_target.items():
            if len(values) != len(records):
                raise DataError(
                    f"scorer {name!r}: {len(values)} scores for {target!r}, {len(records)} records"
                )
    labels = np.array([[outcome_label(r, t.target) for t in tiers] for r in records], dtype=float)
    labels = labels.reshape(len(records), len(tiers))
    complete = ~np.isnan(labels).any(axis=1)
    dropped = {
        f"no outcome for {t.target!r}": int(np.isnan(labels[:, i]).sum())
        for i, t in enumerate(tiers)
        if np.isnan(labels[:, i]).any()
    }
    kept = [r for r, ok in zip(records, complete.tolist(), strict=True) if ok]
    if not kept:
        raise DataError(
            f"no record has an outcome for every tier's target {[t.target for t in tiers]}; "
            f"missing: {dropped}"
        )
    local = next((i for i, t in enumerate(tiers) if t.local), None)
    estimates = np.array([estimate_prompt_tokens(r) for r in kept], dtype=np.int64)
    context_tokens = estimates.copy()
    if local is not None:  # the router counts prompt tokens with the gatekeeper's (local model's) tokenizer
        logged = [r.outcomes[tiers[local].target].prompt_tokens for r in kept]
        context_tokens = np.array([e if v is None else v for v, e in zip(logged, estimates, strict=True)])
    cost = np.full((len(kept), len(tiers)), np.nan)
    latency = np.full_like(cost, np.nan)
    for column, tier in enumerate(tiers):
        outcomes = [r.outcomes[tier.target] for r in kept]
        priced = tier.input_per_1m is not None and tier.output_per_1m is not None
        modelled = tier.ttft_ms is not None or tier.per_output_token_ms is not None
        for row, outcome in enumerate(outcomes):
            prompt = outcome.prompt_tokens if outcome.prompt_tokens is not None else int(estimates[row])
            if outcome.cost_usd is not None:
                cost[row, column] = outcome.cost_usd
            elif priced:
                cost[row, column] = tier.cost_usd(prompt, output_tokens)
            if modelled:
                latency[row, column] = tier.latency_s(output_tokens)
            elif outcome.latency_s is not None:
                latency[row, column] = outcome.latency_s
    rows = complete.nonzero()[0]
    matrices = {
        name: np.stack(
            [np.asarray(by_target.get(t.target, np.full(len(records), np.nan)), dtype=float) for t in tiers],
            axis=1,
        )[rows]
        for name, by_target in scores.items()
    }
    return ScoredLog(
        tiers=tiers,
        ids=np.array([r.id for r in kept]),
        splits=np.array([r.split for r in kept]),
        datasets=np.array([r.dataset for r in kept]),
        subjects=np.array([r.subject or "" for r in kept]),
        prompt_tokens=context_tokens,
        correct=labels[rows],
        cost=cost,
        latency=latency,
        scores=matrices,
        dropped=dropped,
        output_tokens=output_tokens,
    )


@dataclass(frozen=True)
class Predictions:
    """A ``predictions.jsonl`` written by ``introroute eval``: one row per record, in file order."""

    path: str
    rows: list[dict[str, Any]]

    @property
    def scorers(self) -> list[str]:
        return list(self.rows[0]["scores"]) if self.rows else []


def read_predictions(path: str | Path) -> Predictions:
    """Read and check a predictions file: unique ids, a ``scores`` mapping per row, one scorer set."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found (write one with 'introroute eval')")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for where, row in jsonl_rows(path):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("scores"), dict):
            raise DataError(f"{where}: a prediction needs an 'id' string and a 'scores' mapping")
        if not all(isinstance(by_target, dict) for by_target in row["scores"].values()):
            raise DataError(f"{where}: 'scores' must map each scorer to a {{target: probability}} mapping")
        if row["id"] in seen:
            raise DataError(f"{where}: id {row['id']!r} appears twice")
        if rows and set(row["scores"]) != set(rows[0]["scores"]):
            raise DataError(
                f"{where}: scorers {sorted(row['scores'])}, earlier rows {sorted(rows[0]['scores'])}"
            )
        seen.add(row["id"])
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no predictions")
    return Predictions(str(path), rows)


def join_predictions(
    records: Sequence[RoutingRecord],
    predictions: Predictions,
    scorers: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
) -> tuple[list[RoutingRecord], dict[str, dict[str, np.ndarray]]]:
    """The log records the predictions score (in the predictions' order) and their scores.

    Every prediction id must be in the log, with the same split and, where both know it, the
    same label; otherwise the predictions belong to another log and a :class:`DataError` says
    which id disagrees. ``splits`` keeps only those splits.
    """
    by_id = {r.id: r for r in records}
    missing = [row["id"] for row in predictions.rows if row["id"] not in by_id]
    if missing:
        raise DataError(
            f"{predictions.path}: {len(missing)} of {len(predictions.rows)} prediction ids are not in the "
            f"routing log(s), e.g. {missing[:3]}; were the predictions made on another log?"
        )
    wanted = list(predictions.scorers) if scorers is None else list(scorers)
    unknown = [s for s in wanted if s not in predictions.scorers]
    if unknown:
        raise DataError(f"{predictions.path}: unknown scorer(s) {unknown}; it has {predictions.scorers}")
    chosen: list[RoutingRecord] = []
    rows = []
    for row in predictions.rows:
        record = by_id[row["id"]]
        if row.get("split") not in (None, record.split):
            raise DataError(
                f"{predictions.path}: {row['id']!r} is in split {row['split']!r}, log says {record.split!r}"
            )
        for target, label in (row.get("labels") or {}).items():
            logged = outcome_label(record, target)
            if label is not None and not math.isnan(logged) and float(label) != logged:
                raise DataError(
                    f"{predictions.path}: {row['id']!r} has label {label} for {target!r}, the log {logged:g}"
                )
        if splits is None or record.split in splits:
            chosen.append(record)
            rows.append(row)
    if not chosen:
        raise DataError(f"{predictions.path}: no prediction is in split(s) {list(splits or [])}")
    targets = sorted({t for row in rows for name in wanted for t in row["scores"][name]})
    scores = {
        name: {
            t: np.array(
                [_probability(row["scores"][name].get(t), predictions.path, row["id"]) for row in rows]
            )
            for t in targets
        }
        for name in wanted
    }
    return chosen, scores


def _probability(value: object, path: str, record_id: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise DataError(f"{path}: {record_id!r} has score {value!r}, not a probability in [0, 1]")
    return float(value)


def load_scored_log(
    logs: Sequence[str],
    predictions: str | Path,
    tiers: Sequence[TierInfo],
    scorers: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> ScoredLog:
    """Routing log(s) (merged by id, see :func:`load_logs`) joined with a predictions file."""
    records, scores = join_predictions(load_logs(logs), read_predictions(predictions), scorers, splits)
    return build_scored_log(records, tiers, scores, output_tokens)


# ---------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class ReplayResult:
    """Per query: the chosen tier's index, and whether it was right, its cost and its latency."""

    choice: np.ndarray
    correct: np.ndarray
    cost: np.ndarray
    latency: np.ndarray
    n_tiers: int

    def summary(self) -> dict[str, float]:
        """Quality, mean cost and latency, and each tier's share (``share`` = the last tier's)."""
        shares = np.bincount(self.choice, minlength=self.n_tiers) / max(len(self.choice), 1)
        return {
            "quality": float(self.correct.mean()),
            "cost_per_query": float(self.cost.mean()),
            "latency_s": float(self.latency.mean()),
            "share": float(shares[-1]),
        } | {f"share_{t}": float(s) for t, s in enumerate(shares)}


def cost_aware_utilities(
    policy: CostAwarePolicy, tiers: Sequence[TierInfo], scores: np.ndarray, prompt_tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deprecated: :meth:`CostAwarePolicy.utilities` (the policy owns its arithmetic now)."""
    warnings.warn(
        "cost_aware_utilities is deprecated; use CostAwarePolicy.utilities", DeprecationWarning, stacklevel=2
    )
    return policy.utilities(scores, tiers, prompt_tokens)


def choices(policy: Policy, log: ScoredLog, scorer: str, fast: bool = True) -> np.ndarray:
    """The tier index ``policy`` picks for every query of ``log`` given ``scorer``'s scores.

    The policy's own :meth:`~Policy.decide_many` decides (vectorised for the built-ins);
    ``fast=False`` runs the base class's loop over :meth:`~Policy.decide` instead, once per query
    in log order (so a stateful policy such as ``budget`` sees the log as a stream; pass a fresh
    instance).
    """
    scores = log.scorer(scorer)
    policy.check_tiers(log.tiers)
    decide_many = policy.decide_many if fast else partial(Policy.decide_many, policy)
    return decide_many(scores, log.tiers, log.prompt_tokens)


def replay(policy: Policy, log: ScoredLog, scorer: str, fast: bool = True) -> ReplayResult:
    """What routing with ``policy`` over ``log`` (scored by ``scorer``) would have achieved.

    The log carries its tiers (its columns are built from them), so they are not passed again.
    """
    picked = choices(policy, log, scorer, fast)
    rows = np.arange(len(log))
    return ReplayResult(
        choice=picked,
        correct=log.correct[rows, picked],
        cost=log.cost[rows, picked],
        latency=log.latency[rows, picked],
        n_tiers=len(log.tiers),
    )


# ---------------------------------------------------------------------------- knob sweeps


def knob_grid(policy_type: str, params: Mapping[str, object], log: ScoredLog, scorer: str) -> KnobGrid:
    """Every distinct routing of ``log`` by the policy's knob (:meth:`Policy.knob_grid`: exact for
    the built-ins, sampled for a policy that does not say where its routing changes); more than
    :data:`MAX_GRID` values are thinned evenly."""
    knob_of(policy_type)
    policy = build_policy(policy_type, dict(params))
    policy.check_tiers(log.tiers)
    return policy.knob_grid(log.scorer(scorer), log.tiers, log.prompt_tokens).thinned(MAX_GRID)


def sweep(
    policy_type: str,
    params: Mapping[str, object],
    log: ScoredLog,
    scorer: str,
    values: np.ndarray | None = None,
) -> OperatingCurve:
    """Replay the policy family at every knob value (default: :func:`knob_grid`), sorted by the
    most expensive tier's share; ``extra`` holds each tier's share (``share_<t>``)."""
    knob = knob_of(policy_type)
    if values is None:
        values = knob_grid(policy_type, params, log, scorer).values
    rows = [
        replay(build_policy(policy_type, {**params, knob: float(v)}), log, scorer).summary() for v in values
    ]
    extra = {f"share_{t}": np.array([r[f"share_{t}"] for r in rows]) for t in range(len(log.tiers))}
    return OperatingCurve(
        share=np.array([r["share"] for r in rows]),
        quality=np.array([r["quality"] for r in rows]),
        cost=np.array([r["cost_per_query"] for r in rows]),
        latency=np.array([r["latency_s"] for r in rows]),
        knob=np.asarray(values, dtype=float),
        extra=extra,
    ).sorted()
