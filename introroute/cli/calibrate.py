"""``introroute calibrate``: fit a router's policy knob (and optionally recalibrate its scores) on logs.

Input: routing log(s) with graded outcomes, a router YAML, and one target (``--reliability``,
``--max-expensive-share``, ``--max-cost-per-query`` or ``--pgr``). Scores come from
``--predictions`` (written by ``introroute eval``; ``--scorer`` picks the column) or, without it,
from the router's own configured gatekeeper, run here over the fit and report splits. The knob
(``tau`` of ``threshold``, ``lam`` of ``cost_aware``, the declared ``knob`` of a user's policy) is
fitted on ``--fit-split`` and the achieved metrics are reported with bootstrap 95% CIs on both splits
(:mod:`introroute.fitting.knob`). ``--recalibrate platt|isotonic`` first fits a score
calibration per tier target on the fit split (:mod:`introroute.fitting.calibration`) and stores it
under ``gatekeeper.calibration``; without it, a calibration already in the YAML is applied to the
scores, as the router will apply it. The YAML is written with the fitted value to ``--out``, or
shown as a unified diff (``--diff``), or rewritten with ``--in-place``; its comments are kept
(:mod:`introroute.fitting.config_edit`).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from introroute.cli.outputs import add_overwrite_argument, check_output, write_text_atomically
from introroute.data.paths import add_log_argument

if TYPE_CHECKING:
    import numpy as np

    from introroute.data.schema import RoutingRecord
    from introroute.router.config import RouterConfig
    from introroute.routing_eval.replay import ScoredLog

ON_THE_FLY = "gatekeeper"  # scorer name of scores computed here with the router's gatekeeper
AUTO = "auto"
LOGGED = "logged"  # scorer name of the scores a router logged (its own routing log as --log)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_log_argument(parser)
    parser.add_argument("--router", type=Path, required=True, help="router YAML whose policy is fitted")
    parser.add_argument("--predictions", type=Path, help="predictions.jsonl from 'introroute eval'")
    parser.add_argument(
        "--scorer", default="introlm", help="scorer column of --predictions (default introlm)"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--reliability", type=float, metavar="R", help="share answered correctly >= R")
    target.add_argument("--max-expensive-share", type=float, metavar="S", help="share on the last tier <= S")
    target.add_argument("--max-cost-per-query", type=float, metavar="USD", help="mean cost per query <= C")
    target.add_argument("--pgr", type=float, metavar="P", help="performance gap recovered >= P")
    parser.add_argument("--margin", type=float, default=0.0, help="fit to the target tightened by this much")
    parser.add_argument(
        "--confidence",
        type=float,
        metavar="C",
        help="with --reliability: fit so that the one-sided C lower confidence bound (exact binomial) "
        "meets the target, not only the point; both are reported",
    )
    parser.add_argument(
        "--fit-split",
        default=AUTO,
        help="split the knob is fitted on; auto: validation, else test ('introroute eval' without "
        "--splits predicts test and test_unseen only)",
    )
    parser.add_argument(
        "--report-split",
        default=AUTO,
        help="held-out split the fitted router is reported on; auto: test, else test_unseen",
    )
    parser.add_argument("--recalibrate", choices=["platt", "isotonic"], help="also fit score calibration")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="write the fitted router YAML here")
    out.add_argument("--diff", action="store_true", help="print a unified diff; write nothing")
    out.add_argument("--in-place", action="store_true", help="rewrite --router itself")
    parser.add_argument("--json", type=Path, help="write the fit report (metrics, CIs, warnings) as JSON")
    add_overwrite_argument(parser)
    parser.add_argument("--output-tokens", type=int, default=400, help="assumed answer length for costs")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per CI")
    parser.add_argument("--min-queries", type=int, default=200, help="warn below this many fit queries")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="gatekeeper scoring batch (no --predictions)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def _target(args: argparse.Namespace) -> Any:
    from introroute.fitting.knob import FitTarget

    for kind in ("reliability", "max_expensive_share", "max_cost_per_query", "pgr"):
        value = getattr(args, kind)
        if value is not None:
            return FitTarget(kind, value, args.margin)
    raise AssertionError("argparse requires one target")


def gatekeeper_scores(
    config: RouterConfig, records: Sequence[RoutingRecord], batch_size: int
) -> dict[str, dict[str, np.ndarray]]:
    """Score ``records`` with the router's configured gatekeeper: ``{ON_THE_FLY: {target: [N]}}``."""
    from introroute.cli.eval import introlm_scores
    from introroute.errors import ConfigError

    spec = config.gatekeeper
    if spec is None:
        raise ConfigError("the router has no 'gatekeeper' section to score with; pass --predictions")
    gk = spec.load_introlm()
    probabilities = introlm_scores(gk, [[m.model_dump() for m in r.messages] for r in records], batch_size)
    return {ON_THE_FLY: {t: probabilities[:, i] for i, t in enumerate(gk.targets)}}


