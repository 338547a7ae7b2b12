"""Training IntroLM: multi-target masked BCE, with the prompt run once and without gradients.

Why it is fast on a CPU: the activated LoRA and the [INTRO] embedding touch no prompt position,
so the prompt's KV cache is the frozen base model's and needs no gradient. A step runs the
prompt through the plain base model under ``no_grad`` (or reuses a cache kept from the first
epoch), then runs only the k introspective tokens, with the adapter, on top of that cache, and
backpropagates through those k positions alone. :func:`naive_head_logits` is the full
forward+backward this replaces; the tests prove both give the same loss and gradients.

On GPUs the loop runs through Hugging Face Accelerate: ``mixed_precision`` autocasts the
forwards (bf16/fp16, with fp16's loss scaling), and under ``accelerate launch`` each process
trains on its share of the batches with the gradients averaged across processes. On one CPU
process Accelerate adds nothing: the steps are exactly the plain PyTorch ones.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from peft.tuners.tuners_utils import cast_adapter_dtype
from tqdm.auto import tqdm
from transformers import DynamicCache

from introroute.gatekeeper.model import Batch, IntroLM
from introroute.gatekeeper.prompting import PromptIds
from introroute.metrics import roc_auc
from introroute.scoring import Messages


@dataclass
class TrainConfig:
    """Optimisation settings. ``prompt_cache="memory"`` keeps every prompt cache after epoch 1.

    ``mixed_precision``: Accelerate's autocast ("no", "bf16", "fp16"); ``None`` takes what
    ``accelerate launch`` / ``accelerate config`` set, else "no". Fixed once per process (Accelerate
    keeps one global state). On a GPU, "memory" caches grow by the model's KV size per prompt
    token (~0.15 MB for an 8B model): use "epoch" unless the training set is small.
    """

    epochs: int = 4
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 0.0
    patience: int = 2
    seed: int = 0
    prompt_cache: Literal["epoch", "memory"] = "epoch"
    cache_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    progress: bool = True
    mixed_precision: Literal["no", "bf16", "fp16"] | None = None


@dataclass
class Dataset:
    """Tokenised prompts and their labels ``[N, targets]`` (NaN where a target has no outcome)."""

    prompts: list[PromptIds]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class TrainResult:
    best_epoch: int
    best_val_auc: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def make_dataset(gk: IntroLM, conversations: Sequence[Messages], labels: np.ndarray) -> Dataset:
    """Tokenise conversations the way scoring does (same template, truncation and spoof rules)."""
    labels = np.asarray(labels, dtype=np.float32)
    if labels.shape != (len(conversations), len(gk.targets)):
        raise ValueError(
            f"labels must be [N={len(conversations)}, targets={len(gk.targets)}], got {labels.shape}"
        )
    return Dataset([gk.encode(m) for m in conversations], labels)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the observed (non-NaN) labels; a record may lack some targets."""
    observed = ~torch.isnan(labels)
    per_item = F.binary_cross_entropy_with_logits(
        logits, torch.nan_to_num(labels), pos_weight=pos_weight, reduction="none"
    )
    return (per_item * observed).sum() / observed.sum().clamp(min=1)


def pos_weights(labels: np.ndarray) -> torch.Tensor:
    """negatives / positives per target, so a rare outcome is not ignored."""
    positives = np.nansum(labels, axis=0)
    observed = np.sum(~np.isnan(labels), axis=0)
    return torch.tensor(np.where(positives > 0, (observed - positives) / np.maximum(positives, 1), 1.0))


def naive_head_logits(gk: IntroLM, batch: Batch) -> torch.Tensor:
    """The reference: one adapter-active forward over prompt + [INTRO] (gradients everywhere)."""
    return gk.forward_batch(batch).head_logits


def fast_head_logits(gk: IntroLM, batch: Batch) -> torch.Tensor:
    """The training path: prompt cache without gradients, then the [INTRO] tokens alone."""
    return gk.intro_forward(batch, gk.prompt_cache(batch))


def _batches(dataset: Dataset, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length (sorted inside windows), so little compute goes to padding."""
    order = list(range(len(dataset)))
    rng.shuffle(order)
    window = batch_size * 32
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(dataset.prompts[i].ids))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


class _CacheStore:
    """Prompt caches kept across epochs (``prompt_cache="memory"``), optionally in half precision."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.layers: dict[tuple[str | int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def get(self, gk: IntroLM, key: tuple[str | int, ...], batch: Batch) -> DynamicCache:
        if key not in self.layers:
            cache = gk.prompt_cache(batch)
            self.layers[key] = [
                (layer.keys.to(self.dtype), layer.values.to(self.dtype)) for layer in cache.layers
            ]
        cache = DynamicCache()
        for index, (keys, values) in enumerate(self.layers[key]):
            cache.update(keys.to(gk.dtype), values.to(gk.dtype), index)
        return cache

    @property
    def gib(self) -> float:
        return sum(k.nbytes + v.nbytes for layers in self.layers.values() for k, v in layers) / 2**30


def validation_auc(
    gk: IntroLM, dataset: Dataset, batch_size: int, store: _CacheStore | None = None
) -> list[float]:
    """ROC-AUC per target on ``dataset`` (NaN where a target has a single class)."""
    probabilities = _predict(gk, dataset, batch_size, store)
    aucs = []
    for column in range(dataset.labels.shape[1]):
        observed = ~np.isnan(dataset.labels[:, column])
        aucs.append(roc_auc(dataset.labels[observed, column], probabilities[observed, column]))
    return aucs


def _predict(gk: IntroLM, dataset: Dataset, batch_size: int, store: _CacheStore | None) -> np.ndarray:
    """Validation probabilities; with a cache store, the prompts are run once for all epochs."""
    gk.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = gk.collate(dataset.prompts[start : start + batch_size])
            if store is None:
                logits = gk.forward_batch(batch).head_logits
            else:
                logits = gk.intro_forward(batch, store.get(gk, ("validation", start), batch))
            out.append(torch.sigmoid(logits).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(gk.targets)))


