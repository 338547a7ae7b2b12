"""Online: routing policies turn gatekeeper scores into a tier choice (:mod:`introroute.policies.base`).

A policy is a pure function of the scores and the request context, which is why offline replay
(:mod:`introroute.routing_eval`) reproduces its decisions exactly. May import only
:mod:`introroute.errors` and :mod:`introroute.imports` (a ``module:Class`` policy type).
"""

from introroute.policies.base import KnobGrid, Policy, PolicyChoice, RequestContext, TierInfo
from introroute.policies.registry import available_policies, build_policy, policy_class

__all__ = [
    "KnobGrid",
    "Policy",
    "PolicyChoice",
    "RequestContext",
    "TierInfo",
    "available_policies",
    "build_policy",
    "policy_class",
]
