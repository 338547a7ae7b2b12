"""Training IntroLM: multi-target masked BCE, with the prompt run once and without gradients.

Each step runs the prompt through the frozen base once (or reuses a cache kept from the first
epoch) and backpropagates through the introspective tokens alone (:mod:`introroute.training.forward`
says why that is exact); this module is the loop around it: datasets, the loss, early stopping on
validation AUC, the kept prompt caches.

On GPUs the loop runs through Hugging Face Accelerate: ``mixed_precision`` autocasts the
forwards (bf16/fp16, with fp16's loss scaling), and under ``accelerate launch`` each process
trains on its share of the batches with the gradients averaged across processes. On one CPU
process Accelerate adds nothing: the steps are exactly the plain PyTorch ones.
"""

from __future__ import annotations

import contextlib
import math
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import DynamicCache

from introroute.errors import ConfigError
from introroute.evaluation.metrics import roc_auc, within_group_auc
from introroute.gatekeeper.model import Batch, IntroLM
from introroute.gatekeeper.prompting import PromptIds
from introroute.scoring import Messages
from introroute.training.forward import (
    intro_forward,
    prefilled_head,
    prefix_first_where_exact,
    shared_prefix_cache,
    upcast_trainable,
)


@dataclass
class TrainConfig:
    """Optimisation settings. ``prompt_cache="memory"`` keeps every prompt cache after epoch 1;
    ``"disk"`` keeps them as files under ``cache_dir`` (default: the system's temporary directory),
    deleted when training ends.

    The recipe knobs follow the paper's: ``class_weight`` (BCE ``pos_weight`` = negatives /
    positives, so a model right on 10% of questions does not learn "always wrong"),
    ``label_smoothing`` (targets pulled towards 0.5 by that amount: labels from a strict grader
    are noisy), a ``cosine`` schedule after ``warmup`` (a fraction of all steps) and gradient
    clipping at ``max_grad_norm``.

    ``mixed_precision``: Accelerate's autocast ("no", "bf16", "fp16"); ``None`` takes what
    ``accelerate launch`` / ``accelerate config`` set, else "no". Fixed once per process (Accelerate
    keeps one global state). On a GPU, "memory" caches grow by the model's KV size per prompt
    token (~0.15 MB for an 8B model): use "epoch" unless the training set is small.

    ``train_adapter=False`` trains the head alone: LoRA and [INTRO] rows keep the weights they were
    loaded with, so a trained adapter can take more labels for one target without moving the
    others. A target with no label in ``train`` gets zero gradient and, with the default
    ``weight_decay=0``, keeps its head row exactly.
    """

    epochs: int = 4
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 0.0
    patience: int = 2
    seed: int = 0
    class_weight: bool = True
    label_smoothing: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    warmup: float = 0.0
    max_grad_norm: float | None = None
    prompt_cache: Literal["epoch", "memory", "disk"] = "epoch"
    cache_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    cache_dir: str | None = None
    progress: bool = True
    mixed_precision: Literal["no", "bf16", "fp16"] | None = None
    train_adapter: bool = True


@dataclass
class Dataset:
    """Tokenised prompts and their labels ``[N, targets]`` (NaN where a target has no outcome).

    ``groups`` (one task name per prompt, e.g. an MMLU subject or an EntityQuestions relation)
    make validation score within-group ROC-AUC, which cannot be raised by telling tasks apart.
    """

    prompts: list[PromptIds]
    labels: np.ndarray
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class TrainResult:
    best_epoch: int
    best_val_auc: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def make_dataset(
    gk: IntroLM,
    conversations: Sequence[Messages],
    labels: np.ndarray,
    groups: Sequence[str] | None = None,
) -> Dataset:
    """Tokenise conversations the way scoring does (same template, truncation and spoof rules)."""
    labels = np.asarray(labels, dtype=np.float32)
    if labels.shape != (len(conversations), len(gk.targets)):
        raise ValueError(
            f"labels must be [N={len(conversations)}, targets={len(gk.targets)}], got {labels.shape}"
        )
    if groups is not None and len(groups) != len(conversations):
        raise ValueError(f"{len(groups)} groups for {len(conversations)} conversations")
    codes = None if groups is None else np.asarray(groups, dtype=object)
    return Dataset([gk.encode(m) for m in conversations], labels, codes)


