"""The Router: messages -> gatekeeper scores -> calibration -> policy decision -> LiteLLM call -> record.

Why this shape: every step is a separate, replaceable object (gatekeeper, policy, dispatch, log)
and data only flows forward, so a failure in one step has one well-defined consequence: a
gatekeeper or policy failure sends the request to the fail-safe tier, a provider failure to
retries and fallbacks, and only when every tier failed does the caller see an error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from introroute.calibration import ScoreCalibrator
from introroute.errors import ConfigError, MessagesError, PolicyError, RoutingError
from introroute.messages import normalize_messages
from introroute.policies import Policy, PolicyChoice, RequestContext, build_policy
from introroute.router import api, local_tier
from introroute.router.config import RouterConfig, TierConfig, load_config
from introroute.router.decision import Decision, attach
from introroute.router.dispatch import Attempts
from introroute.router.gatekeeping import Gatekeeping, Scoring
from introroute.router.routing_log import RoutingLog
from introroute.router.secrets import Redactor
from introroute.scoring import LocalModel, Scorer

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    """A ``completion`` call split into what routing reads and what passes through untouched."""

    messages: list[Any]
    stream: bool
    kwargs: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def parse(cls, kwargs: Mapping[str, Any]) -> _Request:
        rest = dict(kwargs)
        rest.pop("model", None)  # the router picks the model
        if "messages" not in rest:
            raise MessagesError("completion() needs messages=[...]")
        return cls(messages=rest.pop("messages"), stream=bool(rest.pop("stream", False)), kwargs=rest)

    @property
    def tools(self) -> list[Any]:
        return list(self.kwargs.get("tools") or self.kwargs.get("functions") or [])

    @property
    def max_tokens(self) -> int | None:
        return self.kwargs.get("max_completion_tokens") or self.kwargs.get("max_tokens")


@dataclass
class _Plan:
    """The tier order for one request and the decision so far (dispatch fills in the rest)."""

    order: list[TierConfig]
    scoring: Scoring
    choice: PolicyChoice | None
    failure: str | None
    overrides: list[str] = field(default_factory=list)


def estimate_tokens(messages: Any) -> int:
    """~4 characters per token: only for cost estimates when the gatekeeper did not count."""
    try:
        normalized = normalize_messages(messages).messages
    except MessagesError:
        return 0
    return sum(len(m["content"]) for m in normalized) // 4 + 4 * len(normalized)


class Router:
    """Routes each request to one of the configured tiers; a drop-in for ``litellm.completion``.

    Build one with :meth:`from_yaml` (or from a :class:`RouterConfig`); pass ``gatekeeper=`` to
    use an already-built scorer (tests, benchmarks) instead of loading the configured IntroLM.
    A router is addressable as LiteLLM model ``introroute/<name>`` once built.
    """

    def __init__(
        self, config: RouterConfig, *, gatekeeper: Scorer | None = None, policy: Policy | None = None
    ) -> None:
        self.config = config
        self.name = config.name
        self.policy = policy or build_policy(config.policy.type, dict(config.policy.params))
        self._tiers = tuple(t.info() for t in config.tiers)
        self.policy.check_tiers(self._tiers)
        self._redactor = Redactor(config.secrets())
        self._log = RoutingLog(config.routing_log) if config.routing_log else None
        local = next((t for t in config.tiers if t.local), None)
        self._local_name = local.name if local else None
        self._gatekeeping = self._make_gatekeeping(gatekeeper)
        calibration = (config.gatekeeper.calibration if config.gatekeeper else None) or {}
        self._calibrators = {t: ScoreCalibrator.from_config(c) for t, c in calibration.items()}
        self.local = local_tier.LocalTier(self._local_model, label=f"introroute/{self.name}/local")
        api.register(self)

    def _make_gatekeeping(self, gatekeeper: Scorer | None) -> Gatekeeping | None:
        spec = self.config.gatekeeper
        factory: Callable[[], Scorer] | None = (lambda: gatekeeper) if gatekeeper is not None else None
        if factory is None and spec is not None:
            factory = self._load_gatekeeper
        if factory is None:
            if len(self.config.tiers) > 1 or self._local_name:
                raise ConfigError(
                    f"router {self.name!r}: gatekeeper: required to choose between tiers or to serve "
                    "a local tier; add a 'gatekeeper' section or pass gatekeeper="
                )
            return None
        if self._local_name and gatekeeper is not None and not isinstance(gatekeeper, LocalModel):
            raise ConfigError(
                f"router {self.name!r}: tiers: {self._local_name!r} has no litellm_params, but the "
                "gatekeeper cannot generate (no prefill/generate_from) to serve it"
            )
        timeout_ms = spec.timeout_ms if spec else None
        return Gatekeeping(
            factory,
            keep_prefill=self._local_name is not None,
            timeout_s=timeout_ms / 1000.0 if timeout_ms else None,
        )

    def _load_gatekeeper(self) -> Scorer:
        from introroute.gatekeeper import IntroLM  # torch: imported only when a request needs it

        spec = self.config.gatekeeper
        assert spec is not None
        return IntroLM.from_pretrained(
            spec.adapter,
            base=spec.base,
            max_context=spec.max_context,
            threads=spec.threads,
            device=spec.device,
            dtype=spec.dtype,
        )

    def _local_model(self) -> LocalModel:
        model = self._gatekeeping.local_model() if self._gatekeeping else None
        if model is None:
            raise RoutingError(f"router {self.name!r} has no gatekeeper that can generate the local tier")
        return model

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], *, gatekeeper: Scorer | None = None) -> Router:
        """Load, validate and build a router from a YAML file (see :mod:`introroute.router.config`)."""
        return cls(load_config(path), gatekeeper=gatekeeper)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, gatekeeper: Scorer | None = None) -> Router:
        """Like :meth:`from_yaml` for a config already parsed (embedded defaults, tests)."""
        return cls(load_config(data), gatekeeper=gatekeeper)

    # -- routing -------------------------------------------------------------------------------

    def _score(self, request: _Request) -> Scoring:
        return self._gatekeeping.score(request.messages) if self._gatekeeping else Scoring()

    async def _ascore(self, request: _Request) -> Scoring:
        return await self._gatekeeping.ascore(request.messages) if self._gatekeeping else Scoring()

    def _calibrate(self, scoring: Scoring) -> Scoring:
        """The scores the policy sees: calibrated per configured target, the raw ones kept.

        Runs only on scores that passed the gatekeeping range check; a calibrator maps any
        probability to one in [0, 1] without raising, so calibration adds no failure mode.
        """
        if scoring.failure is not None or not self._calibrators:
            return scoring
        calibrated = {
            target: float(self._calibrators[target].predict(p)) if target in self._calibrators else p
            for target, p in scoring.scores.items()
        }
        return dataclasses.replace(scoring, scores=calibrated, raw_scores=scoring.scores)

    def _plan(self, request: _Request, scoring: Scoring) -> _Plan:
        scoring = self._calibrate(scoring)
        context = RequestContext(
            tiers=self._tiers,
            prompt_tokens=scoring.prompt_tokens or estimate_tokens(request.messages),
            max_tokens=request.max_tokens,
            has_tools=bool(request.tools),
            stream=request.stream,
        )
        failure, choice = scoring.failure, None
        if failure is None:
            try:
                choice = self.policy.decide(scoring.scores, context)
                if choice.tier not in {t.name for t in self._tiers}:
                    raise PolicyError(f"chose unknown tier {choice.tier!r}")
            except Exception as exc:  # a policy bug must not take the service down
                failure, choice = f"policy error: {type(exc).__name__}: {exc}", None
        if failure is not None:
            logger.warning(
                "introroute %s: %s; using fail-safe tier", self.name, self._redactor.redact(failure)
            )
        tier = choice.tier if choice else self.config.fail_safe_tier
        names, overrides = self._order(tier, bool(request.tools))
        order = [self.config.tier(n) for n in names]
        return _Plan(order=order, scoring=scoring, choice=choice, failure=failure, overrides=overrides)

    def _order(self, tier: str, has_tools: bool) -> tuple[list[str], list[str]]:
        """``tier`` then its fallbacks; the local tier cannot call tools, so it is skipped then."""
        order = list(dict.fromkeys([tier, *self.config.fallbacks.get(tier, [])]))
        local = self._local_name
        if not (has_tools and local in order):
            return order, []
        remote = [n for n in order if n != local]
        if not remote and self.config.fail_safe_tier != local:
            remote = [self.config.fail_safe_tier]
        if not remote:  # a local-only router answers without calling tools
            return order, []
        return remote, [f"tier {local!r} cannot call tools: skipped"]

    def route(self, messages: Any, **kwargs: Any) -> Decision:
        """Score and decide without calling any model (dry run; stateful policies do count it)."""
        request = _Request.parse({**kwargs, "messages": messages})
        return self._decision(self._plan(request, self._score(request)), None)

    def _decision(self, plan: _Plan, attempts: Attempts | None) -> Decision:
        tier = attempts.tier if attempts else plan.order[0]
        return Decision(
            router=self.name,
            tier=tier.name,
            model=self.local.label if tier.local else tier.litellm_params.model,  # type: ignore[union-attr]
            scores=plan.scoring.scores,
            raw_scores=plan.scoring.raw_scores,
            policy=self.policy.name,
            policy_params=self.policy.get_params(),
            policy_tier=plan.choice.tier if plan.choice else None,
            policy_detail=plan.choice.detail if plan.choice else {},
            gatekeeper_ms=plan.scoring.gatekeeper_ms,
            truncated=plan.scoring.truncated,
            fail_safe_reason=plan.failure,
            overrides=plan.overrides,
            attempts=attempts.attempts if attempts else 0,
            fallbacks_used=attempts.fallbacks_used if attempts else [],
            errors=attempts.errors if attempts else [],
        )

    # -- dispatch ------------------------------------------------------------------------------

    def _kwargs_for(self, request: _Request, lent: dict[str, str]) -> Callable[[TierConfig], dict[str, Any]]:
        def kwargs(tier: TierConfig) -> dict[str, Any]:
            out = {**request.kwargs, "messages": request.messages, "stream": request.stream}
            if tier.litellm_params is None:
                out["model"] = self.local.label
                out["metadata"] = {**(request.kwargs.get("metadata") or {}), **lent}
            else:
                tier_kwargs = tier.litellm_params.call_kwargs()
                out.update(tier_kwargs)
                out["max_retries"] = tier_kwargs.get("max_retries", 0)  # retries are ours, not the SDK's
            if request.tools and not any(
                isinstance(t, dict) and t.get("type") == "mcp" for t in request.tools
            ):
                # LiteLLM 1.106 imports its MCP gateway (needs the `mcp` package) for any `tools`;
                # plain function tools never use it.
                out["_skip_mcp_handler"] = True
            return out

        return kwargs

    @contextmanager
    def _dispatching(self, plan: _Plan, request: _Request) -> Iterator[_Run]:
        with local_tier.lend(plan.scoring.prefill) as lent:
            attempts = Attempts(
                plan.order, self.config.retries, self._kwargs_for(request, lent), self._redactor
            )
            run = _Run(plan, attempts, request)
            try:
                yield run
            except RoutingError as exc:
                self._finish(run, None, error=str(exc))
                raise

    def _finish(self, run: _Run, response: Any, error: str | None = None) -> Any:
        """Attach the (redacted) decision to the response and write the routing-log record."""
        decision = self._redactor.redact(self._decision(run.plan, run.attempts).model_dump(mode="json"))
        if response is not None:
            attach(response, decision)
        if self._log is not None:
            usage = None if run.request.stream else getattr(response, "usage", None)
            self._log.write(
                decision,
                stream=run.request.stream,
                latency_ms=(time.perf_counter() - run.request.started) * 1000.0,
                usage={"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
                if usage
                else None,
                error=error,
            )
        return response

    def completion(self, **kwargs: Any) -> Any:
        """Route and answer; takes and returns what ``litellm.completion`` does."""
        request = _Request.parse(kwargs)
        plan = self._plan(request, self._score(request))
        with self._dispatching(plan, request) as run:
            return self._finish(run, run.attempts.call())

    async def acompletion(self, **kwargs: Any) -> Any:
        """Async :meth:`completion`; scoring and local generation run off the event loop."""
        request = _Request.parse(kwargs)
        plan = self._plan(request, await self._ascore(request))
        with self._dispatching(plan, request) as run:
            return self._finish(run, await run.attempts.acall())

    def __repr__(self) -> str:
        return f"Router(name={self.name!r}, tiers={[t.name for t in self._tiers]}, policy={self.policy!r})"


@dataclass
class _Run:
    """One dispatch in progress."""

    plan: _Plan
    attempts: Attempts
    request: _Request