def resolve_splits(fit: str, report: str, available: set[str]) -> tuple[str, str]:
    """``auto`` splits made concrete from the splits the data has (see ``--fit-split``)."""
    if fit == AUTO:
        fit = next((s for s in ("validation", "test") if s in available), "validation")
    if report == AUTO:
        report = next((s for s in ("test", "test_unseen") if s in available and s != fit), "test")
    return fit, report


def load_scored(config: RouterConfig, args: argparse.Namespace) -> tuple[ScoredLog, str, tuple[str, str]]:
    """The fit and report splits (``auto`` resolved), joined with scores from --predictions, the
    router's logged scores, or the gatekeeper."""
    from introroute.data.records import load_logs, select
    from introroute.data.traffic import NOT_CAPTURED
    from introroute.errors import ConfigError, DataError
    from introroute.routing_eval.replay import build_scored_log, join_predictions, read_predictions

    tiers = [t.info() for t in config.tiers]
    records = load_logs(args.log, need_messages=args.predictions is not None)
    predictions = read_predictions(args.predictions) if args.predictions is not None else None
    available = {row.get("split") for row in predictions.rows} if predictions else {r.split for r in records}
    splits = resolve_splits(args.fit_split, args.report_split, available)
    if splits[0] == splits[1]:
        raise ConfigError(
            f"--fit-split and --report-split are both {splits[0]!r}; report on held-out queries"
        )
    if predictions is not None:
        records, scores = join_predictions(records, predictions, [args.scorer], splits)
        return build_scored_log(records, tiers, scores, args.output_tokens), args.scorer, splits
    records = select(records, splits)
    if not records:
        raise DataError(f"no record of {args.log} is in the splits {list(splits)}")
    logged = logged_scores(records, [t.target for t in tiers])
    if logged is not None:
        try:
            scored = build_scored_log(records, tiers, {LOGGED: logged}, args.output_tokens)
        except DataError as exc:  # a router's log as written: its answers are not graded yet
            raise DataError(
                f"{exc}; grade the logged answers first: introroute label --log LOG --judge MODEL "
                "--out labels.jsonl (audits give both tiers' outcomes), then calibrate --log labels.jsonl"
            ) from None
        return scored, LOGGED, splits
    if not all(r.meta.get("prompt_captured", True) for r in records):
        raise DataError(f"{args.log}: scoring needs the prompts: {NOT_CAPTURED}")
    scores = gatekeeper_scores(config, records, args.batch_size)
    return build_scored_log(records, tiers, scores, args.output_tokens), ON_THE_FLY, splits


