"""The options of ``introroute deferral`` (:mod:`introroute.routing_eval.deferral`), apart from it
so that ``introroute --help`` builds its parser without importing numpy and the metrics."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``introroute deferral``."""
    parser.add_argument(
        "--predictions", type=Path, required=True, help="predictions.jsonl from introroute eval"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for deferral.json/.md/.png")
    parser.add_argument("--target", default="self", help="the local model's target")
    parser.add_argument("--splits", nargs="+", help="only these splits (default: all rows)")
    parser.add_argument("--reliability", type=float, default=0.95, help="reliability the shares are read at")
    parser.add_argument("--versus", help="a scorer to compare the others with (e.g. minilm_ft)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per CI")
