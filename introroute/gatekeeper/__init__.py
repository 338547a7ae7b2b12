"""Online: the IntroLM gatekeeper, run on every routed request.

Load a base model, score prompts during prefill, generate from that prefill, save and load
adapters. Training it is offline (:mod:`introroute.training`).

May import: torch, transformers, PEFT and the shared contracts at the package root
(``errors``, ``messages``, ``scoring``); nothing offline, except inside the deprecated
``IntroLM`` methods that moved to :mod:`introroute.training.forward`.

The names below are imported on first use (PEP 562), so the torch-free parts
(:mod:`~introroute.gatekeeper.spec`, the CLI's flags, the router's config) do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from introroute.gatekeeper.config import SELF_TARGET, IntroConfig
    from introroute.gatekeeper.loading import DEFAULT_BASE, load_base
    from introroute.gatekeeper.model import IntroLM
    from introroute.gatekeeper.scorer import Prefill
    from introroute.gatekeeper.spec import ModelSpec, add_model_arguments

_EXPORTS = {
    "DEFAULT_BASE": "loading",
    "SELF_TARGET": "config",
    "IntroConfig": "config",
    "IntroLM": "model",
    "ModelSpec": "spec",
    "Prefill": "scorer",
    "add_model_arguments": "spec",
    "load_base": "loading",
}
__all__ = [
    "DEFAULT_BASE",
    "SELF_TARGET",
    "IntroConfig",
    "IntroLM",
    "ModelSpec",
    "Prefill",
    "add_model_arguments",
    "load_base",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
