"""``introroute eval``: score the same records with the gatekeeper and baselines, then compare.

Each ``--scorer NAME=DIR`` is an IntroLM adapter directory (``introroute.json``) or a saved
baseline (``baseline.json``); ``--scorer random`` needs no directory. Writes ``report.json``,
``report.md``, ``predictions.jsonl`` and ROC / reliability PNGs per target into ``--out``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from introroute.scoring import Messages

SCORE_CHUNK = 64  # IntroLM prompts per progress step


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log", action="append", required=True, help="routing-log JSONL(.gz) path, or a vendored log's name"
    )
    parser.add_argument("--targets", nargs="+", required=True, help="target names as in the log")
    parser.add_argument("--splits", nargs="+", default=["test", "test_unseen"])
    parser.add_argument(
        "--scorer",
        action="append",
        required=True,
        metavar="NAME[=DIR]",
        help="a scorer to compare: NAME=adapter or baseline directory, or 'random' (repeatable)",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the report and plots")
    parser.add_argument("--limit", type=int, help="seeded random subset of the selected records")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per CI")
    parser.add_argument("--batch-size", type=int, default=8, help="IntroLM scoring batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def _introlm_scores(
    directory: Path, conversations: list[Messages], batch_size: int
) -> tuple[list[str], np.ndarray]:
    """The adapter's probabilities, prompts scored shortest first so that batches pad little."""
    import numpy as np
    from tqdm.auto import tqdm

    from introroute.gatekeeper import IntroLM

    gk = IntroLM.from_pretrained(str(directory))
    order = sorted(range(len(conversations)), key=lambda i: sum(len(m["content"]) for m in conversations[i]))
    out = np.zeros((len(conversations), len(gk.targets)))
    for start in tqdm(range(0, len(order), SCORE_CHUNK), desc=f"introlm {directory.name}"):
        rows = order[start : start + SCORE_CHUNK]
        out[rows] = gk.scores_batch([conversations[i] for i in rows], batch_size)
    return gk.targets, out


def parse_scorers(specs: Sequence[str]) -> list[tuple[str, Path | None]]:
    """``NAME=DIR`` (or ``random``) specs as ``(name, directory)``; names must be distinct."""
    from introroute.errors import AdapterError

    parsed = []
    for spec in specs:
        name, _, location = spec.partition("=")
        if not location and name != "random":
            raise AdapterError(f"--scorer {spec}: give a directory, {name}=DIR ('random' needs none)")
        parsed.append((name, Path(location) if location else None))
    names = [name for name, _ in parsed]
    if len(set(names)) != len(names):
        raise AdapterError(f"--scorer names must be distinct, got {names}")
    return parsed


def score(
    name: str,
    directory: Path | None,
    conversations: list[Messages],
    groups: list[tuple[str, ...]],
    args: argparse.Namespace,
) -> np.ndarray:
    """Probabilities ``[N, --targets]`` of one scorer."""
    from introroute.baselines import load_baseline
    from introroute.baselines.prior import RandomScores
    from introroute.gatekeeper.persistence import META_FILE

    if directory is None:
        return RandomScores(args.targets, args.seed).predict_proba(conversations)
    if (directory / META_FILE).is_file():
        model_targets, probabilities = _introlm_scores(directory, conversations, args.batch_size)
    else:
        model = load_baseline(directory)
        model_targets, probabilities = model.targets, model.predict_proba(conversations, groups=groups)
    return _columns(name, model_targets, probabilities, args.targets)


def _columns(
    name: str, model_targets: Sequence[str], probabilities: np.ndarray, targets: Sequence[str]
) -> np.ndarray:
    """The columns of ``targets``, in that order, from a scorer that may predict more targets."""
    from introroute.errors import UnknownTargetError

    missing = [t for t in targets if t not in model_targets]
    if missing:
        raise UnknownTargetError(f"scorer {name!r} predicts {list(model_targets)}, not {missing}")
    return probabilities[:, [list(model_targets).index(t) for t in targets]]


def main(args: argparse.Namespace) -> int:
    import torch

    from introroute.errors import DataError
    from introroute.evaluation import evaluate, markdown, task_path, write_outputs
    from introroute.gatekeeper.records import load_log, select, to_examples

    if args.threads:
        torch.set_num_threads(args.threads)
    records = select([r for spec in args.log for r in load_log(spec)], args.splits, args.limit, args.seed)
    if not records:
        raise DataError(f"no record of {args.log} is in the splits {args.splits}")
    scorers = parse_scorers(args.scorer)
    conversations, _ = to_examples(records, args.targets)
    groups = [task_path(r) for r in records]
    predictions, seconds = {}, {}
    for name, directory in scorers:
        started = time.perf_counter()
        predictions[name] = score(name, directory, conversations, groups, args)
        seconds[name] = round(time.perf_counter() - started, 1)
        print(f"scored {len(records)} records with {name} in {seconds[name]} s")
    result = evaluate(records, args.targets, predictions, args.bootstrap, args.seed)
    result["scoring_seconds"] = seconds
    written = write_outputs(args.out, records, args.targets, predictions, result)
    print(markdown(result))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
