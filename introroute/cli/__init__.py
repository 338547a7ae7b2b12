"""``introroute`` command line, the user's entry point to both paths: one sub-command per module,
each with ``add_arguments`` and ``main``; it may import any package.

Sub-command modules import their heavy dependencies (torch, litellm) inside ``main`` so that
``introroute --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from introroute.errors import IntrorouteError

# What ``introroute --help`` tells a user: the router itself needs no command.
DESCRIPTION = (
    "Route LiteLLM calls with a local gatekeeper that predicts, during prefill, whether each model "
    "will answer a query well. Routing needs no command (introroute.completion(...), or "
    'model="introroute/<router>" in LiteLLM); these commands score a query and build, measure '
    "and fit the gatekeeper and router offline."
)
EPILOG = "Run 'introroute <command> --help' for a command's options."

# sub-command -> (module with add_arguments/main, one-line purpose), in the order of the workflow:
# try the gatekeeper, get labelled logs, train scorers, measure them, fit the router.
COMMANDS: dict[str, tuple[str, str]] = {
    "score": ("introroute.cli.score", "score a query with the gatekeeper; --answer also answers it"),
    "import-logs": ("introroute.data.import_command", "import public routing logs (RouteLLM, RouterBench)"),
    "label": ("introroute.data.label_command", "run a model over a benchmark or log, grade its answers"),
    "train": ("introroute.cli.train", "train the gatekeeper's heads on routing logs"),
    "baseline": ("introroute.cli.baseline", "fit a baseline scorer (MiniLM, probe, prior) to compare"),
    "eval": ("introroute.cli.eval", "measure scorers (AUC, ECE, plots); --routing: replay a router"),
    "calibrate": ("introroute.cli.calibrate", "fit a router's policy knob (and calibration) to a target"),
    "tau": ("introroute.cli.tau", "a threshold preset's tau from eval predictions (the paper's reliability)"),
    "deferral": (
        "introroute.cli.deferral",
        "keep-local-or-defer curves of eval predictions (the paper's routing)",
    ),
    "paired-auc": ("introroute.cli.paired_auc", "two scorers' AUC on the same records, paired bootstrap"),
    "export": (
        "introroute.cli.export",
        "export the gatekeeper for an engine (llama.cpp GGUF + aLoRA)",
    ),
    "serve": ("introroute.cli.serve", "serve the gatekeeper over HTTP (batched; /score, /health, /metrics)"),
}


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where the help already says it (a default
    computed later, such as an adapter's own layout) or there is nothing to show (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="introroute", description=DESCRIPTION, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="<command>")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=DefaultsFormatter
        )
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
