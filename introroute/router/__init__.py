"""The router: config, policies applied to gatekeeper scores, dispatch through LiteLLM."""

from introroute.router.api import acompletion, completion
from introroute.router.config import RouterConfig, load_config
from introroute.router.decision import Decision, decision
from introroute.router.router import Router

__all__ = ["Decision", "Router", "RouterConfig", "acompletion", "completion", "decision", "load_config"]
