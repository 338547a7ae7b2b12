"""``introroute deferral``: the paper's keep-local-or-defer routing, from ``introroute eval``
predictions (see :mod:`introroute.routing_eval.deferral`)."""

from __future__ import annotations

import argparse

from introroute.routing_eval.deferral_options import add_arguments

__all__ = ["add_arguments", "main"]


def main(args: argparse.Namespace) -> int:
    from introroute.routing_eval.deferral import run

    return run(args)
