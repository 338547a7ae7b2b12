"""``introroute paired-auc``: two scorers' ROC-AUC on the same records, with a paired bootstrap
(:mod:`introroute.evaluation.paired`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="PREDICTIONS.jsonl:SCORER")
    parser.add_argument("b", help="PREDICTIONS.jsonl:SCORER")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--splits", nargs="+", help="only the records of these splits (default: all shared)")
    parser.add_argument("--out", type=Path, help="also write the report (JSON) here")


def main(args: argparse.Namespace) -> int:
    from introroute.evaluation.paired import compare

    try:
        report = compare(args.a, args.b, args.resamples, args.seed, args.splits)
    except ValueError as exc:
        print(f"introroute paired-auc: {exc}")
        return 2
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0
