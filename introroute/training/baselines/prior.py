"""Baselines that ignore the prompt's content: the task's base rate, and random scores.

The base rate is the floor any gatekeeper must clear: it knows only which task a prompt belongs
to (the MMLU subject, else the dataset), so its pooled AUC is exactly the "recognising the
dataset" part of pooled AUC, and its within-task AUC is 0.5. A task unseen in training (the
``test_unseen`` MMLU subjects) falls back to its dataset's rate, then to the global rate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from introroute.errors import AdapterError, DataError
from introroute.scoring import Messages
from introroute.training.baselines.base import Baseline, Examples, GroupPath

RATES_FILE = "rates.json"


class GroupPrior(Baseline):
    """P(success) = the training success rate of the most specific known group of the prompt."""

    kind = "prior"

    def __init__(self, targets: list[str]) -> None:
        super().__init__(targets)
        # group prefix ("mmlu", "virology"), ("mmlu",), () -> (positives, observed) per target
        self.counts: dict[GroupPath, tuple[np.ndarray, np.ndarray]] = {}

    def _fit(self, train: Examples, validation: Examples | None, groups: list[GroupPath] | None) -> None:
        labels = train[1]
        self.counts = {}
        for path, row in zip(_required(groups), labels, strict=True):
            for depth in range(len(path) + 1):
                empty = (np.zeros(len(row)), np.zeros(len(row)))
                positives, seen = self.counts.setdefault(path[:depth], empty)
                positives += np.nan_to_num(row)
                seen += ~np.isnan(row)
        unseen = [t for t, n in zip(self.targets, self.counts[()][1], strict=True) if n == 0]
        if unseen:
            raise DataError(f"no training record has an outcome for target(s) {unseen}")

    def _predict(self, conversations: list[Messages], groups: list[GroupPath] | None) -> np.ndarray:
        return np.stack([self._rate(path) for path in _required(groups)])

    def _rate(self, path: GroupPath) -> np.ndarray:
        """Per target, the rate of the longest prefix of ``path`` with an observed outcome."""
        rate = np.full(len(self.targets), np.nan)
        for depth in range(len(path), -1, -1):
            positives, seen = self.counts.get(path[:depth], (None, None))
            if seen is not None:
                known = np.isnan(rate) & (seen > 0)
                rate[known] = positives[known] / seen[known]
        return rate

    def save_state(self, directory: Path) -> None:
        rows = [
            {"group": list(path), "positives": pos.tolist(), "observed": seen.tolist()}
            for path, (pos, seen) in self.counts.items()
        ]
        (directory / RATES_FILE).write_text(json.dumps(rows, indent=1) + "\n")

    def load_state(self, directory: Path) -> None:
        path = directory / RATES_FILE
        try:
            rows = json.loads(path.read_text())
            self.counts = {
                tuple(r["group"]): (np.asarray(r["positives"], float), np.asarray(r["observed"], float))
                for r in rows
            }
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise AdapterError(f"cannot read the prior's rates from {path}: {exc}") from exc


def _required(groups: list[GroupPath] | None) -> list[GroupPath]:
    if groups is None:
        raise DataError("the prior needs each record's group, e.g. (dataset, subject): pass groups=")
    return groups


class RandomScores(Baseline):
    """Uniform random probabilities (seeded): ROC-AUC 0.5 in expectation, the chance line."""

    kind = "random"

    def __init__(self, targets: list[str], seed: int = 0) -> None:
        super().__init__(targets)
        self.seed = seed

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def _fit(self, train: Examples, validation: Examples | None, groups: list[GroupPath] | None) -> None:
        """Nothing to learn."""

    def _predict(self, conversations: list[Messages], groups: list[GroupPath] | None) -> np.ndarray:
        return np.random.default_rng(self.seed).random((len(conversations), len(self.targets)))

    def save_state(self, directory: Path) -> None:
        """The seed, in ``baseline.json``, is the whole state."""

    def load_state(self, directory: Path) -> None:
        """The seed, in ``baseline.json``, is the whole state."""
