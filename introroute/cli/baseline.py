"""``introroute baseline fit``: fit a baseline on a routing log's train split and save it.

The validation split chooses the regularisation (``minilm_lr``, ``probe``) or the stopping epoch
(``minilm_ft``). The saved directory is what ``introroute eval --scorer NAME=DIR`` scores with.
Hyper-parameter options apply to the kinds whose constructor takes them; giving one to another
kind is an error rather than silently ignored.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

from introroute.data.paths import add_log_argument

# The kinds that learn from data (``random`` needs no fit); kept literal so --help imports no torch.
FIT_KINDS = ("minilm_ft", "minilm_lr", "probe", "prior")
HYPER_PARAMETERS = ("max_length", "batch_size", "epochs", "lr", "patience", "base", "max_context")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    fit = actions.add_parser("fit", help="fit a baseline on the train split and save it")
    fit.add_argument("--kind", choices=FIT_KINDS, required=True)
    add_log_argument(fit)
    fit.add_argument("--targets", nargs="+", required=True, help="target names as in the log")
    fit.add_argument("--out", type=Path, required=True, help="directory to save the baseline in")
    fit.add_argument("--limit-train", type=int, help="seeded random subset of the train split")
    fit.add_argument("--limit-val", type=int, help="seeded random subset of the validation split")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--threads", type=int, help="torch CPU threads")
    hyper = fit.add_argument_group("hyper-parameters (default: the kind's own)")
    hyper.add_argument("--max-length", type=int, help="minilm_*: tokens kept (the prompt's end)")
    hyper.add_argument("--batch-size", type=int, help="minilm_*, probe")
    hyper.add_argument("--epochs", type=int, help="minilm_ft")
    hyper.add_argument("--lr", type=float, help="minilm_ft")
    hyper.add_argument("--patience", type=int, help="minilm_ft: epochs without validation gain")
    hyper.add_argument("--base", help="probe: base model (default smollm2-135m-instruct)")
    hyper.add_argument("--max-context", type=int, help="probe: the gatekeeper's context (default 1024)")


def _options(cls: type, args: argparse.Namespace) -> dict[str, object]:
    """The given hyper-parameters (and the seed, where the kind takes one) as constructor kwargs."""
    from introroute.errors import ConfigError

    accepted = set(inspect.signature(cls).parameters)
    given = {name: getattr(args, name) for name in HYPER_PARAMETERS if getattr(args, name) is not None}
    wrong = sorted(name for name in given if name not in accepted)
    if wrong:
        flags = ", ".join("--" + name.replace("_", "-") for name in wrong)
        raise ConfigError(f"{flags} do(es) not apply to --kind {args.kind}")
    return given | ({"seed": args.seed} if "seed" in accepted else {})


def main(args: argparse.Namespace) -> int:
    import torch

    from introroute.data.records import load_logs, select, to_examples
    from introroute.evaluation.report import task_path
    from introroute.training.baselines import KINDS
    from introroute.training.baselines.base import column_aucs

    if args.threads:
        torch.set_num_threads(args.threads)
    cls = KINDS[args.kind]
    model = cls(list(args.targets), **_options(cls, args))
    records = load_logs(args.log)
    train = select(records, ["train"], args.limit_train, args.seed)
    validation = select(records, ["validation"], args.limit_val, args.seed)
    conversations, labels = to_examples(train, args.targets)
    val_conversations, val_labels = to_examples(validation, args.targets) if validation else (None, None)
    print(f"{args.kind}: train {len(train)} records, validation {len(validation)}, targets {args.targets}")
    started = time.perf_counter()
    model.fit(conversations, labels, val_conversations, val_labels, groups=[task_path(r) for r in train])
    summary: dict[str, object] = {"kind": args.kind, "train": len(train), "validation": len(validation)}
    summary["fit_seconds"] = round(time.perf_counter() - started, 1)
    model.save(args.out)
    if validation:
        probabilities = model.predict_proba(val_conversations, groups=[task_path(r) for r in validation])
        summary["val_auc"] = dict(zip(args.targets, column_aucs(val_labels, probabilities), strict=True))
    summary["history"] = model.history
    text = json.dumps(summary, indent=2)
    (args.out / "fit_summary.json").write_text(text + "\n")
    print(text)
    return 0
