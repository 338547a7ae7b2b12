"""introroute: decide before a word is generated whether a cheap local model will answer well.

``introroute.completion(...)`` is a drop-in for ``litellm.completion``; importing this package
also registers the ``introroute/<router>`` LiteLLM provider. :class:`IntroLM` (the gatekeeper)
is imported lazily: it pulls in torch, which most routing processes load only on first use.

Layout: the online packages run on every request (:mod:`introroute.router` ->
:mod:`introroute.gatekeeper` -> :mod:`introroute.policies`, over the shared contracts ``errors``,
``messages`` and ``scoring`` here); the offline ones build and measure what the router uses
(:mod:`introroute.data`, :mod:`introroute.training`, :mod:`introroute.evaluation`,
:mod:`introroute.routing_eval`, :mod:`introroute.fitting`) and may import the online ones,
never the reverse. Each package's docstring says what it may import; ``tests/test_layout.py``
enforces it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# LiteLLM downloads its price table on import unless told to use the copy it ships; introroute
# must work offline (set LITELLM_LOCAL_MODEL_COST_MAP=False before importing to get live prices).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from introroute.decision_log import DecisionRecord
from introroute.errors import (
    ConfigError,
    GatekeeperError,
    IntrorouteError,
    MessagesError,
    OutputError,
    PolicyError,
    RoutingError,
)
from introroute.policies import Policy, PolicyChoice, RequestContext, TierInfo
from introroute.router import Decision, Router, RouterConfig, acompletion, completion, decision, load_config
from introroute.router.provider import register_provider

if TYPE_CHECKING:
    from introroute.gatekeeper import IntroLM

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Decision",
    "DecisionRecord",
    "GatekeeperError",
    "IntroLM",
    "IntrorouteError",
    "MessagesError",
    "OutputError",
    "Policy",
    "PolicyChoice",
    "PolicyError",
    "RequestContext",
    "Router",
    "RouterConfig",
    "RoutingError",
    "TierInfo",
    "acompletion",
    "completion",
    "decision",
    "load_config",
]

register_provider()


def __getattr__(name: str) -> Any:
    if name == "IntroLM":
        from introroute.gatekeeper import IntroLM

        return IntroLM
    raise AttributeError(f"module 'introroute' has no attribute {name!r}")
