"""The policy contract: scores + request context -> which tier answers.

Why a tiny interface: policies are where deployments differ (a fixed threshold, a cost model, a
spend budget), so users must be able to write one in a few lines and name it in YAML. A policy
sees only plain data (probabilities, tier prices, request size) and never touches the network,
the gatekeeper or LiteLLM, so it is trivial to unit-test and to replay over a routing log.

The style follows scikit-learn estimators: constructor keyword arguments are the parameters,
stored under the same attribute names, so :meth:`Policy.get_params` can report them in every
routing decision without each policy writing that code.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from introroute.errors import PolicyError


@dataclass(frozen=True)
class TierInfo:
    """What a policy may know about a tier: its place, its gatekeeper target, its price and speed.

    Prices are USD per million tokens (``None`` when neither the config nor ``litellm.model_cost``
    knows them); latency is the optional linear model TTFT + per-output-token time.
    """

    name: str
    target: str
    local: bool = False
    input_per_1m: float | None = None
    output_per_1m: float | None = None
    ttft_ms: float | None = None
    per_output_token_ms: float | None = None

    def cost_usd(self, prompt_tokens: int, output_tokens: int) -> float:
        """Expected USD cost of one request; raises :class:`PolicyError` when the price is unknown."""
        if self.input_per_1m is None or self.output_per_1m is None:
            raise PolicyError(
                f"tier {self.name!r} has no price: set its 'price' or use a model in litellm.model_cost"
            )
        return (prompt_tokens * self.input_per_1m + output_tokens * self.output_per_1m) / 1e6

    def latency_s(self, output_tokens: int) -> float:
        """Expected seconds to a full answer from the latency model; 0 when the tier has none."""
        ttft = self.ttft_ms or 0.0
        per_token = self.per_output_token_ms or 0.0
        return (ttft + per_token * output_tokens) / 1000.0


@dataclass(frozen=True)
class RequestContext:
    """The request as a policy sees it: the ordered tiers (cheap -> expensive) and its size."""

    tiers: tuple[TierInfo, ...]
    prompt_tokens: int = 0
    max_tokens: int | None = None
    has_tools: bool = False
    stream: bool = False

    def score(self, tier: TierInfo, scores: Mapping[str, float]) -> float:
        """P(success) of ``tier``; a :class:`PolicyError` names the target when it was not scored."""
        try:
            return float(scores[tier.target])
        except KeyError:
            raise PolicyError(
                f"the gatekeeper gave no score for target {tier.target!r} (tier {tier.name!r}); "
                f"scored targets: {sorted(scores)}"
            ) from None


@dataclass(frozen=True)
class PolicyChoice:
    """A policy's answer: the tier's name and the numbers that led to it (recorded in the decision)."""

    tier: str
    detail: dict[str, Any] = field(default_factory=dict)


class Policy(ABC):
    """Base class of every routing policy.

    Subclasses take their parameters as keyword arguments of ``__init__`` (validated there, stored
    as attributes of the same names) and implement :meth:`decide`. A policy that keeps state
    (e.g. a sliding window) must make :meth:`decide` thread-safe: one router serves many threads.
    """

    #: The name used in YAML ``policy.type`` and recorded in decisions.
    name: ClassVar[str] = "policy"

    @abstractmethod
    def decide(self, scores: Mapping[str, float], context: RequestContext) -> PolicyChoice:
        """Pick one of ``context.tiers`` for a request with these per-target probabilities."""

    def check_tiers(self, tiers: Sequence[TierInfo]) -> None:
        """Fail at startup, not on the first request, when the tiers lack what the policy needs.

        The default accepts any tiers; raise :class:`PolicyError` naming the tier otherwise.
        """
        return None

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters and their current values (scikit-learn style)."""
        names = [
            p.name
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def check_number(name: str, value: Any, low: float = 0.0, high: float = float("inf")) -> float:
    """Validate a numeric parameter against ``[low, high]``; YAML typos fail with the parameter's name."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise PolicyError(f"{name} must be a number between {low} and {high}, got {value!r}")
    return float(value)
