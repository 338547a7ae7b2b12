"""``introroute train``: fit the gatekeeper's heads on a routing log (train split; early stopping on
the validation split), and save the best epoch as an adapter directory.

``--device cuda --dtype bfloat16`` trains on a GPU; ``accelerate launch -m introroute.cli train ...``
runs the same command on several GPUs (one process each, gradients averaged), with
``--mixed-precision`` or accelerate's own ``--mixed_precision`` for autocast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from introroute.cli.outputs import add_overwrite_argument, atomic_dir, check_output
from introroute.data.paths import add_log_argument
from introroute.errors import ConfigError
from introroute.gatekeeper.spec import ModelSpec, add_model_arguments

CHANCE_AUC = 0.55
"""Below this validation AUC a head hardly ranks better than a coin (0.5): warn loudly."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_log_argument(parser)
    parser.add_argument(
        "--targets",
        nargs="+",
        required=True,
        metavar="HEAD[=OUTCOME]",
        help="heads to train, named as the log's outcomes ('self'...); HEAD=OUTCOME trains head HEAD on "
        "the outcomes logged under OUTCOME (gpt-4o=gpt-4-1106-preview: a router log keys answers by "
        "tier target)",
    )
    parser.add_argument("--out", type=Path, required=True, help="adapter directory to write")
    add_overwrite_argument(parser)
    parser.add_argument(
        "--from-adapter",
        help="start from a trained adapter (a directory, or 'default': the shipped one) instead of a "
        "fresh LoRA: its placement, rank, [INTRO] tokens and heads are kept; --targets names the heads "
        "that learn (the others keep their weights); a target it has no head for (a new remote model, "
        "e.g. gpt-4o) gets a fresh one",
    )
    parser.add_argument(
        "--heads-only",
        action="store_true",
        help="with --from-adapter: train only the heads, LoRA and [INTRO] rows frozen (more labels for "
        "a remote model without moving 'self')",
    )
    add_model_arguments(
        parser,
        adapter=False,  # train starts from --from-adapter (its own rules), or from a fresh LoRA
        max_context=False,
        prefix_cache=False,
        base_help="packaged name, .gguf or HF dir (default: smollm2-135m-instruct)",
    )
    parser.add_argument(
        "--mixed-precision",
        choices=["no", "bf16", "fp16"],
        help="autocast the forwards (default: what accelerate launch configured, else no)",
    )
    parser.add_argument("--epochs", type=int, default=4, help="passes over the train split at most")
    parser.add_argument("--batch-size", type=int, default=8, help="records per optimiser step")
    parser.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate")
    parser.add_argument(
        "--patience", type=int, default=2, help="stop after this many epochs without a better validation AUC"
    )
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
    parser.add_argument(
        "--head",
        choices=["linear", "verbalised"],
        help="how P(success) is read at [INTRO] (default linear): linear, a trained head per target; "
        "verbalised, the LM's own yes/no next-token odds (one target; servable by llama.cpp, see "
        "'introroute export --format gguf-alora')",
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
    parser.add_argument(
        "--cache-dtype",
        choices=["float32", "bfloat16", "float16"],
        default="bfloat16",
        help="dtype of the kept prompt caches",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and --limit-*")
    parser.add_argument("--no-class-weight", action="store_true", help="plain BCE (no pos_weight)")
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="BCE label smoothing")
    parser.add_argument(
        "--schedule", choices=["constant", "cosine"], default="constant", help="learning-rate schedule"
    )
    parser.add_argument("--warmup", type=float, default=0.0, help="warm-up, as a fraction of all steps")
    parser.add_argument("--max-grad-norm", type=float, help="clip gradients to this norm")
    parser.add_argument(
        "--strict",
        action="store_true",
        help=f"exit 1 when a trained head's validation AUC is below {CHANCE_AUC} (or unknown)",
    )


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
    layout |= {"--head": args.head}
    if args.from_adapter and (given := [flag for flag, value in layout.items() if value is not None]):
        raise ConfigError(f"{', '.join(given)}: the layout comes from the adapter ({args.from_adapter})")
    if args.heads_only and not args.from_adapter:
        raise ConfigError("--heads-only trains the heads of an existing adapter: pass --from-adapter")
    check_output(args.out, overwrite=args.overwrite, directory=True)  # before hours of training
    if args.head == "verbalised" and len(args.targets) != 1:
        raise ConfigError(f"--head verbalised reads one target from the LM's tokens, got {args.targets}")
    if args.threads:
        torch.set_num_threads(args.threads)
    heads, keys = head_names(args.targets)
    args.targets = heads
    records = load_logs(args.log)
    train_records = select(records, ["train"], args.limit_train, args.seed)
    val_records = select(records, ["validation"], args.limit_val, args.seed)
    # Labels first: a wrong target name fails here, before the base model is loaded.
    train_examples = to_examples(train_records, keys)
    val_examples = to_examples(val_records, keys)
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
            head=args.head or "linear",
        )
        gk = IntroLM.build(load_base(args.base or DEFAULT_BASE, device=device, dtype=args.dtype), config)
    train = make_dataset(gk, *train_examples)
    # early stopping on within-task AUC (MMLU subject, EntityQuestions relation)
    validation = make_dataset(gk, *val_examples, groups=["/".join(task_path(r)) for r in val_records])
    print(f"train {len(train)} records, validation {len(validation)} records, targets {args.targets}")
    # The adapter and its history go to a temporary sibling that becomes --out once complete: an
    # interrupted run (SIGINT, a crash) leaves the previous --out as it was.
    with atomic_dir(args.out) if state.is_main_process else contextlib.nullcontext() as work:
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
            output_dir=work,
        )
        if work is None:
            return 0  # the main process saved the adapter and writes the history
        summary = {"best_epoch": result.best_epoch, "best_val_auc": result.best_val_auc}
        summary |= {"seconds": result.seconds, "device": str(device), "processes": state.num_processes}
        weak = chance_heads(result.history, result.best_epoch, args.targets)
        summary["warnings"] = weak
        history = json.dumps(summary | {"history": result.history}, indent=2)
        (work / "training_history.json").write_text(history + "\n")
        print(json.dumps(summary))
    for warning in weak:
        print(f"introroute train: WARNING: {warning}", file=sys.stderr)
    return 1 if weak and args.strict else 0


