"""The Router: messages -> gatekeeper scores -> calibration -> policy decision -> LiteLLM call -> record.

Why this shape: every step is a separate, replaceable object (gatekeeper, policy, dispatch, log)
and data only flows forward, so a failure in one step has one well-defined consequence: a
gatekeeper or policy failure sends the request to the fail-safe tier, a provider failure to
retries and fallbacks, and only when every tier failed does the caller see an error.

Every call that reaches routing leaves exactly one routing-log record, whatever happens after:
answered, every tier failed, no tier could read the request, or cancelled (``CancelledError``,
``KeyboardInterrupt``) while scoring, waiting or calling.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from introroute.decision_log import DecisionRecord, prompt_id, text_messages
from introroute.errors import ConfigError, IntrorouteError, MessagesError, PolicyError, RoutingError
from introroute.messages import check_messages, normalize_messages
from introroute.policies import Policy, PolicyChoice, RequestContext, build_policy
from introroute.router import head_check, local_tier
from introroute.router.audit import Auditor, answer_text, usage_of
from introroute.router.calibration import ScoreCalibrator
from introroute.router.config import GatekeeperConfig, RouterConfig, TierConfig, load_config
from introroute.router.decision import Decision, attach
from introroute.router.dispatch import Attempts
from introroute.router.gatekeeping import SHED_REASONS, BatchingOptions, Gatekeeping, Scoring
from introroute.router.modalities import request_modalities
from introroute.router.routing_log import RoutingLog
from introroute.router.secrets import Redactor, protect_logs
from introroute.scoring import LocalModel, Scorer, is_async_scorer

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
        tools = self.kwargs.get("tools") or self.kwargs.get("functions") or []
        # Malformed tools are the provider's to reject (a typed error); routing must not crash.
        return list(tools) if isinstance(tools, list | tuple) else [tools]

    @property
    def modalities(self) -> frozenset[str]:
        return request_modalities(self.messages)

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
    reason: str | None = None


def estimate_tokens(messages: Any) -> int:
    """~4 characters per token: only for cost estimates when the gatekeeper did not count."""
    try:
        normalized = normalize_messages(messages).messages
    except MessagesError:  # every malformed input ends here (RecursionError included)
        return 0
    return sum(len(m["content"]) for m in normalized) // 4 + 4 * len(normalized)


class Router:
    """Routes each request to one of the configured tiers; a drop-in for ``litellm.completion``.

    Build one with :meth:`from_yaml` (or from a :class:`RouterConfig`); pass ``gatekeeper=`` to
    use an already-built scorer (tests, benchmarks) instead of loading the configured IntroLM.
    A router is addressable as LiteLLM model ``introroute/<name>`` once built.
    """

    #: Routers by name, the latest built wins: how ``model="introroute/<name>"`` finds its router
    #: (:func:`introroute.router.api.by_name`). Kept here so that router.api imports this module
    #: and not the other way round.
    registered: ClassVar[dict[str, Router]] = {}

    def __init__(
        self, config: RouterConfig, *, gatekeeper: Scorer | None = None, policy: Policy | None = None
    ) -> None:
        self.config = config
        self.name = config.name
        self.policy = policy or build_policy(config.policy.type, dict(config.policy.params))
        self._tiers = tuple(t.info() for t in config.tiers)
        self.policy.check_tiers(self._tiers)
        self._redactor = Redactor(config.secrets())
        protect_logs(config.secrets())  # LiteLLM's and the HTTP clients' log records too
        self._log = RoutingLog(config.routing_log) if config.routing_log else None
        reference = config.audit_tier
        self._auditor = (
            Auditor(config.audit, reference, [t.name for t in config.tiers], self._log, self._redactor)
            if config.audit and reference and self._log
            else None
        )
        local = next((t for t in config.tiers if t.local), None)
        self._local_name = local.name if local else None
        owns_scorer = gatekeeper is None
        if gatekeeper is None and config.gatekeeper and config.gatekeeper.backend_info.eager:
            gatekeeper = config.gatekeeper.backend_info.build(config.gatekeeper)  # module:factory
        self._gatekeeping = self._make_gatekeeping(gatekeeper, owns_scorer)
        self._check_heads(gatekeeper)
        calibration = (config.gatekeeper.calibration if config.gatekeeper else None) or {}
        self._calibrators = {t: ScoreCalibrator.from_config(c) for t, c in calibration.items()}
        self.local = local_tier.LocalTier(
            self._local_model,
            label=f"introroute/{self.name}/local",
            max_generations=(config.gatekeeper or GatekeeperConfig()).max_generations,
        )
        Router.registered[self.name] = self  # LiteLLM's ``introroute/<name>`` (router.api)

    def _check_heads(self, gatekeeper: Scorer | None) -> None:
        """Every tier's target must be a head of the gatekeeper that will score it (see head_check.py)."""
        where = f"router {self.name!r}"
        if gatekeeper is not None:
            try:
                targets = list(gatekeeper.targets)
            except Exception:  # a scorer that cannot list its targets is checked per request
                return
            known = head_check.scorer_heads(targets, f"the gatekeeper {type(gatekeeper).__name__}")
        elif self.config.gatekeeper is not None and self.config.gatekeeper.backend_info.owns_heads:
            known = head_check.required_heads(self.config.gatekeeper)
        else:  # no gatekeeper, or a remote one whose server owns the heads
            return
        head_check.check_targets(self.config, known, where)

    def _make_gatekeeping(self, gatekeeper: Scorer | None, owns_scorer: bool) -> Gatekeeping | None:
        """The scoring step: the micro-batcher for one in-process model, a direct await for a
        service that batches itself (a remote backend, or a scorer with its own ``ascores``)."""
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
        auto = spec is not None and spec.timeout_ms == "auto"
        timeout_s = spec.budget_s if spec else None
        if gatekeeper is not None:
            remote = is_async_scorer(gatekeeper)
        else:
            remote = spec is not None and spec.backend_info.remote
        if remote:
            if auto:
                raise ConfigError(
                    f"router {self.name!r}: gatekeeper.timeout_ms: auto measures an in-process "
                    "gatekeeper; give a remote one a number"
                )
            from introroute.router.remote import RemoteGatekeeping  # httpx only: no torch

            return RemoteGatekeeping(
                factory, keep_prefill=False, timeout_s=timeout_s, owns_scorer=owns_scorer
            )
        options = (
            BatchingOptions(
                max_batch_size=spec.max_batch_size,
                max_wait_s=spec.max_wait_ms / 1000.0,
                max_queue=spec.max_queue,
                overload=spec.overload,
                load=spec.load,
                budget_callers=spec.budget_callers if auto else None,
            )
            if spec
            else None
        )
        return Gatekeeping(
            factory,
            keep_prefill=self._local_name is not None,
            timeout_s=timeout_s,
            options=options,
            label=self.name,
        )

    def _load_gatekeeper(self) -> Scorer:
        spec = self.config.gatekeeper
        assert spec is not None
        return spec.backend_info.build(spec)  # a local model imports torch only here

    def _local_model(self) -> LocalModel:
        model = self._gatekeeping.local_model() if self._gatekeeping else None
        if model is None:
            raise RoutingError(f"router {self.name!r} has no gatekeeper that can generate the local tier")
        return model

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], *, gatekeeper: Scorer | None = None) -> Router:
        """Load, validate and build a router from a YAML file (see :mod:`introroute.router.config`).

        With ``gatekeeper=``, tier targets are checked against its heads, not the configured adapter's.
        """
        return cls(load_config(path, check_heads=gatekeeper is None), gatekeeper=gatekeeper)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, gatekeeper: Scorer | None = None) -> Router:
        """Like :meth:`from_yaml` for a config already parsed (embedded defaults, tests)."""
        return cls(load_config(data, check_heads=gatekeeper is None), gatekeeper=gatekeeper)

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
        failure, choice, reason = scoring.failure, None, scoring.reason
        if failure is None and self._gatekeeping is not None:
            missing = sorted({t.target for t in self._tiers} - set(scoring.scores))
            if missing:  # never let a policy default stand in for a head that did not answer
                failure = f"gatekeeper gave no score for target(s) {missing}"
                reason = "missing_head"
        if failure is None:
            try:
                choice = self.policy.decide(scoring.scores, context)
                if choice.tier not in {t.name for t in self._tiers}:
                    raise PolicyError(f"chose unknown tier {choice.tier!r}")
            except Exception as exc:  # a policy bug must not take the service down
                failure, choice = f"policy error: {type(exc).__name__}: {exc}", None
                reason = "policy_error"
        if failure is not None:
            # Shedding is the designed answer to load, counted in stats(): a warning per shed
            # request would flood the log exactly when the machine has least time for it.
            logger.log(
                logging.DEBUG if reason in SHED_REASONS else logging.WARNING,
                "introroute %s: %s; using fail-safe tier",
                self.name,
                self._redactor.redact(failure),
            )
        tier = choice.tier if choice else self.config.fail_safe_tier
        names, overrides = self._order(tier, bool(request.tools))
        names, unreadable = self._readable(names, request.modalities)
        overrides += unreadable
        order = [self.config.tier(n) for n in names]
        if scoring.prefill is not None and not any(t.local for t in order):
            # No tier will continue it: let its KV cache go now, not when the remote call returns.
            scoring = dataclasses.replace(scoring, prefill=None)
        return _Plan(
            order=order, scoring=scoring, choice=choice, failure=failure, overrides=overrides, reason=reason
        )

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

    def _readable(self, order: list[str], kinds: frozenset[str]) -> tuple[list[str], list[str]]:
        """``order`` without the tiers that cannot read the request's input kinds (images...).

        When none of them can, the fail-safe tier, else the first tier in config order that can;
        when no tier at all can, a :class:`RoutingError` (answering a question about an image
        the model cannot see would invent the answer).
        """

        def unread(name: str) -> frozenset[str]:
            reads = self.config.tier(name).reads()
            return frozenset() if reads is None else kinds - reads

        skipped = [f"tier {n!r} cannot read {sorted(unread(n))} input: skipped" for n in order if unread(n)]
        if not skipped:
            return order, []
        able = [n for n in order if not unread(n)]
        if not able:
            candidates = [self.config.fail_safe_tier, *(t.name for t in self.config.tiers)]
            able = [next((n for n in candidates if not unread(n)), "")]
            if not able[0]:
                raise RoutingError(
                    f"router {self.name!r}: no tier reads {sorted(kinds)} input "
                    f"({'; '.join(f'{t.name!r} reads {sorted(t.reads() or [])}' for t in self.config.tiers)})"
                )
            skipped.append(f"sent to {able[0]!r}, which reads it")
        return able, skipped

    def route(self, messages: Any, **kwargs: Any) -> Decision:
        """Score and decide without calling any model (dry run; stateful policies do count it)."""
        request = _Request.parse({**kwargs, "messages": messages})
        return self._decision(self._plan(request, self._score(request)), None)

    async def aroute(self, messages: Any, **kwargs: Any) -> Decision:
        """Async :meth:`route`: what a LiteLLM classifier plugin asks (it dispatches by itself)."""
        request = _Request.parse({**kwargs, "messages": messages})
        return self._decision(self._plan(request, await self._ascore(request)), None)

    def _decision(
        self, plan: _Plan | None, attempts: Attempts | None, *, unserialisable: str | None = None
    ) -> Decision:
        """The decision so far; ``unserialisable`` drops the policy's own (user-defined) values."""
        if plan is None:  # stopped before a tier was chosen (cancelled while scoring, no tier)
            plan = _Plan(
                order=[self.config.tier(self.config.fail_safe_tier)],
                scoring=Scoring(),
                choice=None,
                failure="no tier was chosen",
            )
        tier = attempts.tier if attempts else plan.order[0]
        return Decision(
            router=self.name,
            tier=tier.name,
            model=self.local.label if tier.local else tier.litellm_params.model,  # type: ignore[union-attr]
            scores=plan.scoring.scores,
            raw_scores=plan.scoring.raw_scores,
            policy=str(self.policy.name),
            policy_params=self.policy.get_params() if unserialisable is None else {},
            policy_tier=plan.choice.tier if plan.choice else None,
            policy_detail=(plan.choice.detail if plan.choice else {})
            if unserialisable is None
            else {"unserialisable": unserialisable},
            gatekeeper_ms=plan.scoring.gatekeeper_ms,
            queue_ms=plan.scoring.queue_ms,
            batch_size=plan.scoring.batch_size,
            truncated=plan.scoring.truncated,
            fail_safe_reason=plan.failure,
            reason=plan.reason,
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
    def _recording(self, request: _Request) -> Iterator[_Run]:
        """Guarantee one routing-log record for the call, however it ends (see the module doc)."""
        run = _Run(request)
        try:
            yield run
        except BaseException as exc:  # CancelledError and KeyboardInterrupt leave a record too
            if not run.recorded:
                self._finish(run, None, error=self._failure_text(exc))
            raise

    def _failure_text(self, exc: BaseException) -> str:
        if isinstance(exc, IntrorouteError):
            return self._redactor.redact(str(exc))
        if not isinstance(exc, Exception):
            return f"cancelled ({type(exc).__name__})"
        return self._redactor.redact(f"{type(exc).__name__}: {exc}")

    @contextmanager
    def _dispatching(self, run: _Run) -> Iterator[Attempts]:
        assert run.plan is not None
        with local_tier.lend(run.plan.scoring.prefill) as lent:
            run.attempts = Attempts(
                run.plan.order, self.config.retries, self._kwargs_for(run.request, lent), self._redactor
            )
            yield run.attempts

    def _record(self, run: _Run) -> dict[str, Any]:
        """The redacted decision dump; never raises (the provider may already have been paid)."""
        try:
            decision = self._decision(run.plan, run.attempts).model_dump(mode="json")
        except Exception as exc:  # e.g. a user policy's detail or params that are not JSON
            logger.warning("introroute %s: decision not serialisable: %s", self.name, type(exc).__name__)
            decision = self._decision(run.plan, run.attempts, unserialisable=type(exc).__name__).model_dump(
                mode="json"
            )
        return self._redactor.redact(decision)

    def _finish(self, run: _Run, response: Any, error: str | None = None) -> Any:
        """Attach the (redacted) decision to the response and write the routing-log record."""
        run.recorded = True
        decision = self._record(run)
        if response is not None:
            try:
                attach(response, decision)
            except Exception as exc:  # an odd response object: the answer matters more
                logger.warning("introroute %s: cannot attach the decision: %s", self.name, exc)
        if self._log is None:
            return response
        record = self._log_record(run, decision, response, error)
        answered = decision.get("tier") if isinstance(decision, dict) else None
        if self._auditor is not None and self._auditor.wants(str(answered), run.request.stream, error):
            reference = self._auditor.reference
            self._auditor.submit(record, lambda: self._kwargs_for(run.request, {})(reference))
        else:
            self._log.write(record)
        return response

    def _log_record(
        self, run: _Run, decision: dict[str, Any], response: Any, error: str | None
    ) -> dict[str, Any]:
        """The routing-log line of a call: a redacted :class:`DecisionRecord` dump; never raises."""
        request = run.request
        base = {
            "id": prompt_id(request.messages),
            "ts": dt.datetime.now(dt.timezone.utc).isoformat(),
            "router": self.name,
            "stream": request.stream,
            "latency_ms": round((time.perf_counter() - request.started) * 1000.0, 3),
            "error": error,
        }
        try:
            tier = next((t for t in self.config.tiers if t.name == decision.get("tier")), None)
            captured = self.config.log_prompts
            messages = text_messages(request.messages) if captured else None
            record = DecisionRecord(
                **base,
                decision=decision,
                target=tier.target if tier else None,
                usage=None if request.stream else usage_of(response),
                messages=messages,
                response=answer_text(response) if captured and not request.stream else None,
            )
            return self._redactor.redact(record.model_dump())
        except Exception as exc:  # a decision that is not a valid record: keep the line, say why
            logger.warning("introroute %s: routing record not valid: %s", self.name, type(exc).__name__)
            return {
                **base,
                "version": 1,
                "decision": None,
                "log_error": f"invalid record: {type(exc).__name__}",
            }

    def completion(self, **kwargs: Any) -> Any:
        """Route and answer; takes and returns what ``litellm.completion`` does."""
        request = _Request.parse(kwargs)
        with self._recording(request) as run:
            check_messages(request.messages)  # what no provider accepts is refused before any call
            run.plan = self._plan(request, self._score(request))
            with self._dispatching(run) as attempts:
                return self._finish(run, attempts.call())

    async def acompletion(self, **kwargs: Any) -> Any:
        """Async :meth:`completion`; scoring and local generation run off the event loop."""
        request = _Request.parse(kwargs)
        with self._recording(request) as run:
            check_messages(request.messages)
            run.plan = self._plan(request, await self._ascore(request))
            with self._dispatching(run) as attempts:
                return self._finish(run, await attempts.acall())

    def stats(self) -> dict[str, Any]:
        """Gatekeeper counters since this router was built and its queue now.

        ``scored``, ``shed`` (reasons ``overload``, ``loading``) and ``failed`` (``timeout``,
        ``load_failed``, ``error``, ``invalid_scores``, ``invalid_request``) count requests;
        ``by_reason`` splits the last two; ``queued`` is the queue depth now, ``batches`` and
        ``mean_batch_size`` describe the forwards run, ``batch_cost`` is the fitted cost model
        admission uses, ``state`` is the model's (``loading``, ``ready``, ``failed``) and ``load_s``
        how long it took to load. Empty for a router without a gatekeeper. With audit sampling,
        ``audits_dropped`` counts sampled requests logged without an audit (too many audits
        waiting, or closed).
        """
        stats = self._gatekeeping.stats() if self._gatekeeping else {}
        if self._auditor is not None:
            stats["audits_dropped"] = self._auditor.dropped
        return stats

    def close(self) -> None:
        """Wait for audits in flight, and stop the gatekeeper's worker thread (requests still
        queued go to the fail-safe tier)."""
        if self._auditor is not None:
            self._auditor.close()
        if self._gatekeeping is not None:
            self._gatekeeping.close()

    def __repr__(self) -> str:
        return f"Router(name={self.name!r}, tiers={[t.name for t in self._tiers]}, policy={self.policy!r})"


@dataclass
class _Run:
    """One routed call: what is known so far, and whether its routing-log record was written."""

    request: _Request
    plan: _Plan | None = None
    attempts: Attempts | None = None
    recorded: bool = False
