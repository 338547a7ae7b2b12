"""``package.module:attribute`` paths: how a YAML or a flag names the user's own code.

One reader for every place that takes one (``policy.type``, ``gatekeeper.backend``,
``introroute serve --scorer``), so they accept the same spelling (dotted attributes included)
and fail the same way; each caller turns the :class:`ImportError` into its own typed error.
"""

from __future__ import annotations

import importlib
from typing import Any


def import_path(path: str) -> Any:
    """The object ``path`` names; :class:`ImportError` saying why when it names nothing."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ImportError(f"{path!r} must look like 'package.module:name'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except AttributeError as exc:
        raise ImportError(str(exc)) from None
    return target