def masked_bce(
    logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor, smoothing: float = 0.0
) -> torch.Tensor:
    """Mean BCE over the observed (non-NaN) labels; a record may lack some targets."""
    observed = ~torch.isnan(labels)
    targets = torch.nan_to_num(labels) * (1 - smoothing) + smoothing / 2
    per_item = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    return (per_item * observed).sum() / observed.sum().clamp(min=1)


def pos_weights(labels: np.ndarray) -> torch.Tensor:
    """negatives / positives per target, so a rare outcome is not ignored."""
    positives = np.nansum(labels, axis=0)
    observed = np.sum(~np.isnan(labels), axis=0)
    return torch.tensor(np.where(positives > 0, (observed - positives) / np.maximum(positives, 1), 1.0))


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
    """Prompt caches kept across epochs (``prompt_cache="memory"`` or ``"disk"``), optionally in
    half precision.

    A :func:`~introroute.training.forward.prefix_first` batch's shared head is the same in every
    row, so it is kept once per batch and repeated when the cache is rebuilt: for short chat
    prompts that is most of the memory (SmolLM2's system prompt is ~25 of a factual question's
    ~37 tokens). With a
    ``directory`` ("disk") each batch's tensors go to a safetensors file there and are read back
    at each use, for training sets whose caches outgrow RAM (SmolLM2's on 7,500 MMLU prompts are
    ~30 GiB in bf16): a file read per step instead of a prefill. :meth:`close` deletes the files.
    """

    def __init__(self, dtype: torch.dtype, directory: str | Path | None = None) -> None:
        self.dtype = dtype
        self.entries: dict[tuple[str | int, ...], list[tuple[torch.Tensor, torch.Tensor]] | Path] = {}
        self.nbytes = 0
        self._files: tempfile.TemporaryDirectory[str] | None = None
        if directory is not None:
            try:
                Path(directory).mkdir(parents=True, exist_ok=True)
                # removed by close(), or by its finalizer if training stops on an exception
                self._files = tempfile.TemporaryDirectory(prefix="introroute-prompt-cache-", dir=directory)
            except OSError as exc:
                raise ConfigError(f"cache_dir {str(directory)!r} cannot hold prompt caches: {exc}") from None

    def _layers(
        self, gk: IntroLM, key: tuple[str | int, ...], batch: Batch
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(shared head, per-row rest) per key and value tensor of every layer."""
        entry = self.entries.get(key)
        if isinstance(entry, Path):
            tensors = load_file(entry, device=str(gk.device))
            return [(tensors[f"{i}.head"], tensors[f"{i}.rest"]) for i in range(len(tensors) // 2)]
        if entry is not None:
            return entry
        shared = prefilled_head(batch)
        layers = [
            (
                tensor[:1, :, :shared].to(self.dtype).contiguous(),
                tensor[:, :, shared:].to(self.dtype).contiguous(),
            )
            for layer in shared_prefix_cache(gk, batch).layers
            for tensor in (layer.keys, layer.values)
        ]
        self.nbytes += sum(head.nbytes + rest.nbytes for head, rest in layers)
        if self._files is None:
            self.entries[key] = layers
        else:
            path = Path(self._files.name) / f"{len(self.entries)}.safetensors"
            tensors = {f"{i}.head": head for i, (head, _) in enumerate(layers)}
            save_file(tensors | {f"{i}.rest": rest for i, (_, rest) in enumerate(layers)}, path)
            self.entries[key] = path
        return layers

    def get(self, gk: IntroLM, key: tuple[str | int, ...], batch: Batch) -> DynamicCache:
        layers = self._layers(gk, key, batch)
        rows = batch.input_ids.shape[0]
        full = [torch.cat([head.expand(rows, -1, -1, -1), rest], dim=2).to(gk.dtype) for head, rest in layers]
        cache = DynamicCache()
        for index in range(len(full) // 2):
            cache.update(full[2 * index], full[2 * index + 1], index)
        return cache

    @property
    def gib(self) -> float:
        return self.nbytes / 2**30

    def close(self) -> None:
        if self._files is not None:
            self._files.cleanup()


def validation_auc(
    gk: IntroLM, dataset: Dataset, batch_size: int, store: _CacheStore | None = None
) -> list[float]:
    """ROC-AUC per target on ``dataset`` (NaN where a target has a single class); within-group
    (mean over groups with both classes) when the dataset has groups."""
    probabilities = predict(gk, dataset, batch_size, store)
    aucs = []
    for column in range(dataset.labels.shape[1]):
        observed = ~np.isnan(dataset.labels[:, column])
        y, p = dataset.labels[observed, column], probabilities[observed, column]
        groups = None if dataset.groups is None else dataset.groups[observed]
        aucs.append(roc_auc(y, p) if groups is None else within_group_auc(y, p, groups))
    return aucs


def predict(gk: IntroLM, dataset: Dataset, batch_size: int, store: _CacheStore | None = None) -> np.ndarray:
    """``[N, targets]`` probabilities by the training fast path (shared head prefilled once per
    batch); with a cache store, the prompts are run once for all epochs."""
    gk.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = prefix_first_where_exact(gk, gk.collate(dataset.prompts[start : start + batch_size]))
            key = ("validation", start)
            cache = shared_prefix_cache(gk, batch) if store is None else store.get(gk, key, batch)
            logits = intro_forward(gk, batch, cache)
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
    with _adapter_frozen(gk, not config.train_adapter):
        return _fit(gk, train, validation, config, output_dir)


@contextlib.contextmanager
def _adapter_frozen(gk: IntroLM, frozen: bool) -> Iterator[None]:
    """Head-only training: no gradient for LoRA and [INTRO] rows while it runs, trainable after."""
    adapter = [p for p in gk.peft_model.parameters() if p.requires_grad] if frozen else []
    for param in adapter:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in adapter:
            param.requires_grad_(True)


def _fit(
    gk: IntroLM, train: Dataset, validation: Dataset, config: TrainConfig, output_dir: str | Path | None
) -> TrainResult:
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=gk.device.type == "cpu")
    if config.train_adapter:  # a frozen adapter needs no fp32 master weights
        upcast_trainable(gk)  # fp32 master weights for what trains (no-op on an fp32 base)
    params = trainable_parameters(gk)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    weight = pos_weights(train.labels) if config.class_weight else torch.ones(train.labels.shape[1])
    # float64 as ever, except on Apple GPUs, which have no float64
    weight = weight.to(gk.device, torch.float32 if gk.device.type == "mps" else None)
    store = None
    if config.prompt_cache != "epoch":
        directory = (config.cache_dir or tempfile.gettempdir()) if config.prompt_cache == "disk" else None
        store = _CacheStore(getattr(torch, config.cache_dtype), directory)
    fixed = _shard(_batches(train, config.batch_size, rng), accelerator) if store else None
    # this process's steps: its share of the batches under ``accelerate launch``
    steps_per_epoch = max(1, math.ceil(len(train) / config.batch_size) // accelerator.num_processes)
    scheduler = _scheduler(optimizer, config, steps_per_epoch * config.epochs)
    optimizer = accelerator.prepare(optimizer)
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
            batch = prefix_first_where_exact(gk, gk.collate([train.prompts[i] for i in rows]))
            with accelerator.autocast():
                cache = store.get(gk, tuple(rows), batch) if store else shared_prefix_cache(gk, batch)
                logits = intro_forward(gk, batch, cache)
            labels = torch.from_numpy(train.labels[rows]).to(logits.device)
            loss = masked_bce(logits, labels, weight, config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            _average_gradients(params, accelerator)
            if config.max_grad_norm is not None:  # unscales fp16's scaled gradients first
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        epoch_seconds = time.perf_counter() - epoch_start
        with accelerator.autocast():  # every process validates on all of it: they agree on stopping
            aucs = validation_auc(gk, validation, config.batch_size, store)
        mean_auc = float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan")
        # train_loss: this process's batches (all of them on one process)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "epoch_s": epoch_seconds}
        # a head without validation labels (e.g. ``self`` in a heads-only refit) has no AUC: None,
        # so the history stays strict JSON
        row |= {f"val_auc/{t}": None if math.isnan(a) else a for t, a in zip(gk.targets, aucs, strict=True)}
        row["val_auc"] = mean_auc
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
    if store:
        store.close()
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


def _scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup x total_steps``, then constant or cosine decay to zero."""
    warmup = int(config.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _trainable_state(gk: IntroLM) -> dict[str, torch.Tensor]:
    names = {id(p) for p in trainable_parameters(gk)}
    return {k: v for k, v in gk.named_parameters() if id(v) in names}


def _load_trainable_state(gk: IntroLM, state: dict[str, torch.Tensor]) -> None:
    gk.train()  # unmerged, so the restored [INTRO] row is what eval() merges
    current = dict(gk.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            current[name].copy_(value)
