"""Frozen features + per-target logistic regression: the shared half of two baselines.

:class:`FrozenFeatureBaseline` is everything but the feature extractor (MiniLM sentence
embeddings, SmolLM2 hidden states): the on-disk feature cache, the regression, save and load.

Why per target: a record may lack an outcome for some target (NaN), so each target is fit on the
rows that have one. Why standardise: hidden states of a causal LM have a few huge dimensions
that would otherwise dominate an L2 penalty and slow lbfgs down. Why no class weights: the
baselines should output calibrated probabilities, which Brier score and ECE then measure.
The learned state is plain arrays (scikit-learn's ``coef_``/``intercept_``), stored as safetensors.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from sklearn.linear_model import LogisticRegression

from introroute.errors import AdapterError, DataError
from introroute.evaluation.metrics import roc_auc
from introroute.scoring import Messages
from introroute.training.baselines.base import Baseline, Examples, GroupPath
from introroute.training.baselines.features import FeatureCache, default_cache_path

C_GRID = (0.01, 0.1, 1.0, 10.0)
DEFAULT_C = 1.0
STATE_FILE = "logistic.safetensors"


class PerTargetLogistic:
    """Standardisation, then one L2-regularised logistic regression per target column."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.state: dict[str, np.ndarray] = {}

    def fit(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        validation: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> PerTargetLogistic:
        """Fit each target on its observed rows; with ``validation``, C comes from :data:`C_GRID`
        by that target's validation ROC-AUC, otherwise C = 1."""
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0
        z = (x - mean) / scale
        coef, intercept, chosen = [], [], []
        for column, target in enumerate(self.targets):
            observed = ~np.isnan(labels[:, column])
            y = labels[observed, column]
            if len(np.unique(y)) < 2:
                raise DataError(f"target {target!r} has a single class in the training labels")
            grid = C_GRID if validation is not None else (DEFAULT_C,)
            models = [self._fit_one(z[observed], y, c) for c in grid]
            best = 0 if validation is None else self._best(models, validation, column, mean, scale)
            coef.append(models[best].coef_[0])
            intercept.append(models[best].intercept_[0])
            chosen.append(grid[best])
        self.state = {
            "mean": mean,
            "scale": scale,
            "coef": np.stack(coef),
            "intercept": np.array(intercept),
            "C": np.array(chosen),
        }
        return self

    @staticmethod
    def _fit_one(z: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=2000).fit(z, y)

    @staticmethod
    def _best(
        models: list[LogisticRegression],
        validation: tuple[np.ndarray, np.ndarray],
        column: int,
        mean: np.ndarray,
        scale: np.ndarray,
    ) -> int:
        x, labels = validation
        observed = ~np.isnan(labels[:, column])
        z = (x[observed] - mean) / scale
        aucs = [roc_auc(labels[observed, column], m.predict_proba(z)[:, 1]) for m in models]
        finite = [a if np.isfinite(a) else -np.inf for a in aucs]
        return int(np.argmax(finite)) if np.isfinite(max(finite)) else C_GRID.index(DEFAULT_C)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``[N, targets]`` probabilities."""
        z = (x - self.state["mean"]) / self.state["scale"]
        logits = z @ self.state["coef"].T + self.state["intercept"]
        return 1.0 / (1.0 + np.exp(-logits))

    def save(self, path: Path) -> None:
        save_file({k: np.ascontiguousarray(v) for k, v in self.state.items()}, str(path))

    def load(self, path: Path) -> PerTargetLogistic:
        try:
            state = load_file(str(path))
        except (OSError, SafetensorError) as exc:
            raise AdapterError(f"cannot read {path}: {exc}") from exc
        if state.get("coef", np.zeros(0)).shape[:1] != (len(self.targets),):
            raise AdapterError(f"{path}: coefficients do not match the targets {self.targets}")
        self.state = state
        return self


class FrozenFeatureBaseline(Baseline):
    """Features from a frozen model (cached on disk), then :class:`PerTargetLogistic`."""

    def __init__(self, targets: list[str]) -> None:
        super().__init__(targets)
        self.head = PerTargetLogistic(self.targets)

    @abstractmethod
    def extractor_id(self) -> str:
        """Names the features: model, weights fingerprint and truncation (the cache file's name)."""

    @abstractmethod
    def extract(self, conversations: list[Messages]) -> np.ndarray:
        """``[N, dim]`` features, computed (not cached)."""

    def features(self, conversations: list[Messages]) -> np.ndarray:
        extractor = self.extractor_id()
        return FeatureCache(default_cache_path(extractor), extractor).get(conversations, self.extract)

    def _fit(self, train: Examples, validation: Examples | None, groups: list[GroupPath] | None) -> None:
        val = None if validation is None else (self.features(validation[0]), validation[1])
        self.head.fit(self.features(train[0]), train[1], val)

    def _predict(self, conversations: list[Messages], groups: list[GroupPath] | None) -> np.ndarray:
        return self.head.predict(self.features(conversations))

    def save_state(self, directory: Path) -> None:
        self.head.save(directory / STATE_FILE)

    def load_state(self, directory: Path) -> None:
        self.head.load(directory / STATE_FILE)