def logged_scores(records: Sequence[RoutingRecord], targets: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The scores a router logged for every tier target (before calibration), when every record
    has them: a router's own log is re-fitted on what its gatekeeper said, without re-scoring."""
    import numpy as np

    logged = [r.meta.get("scores") for r in records]
    if not all(isinstance(s, dict) and all(t in s for t in targets) for s in logged):
        return None
    return {t: np.array([float(s[t]) for s in logged]) for t in dict.fromkeys(targets)}


def _calibrated_targets(log: ScoredLog, scorer: str) -> list[tuple[int, str]]:
    """(column, target) of each distinct tier target the scorer scores on every query."""
    import numpy as np

    matrix, seen, out = log.scorer(scorer), set(), []
    for column, tier in enumerate(log.tiers):
        if tier.target not in seen and not np.isnan(matrix[:, column]).any():
            seen.add(tier.target)
            out.append((column, tier.target))
    return out


def recalibrate(
    fit: ScoredLog, report: ScoredLog, scorer: str, method: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit one calibrator per scored tier target on ``fit``; ECE before/after on ``report``."""
    from introroute.errors import DataError
    from introroute.fitting.calibration import ece_before_after, fit_calibrator

    calibrators, ece = {}, {}
    if not _calibrated_targets(fit, scorer):
        raise DataError(f"scorer {scorer!r} scores none of the tiers' targets: nothing to recalibrate")
    for column, target in _calibrated_targets(fit, scorer):
        calibrators[target] = fit_calibrator(fit.scorer(scorer)[:, column], fit.correct[:, column], method)
        ece[target] = ece_before_after(
            report.scorer(scorer)[:, column], report.correct[:, column], calibrators[target]
        )
    return calibrators, ece


def _print_report(report: Mapping[str, Any], stream: Any) -> None:
    knob, value = report["knob"], report["value"]
    print(f"fitted {report['policy']} {knob} = {value:g} for {report['target']}", file=stream)
    for split in ("fit", "report"):
        data = report[split]
        cells = []
        for name in ("quality", "share", "cost_per_query", "latency_s", "pgr"):
            cell = data[name]
            if cell["value"] is None:
                continue
            ci = f" [{cell['lo']:.4g}, {cell['hi']:.4g}]" if cell["lo"] is not None else ""
            if cell.get("bound") is not None:
                ci += f" (lower {cell['confidence']:g} bound {cell['bound']:.4g})"
            cells.append(f"{name} {cell['value']:.4g}{ci}")
        missed = "" if data["target_met"] else f" MISSED {report['target']}"
        print(
            f"  {split} split {data['split']} ({data['n']} queries): " + "; ".join(cells) + missed,
            file=stream,
        )
    split = report["report"]["split"]
    for target, ece in (report.get("recalibration") or {}).get("ece", {}).items():
        print(f"  ECE {target} on {split}: {ece['ece_before']:.4f} -> {ece['ece_after']:.4f}", file=stream)


def main(args: argparse.Namespace) -> int:
    from introroute.errors import ConfigError
    from introroute.evaluation.report import json_safe
    from introroute.fitting.config_edit import edit_router_yaml, load_offline, load_text
    from introroute.fitting.knob import ThresholdFitter
    from introroute.router.calibration import ScoreCalibrator

    config = load_offline(args.router)
    target = _target(args)
    if args.out is not None and args.out.resolve() == args.router.resolve():
        raise ConfigError(f"--out {args.out} is the input YAML; use --in-place to overwrite it")
    for flag, path in (
        ("--out", args.out),
        ("--json", args.json),
        ("--router", args.router if args.in_place else None),
    ):
        if path is not None:  # before the fit; --in-place means to replace --router
            check_output(path, overwrite=args.overwrite or flag == "--router", flag=flag)
    log, scorer, (fit_split, report_split) = load_scored(config, args)
    for reason, count in log.dropped.items():
        print(f"introroute calibrate: dropped {count} record(s): {reason}", file=sys.stderr)
    fit, report = log.split(fit_split), log.split(report_split)
    warnings: list[str] = []
    calibration_out: dict[str, Any] | None = None
    recalibration: dict[str, Any] | None = None
    if args.recalibrate:
        calibrators, ece = recalibrate(fit, report, scorer, args.recalibrate)
        calibration_out = {t: c.to_config() for t, c in calibrators.items()}
        recalibration = {"method": args.recalibrate, "ece": ece, "targets": sorted(calibrators)}
    else:
        existing = (config.gatekeeper.calibration if config.gatekeeper else None) or {}
        calibrators = {t: ScoreCalibrator.from_config(c) for t, c in existing.items()}
        if calibrators:
            warnings.append(
                f"applied the YAML's existing calibration of {sorted(calibrators)} before fitting"
            )
    fit, report = fit.calibrated(scorer, calibrators), report.calibrated(scorer, calibrators)

    fitter = ThresholdFitter(
        config.policy.type,
        config.policy.params,
        target,
        scorer,
        args.bootstrap,
        args.seed,
        args.min_queries,
        confidence=args.confidence,
    ).fit(fit)
    warnings += fitter.warnings_
    result = {
        "router": str(args.router),
        "policy": config.policy.type,
        "knob": fitter.knob_,
        "value": fitter.value_,
        "params": fitter.params_,
        "target": target.describe(),
        "scorer": scorer,
        "dropped": dict(log.dropped),
        "fit": {"split": fit_split, **fitter.fit_report_},
        "report": {"split": report_split, **fitter.evaluate(report)},
        "recalibration": recalibration,
        "warnings": warnings,
    }
    held_out = result["report"]
    cell = held_out[target.metric]
    if not held_out["target_met"]:
        warnings.append(
            f"MISSED: on the report split {report_split!r} {target.metric} is {cell['value']:.4g}, short of "
            f"the target {target.describe()}: new traffic like it will miss it too"
        )
    elif not held_out.get("bound_met", True):
        warnings.append(
            f"on the report split {report_split!r} the lower {cell['confidence']:g} bound of {target.metric} "
            f"is {cell['bound']:.4g}, below the target: its {held_out['n']} queries cannot confirm it"
        )
    original = args.router.read_text(encoding="utf-8")
    text, note = edit_router_yaml(original, {fitter.knob_: fitter.value_}, calibration_out)
    if note:
        result["warnings"].append(note)
    load_text(text, f"the fitted YAML for {args.router}")  # what is written must load
    result["yaml_note"] = note
    if args.json:
        write_text_atomically(args.json, json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n")
    summary_stream = sys.stderr if args.diff else sys.stdout
    _print_report(json_safe(result), summary_stream)
    for warning in warnings:
        print(f"introroute calibrate: warning: {warning}", file=sys.stderr)
    if args.diff:
        sys.stdout.writelines(
            difflib.unified_diff(
                original.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=str(args.router),
                tofile=f"{args.router} (fitted)",
            )
        )
        return 0
    destination = args.router if args.in_place else args.out
    write_text_atomically(destination, text)
    print(f"wrote {destination}", file=summary_stream)
    return 0
