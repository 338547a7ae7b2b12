"""Routing policies: turn gatekeeper scores into a tier choice (see :mod:`introroute.policies.base`)."""

from introroute.policies.base import Policy, PolicyChoice, RequestContext, TierInfo
from introroute.policies.registry import available_policies, build_policy, policy_class

__all__ = [
    "Policy",
    "PolicyChoice",
    "RequestContext",
    "TierInfo",
    "available_policies",
    "build_policy",
    "policy_class",
]
