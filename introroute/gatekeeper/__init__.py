"""Online: the IntroLM gatekeeper, run on every routed request.

Load a base model, score prompts during prefill, generate from that prefill, save and load
adapters. Training it is offline (:mod:`introroute.training`).

May import: torch, transformers, PEFT and the shared contracts at the package root
(``errors``, ``messages``, ``scoring``); nothing offline.
"""

from introroute.gatekeeper.config import SELF_TARGET, IntroConfig
from introroute.gatekeeper.loading import DEFAULT_BASE, load_base
from introroute.gatekeeper.model import IntroLM, Prefill

__all__ = ["DEFAULT_BASE", "SELF_TARGET", "IntroConfig", "IntroLM", "Prefill", "load_base"]
