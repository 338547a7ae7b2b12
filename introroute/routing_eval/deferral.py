"""The paper's own routing setting: a local model answers, or defers to a large remote model.

IntroLM (arXiv 2601.03511) reports routing as *reliability* at a share of queries kept local:
reliability is ``1 - P(kept local and answered wrongly)``, the large model being the reference
(an escalated query counts as answered well). A scorer is better when it keeps more queries
local at the same reliability; the oracle keeps every query the local model gets right, plus
wrong ones up to the allowed failure rate, so its share is the yardstick for a local model that
is right far less often than the paper's.

Latency follows the paper's accounting for a gatekeeper that scores during the prefill: every
routed query pays the local prefill (the score comes from it); a kept query then decodes
locally from that prefill, an escalated one pays the large model's time to first token and its
decode on top. Always-large pays the large model alone. The defaults are the paper's latency
model (an 8B-like local model: 321.77 ms TTFT + 17.97 ms/token; a 32B-like remote one: 859.9 ms
+ 85.64 ms/token) for a short factual answer.

``introroute deferral --predictions P --out DIR`` reads a
``predictions.jsonl`` written by ``introroute eval`` and writes ``deferral.json``,
``deferral.md`` and ``deferral.png`` (every scorer's curve, random and oracle on one plot).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from introroute.errors import DataError
from introroute.evaluation.metrics import bootstrap
from introroute.evaluation.report import json_safe
from introroute.routing_eval.deferral_options import add_arguments
from introroute.routing_eval.metrics import (
    OperatingCurve,
    deferral_curve,
    first_crossing,
    oracle_curve,
    random_curve,
)
from introroute.routing_eval.replay import read_predictions

REFERENCES = ("random", "oracle")


@dataclass(frozen=True)
class LatencyModel:
    """Seconds per query: time to first token plus seconds per generated token, local and remote."""

    local_ttft_s: float = 0.32177
    local_per_token_s: float = 0.01797
    remote_ttft_s: float = 0.8599
    remote_per_token_s: float = 0.08564
    answer_tokens: int = 16

    @property
    def kept(self) -> float:
        """Scored during the local prefill, answered locally from it."""
        return self.local_ttft_s + self.answer_tokens * self.local_per_token_s

    @property
    def escalated(self) -> float:
        """The local prefill (the score), then the large model."""
        return self.local_ttft_s + self.always_large

    @property
    def always_large(self) -> float:
        return self.remote_ttft_s + self.answer_tokens * self.remote_per_token_s


def curve(
    scores: np.ndarray | None, local_correct: np.ndarray, latency: LatencyModel, kind: str = ""
) -> OperatingCurve:
    """Reliability (``quality``) against the escalated share, for a scorer or a reference."""
    n = len(local_correct)
    correct = np.c_[local_correct, np.ones(n)]
    seconds = np.tile([latency.kept, latency.escalated], (n, 1))
    if kind == "oracle":
        return oracle_curve(correct, latency=seconds)
    if kind == "random":
        return random_curve(correct, latency=seconds)
    assert scores is not None
    return deferral_curve(scores, correct, latency=seconds)


def kept_at(reliability_curve: OperatingCurve, reliability: float) -> tuple[float, float]:
    """``(share kept local, mean latency)`` at the smallest escalated share that reaches the
    reliability. With the large model counted right, escalating never lowers reliability, so
    the first crossing is the answer; inside a segment (a tie block, or mixing two operating
    points) share and latency are interpolated, as for CPT."""
    share = first_crossing(reliability_curve.share, reliability_curve.quality, reliability)
    seconds = float(np.interp(share, reliability_curve.share, reliability_curve.latency))
    return 1 - share, seconds


def evaluate(
    scores: Mapping[str, np.ndarray],
    local_correct: np.ndarray,
    reliability: float = 0.95,
    latency: LatencyModel | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per scorer (and random, oracle): share kept local, large-call and latency cut vs
    always-large at ``reliability``, each with a bootstrap 95% CI over queries."""
    latency = latency or LatencyModel()
    y = np.asarray(local_correct, dtype=float)
    if not len(y) or np.isnan(y).any():
        raise DataError("deferral needs a complete 0/1 local outcome for every query")
    base = latency.always_large
    methods: dict[str, Any] = {}
    for name in [*scores, *REFERENCES]:
        p = None if name in REFERENCES else np.asarray(scores[name], dtype=float)
        kind = name if name in REFERENCES else ""

        def stat(idx: np.ndarray, p: np.ndarray | None = p, kind: str = kind) -> np.ndarray:
            share, seconds = kept_at(curve(None if p is None else p[idx], y[idx], latency, kind), reliability)
            return np.array([share, 1 - seconds / base])

        value, lo, hi = bootstrap(stat, len(y), n_boot, seed)
        full = curve(p, y, latency, kind)
        methods[name] = {
            "kept_local": {"value": value[0], "lo": lo[0], "hi": hi[0]},
            "latency_cut": {"value": value[1], "lo": lo[1], "hi": hi[1]},
            "curve": {"kept_local": (1 - full.share).tolist(), "reliability": full.quality.tolist()},
        }
    oracle = methods["oracle"]["kept_local"]["value"]
    for row in methods.values():
        row["share_of_oracle"] = row["kept_local"]["value"] / oracle if oracle > 0 else math.nan
    return {
        "n": len(y),
        "local_accuracy": float(y.mean()),
        "reliability": reliability,
        "latency_model": asdict(latency) | {"always_large_s": base},
        "bootstrap_resamples": n_boot,
        "methods": methods,
    }


