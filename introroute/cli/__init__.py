"""``introroute`` command line: one sub-command per module, each with ``add_arguments`` and ``main``.

Sub-command modules import their heavy dependencies (torch, litellm) inside ``main`` so that
``introroute --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from introroute.errors import IntrorouteError

# sub-command -> (module with add_arguments/main, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "score": ("introroute.cli.score", "score a query with the gatekeeper (and answer it locally)"),
    "train": ("introroute.cli.train", "train the gatekeeper's heads on a routing log"),
    "baseline": ("introroute.cli.baseline", "fit a baseline scorer (MiniLM, probe, prior) on a log"),
    "eval": ("introroute.cli.eval", "compare the gatekeeper with baselines: metrics, CIs and plots"),
    "calibrate": ("introroute.cli.calibrate", "fit a router's policy knob (and score calibration) on logs"),
    "label": ("introroute.data.label_command", "run a model over a benchmark and grade its answers"),
    "import-logs": ("introroute.data.import_command", "import public routing logs into routing-log JSONL"),
    "serve": ("introroute.cli.serve", "serve the gatekeeper over HTTP (batched; /score, /health, /metrics)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="introroute", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a sub-command; typed introroute errors become a one-line message and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except IntrorouteError as exc:
        print(f"introroute {args.command}: error: {exc}", file=sys.stderr)
        return 2
