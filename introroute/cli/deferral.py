"""``introroute deferral``: the paper's keep-local-or-defer routing, from ``introroute eval``
predictions (see :mod:`introroute.routing_eval.deferral`)."""

from introroute.routing_eval.deferral import add_arguments
from introroute.routing_eval.deferral import run as main

__all__ = ["add_arguments", "main"]
