"""Seeded, deterministic train/validation/test assignment that stays put when data grows.

Why hash-based: a record's split depends only on ``(seed, id)``, so adding a dataset, labelling
more rows or resuming a run never moves an existing query between splits, and the same question
imported from two logs (RouteLLM's MMLU and the local model's MMLU labels share ids) lands in the
same split in both. For MMLU a seeded set of whole subjects is held out as ``test_unseen``, so a
gatekeeper's accuracy on subjects it never trained on is measured apart from row-level test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from introroute.data.schema import Split

DEFAULT_SEED = 0
UNSEEN_SUBJECT_COUNT = 7
"""About 15% of the 47 MMLU subjects at hand are held out whole."""


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from ``(seed, key)``; stable across runs, machines and Pythons."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class SplitFractions:
    """Row-level fractions; test gets the rest."""

    train: float = 0.7
    validation: float = 0.1

    def __post_init__(self) -> None:
        if not (self.train > 0 and self.validation >= 0 and self.train + self.validation < 1):
            raise ValueError(
                f"split fractions need 0 < train, 0 <= validation, train + validation < 1: {self}"
            )


def assign_split(record_id: str, seed: int = DEFAULT_SEED, fractions: SplitFractions | None = None) -> Split:
    """Row-level split of one id."""
    fractions = fractions or SplitFractions()
    u = unit_hash(seed, f"row:{record_id}")
    if u < fractions.train:
        return "train"
    if u < fractions.train + fractions.validation:
        return "validation"
    return "test"


def pick_unseen_subjects(
    subjects: Iterable[str], count: int = UNSEEN_SUBJECT_COUNT, seed: int = DEFAULT_SEED
) -> frozenset[str]:
    """The ``count`` subjects with the lowest seeded hash: an exact count, unlike a threshold."""
    ranked = sorted(set(subjects), key=lambda s: unit_hash(seed, f"subject:{s}"))
    return frozenset(ranked[:count])


def split_of(
    record_id: str,
    subject: str | None = None,
    unseen: frozenset[str] = frozenset(),
    seed: int = DEFAULT_SEED,
) -> Split:
    """``test_unseen`` for a held-out subject, else the row-level split of the id."""
    if subject is not None and subject in unseen:
        return "test_unseen"
    return assign_split(record_id, seed)
