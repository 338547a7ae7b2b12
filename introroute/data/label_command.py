"""``introroute label``: self-label benchmarks with the local base model or any LiteLLM model.

Prints and writes (``<out>.summary.json``) per-task accuracy, answer-letter vs gold-letter
distributions and a "labels carry signal?" verdict, so weak labels are seen before training.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from introroute.data.benchmarks import (
    DATASETS,
    BenchmarkItem,
    items_from_records,
    load_benchmark,
    load_entityquestions,
)
from introroute.data.jsonl import RecordAppender
from introroute.data.labelling import (
    HFAnswerer,
    LiteLLMAnswerer,
    label,
    llm_judge_grader,
    rule_grader,
    write_summary,
)
from introroute.data.paths import add_source_arguments
from introroute.data.schema import Split
from introroute.data.splits import unit_hash
from introroute.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``introroute label``."""
    parser.add_argument(
        "--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), help="benchmarks to label"
    )
    parser.add_argument(
        "--log",
        help="label the records of this routing log (vendored name or JSONL) instead of --datasets: "
        "the same messages the log's other targets answered; a log the router wrote is not answered "
        "again: --judge grades the answers it logged (and its audits' reference answers)",
    )
    parser.add_argument(
        "--splits", nargs="+", choices=get_args(Split), help="with --log: only records of these splits"
    )
    parser.add_argument("--out", type=Path, default=Path("labels/self.jsonl"), help="JSONL to append to")
    parser.add_argument(
        "--backend",
        choices=("hf", "litellm"),
        default="hf",
        help="hf: a local model; litellm: any LiteLLM model",
    )
    parser.add_argument(
        "--model",
        help="hf: packaged name, .gguf file or HF directory (default: the packaged SmolLM2); "
        "litellm: a LiteLLM model string (required)",
    )
    parser.add_argument("--target", help="outcome key (default: 'self' for hf, the model string for litellm)")
    parser.add_argument(
        "--limit", type=int, help="at most N items per dataset, a seeded sample a larger N extends"
    )
    parser.add_argument(
        "--relations",
        nargs="+",
        metavar="PID",
        help="entityquestions: only these relations (default: all); --limit then applies per relation",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="prompts generated together (hf)")
    parser.add_argument("--max-new-tokens", type=int, help="override the per-task default (16/8/320)")
    parser.add_argument("--seed", type=int, default=0, help="option-shuffle and --limit sampling seed")
    parser.add_argument("--no-shuffle", action="store_true", help="keep the original option order")
    add_source_arguments(parser)
    parser.add_argument("--judge", metavar="MODEL", help="grade with this LiteLLM model instead of rules")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _sample(items: list[BenchmarkItem], limit: int | None, seed: int) -> list[BenchmarkItem]:
    """The ``limit`` items with the lowest seeded hash: stable, so a rerun with more extends it."""
    if limit is None or limit >= len(items):
        return items
    return sorted(items, key=lambda item: unit_hash(seed, f"pick:{item.id}"))[:limit]


def _item_sets(args: argparse.Namespace, shuffle_seed: int | None) -> Iterator[list[BenchmarkItem]]:
    """One item list per dataset, from ``--log`` records (grouped by dataset) or the benchmarks."""
    if args.log:
        from introroute.data.records import load_log, select

        # select() as train/eval use it, so `--limit N` labels exactly their `--limit N` subset
        records = load_log(args.log)
        if args.splits:
            records = select(records, args.splits, args.limit, args.seed)
        by_dataset: dict[str, list[BenchmarkItem]] = {}
        for item in items_from_records(records):
            by_dataset.setdefault(item.dataset, []).append(item)
        yield from by_dataset.values()
        return
    for dataset in args.datasets:
        if dataset == "entityquestions":  # sampled per relation, so each relation gets --limit
            items = load_entityquestions(args.data_root, args.split_seed, args.relations)
            by_relation: dict[str | None, list[BenchmarkItem]] = {}
            for item in items:
                by_relation.setdefault(item.subject, []).append(item)
            yield from by_relation.values()
        else:
            yield load_benchmark(dataset, args.data_root, shuffle_seed, args.split_seed)


def label_router_log(args: argparse.Namespace) -> int:
    """``--log`` is a log the router wrote: grade its logged answers with ``--judge``."""
    from introroute.data.graders import judge_with_llm
    from introroute.data.jsonl import iter_records
    from introroute.data.traffic import label_answers, read_decisions

    if not args.judge:
        raise ConfigError(
            f"--log {args.log} is a router's log: grading its logged answers needs --judge MODEL"
        )

    def judge(question: str, answer: str, reference: str | None) -> Any:
        return judge_with_llm(question, answer, reference, args.judge)

    start = time.perf_counter()
    counts = label_answers(
        read_decisions(args.log), judge, args.out, judge_name=args.judge, progress=not args.no_progress
    )
    written = counts.pop("written")
    print(f"{written} new records in {time.perf_counter() - start:.0f} s -> {args.out}")
    for reason, count in counts.items():
        print(f"skipped {count}: {reason}")
    graded: dict[str, list[bool]] = {}
    for record in iter_records(args.out):
        for target, outcome in record.outcomes.items():
            if outcome.correct is not None:
                graded.setdefault(target, []).append(outcome.correct)
    for target, correct in graded.items():
        print(f"{target}: {len(correct)} answers, judged correct {sum(correct) / len(correct):.3f}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Label each dataset into ``--out`` (resuming), then print and write the summary."""
    RecordAppender(args.out).close()  # --out can be appended to: checked before the model loads
    from introroute.data.traffic import is_decision_log

    if args.log and is_decision_log(args.log):
        return label_router_log(args)
    if args.backend == "litellm":
        if not args.model:
            raise ConfigError("--backend litellm needs --model (a LiteLLM model string)")
        answerer, model_name = LiteLLMAnswerer(args.model), args.model
    else:
        from introroute.gatekeeper.loading import DEFAULT_BASE, load_base

        base = load_base(args.model or DEFAULT_BASE)
        answerer, model_name = HFAnswerer(base.model, base.tokenizer), base.name
    target = args.target or ("self" if args.backend == "hf" else args.model)
    grader = llm_judge_grader(args.judge) if args.judge else rule_grader
    shuffle_seed = None if args.no_shuffle else args.seed
    start = time.perf_counter()
    written = 0
    for items in _item_sets(args, shuffle_seed):
        written += label(
            items if args.log and args.splits else _sample(items, args.limit, args.seed),
            answerer,
            args.out,
            target=target,
            model_name=model_name,
            batch_size=args.batch_size,
            grader=grader,
            max_new_tokens=args.max_new_tokens,
            progress=not args.no_progress,
        )
    elapsed = time.perf_counter() - start
    summary = write_summary(
        args.out,
        target,
        {"model": model_name, "last_run": {"new_records": written, "seconds": round(elapsed, 1)}},
    )
    print(f"{written} new records in {elapsed:.0f} s -> {args.out}")
    for dataset, row in summary["tasks"].items():
        lo, hi = row["ci95"]
        print(
            f"{dataset:14s} n={row['n']:5d} acc {row['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] "
            f"chance {row['chance']:.3f} modal {row['modal_answer']} ({row['modal_answer_share']:.0%}) "
            f"baseline {row['constant_baseline']:.3f} -> {row['verdict']}"
        )
    return 0
