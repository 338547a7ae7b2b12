"""``introroute tau``: a threshold preset's tau from ``introroute eval`` predictions alone.

On predictions of the local model's target (``self``), the lowest P(self) threshold whose
kept-local queries keep the paper's reliability (1 - share of all queries kept local and answered
wrongly; escalated queries counted right) at or above ``--reliability``
(:func:`introroute.fitting.knob.preset_tau`). ``introroute calibrate`` fits any policy
knob but needs every tier's outcome, which a self-labelled log does not have for the remote tier.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", type=Path, help="predictions.jsonl from 'introroute eval'")
    parser.add_argument("--reliability", type=float, default=0.95, help="reliability to keep")
    parser.add_argument("--scorer", default="introlm", help="scorer column of the predictions")
    parser.add_argument("--target", default="self", help="the local model's target")
    parser.add_argument("--splits", nargs="+", help="only rows of these splits (default: all)")


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from introroute.errors import DataError
    from introroute.fitting.knob import preset_tau
    from introroute.routing_eval.replay import read_predictions

    rows = [
        row
        for row in read_predictions(args.predictions).rows
        if (not args.splits or row.get("split") in args.splits)
        and (row.get("labels") or {}).get(args.target) is not None
        and args.target in (row["scores"].get(args.scorer) or {})
    ]
    if not rows:
        raise DataError(f"{args.predictions}: no row with a {args.target!r} label and {args.scorer!r} score")
    p = np.array([row["scores"][args.scorer][args.target] for row in rows], dtype=float)
    y = np.array([float(row["labels"][args.target]) for row in rows])
    print(json.dumps(preset_tau(p, y, args.reliability)))
    return 0
