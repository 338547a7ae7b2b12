"""``introroute train``: fit the gatekeeper's heads on a routing log (train split; early stopping on
the validation split), and save the best epoch as an adapter directory.

``--device cuda --dtype bfloat16`` trains on a GPU; ``accelerate launch -m introroute.cli train ...``
runs the same command on several GPUs (one process each, gradients averaged), with
``--mixed-precision`` or accelerate's own ``--mixed_precision`` for autocast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from introroute.data.paths import add_log_argument
from introroute.devices import add_device_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_log_argument(parser)
    parser.add_argument("--targets", nargs="+", required=True, help="target names as in the log ('self'...)")
    parser.add_argument("--out", type=Path, required=True, help="adapter directory to write")
    parser.add_argument("--base", default="smollm2-135m-instruct", help="packaged name, .gguf or HF dir")
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
    # EntityQuestions side-by-side (README "Results: factual QA"), so it is the command's default.
    parser.add_argument(
        "--lora-r", type=int, default=32, help="LoRA rank (default 32); 0 = no LoRA ([INTRO] row + head)"
    )
    parser.add_argument("--lora-alpha", type=int, help="LoRA alpha (default: 2 x rank)")
    parser.add_argument(
        "--target-modules",
        nargs="+",
        help="projections to adapt (default: the paper's q_proj o_proj gate_proj up_proj down_proj; "
        "k/v stay frozen; 'q_proj v_proj' is cheaper per forward)",
    )
    parser.add_argument("--num-intro-tokens", type=int, default=1)
    parser.add_argument("--max-context", type=int, default=1024)
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
    from introroute.gatekeeper import IntroConfig, IntroLM, load_base
    from introroute.gatekeeper.config import PAPER_TARGET_MODULES
    from introroute.gatekeeper.loading import resolve_device
    from introroute.training.gatekeeper import TrainConfig, fit, make_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    records = load_logs(args.log)
    train_records = select(records, ["train"], args.limit_train, args.seed)
    val_records = select(records, ["validation"], args.limit_val, args.seed)
    # Labels first: a wrong target name fails here, before the base model is loaded.
    train_examples = to_examples(train_records, args.targets)
    val_examples = to_examples(val_records, args.targets)
    config = IntroConfig(
        targets=list(args.targets),
        num_intro_tokens=args.num_intro_tokens,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha or 2 * args.lora_r,
        target_modules=list(args.target_modules or PAPER_TARGET_MODULES),
        max_context=args.max_context,
        seed=args.seed,
    )
    device = resolve_device(args.device, args.dtype)  # no GPU here: fail before loading anything
    state = PartialState(cpu=device.type == "cpu")
    if device.type == "cuda" and device.index is None:
        device = state.device  # under `accelerate launch`: this process's own GPU
    gk = IntroLM.build(load_base(args.base, device=device, dtype=args.dtype), config)
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
