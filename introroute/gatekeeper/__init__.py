"""The IntroLM gatekeeper: load a base model, score prompts during prefill, train, save."""

from introroute.gatekeeper.config import SELF_TARGET, IntroConfig
from introroute.gatekeeper.loading import DEFAULT_BASE, load_base
from introroute.gatekeeper.model import IntroLM, Prefill

__all__ = ["DEFAULT_BASE", "SELF_TARGET", "IntroConfig", "IntroLM", "Prefill", "load_base"]
