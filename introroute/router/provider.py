"""introroute as a LiteLLM custom provider: ``litellm.completion(model="introroute/<router>")``.

Why: teams that already call LiteLLM (or run the LiteLLM Proxy) adopt routing by changing one
model string. Importing :mod:`introroute` registers :data:`handler` under the provider name
``introroute``; a proxy ``config.yaml`` names it as ``introroute.router.provider.handler``.

Two model shapes reach this provider:
- ``introroute/<router>``: route the request (score, decide, dispatch to the chosen tier);
- ``introroute/<router>/local``: the router's local tier itself, which is how the router
  dispatches to it; called directly it answers locally without routing.

Streams: the routed stream's chunks are LiteLLM ``ModelResponseStream`` objects, which LiteLLM
passes through from custom providers as they are (tool-call deltas included); the decision rides
on the first chunk and on LiteLLM's logging object of the outer call (see ``decision()``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import litellm
from litellm import CustomLLM

from introroute.errors import ConfigError, MessagesError
from introroute.router import api
from introroute.router.decision import HIDDEN_KEY

PROVIDER = "introroute"


@contextlib.contextmanager
def _refusals_as_bad_requests(model: str) -> Iterator[None]:
    """introroute's refusals of the request itself (no such router, malformed messages) as LiteLLM's
    ``BadRequestError``: a 400 that no retry loop repeats. LiteLLM turns any other exception from a
    custom provider into a retryable ``APIConnectionError``. The typed error is the ``__cause__``."""
    try:
        yield
    except (ConfigError, MessagesError) as exc:
        raise litellm.BadRequestError(
            message=str(exc), model=f"{PROVIDER}/{model}", llm_provider=PROVIDER
        ) from exc


def _target(model: str, hook_kwargs: Mapping[str, Any]) -> tuple[Any, bool, dict[str, Any], Any]:
    """(router, is-local-tier, optional_params, litellm_params) for one hook call.

    ``model`` is provider-relative: ``<router>`` or ``<router>/local``.
    """
    name, _, rest = model.partition("/")
    if rest not in ("", "local"):
        raise ConfigError(
            f"model 'introroute/{model}': expected 'introroute/<router>' or 'introroute/<router>/local'"
        )
    return (
        api.by_name(name),
        rest == "local",
        hook_kwargs["optional_params"],
        hook_kwargs.get("litellm_params"),
    )


def _request(optional_params: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's OpenAI parameters (tools, temperature, ...) to forward; ``stream`` is explicit."""
    return {k: v for k, v in optional_params.items() if k not in ("stream", "max_retries")}


def _note(logging_obj: Any, stream: Any) -> None:
    """Leave the decision where ``decision()`` finds it for the stream wrapper LiteLLM builds."""
    if logging_obj is not None:
        logging_obj.model_call_details[HIDDEN_KEY] = stream._hidden_params.get(HIDDEN_KEY)


class IntrorouteProvider(CustomLLM):
    """LiteLLM ``CustomLLM`` hooks, all delegating to the named :class:`~introroute.Router`.

    LiteLLM calls every hook with keyword arguments (``optional_params``, ``litellm_params``,
    ``model_response``, ``logging_obj``, ...); each hook reads the few it needs.
    """

    def completion(self, model: str, messages: list[Any], **kw: Any) -> Any:  # type: ignore[override]
        with _refusals_as_bad_requests(model):
            router, local, params, litellm_params = _target(model, kw)
            if local:
                return router.local.complete(messages, params, litellm_params, kw["model_response"])
            return router.completion(messages=messages, **_request(params))

    def streaming(self, model: str, messages: list[Any], **kw: Any) -> Iterator[Any]:  # type: ignore[override]
        with _refusals_as_bad_requests(model):
            router, local, params, litellm_params = _target(model, kw)
            if local:
                return router.local.stream(messages, params, litellm_params)
            stream = router.completion(messages=messages, stream=True, **_request(params))
        _note(kw.get("logging_obj"), stream)
        return iter(stream)

    async def acompletion(self, model: str, messages: list[Any], **kw: Any) -> Any:  # type: ignore[override]
        with _refusals_as_bad_requests(model):
            router, local, params, litellm_params = _target(model, kw)
            if local:
                return await router.local.acomplete(messages, params, litellm_params, kw["model_response"])
            return await router.acompletion(messages=messages, **_request(params))

    def astreaming(self, model: str, messages: list[Any], **kw: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        # A plain function returning an async iterator (LiteLLM accepts either): the local tier
        # must claim its lent prefill during this call, not on the caller's first ``async for``.
        with _refusals_as_bad_requests(model):
            router, local, params, litellm_params = _target(model, kw)
        if local:
            return router.local.astream(messages, params, litellm_params)
        return _arouted(router, model, messages, params, kw.get("logging_obj"))


async def _arouted(
    router: Any, model: str, messages: list[Any], params: dict[str, Any], logging_obj: Any
) -> AsyncIterator[Any]:
    with _refusals_as_bad_requests(model):
        stream = await router.acompletion(messages=messages, stream=True, **_request(params))
    _note(logging_obj, stream)
    async for chunk in stream:
        yield chunk


#: The instance LiteLLM calls (also the ``custom_handler`` for a LiteLLM Proxy config).
handler = IntrorouteProvider()


def register_provider() -> None:
    """Add the ``introroute`` provider to ``litellm.custom_provider_map`` (idempotent)."""
    if not any(entry.get("provider") == PROVIDER for entry in litellm.custom_provider_map):
        litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": handler})
