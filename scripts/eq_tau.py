"""The threshold preset's tau (docs/results-factual-qa.md): on validation predictions of an
``introroute eval``, the lowest P(self) threshold whose kept-local queries keep the paper's
reliability (1 - share of all queries kept local and answered wrongly; the large tier counted
right) at or above the target. ``introroute calibrate`` needs an outcome for every tier's target,
which the factual-QA log does not have for the remote tier.

    python scripts/eq_tau.py runs/eq/ev_val/predictions.jsonl --reliability 0.95
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions")
    parser.add_argument("--reliability", type=float, default=0.95)
    parser.add_argument("--scorer", default="introlm")
    args = parser.parse_args()
    with open(args.predictions) as handle:
        rows = [json.loads(line) for line in handle]
    p = np.array([r["scores"][args.scorer]["self"] for r in rows])
    y = np.array([r["labels"]["self"] for r in rows])
    order = np.argsort(-p, kind="stable")
    wrong_kept = np.cumsum(1 - y[order])  # kept local = the k highest scores
    ok = np.nonzero(1 - wrong_kept / len(y) >= args.reliability)[0]
    k = int(ok[-1]) + 1 if len(ok) else 0
    tau = float(p[order][k - 1]) if k else 1.0
    preset = float(np.ceil(tau * 1000) / 1000)  # rounded up: never keeps more than the fit allows
    kept = float(np.mean(p >= preset))
    print(
        json.dumps(
            {
                "n": len(y),
                "tau": preset,
                "kept_local": kept,
                "reliability": 1 - float(np.sum((p >= preset) * (1 - y))) / len(y),
            }
        )
    )


if __name__ == "__main__":
    main()
