"""introroute as the classifier of LiteLLM's complexity router (``classifier_type: custom``).

Why a plugin and not only the ``introroute/<router>`` provider: behind a LiteLLM Proxy the
provider hides the real tier inside one opaque model, so the proxy's own fallbacks, retries,
spend tracking, ``router_model_name`` and ``x-litellm-complexity-router-tier`` header all see
"introroute" instead of the model that answered, and a failure is retried by both routers. As a
classifier plugin, introroute only picks the tier (gatekeeper scores -> calibration -> policy) and
LiteLLM does everything after that with the deployments in its ``model_list``. SDK users keep the
provider and :func:`introroute.completion`.

Proxy config (see ``examples/litellm_proxy_config.yaml``)::

    model_list:
      - model_name: smart
        litellm_params:
          model: auto_router/complexity_router
          complexity_router_config:
            classifier_type: custom
            classifier_plugin: introroute.integrations.litellm_complexity.classifier
            fallback_tier: strong          # where LiteLLM routes when introroute declines
            tiers: {cheap: cheap-model, strong: strong-model}   # keys = introroute tier names

``classifier`` reads the router YAML named by ``INTROROUTE_CONFIG`` (or ``./introroute.yaml``)
when the proxy resolves it at start-up, so a bad config stops the proxy instead of silently
falling back on every request. For several routers in one proxy, put
``classifier = IntrorouteClassifier("router_a.yaml")`` in a module next to the proxy config
and name ``that_module.classifier``. With ``gatekeeper.url`` (``introroute serve``) the proxy
process never imports torch.

``message_guard`` (``litellm_settings: callbacks: [...]``) answers malformed ``messages`` with a
400 that names the problem before any routing or upstream call happens.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from litellm.integrations.custom_logger import CustomLogger

from introroute.messages import messages_problem
from introroute.router import api

if TYPE_CHECKING:
    from litellm.types.router import RoutingContext

    from introroute.router.router import Router

logger = logging.getLogger(__name__)


class IntrorouteClassifier:
    """A LiteLLM ``ClassifierPlugin``: ``await classify(context)`` -> the introroute tier's name.

    ``router``: a :class:`~introroute.Router`, a YAML path, a parsed config mapping, or ``None``
    for the one named by ``INTROROUTE_CONFIG``. Its tier names must be the keys of the complexity
    router's ``tiers``; its tiers' ``litellm_params`` are read only for prices (LiteLLM calls the
    deployments itself).

    When introroute cannot decide (gatekeeper down, over its time budget, a policy error) it
    declines (returns ``None``) with ``decline_on_failure``, so LiteLLM's ``fallback_tier`` applies
    and the response header says ``x-litellm-complexity-router-cause: classifier_fallback``; with
    ``decline_on_failure=False`` it returns introroute's own ``fail_safe`` tier instead.
    """

    def __init__(
        self,
        router: Router | str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        decline_on_failure: bool = True,
    ) -> None:
        self._source = router
        self._router: Router | None = None
        self.decline_on_failure = decline_on_failure

    def __deepcopy__(self, memo: dict[int, Any]) -> IntrorouteClassifier:
        # LiteLLM deep-copies its model_list, plugin instances included. A copy would get its own
        # gatekeeper and policy state (a second budget window), so every copy is this instance.
        return self

    def __copy__(self) -> IntrorouteClassifier:
        return self

    def router(self) -> Router:
        """The router that decides, built on first use."""
        if self._router is None:
            from introroute.router.router import Router

            source = self._source
            if isinstance(source, Router):
                self._router = source
            elif isinstance(source, Mapping):
                self._router = Router.from_dict(source)
            else:
                self._router = api.resolve(source)
        return self._router

    async def classify(self, context: RoutingContext) -> str | None:
        """Score the request's messages and return the tier the policy picked (``None``: decline)."""
        messages = list(context.structured_messages or context.raw_messages)
        decision = await self.router().aroute(messages)
        if decision.fail_safe_reason is not None and self.decline_on_failure:
            logger.warning(
                "introroute %s: declining to classify: %s", decision.router, decision.fail_safe_reason
            )
            return None
        logger.debug("introroute %s: tier %s (%s)", decision.router, decision.tier, decision.policy_detail)
        return decision.tier


#: Why ``messages`` is malformed, or ``None`` (kept here under its former name).
check_messages = messages_problem


class MessageGuard(CustomLogger):
    """A proxy pre-call hook: malformed ``messages`` -> HTTP 400 with the cause, not retried.

    Without it an empty list reaches the router, no deployment is chosen, and the client sees a
    generic routing error (or, through a custom provider, a retried 500) instead of the reason.
    """

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        if "messages" in data:
            problem = check_messages(data["messages"])
            if problem is not None:
                from fastapi import HTTPException  # the proxy's own server framework

                raise HTTPException(status_code=400, detail={"error": f"invalid request: {problem}"})
        return data


def _startup_classifier() -> IntrorouteClassifier:
    plugin = IntrorouteClassifier()
    plugin.router()  # config errors stop the proxy at start-up, naming the file and key
    return plugin


_LAZY: dict[str, Any] = {"classifier": _startup_classifier, "message_guard": MessageGuard}


def __getattr__(name: str) -> Any:
    """``classifier`` and ``message_guard``, built when LiteLLM first resolves them (not at import)."""
    if name in _LAZY:
        value = _LAZY[name]()
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
