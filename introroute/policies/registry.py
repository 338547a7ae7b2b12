"""Find a policy class by name: built-ins, the ``introroute.policies`` entry-point group, ``module:Class``.

Why three sources: built-ins must work from a source checkout that was never pip-installed (no
entry points then); installed plugins register under the entry-point group so a YAML can say
``type: my_policy``; and a one-off policy in the user's own code is named ``my_pkg.mod:MyPolicy``
without packaging anything.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from introroute.errors import PolicyError
from introroute.imports import import_path
from introroute.policies.base import Policy

ENTRY_POINT_GROUP = "introroute.policies"

BUILTIN: dict[str, str] = {
    "threshold": "introroute.policies.threshold:ThresholdPolicy",
    "cost_aware": "introroute.policies.cost_aware:CostAwarePolicy",
    "budget": "introroute.policies.budget:BudgetPolicy",
}


def _import(path: str) -> Any:
    if ":" not in path:
        raise PolicyError(f"policy path {path!r} must look like 'package.module:ClassName'")
    try:
        return import_path(path)
    except ImportError as exc:
        raise PolicyError(f"cannot import policy {path!r}: {exc}") from exc


def available_policies() -> list[str]:
    """Names accepted as ``policy.type`` besides ``module:Class`` paths."""
    return sorted(set(BUILTIN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def policy_class(type_name: str) -> type[Policy]:
    """Resolve ``type_name`` to a :class:`Policy` subclass, or raise :class:`PolicyError` saying why."""
    if ":" in type_name:
        cls = _import(type_name)
    elif type_name in BUILTIN:
        cls = _import(BUILTIN[type_name])
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == type_name]
        if not found:
            raise PolicyError(
                f"unknown policy {type_name!r}; expected one of {available_policies()} or 'module:Class'"
            )
        try:
            cls = found[0].load()
        except Exception as exc:
            raise PolicyError(f"cannot load policy entry point {type_name!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise PolicyError(f"policy {type_name!r} is not a subclass of introroute.policies.Policy")
    return cls


def build_policy(type_name: str, params: dict[str, Any]) -> Policy:
    """Instantiate a policy from its YAML ``type`` and ``params``; bad params raise :class:`PolicyError`."""
    cls = policy_class(type_name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise PolicyError(f"policy {type_name!r} got invalid parameters: {exc}") from exc