def chance_heads(history: Sequence[dict[str, Any]], best_epoch: int, targets: Sequence[str]) -> list[str]:
    """What is wrong with the trained heads at the kept epoch: AUC below :data:`CHANCE_AUC`, or none.

    Why loud: a head at chance still produces confident-looking probabilities, and a router
    built on it routes at random (a 40-record log gave AUC 0.19 without a word).
    """
    row = history[best_epoch - 1] if 0 < best_epoch <= len(history) else {}
    out = []
    for target in targets:
        auc = row.get(f"val_auc/{target}")
        if auc is None:
            out.append(f"{target!r} has no validation AUC (no validation labels of both classes)")
        elif auc < CHANCE_AUC:
            out.append(
                f"{target!r} validation AUC {auc:.3f} < {CHANCE_AUC} (0.5 is chance): the head does not rank "
                "answers; label more queries, or check the labels"
            )
    return out


def head_names(specs: Sequence[str]) -> tuple[list[str], list[str]]:
    """``HEAD[=OUTCOME]`` specs as (head names, outcome keys); duplicates are a ConfigError."""
    pairs = [spec.split("=", 1) if "=" in spec else [spec, spec] for spec in specs]
    heads, keys = [p[0] for p in pairs], [p[1] for p in pairs]
    if not all(heads + keys) or len(set(heads)) != len(heads):
        raise ConfigError(f"--targets: distinct non-empty HEAD[=OUTCOME] names, got {list(specs)}")
    return heads, keys


def _start_adapter(args: argparse.Namespace, device: Any) -> Any:
    """The adapter ``--from-adapter`` names, loaded trainable; ``--targets`` must be among its heads."""
    from introroute.gatekeeper import DEFAULT_BASE
    from introroute.gatekeeper.persistence import default_adapter_dir

    directory = args.from_adapter
    if directory == "default" and (directory := default_adapter_dir(args.base or DEFAULT_BASE)) is None:
        raise ConfigError(f"no adapter is shipped for base {args.base or DEFAULT_BASE!r}")
    gk = ModelSpec.from_args(args, adapter=str(directory), device=str(device)).load()
    if gk.config.head == "verbalised":
        if args.heads_only:
            raise ConfigError(f"adapter {directory} reads the LM's own tokens: it has no head to train alone")
        if unknown := [t for t in args.targets if t not in gk.targets]:
            raise ConfigError(f"adapter {directory} reads {gk.targets} from the LM's tokens, not {unknown}")
    if added := gk.add_targets(args.targets):  # the log has outcomes for them (to_examples checked)
        print(f"adapter {directory}: new head(s) {added} next to {gk.targets[: -len(added)]}")
    return gk


def _widen(labels: np.ndarray, targets: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """Labels for ``targets`` laid out in the adapter's head order; NaN (masked) for the other heads."""
    wide = np.full((labels.shape[0], len(columns)), np.nan, dtype=np.float32)
    for j, target in enumerate(targets):
        wide[:, list(columns).index(target)] = labels[:, j]
    return wide
