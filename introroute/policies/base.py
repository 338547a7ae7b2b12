"""The policy contract: scores + request context -> which tier answers.

Why a tiny interface: policies are where deployments differ (a fixed threshold, a cost model, a
spend budget), so users must be able to write one in a few lines and name it in YAML. A policy
sees only plain data (probabilities, tier prices, request size) and never touches the network,
the gatekeeper or LiteLLM, so it is trivial to unit-test and to replay over a routing log.

Offline, a policy also owns how it is replayed and tuned: :meth:`Policy.decide_many` decides a
whole scored log at once (the default loops over :meth:`Policy.decide`; built-ins vectorise it),
and :attr:`Policy.knob` names the one parameter ``introroute calibrate`` fits, over the values
:meth:`Policy.knob_grid` proposes. So a user's plugin policy is replayed and calibrated by the same
code as the built-ins, with no list of policy names anywhere else.

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

import numpy as np

from introroute.errors import PolicyError

KNOB_GRID_POINTS = 201  # knob values the default grid samples over ``Policy.knob_range``


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


@dataclass(frozen=True)
class KnobGrid:
    """Knob values to replay, each with the interval of values that route a log the same way.

    Every value in ``(low[i], high[i]]`` (``include_high``, e.g. a threshold ``p >= tau``) or
    ``(low[i], high[i])`` routes the log's queries exactly as ``values[i]`` does; a fitted knob
    can therefore be any number in that interval (a short one reads better in a YAML). A grid
    that only samples the knob has ``low == high == values``.
    """

    name: str
    values: np.ndarray
    low: np.ndarray
    high: np.ndarray
    include_high: bool = True

    def thinned(self, limit: int) -> KnobGrid:
        """At most ``limit`` values, evenly spaced in rank; their intervals then shrink to points."""
        if len(self.values) <= limit:
            return self
        keep = np.unique(np.linspace(0, len(self.values) - 1, limit).round().astype(int))
        values = self.values[keep]
        return KnobGrid(self.name, values, values.copy(), values.copy(), self.include_high)


class Policy(ABC):
    """Base class of every routing policy.

    Subclasses take their parameters as keyword arguments of ``__init__`` (validated there, stored
    as attributes of the same names) and implement :meth:`decide`. A policy that keeps state
    (e.g. a sliding window) must make :meth:`decide` thread-safe: one router serves many threads.
    To be calibrated, a policy declares :attr:`knob` (and :attr:`knob_range`, or overrides
    :meth:`knob_grid` with the exact values where its routing changes); overriding
    :meth:`decide_many` with a vectorised form only makes replay faster.
    """

    #: The name used in YAML ``policy.type`` and recorded in decisions.
    name: ClassVar[str] = "policy"
    #: The constructor parameter ``introroute calibrate`` fits and ``eval --routing`` sweeps; None: none.
    knob: ClassVar[str | None] = None
    #: Where the default :meth:`knob_grid` samples the knob.
    knob_range: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "decide" in cls.__dict__ and "decide_many" not in cls.__dict__:
            # A vectorised decide_many inherited from a parent would not follow this class's decide.
            cls.decide_many = Policy.decide_many  # type: ignore[method-assign]

    @abstractmethod
    def decide(self, scores: Mapping[str, float], context: RequestContext) -> PolicyChoice:
        """Pick one of ``context.tiers`` for a request with these per-target probabilities."""

    def decide_many(
        self, scores: np.ndarray, tiers: Sequence[TierInfo], prompt_tokens: np.ndarray
    ) -> np.ndarray:
        """The index of the tier :meth:`decide` picks for each row of ``scores`` (``[N, T]``).

        Column ``t`` is P(success) of ``tiers[t]``'s target, NaN where it was not scored (the
        target is then absent from the mapping :meth:`decide` sees); ``prompt_tokens`` (``[N]``)
        sizes each request. This default calls :meth:`decide` once per row, in order, so a stateful
        policy sees the rows as a stream; subclasses may override it with a vectorised form that
        gives the same choices.
        """
        tiers = tuple(tiers)
        index = {t.name: i for i, t in enumerate(tiers)}
        picked = np.empty(len(scores), dtype=int)
        for row in range(len(scores)):
            given = {t.target: float(p) for t, p in zip(tiers, scores[row], strict=True) if not np.isnan(p)}
            name = self.decide(given, RequestContext(tiers=tiers, prompt_tokens=int(prompt_tokens[row]))).tier
            if name not in index:
                raise PolicyError(f"policy {self.name!r} chose {name!r}, not one of the tiers {list(index)}")
            picked[row] = index[name]
        return picked

    def knob_grid(self, scores: np.ndarray, tiers: Sequence[TierInfo], prompt_tokens: np.ndarray) -> KnobGrid:
        """The values of :attr:`knob` worth replaying over these scores (``[N, T]``, as in
        :meth:`decide_many`). The default samples :attr:`knob_range` evenly; a policy that knows
        where its routing changes returns exactly those values and their intervals instead."""
        if self.knob is None:
            raise PolicyError(f"policy {self.name!r} declares no knob to fit or sweep")
        values = np.linspace(*self.knob_range, KNOB_GRID_POINTS)
        return KnobGrid(self.knob, values, values.copy(), values.copy())

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
