"""Drop-in ``completion``/``acompletion`` and finding the router a call means.

Why a name registry: LiteLLM addresses a router only by its model string ``introroute/<name>``,
so routers built in code are registered under their name when constructed, and routers that
exist only as YAML (a LiteLLM Proxy deployment) are found through ``INTROROUTE_CONFIG`` or
``./introroute.yaml`` and loaded once.

Resolution for ``introroute.completion(...)``: ``router=`` (a Router or a YAML path), else a
``model="introroute/<name>"`` argument, else ``INTROROUTE_CONFIG``, else ``./introroute.yaml``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from introroute.errors import ConfigError
from introroute.router.router import Router

CONFIG_ENV = "INTROROUTE_CONFIG"
DEFAULT_CONFIG = "introroute.yaml"
MODEL_PREFIX = "introroute/"

_by_name = Router.registered  # filled by Router.__init__
_by_path: dict[Path, Router] = {}
_lock = threading.Lock()


def register(router: Router) -> None:
    """Make ``router`` addressable as ``introroute/<router.name>`` (the latest one wins)."""
    _by_name[router.name] = router


def _config_files() -> list[Path]:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return [Path(env)]
    default = Path(DEFAULT_CONFIG)
    return [default] if default.is_file() else []


def from_file(path: str | os.PathLike[str]) -> Router:
    """The router defined by a YAML file, built once per file."""
    key = Path(path).resolve()
    with _lock:
        if key not in _by_path:
            _by_path[key] = Router.from_yaml(key)
        return _by_path[key]


def by_name(name: str) -> Router:
    """The router LiteLLM means by ``introroute/<name>``."""
    if name in _by_name:
        return _by_name[name]
    for path in _config_files():
        router = from_file(path)
        if router.name == name:
            return router
    raise ConfigError(
        f"no router named {name!r}: built in this process: {sorted(_by_name)}; "
        f"point {CONFIG_ENV} at the YAML file that defines it"
    )


def resolve(router: Router | str | os.PathLike[str] | None, model: str | None = None) -> Router:
    """The router for one ``completion`` call (see the module docstring for the order)."""
    if isinstance(router, str | os.PathLike):
        return from_file(router)
    if router is not None:
        return router
    if isinstance(model, str) and model.startswith(MODEL_PREFIX):
        return by_name(model[len(MODEL_PREFIX) :])
    files = _config_files()
    if not files:
        raise ConfigError(
            f"no router configured: pass router= (a Router or YAML path), set {CONFIG_ENV}, "
            f"or create ./{DEFAULT_CONFIG}"
        )
    return from_file(files[0])


def completion(*, router: Router | str | os.PathLike[str] | None = None, **kwargs: Any) -> Any:
    """Drop-in for ``litellm.completion``: same arguments (plus ``router=``), same return types."""
    return resolve(router, kwargs.get("model")).completion(**kwargs)


async def acompletion(*, router: Router | str | os.PathLike[str] | None = None, **kwargs: Any) -> Any:
    """Drop-in for ``litellm.acompletion``."""
    return await resolve(router, kwargs.get("model")).acompletion(**kwargs)
