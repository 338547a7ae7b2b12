"""Online: the request path.

Config, gatekeeper scores -> calibration (:mod:`~introroute.router.calibration`) -> policy ->
dispatch through LiteLLM with retries and fallbacks, the local tier, the LiteLLM provider and
the routing log.

May import: :mod:`introroute.policies`, :mod:`introroute.gatekeeper` (lazily: torch loads on the
first request that needs it) and the shared contracts at the package root; nothing offline, so a
routing process loads no training, evaluation or fitting code, scikit-learn or matplotlib.
"""

from introroute.router.api import acompletion, completion
from introroute.router.config import RouterConfig, load_config
from introroute.router.decision import Decision, decision
from introroute.router.router import Router

__all__ = ["Decision", "Router", "RouterConfig", "acompletion", "completion", "decision", "load_config"]