def trainable_parameters(gk: IntroLM) -> list[torch.nn.Parameter]:
    """LoRA matrices, the [INTRO] embedding rows and the head; the base model stays frozen."""
    return [p for p in gk.peft_model.parameters() if p.requires_grad] + list(gk.head.parameters())


def fit(
    gk: IntroLM,
    train: Dataset,
    validation: Dataset,
    config: TrainConfig | None = None,
    output_dir: str | Path | None = None,
) -> TrainResult:
    """Train with early stopping on mean validation ROC-AUC; the best epoch is restored and saved."""
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=gk.device.type == "cpu")
    # fp32 master weights for what trains, also on a half-precision base (no-op on an fp32 one)
    cast_adapter_dtype(gk.peft_model, "default", autocast_adapter_dtype=True)
    params = trainable_parameters(gk)
    optimizer = accelerator.prepare(torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay))
    # float64 as ever, except on Apple GPUs, which have no float64
    weight = pos_weights(train.labels).to(gk.device, torch.float32 if gk.device.type == "mps" else None)
    store = _CacheStore(getattr(torch, config.cache_dtype)) if config.prompt_cache == "memory" else None
    fixed = _shard(_batches(train, config.batch_size, rng), accelerator) if store else None
    result = TrainResult(best_epoch=-1, best_val_auc=-math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    started = time.perf_counter()
    for epoch in range(config.epochs):
        gk.train()
        batches = list(fixed) if fixed else _shard(_batches(train, config.batch_size, rng), accelerator)
        if fixed:
            rng.shuffle(batches)
        losses = []
        quiet = not config.progress or not accelerator.is_local_main_process
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=quiet)
        epoch_start = time.perf_counter()
        for rows in bar:
            batch = gk.collate([train.prompts[i] for i in rows])
            with accelerator.autocast():
                cache = store.get(gk, tuple(rows), batch) if store else gk.prompt_cache(batch)
                logits = gk.intro_forward(batch, cache)
            loss = masked_bce(logits, torch.from_numpy(train.labels[rows]).to(logits.device), weight)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            _average_gradients(params, accelerator)
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        epoch_seconds = time.perf_counter() - epoch_start
        with accelerator.autocast():  # every process validates on all of it: they agree on stopping
            aucs = validation_auc(gk, validation, config.batch_size, store)
        mean_auc = float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan")
        # train_loss: this process's batches (all of them on one process)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "epoch_s": epoch_seconds}
        row |= {f"val_auc/{t}": a for t, a in zip(gk.targets, aucs, strict=True)} | {"val_auc": mean_auc}
        if store:
            row["cache_gib"] = store.gib
        result.history.append(row)
        if mean_auc > result.best_val_auc:
            result.best_epoch, result.best_val_auc = epoch + 1, mean_auc
            best_state = {k: v.detach().clone() for k, v in _trainable_state(gk).items()}
            gk.trained = True
            if output_dir is not None and accelerator.is_main_process:
                gk.eval()
                gk.save_pretrained(str(output_dir))
        elif epoch + 1 - result.best_epoch >= config.patience:
            break
    if best_state is not None:
        _load_trainable_state(gk, best_state)
    gk.eval()
    result.seconds = time.perf_counter() - started
    return result


def _shard(batches: list[list[int]], accelerator: Accelerator) -> list[list[int]]:
    """This process's share of the batches under ``accelerate launch`` (all of them on one process).

    Every process draws the same shuffled list (same seed) and takes every n-th batch; the
    remainder is dropped so that all run the same number of steps, as the gradient average needs.
    """
    world = accelerator.num_processes
    if world == 1:
        return batches
    return batches[accelerator.process_index : len(batches) - len(batches) % world : world]


def _average_gradients(params: list[torch.nn.Parameter], accelerator: Accelerator) -> None:
    """Data parallelism without a DDP wrapper: average the trainable gradients across processes.

    A training step is two custom calls (plain prefill, then [INTRO] with the adapter), not one
    ``model(...)`` that DDP could hook; and the trainable tensors (LoRA, [INTRO] rows, head) are a
    few MB, so one all-reduce each per step costs little next to the forward.
    """
    if accelerator.num_processes == 1:
        return
    for param in params:
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        param.grad = accelerator.reduce(grad, reduction="mean")


def _trainable_state(gk: IntroLM) -> dict[str, torch.Tensor]:
    names = {id(p) for p in trainable_parameters(gk)}
    return {k: v for k, v in gk.named_parameters() if id(v) in names}


def _load_trainable_state(gk: IntroLM, state: dict[str, torch.Tensor]) -> None:
    gk.train()  # unmerged, so the restored [INTRO] row is what eval() merges
    current = dict(gk.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            current[name].copy_(value)
