"""The routing decision and where it rides: ``response._hidden_params["introroute"]``.

Why on the response: callers keep using LiteLLM's return types unchanged (``ModelResponse`` or
its stream wrapper), yet every answer can say which tier produced it and why. LiteLLM already
reserves ``_hidden_params`` for such per-call extras and keeps them when a custom provider
returns the response, so the decision survives ``litellm.completion(model="introroute/...")``.
The stored value is a plain, secret-free dict; :func:`decision` turns it back into the model.
"""

from __future__ import annotations

from typing import Any

from litellm import CustomStreamWrapper

from introroute.decision_log import Decision

HIDDEN_KEY = "introroute"
__all__ = ["HIDDEN_KEY", "Decision", "RoutedStream", "aread_ahead", "attach", "decision", "read_ahead"]


# What a stream holds in ``_introroute_ahead``: nothing read ahead, or a stream that had no chunk.
_NOTHING = object()
_ENDED = object()


class RoutedStream(CustomStreamWrapper):
    """A LiteLLM stream whose first chunk also carries the decision.

    LiteLLM builds the wrapper, and callers must get a ``CustomStreamWrapper`` back, so
    :func:`attach` and :func:`read_ahead` re-class the instance instead of wrapping it; only
    iteration changes: the chunk read ahead (if any) comes first, then the rest of the stream.
    """

    # class defaults: a re-classed instance has whichever of the two its re-classer set
    _introroute_first: dict[str, Any] | None = None
    _introroute_ahead: Any = _NOTHING

    def _mark(self, chunk: Any) -> Any:
        if self._introroute_first is not None:
            chunk._hidden_params[HIDDEN_KEY] = self._introroute_first
            self._introroute_first = None
        return chunk

    def _take_ahead(self) -> Any:
        ahead = self._introroute_ahead
        if ahead is not _ENDED:  # an empty stream stays ended: LiteLLM's wrapper is not asked again
            self._introroute_ahead = _NOTHING
        return ahead

    def __next__(self) -> Any:
        ahead = self._take_ahead()
        if ahead is _ENDED:
            raise StopIteration
        return self._mark(super().__next__() if ahead is _NOTHING else ahead)

    async def __anext__(self) -> Any:
        ahead = self._take_ahead()
        if ahead is _ENDED:
            raise StopAsyncIteration
        return self._mark(await super().__anext__() if ahead is _NOTHING else ahead)


def attach(response: Any, record: dict[str, Any]) -> Any:
    """Put ``record`` (a redacted ``Decision`` dump) on a response or stream and return it."""
    response._hidden_params[HIDDEN_KEY] = record
    if isinstance(response, CustomStreamWrapper):
        response.__class__ = RoutedStream
        response._introroute_first = record
    return response


def read_ahead(response: Any) -> Any:
    """Read a stream's first chunk now, while the dispatch attempt is still open.

    Why: a provider may accept the request (HTTP 200) and then fail before any token (an error
    event, a malformed or reset stream). Nothing has reached the caller yet, so that failure is
    an ordinary failed attempt, for retries and fallbacks; once a chunk is out, an error is the
    caller's. Non-streamed responses pass through.
    """
    if not isinstance(response, CustomStreamWrapper):
        return response
    try:
        ahead = next(response)
    except StopIteration:
        ahead = _ENDED
    return _holding(response, ahead)


async def aread_ahead(response: Any) -> Any:
    """:func:`read_ahead` for a stream from ``litellm.acompletion``."""
    if not isinstance(response, CustomStreamWrapper):
        return response
    try:
        ahead = await response.__anext__()
    except StopAsyncIteration:
        ahead = _ENDED
    return _holding(response, ahead)


def _holding(stream: CustomStreamWrapper, ahead: Any) -> RoutedStream:
    stream.__class__ = RoutedStream
    stream._introroute_ahead = ahead
    return stream  # type: ignore[return-value]


def decision(response: Any) -> Decision | None:
    """The routing decision of a response, its stream wrapper, or a stream's first chunk.

    Returns ``None`` for objects the router did not produce (and for later stream chunks).
    A stream served through ``litellm.completion(model="introroute/...")`` is built by LiteLLM,
    which keeps per-call state on its logging object; the provider leaves the decision there.
    """
    hidden = getattr(response, "_hidden_params", None) or {}
    record = hidden.get(HIDDEN_KEY)
    if record is None and isinstance(response, CustomStreamWrapper):
        record = response.logging_obj.model_call_details.get(HIDDEN_KEY)
    return Decision.model_validate(record) if record is not None else None
