"""The one interface every baseline implements, scikit-learn style, and its on-disk layout.

Why one interface: ``introroute eval`` compares the gatekeeper with several baselines on the
same records and targets; each baseline only has to turn conversations into ``[N, targets]``
probabilities. Why ``groups``: the base-rate prior needs each record's task (dataset, subject),
which is not in the text. It is passed like scikit-learn passes ``groups`` to a splitter, as
per-row metadata that models reading the text ignore.

A saved baseline is a directory with ``baseline.json`` (kind, targets, hyper-parameters) and
whatever safetensors/JSON files the kind needs; nothing is pickled.
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from introroute.errors import AdapterError, DataError
from introroute.evaluation.metrics import roc_auc
from introroute.scoring import Messages

META_FILE = "baseline.json"
FORMAT_VERSION = 1
GroupPath = tuple[str, ...]
"""A record's task, most general first: ``("mmlu", "virology")``, or ``("gsm8k",)``."""
Examples = tuple[list[Messages], np.ndarray]
"""Conversations and their checked labels ``[N, targets]``."""


class Baseline(ABC):
    """Predicts P(target answers well) per target from conversations; fit on a label matrix."""

    kind: ClassVar[str]

    def __init__(self, targets: Sequence[str]) -> None:
        if not targets:
            raise ValueError("a baseline needs at least one target")
        self.targets = list(targets)
        self.history: list[dict[str, float]] = []  # per-epoch log, for kinds that train in epochs

    def fit(
        self,
        conversations: Sequence[Messages],
        labels: np.ndarray,
        val_conversations: Sequence[Messages] | None = None,
        val_labels: np.ndarray | None = None,
        *,
        groups: Sequence[GroupPath] | None = None,
    ) -> Baseline:
        """Learn from ``labels[N, targets]`` (NaN: no outcome for that target); the validation
        set, when given, chooses hyper-parameters or the stopping epoch."""
        train = (list(conversations), check_labels(conversations, labels, self.targets))
        validation = None
        if val_conversations is not None:
            validation = (list(val_conversations), check_labels(val_conversations, val_labels, self.targets))
        self._fit(train, validation, check_groups(groups, len(train[0])))
        return self

    def predict_proba(
        self, conversations: Sequence[Messages], *, groups: Sequence[GroupPath] | None = None
    ) -> np.ndarray:
        """``[N, targets]`` probabilities in [0, 1]."""
        if not conversations:
            return np.zeros((0, len(self.targets)))
        return self._predict(list(conversations), check_groups(groups, len(conversations)))

    @abstractmethod
    def _fit(self, train: Examples, validation: Examples | None, groups: list[GroupPath] | None) -> None:
        """Learn from checked input (labels float 0/1/NaN, groups one per row or None)."""

    @abstractmethod
    def _predict(self, conversations: list[Messages], groups: list[GroupPath] | None) -> np.ndarray:
        """Probabilities for a non-empty, checked input."""

    def params(self) -> dict[str, Any]:
        """Constructor keyword arguments (besides ``targets``) recorded in ``baseline.json``."""
        return {}

    @abstractmethod
    def save_state(self, directory: Path) -> None:
        """Write the learned state into ``directory`` (safetensors/JSON)."""

    @abstractmethod
    def load_state(self, directory: Path) -> None:
        """Read what :meth:`save_state` wrote."""

    def save(self, directory: str | Path) -> None:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.save_state(out)
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "targets": self.targets,
            "params": self.params(),
        }
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> Baseline:
        directory = Path(directory)
        meta = read_meta(directory)
        if meta["kind"] != cls.kind:
            raise AdapterError(f"{directory / META_FILE}: kind {meta['kind']!r}, not {cls.kind!r}")
        try:
            model = cls(meta["targets"], **meta["params"])
        except TypeError as exc:
            raise AdapterError(f"{directory / META_FILE}: bad params: {exc}") from exc
        model.load_state(directory)
        return model


def read_meta(directory: Path) -> dict[str, Any]:
    """``baseline.json`` of a saved baseline, checked for the keys :meth:`Baseline.load` needs."""
    path = directory / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise AdapterError(f"{directory} is not a saved baseline: {META_FILE} is missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"cannot read {path}: {exc}") from exc
    if meta.get("format_version") != FORMAT_VERSION or not {"kind", "targets", "params"} <= meta.keys():
        raise AdapterError(
            f"{path}: not a format-{FORMAT_VERSION} baseline description (kind, targets, params)"
        )
    return meta


def check_labels(conversations: Sequence[Messages], labels: np.ndarray, targets: Sequence[str]) -> np.ndarray:
    """``labels`` as float ``[N, targets]`` of 0/1/NaN, or a :class:`DataError` saying what is off."""
    array = np.asarray(labels, dtype=np.float64)
    if array.shape != (len(conversations), len(targets)):
        raise DataError(f"labels must be [N={len(conversations)}, targets={len(targets)}], got {array.shape}")
    observed = array[~np.isnan(array)]
    if not np.isin(observed, (0.0, 1.0)).all():
        raise DataError("labels must be 0, 1 or NaN (no outcome)")
    return array


def column_aucs(labels: np.ndarray, probabilities: np.ndarray) -> list[float]:
    """ROC-AUC per target column over its observed labels (NaN where a column has one class)."""
    aucs = []
    for column in range(labels.shape[1]):
        observed = ~np.isnan(labels[:, column])
        aucs.append(roc_auc(labels[observed, column], probabilities[observed, column]))
    return aucs


def check_groups(groups: Sequence[GroupPath] | None, n: int) -> list[GroupPath] | None:
    """``groups`` as a list of tuples, one per row, or a :class:`DataError`."""
    if groups is None:
        return None
    checked = [tuple(g) for g in groups]
    if len(checked) != n:
        raise DataError(f"groups must have one entry per conversation ({n}), got {len(checked)}")
    return checked


def length_batches(lengths: Sequence[int], batch_size: int, seed: int | None = None) -> list[list[int]]:
    """Index batches of similar lengths, so little compute goes to padding; in length order, or in
    a ``seed``-shuffled order (training: the batches' order changes per epoch, their rows do not)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if seed is not None:
        random.Random(seed).shuffle(batches)
    return batches
