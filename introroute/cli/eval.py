"""``introroute eval``: score the same records with the gatekeeper and baselines, then compare.

Each ``--scorer NAME=DIR`` is an IntroLM adapter directory (``introroute.json``) or a saved
baseline (``baseline.json``); ``--scorer random`` needs no directory; ``--scorer NAME=FILE.jsonl``
reuses the ``NAME`` column of a previous eval's ``predictions.jsonl`` (so scorers evaluated in
separate runs, e.g. in parallel, end up in one report; ``A.jsonl,B.jsonl`` joins several, e.g. the
runs of two logs for a report on the mixed log). Writes ``report.json``,
``report.md``, ``predictions.jsonl`` and ROC / reliability PNGs per target into ``--out``.

``--routing`` measures routing instead, from a previous run's ``predictions.jsonl``
(``--predictions``) joined with the log(s) and a router YAML's tiers (``--router``): APGR,
deferral-curve AUC, CPT, AIQ and savings at matched reliability per scorer (``--scorers``), plus
the N-tier policy comparison for 3+ tiers. Writes ``routing.json``, ``routing.md`` and one
deferral-curve PNG per tier pair (:mod:`introroute.routing_eval.report`); no model is loaded.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from introroute.cli.outputs import add_overwrite_argument, check_output
from introroute.data.paths import add_log_argument
from introroute.gatekeeper.spec import ModelSpec, add_model_arguments

if TYPE_CHECKING:
    import numpy as np

    from introroute.gatekeeper import IntroLM
    from introroute.scoring import Messages

SCORE_CHUNK = 64  # IntroLM prompts per progress step


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_log_argument(parser)
    parser.add_argument("--targets", nargs="+", help="target names as in the log (not with --routing)")
    parser.add_argument(
        "--splits", nargs="+", default=["test", "test_unseen"], help="splits to score and report"
    )
    parser.add_argument(
        "--scorer",
        action="append",
        metavar="NAME[=DIR]",
        help="a scorer to compare: NAME=adapter or baseline directory, NAME=predictions.jsonl of a previous "
        "eval, or 'random' (repeatable)",
    )
    routing = parser.add_argument_group("routing evaluation (--routing)")
    routing.add_argument("--routing", action="store_true", help="evaluate routing from --predictions instead")
    routing.add_argument("--predictions", type=Path, help="predictions.jsonl written by a previous eval")
    routing.add_argument(
        "--router", type=Path, help="router YAML: tiers (cheap -> expensive), prices, latency"
    )
    routing.add_argument("--scorers", nargs="+", help="scorer columns of --predictions (default: all)")
    routing.add_argument("--output-tokens", type=int, default=400, help="assumed answer length (paper: 400)")
    routing.add_argument(
        "--calibrated-scorer",
        metavar="NAME",
        help="apply the router's gatekeeper.calibration to this scorer's scores, as the router would",
    )
    routing.add_argument(
        "--delta", type=float, default=0.01, help="matched reliability: best quality - delta"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the report and plots")
    add_overwrite_argument(parser)
    parser.add_argument("--limit", type=int, help="seeded random subset of the selected records")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per CI")
    parser.add_argument("--batch-size", type=int, default=8, help="IntroLM scoring batch")
    parser.add_argument("--seed", type=int, default=0, help="seed of --limit and the bootstrap")
    # the IntroLM scorers' placement; their adapter (and its base) comes from each --scorer
    add_model_arguments(parser, adapter=False, base=False, max_context=False, prefix_cache=False)


def introlm_scores(
    gk: IntroLM, conversations: list[Messages], batch_size: int, desc: str = "introlm"
) -> np.ndarray:
    """``[N, gk.targets]`` probabilities, prompts scored shortest first so that batches pad little.

    Scored by the training fast path (the batch's shared template head prefilled once), which
    the training tests prove equal to the full adapter forward that serving runs.
    """
    import numpy as np
    from tqdm.auto import tqdm

    from introroute.training.gatekeeper import Dataset, predict

    order = sorted(range(len(conversations)), key=lambda i: sum(len(m["content"]) for m in conversations[i]))
    out = np.zeros((len(conversations), len(gk.targets)))
    for start in tqdm(range(0, len(order), SCORE_CHUNK), desc=desc):
        rows = order[start : start + SCORE_CHUNK]
        prompts = [gk.encode(conversations[i]) for i in rows]
        out[rows] = predict(gk, Dataset(prompts, np.zeros((len(rows), len(gk.targets)))), batch_size)
    return out


def _introlm_scores(
    spec: ModelSpec, conversations: list[Messages], batch_size: int
) -> tuple[list[str], np.ndarray]:
    """The probabilities of the adapter ``spec`` loads, for every target it predicts."""
    gk = spec.load()
    directory = Path(str(spec.adapter))
    return gk.targets, introlm_scores(gk, conversations, batch_size, f"introlm {directory.name}")


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


def reused_scores(name: str, paths: Sequence[Path], ids: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """``[N, targets]`` from the ``name`` column of previous evals' ``predictions.jsonl``; every
    record of this run must be there (same ids), so a stale file cannot be mixed in silently."""
    import json

    import numpy as np

    from introroute.errors import DataError

    by_id: dict[str, dict[str, float]] = {}
    for path in paths:
        with path.open() as handle:
            for number, line in enumerate(handle, 1):
                row = json.loads(line)
                scores = row.get("scores", {})
                if name not in scores:
                    raise DataError(f"{path}:{number}: no scorer {name!r} (has {sorted(scores)})")
                by_id[row["id"]] = scores[name]
    missing = [i for i in ids if i not in by_id]
    if missing:
        where = ",".join(str(p) for p in paths)
        raise DataError(f"{where}: {len(missing)} of {len(ids)} records have no scores, e.g. {missing[0]!r}")
    try:
        return np.array([[by_id[i][t] for t in targets] for i in ids], dtype=float)
    except KeyError as error:
        raise DataError(f"scorer {name!r} has no target {error.args[0]!r} in {paths[0]}") from None


def score(
    name: str,
    directory: Path | None,
    conversations: list[Messages],
    groups: list[tuple[str, ...]],
    ids: Sequence[str],
    args: argparse.Namespace,
) -> np.ndarray:
    """Probabilities ``[N, --targets]`` of one scorer."""
    from introroute.gatekeeper.persistence import META_FILE
    from introroute.training.baselines import load_baseline
    from introroute.training.baselines.prior import RandomScores

    if directory is None:
        return RandomScores(args.targets, args.seed).predict_proba(conversations)
    files = [Path(part) for part in str(directory).split(",")]
    if all(f.suffix == ".jsonl" and f.is_file() for f in files):
        return reused_scores(name, files, ids, args.targets)
    if (directory / META_FILE).is_file():
        spec = ModelSpec.from_args(args, adapter=str(directory))
        model_targets, probabilities = _introlm_scores(spec, conversations, args.batch_size)
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


def routing_main(args: argparse.Namespace) -> int:
    """``--routing``: replay every scorer's routing over the log and write the routing report."""
    from introroute.errors import ConfigError
    from introroute.fitting.config_edit import load_offline
    from introroute.routing_eval.replay import load_scored_log
    from introroute.routing_eval.report import evaluate_routing, markdown, write_routing

    if args.predictions is None or args.router is None:
        raise ConfigError("eval --routing needs --predictions (from a previous eval) and --router (a YAML)")
    config = load_offline(args.router)
    if len(config.tiers) < 2:
        raise ConfigError(
            f"{args.router}: routing needs at least two tiers, the router has {len(config.tiers)}"
        )
    tiers = [t.info() for t in config.tiers]
    log = load_scored_log(args.log, args.predictions, tiers, args.scorers, args.splits, args.output_tokens)
    for reason, count in log.dropped.items():
        print(f"dropped {count} record(s): {reason}")
    if args.calibrated_scorer:
        from introroute.router.calibration import ScoreCalibrator

        stored = (config.gatekeeper.calibration if config.gatekeeper else None) or {}
        if not stored:
            raise ConfigError(f"--calibrated-scorer: {args.router} has no gatekeeper.calibration")
        calibrators = {t: ScoreCalibrator.from_config(c) for t, c in stored.items()}
        log = log.calibrated(args.calibrated_scorer, calibrators)
    scorers = args.scorers or list(log.scores)
    cost_aware = dict(config.policy.params) if config.policy.type == "cost_aware" else {}
    result = evaluate_routing(log, scorers, args.bootstrap, args.seed, args.delta, cost_aware)
    result["router"] = str(args.router)
    result["predictions"] = str(args.predictions)
    result["logs"] = list(args.log)
    written = write_routing(args.out, log, result)
    print(markdown(result))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def main(args: argparse.Namespace) -> int:
    check_output(args.out, overwrite=args.overwrite, directory=True)  # before any scoring or replay
    if args.routing:
        return routing_main(args)

    import torch

    from introroute.errors import ConfigError, DataError

    if not args.targets or not args.scorer:
        raise ConfigError("eval needs --targets and at least one --scorer (or --routing with --predictions)")
    from introroute.data.records import load_logs, select, to_examples
    from introroute.evaluation.report import evaluate, markdown, task_path, write_outputs

    if args.threads:
        torch.set_num_threads(args.threads)
    records = select(load_logs(args.log), args.splits, args.limit, args.seed)
    if not records:
        raise DataError(f"no record of {args.log} is in the splits {args.splits}")
    scorers = parse_scorers(args.scorer)
    conversations, _ = to_examples(records, args.targets)
    groups = [task_path(r) for r in records]
    ids = [r.id for r in records]
    predictions, seconds = {}, {}
    for name, directory in scorers:
        started = time.perf_counter()
        predictions[name] = score(name, directory, conversations, groups, ids, args)
        seconds[name] = round(time.perf_counter() - started, 1)
        print(f"scored {len(records)} records with {name} in {seconds[name]} s")
    result = evaluate(records, args.targets, predictions, args.bootstrap, args.seed)
    result["scoring_seconds"] = seconds
    written = write_outputs(args.out, records, args.targets, predictions, result)
    print(markdown(result))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
