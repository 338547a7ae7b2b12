"""How ``introroute serve`` runs its app under uvicorn: one configuration for the CLI and the tests.

Why a protocol subclass: uvicorn has no deadline for receiving a request. Its keep-alive timeout
starts only after a first response and is reset by every byte received, so a client that sends
half a header (or a header a byte every few seconds) holds its connection, and a file descriptor,
for ever; and an ASGI middleware cannot help, as it runs only once the headers are complete.
:func:`request_deadline_protocol` arms one deadline per request, from the connection's opening
(or the previous response) until the request is received in full, headers and body; a connection
that misses it is closed. Requests being scored are not affected: the deadline is disarmed as soon
as the request has arrived.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from introroute.server.options import ServeOptions

logger = logging.getLogger(__name__)

#: Client states in which the request has been received in full (h11's view of the connection).
_RECEIVED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)


class _RequestDeadline(H11Protocol):
    """uvicorn's h11 protocol with a deadline for receiving each request (``timeout_s``)."""

    timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in _RECEIVED:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state not in _RECEIVED:
            self._arm()  # the next request on this keep-alive connection has its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            logger.info(
                "introroute serve: closed a connection that sent no whole request in %g s", self.timeout_s
            )
            self.transport.close()


def request_deadline_protocol(timeout_s: float) -> type[H11Protocol]:
    """An h11 protocol class for uvicorn that closes connections slower than ``timeout_s`` per request."""
    return type("RequestDeadlineProtocol", (_RequestDeadline,), {"timeout_s": timeout_s})


def uvicorn_config(app: Any, *, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    """The uvicorn configuration for an app from :func:`~introroute.server.app.create_app`
    (its :class:`ServeOptions` set the request deadline and the keep-alive timeout)."""
    options: ServeOptions = app.state.options
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=request_deadline_protocol(options.request_timeout_s),
        timeout_keep_alive=options.keep_alive_s,
        log_level=log_level,
        access_log=False,
    )