def markdown(result: Mapping[str, Any], versus: str | None = None) -> str:
    """The table: kept local (= fewer large calls), share of the oracle's, latency cut."""
    r = result["reliability"]
    lines = [
        f"{result['n']} queries, local model right on {result['local_accuracy']:.1%}; at reliability "
        f"{r:.2f} (1 - share kept local and wrong):",
        "",
        "| scorer | kept local (= fewer large calls) | of the oracle's | "
        + (f"vs {versus} | " if versus else "")
        + "latency cut vs always-large |",
        "|---|---:|---:|" + ("---:|" if versus else "") + "---:|",
    ]
    methods = result["methods"]
    for name, row in methods.items():
        kept, cut = row["kept_local"], row["latency_cut"]
        cells = [
            f"{kept['value']:.1%} [{kept['lo']:.1%}, {kept['hi']:.1%}]",
            f"{row['share_of_oracle']:.2f}",
        ]
        if versus:
            other = methods[versus]["kept_local"]["value"]
            cells.append(f"{kept['value'] / other:.2f}x" if other > 0 else "–")
        cells.append(f"{cut['value']:.1%} [{cut['lo']:.1%}, {cut['hi']:.1%}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: Mapping[str, Any], path: Path) -> Path:
    """Reliability against the share kept local, one line per scorer, on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, row in result["methods"].items():
        style = {"random": ":", "oracle": "--"}.get(name, "-")
        ax.plot(row["curve"]["kept_local"], row["curve"]["reliability"], style, label=name)
    ax.axhline(result["reliability"], color="grey", linewidth=0.8)
    ax.set_xlabel("share of queries kept local")
    ax.set_ylabel("reliability (1 - kept local and wrong)")
    ax.set_title("Deferral to a large model")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _scores_from(
    predictions_path: Path, target: str, splits: Sequence[str] | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rows = [
        row
        for row in read_predictions(predictions_path).rows
        if (not splits or row.get("split") in splits) and (row.get("labels") or {}).get(target) is not None
    ]
    if not rows:
        raise DataError(f"{predictions_path}: no row with a {target!r} label in splits {splits}")
    names = list(rows[0]["scores"])
    scores = {name: np.array([row["scores"][name][target] for row in rows]) for name in names}
    return scores, np.array([float(row["labels"][target]) for row in rows])


def run(args: argparse.Namespace) -> int:
    """``introroute deferral``: curves, table and plot of every scorer in ``--predictions``."""
    scores, correct = _scores_from(args.predictions, args.target, args.splits)
    result = evaluate(scores, correct, args.reliability, n_boot=args.bootstrap)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "deferral.json").write_text(json.dumps(json_safe(result), indent=2) + "\n")
    table = markdown(result, args.versus)
    (args.out / "deferral.md").write_text(table)
    plot(result, args.out / "deferral.png")
    print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Deprecated ``python -m introroute.routing_eval.deferral``: ``introroute deferral`` now."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    print(
        "python -m introroute.routing_eval.deferral is deprecated: use 'introroute deferral'", file=sys.stderr
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
