"""``introroute train``: fit the gatekeeper's heads on a routing log (train split; early stopping on
the validation split), and save the best epoch as an adapter directory.

``--device cuda --dtype bfloat16`` trains on a GPU; ``accelerate launch -m introroute.cli train ...``
runs the same command on several GPUs (one process each, gradients averaged), with
``--mixed-precision`` or accelerate's own ``--mixed_precision`` for autocast.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from introroute.data.paths import add_log_argument
from introroute.devices import add_device_arguments
from introroute.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_log_argument(parser)
    parser.add_argument("--targets", nargs="+", required=True, help="target names as in the log ('self'...)")
    parser.add_argument("--out", type=Path, required=True, help="adapter directory to write")
    parser.add_argument("--base", help="packaged name, .gguf or HF dir (default: smollm2-135m-instruct)")
    parser.add_argument(
        "--from-adapter",
        help="start from a trained adapter (a directory, or 'default': the shipped one) instead of a "
        "fresh LoRA: its placement, rank, [INTRO] tokens and heads are kept; --targets names the heads "
        "that learn (a subset of its targets; the others keep their weights)",
    )
    parser.add_argument(
        "--heads-only",
        action="store_true",
        help="with --from-adapter: train only the heads, LoRA and [INTRO] rows frozen (more labels for "
        "a remote model without moving 'self')",
    )
    add_device_arguments(parser)
    parser.add_argument(
        "--mixed-precision",
        choices=["no", "bf16", "fp16"],
        help="autocast the forwards (default: what accelerate launch configured, else no)",
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--patience", type=int, default=2)
    # The paper's placement at r=32 beat q_proj/v_proj at r=8 on every validation epoch of the
    # EntityQuestions side-by-side (docs/results-factual-qa.md), so it is the command's default.
    parser.add_argument("--lora-r", type=int, help="LoRA rank (default 32); 0 = no LoRA ([INTRO] row + head)")
    parser.add_argument("--lora-alpha", type=int, help="LoRA alpha (default: 2 x rank)")
    parser.add_argument(
        "--target-modules",
        nargs="+",
        help="projections to adapt (default: the paper's q_proj o_proj gate_proj up_proj down_proj; "
        "k/v stay frozen; 'q_proj v_proj' is cheaper per forward)",
    )
    parser.add_argument("--num-intro-tokens", type=int, help="[INTRO] tokens after the prompt (default 1)")
    parser.add_argument("--max-context", type=int, help="prompt tokens kept (default 1024, or the adapter's)")
    parser.add_argument("--limit-train", type=int, help="seeded random subset of the train split")
    parser.add_argument("--limit-val", type=int, help="seeded random subset of the validation split")
    parser.add_argument(
        "--prompt-cache",
        choices=["epoch", "memory", "disk"],
        default="memory",
        help="memory: keep every prompt's KV cache after epoch 1 (fast); disk: keep them as files under "
        "--cache-dir when they outgrow RAM; epoch: recompute them each epoch (a large model on a GPU)",
    )
    parser.add_argument("--cache-dir", help="--prompt-cache disk: where (default: the system's temp dir)")
    parser.add_argument("--cache-dtype", choices=["float32", "bfloat16", "float16"], default="bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-class-weight", action="store_true", help="plain BCE (no pos_weight)")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    parser.add_argument("--warmup", type=float, default=0.0, help="warm-up, as a fraction of all steps")
    parser.add_argument("--max-grad-norm", type=float, help="clip gradients to this norm")
    parser.add_argument("--threads", type=int)


def main(args: argparse.Namespace) -> int:
    import torch
    from accelerate import PartialState

    from introroute.data.records import load_logs, select, to_examples
    from introroute.evaluation.report import task_path
    from introroute.gatekeeper import DEFAULT_BASE, IntroConfig, IntroLM, load_base
    from introroute.gatekeeper.config import PAPER_TARGET_MODULES
    from introroute.gatekeeper.loading import resolve_device
    from introroute.training.gatekeeper import TrainConfig, fit, make_dataset

    layout = {"--lora-r": args.lora_r, "--lora-alpha": args.lora_alpha}
    layout |= {"--target-modules": args.target_modules, "--num-intro-tokens": args.num_intro_tokens}
    if args.from_adapter and (given := [flag for flag, value in layout.items() if value is not None]):
        raise ConfigError(f"{', '.join(given)}: the layout comes from the adapter ({args.from_adapter})")
    if args.heads_only and not args.from_adapter:
        raise ConfigError("--heads-only trains the heads of an existing adapter: pass --from-adapter")
    if args.threads:
        torch.set_num_threads(args.threads)
    records = load_logs(args.log)
    train_records = select(records, ["train"], args.limit_train, args.seed)
    val_records = select(records, ["validation"], args.limit_val, args.seed)
    # Labels first: a wrong target name fails here, before the base model is loaded.
    train_examples = to_examples(train_records, args.targets)
    val_examples = to_examples(val_records, args.targets)
    device = resolve_device(args.device, args.dtype)  # no GPU here: fail before loading anything
    state = PartialState(cpu=device.type == "cpu")
    if device.type == "cuda" and device.index is None:
        device = state.device  # under `accelerate launch`: this process's own GPU
    if args.from_adapter:
        gk = _start_adapter(args, device)
        train_examples = (train_examples[0], _widen(train_examples[1], args.targets, gk.targets))
        val_examples = (val_examples[0], _widen(val_examples[1], args.targets, gk.targets))
    else:
        lora_r = 32 if args.lora_r is None else args.lora_r
        config = IntroConfig(
            targets=list(args.targets),
            num_intro_tokens=args.num_intro_tokens or 1,
            lora_r=lora_r,
            lora_alpha=args.lora_alpha or 2 * lora_r,
            target_modules=list(args.target_modules or PAPER_TARGET_MODULES),
            max_context=args.max_context or 1024,
            seed=args.seed,
        )
        gk = IntroLM.build(load_base(args.base or DEFAULT_BASE, device=device, dtype=args.dtype), config)
    train = make_dataset(gk, *train_examples)
    # early stopping on within-task AUC (MMLU subject, EntityQuestions relation)
    validation = make_dataset(gk, *val_examples, groups=["/".join(task_path(r)) for r in val_records])
    print(f"train {len(train)} records, validation {len(validation)} records, targets {args.targets}")
    result = fit(
        gk,
        train,
        validation,
        TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            patience=args.patience,
            seed=args.seed,
            prompt_cache=args.prompt_cache,
            cache_dtype=args.cache_dtype,
            cache_dir=args.cache_dir,
            class_weight=not args.no_class_weight,
            label_smoothing=args.label_smoothing,
            schedule=args.schedule,
            warmup=args.warmup,
            max_grad_norm=args.max_grad_norm,
            mixed_precision=args.mixed_precision,
            train_adapter=not args.heads_only,
        ),
        output_dir=args.out,
    )
    if not state.is_main_process:
        return 0  # the main process saved the adapter and writes the history
    summary = {"best_epoch": result.best_epoch, "best_val_auc": result.best_val_auc}
    summary |= {"seconds": result.seconds, "device": str(device), "processes": state.num_processes}
    history = json.dumps(summary | {"history": result.history}, indent=2)
    (args.out / "training_history.json").write_text(history + "\n")
    print(json.dumps(summary))
    return 0


def _start_adapter(args: argparse.Namespace, device: Any) -> Any:
    """The adapter ``--from-adapter`` names, loaded trainable; ``--targets`` must be among its heads."""
    from introroute.gatekeeper import DEFAULT_BASE, IntroLM
    from introroute.gatekeeper.persistence import default_adapter_dir

    directory = args.from_adapter
    if directory == "default" and (directory := default_adapter_dir(args.base or DEFAULT_BASE)) is None:
        raise ConfigError(f"no adapter is shipped for base {args.base or DEFAULT_BASE!r}")
    gk = IntroLM.from_pretrained(
        str(directory), base=args.base, max_context=args.max_context, device=str(device), dtype=args.dtype
    )
    if unknown := [t for t in args.targets if t not in gk.targets]:
        raise ConfigError(f"adapter {directory} has no head for {unknown}; its targets are {gk.targets}")
    return gk


def _widen(labels: np.ndarray, targets: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """Labels for ``targets`` laid out in the adapter's head order; NaN (masked) for the other heads."""
    wide = np.full((labels.shape[0], len(columns)), np.nan, dtype=np.float32)
    for j, target in enumerate(targets):
        wide[:, list(columns).index(target)] = labels[:, j]
    return wide
