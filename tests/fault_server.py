"""A fault-injecting OpenAI-compatible server on 127.0.0.1 for the fault and soak suite.

Each request draws a behaviour from a seeded RNG (or from ``faults`` when tests need an exact
sequence): a normal answer (JSON or SSE), or one of the faults a real provider or network
produces: ``500``, ``429`` with a (tiny) ``Retry-After``, a connection reset before any byte,
a hang past the client's timeout, malformed JSON with status 200, or a response that breaks
mid-way (a truncated JSON body; for streams, one chunk and then a reset). Queued faults may also
be any HTTP status (``"400"``) or ``echo401`` is a provider quoting back the credentials and URL it was sent.
Everything is stdlib and bounded: hangs are short and daemon threads never outlive the test.
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

import openai
from router_support import OpenAIServer

from introroute.errors import IntrorouteError

FAULTS = ("500", "429", "reset", "hang", "malformed", "midway")
#: What a routed call may raise: introroute's errors, or LiteLLM's (all subclass openai's).
TYPED_ERRORS = (IntrorouteError, openai.OpenAIError)


class FaultServer(OpenAIServer):
    """``POST .../chat/completions`` answering or failing as drawn; counts what it did.

    Built on :class:`OpenAIServer` (same loopback server, request and header logs, ``faults``
    queue, which here takes precedence over the random draw); only the answers differ.
    """

    def __init__(
        self,
        fault_rate: float = 0.25,
        seed: int = 0,
        hang_s: float = 0.6,
        retry_after: str = "0.01",
        faults: tuple[str, ...] = FAULTS,
    ) -> None:
        super().__init__(hang_s=hang_s)
        self.fault_rate = fault_rate
        self.retry_after = retry_after
        self.kinds = faults
        self.counts: collections.Counter[str] = collections.Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def __enter__(self) -> FaultServer:
        return self.start()  # type: ignore[return-value]

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def injected(self) -> int:
        return sum(self.counts.values()) - self.counts["ok"]

    def _answer(self, h: BaseHTTPRequestHandler, body: dict[str, Any], fault: Any) -> None:
        with self._lock:
            if fault is not None:
                kind = str(fault)
            elif self._rng.random() < self.fault_rate:
                kind = self._rng.choice(self.kinds)
            else:
                kind = "ok"
            self.counts[kind] += 1
        with contextlib.suppress(OSError):  # the client gave up (timeout) or the socket was reset
            self._respond(h, body, kind)

    def _respond(self, h: BaseHTTPRequestHandler, body: dict[str, Any], kind: str) -> None:
        stream = bool(body.get("stream"))
        if kind.isdigit() and kind != "429":  # "500", "400", "401"...
            return _json(h, int(kind), {"error": {"message": "injected failure", "type": "server_error"}})
        if kind == "429":
            error = {"error": {"message": "slow down", "type": "rate_limit_error"}}
            return _json(h, 429, error, {"Retry-After": self.retry_after})
        if kind == "reset":
            return _reset(h)
        if kind == "echo401":  # a provider that quotes the credentials it was sent
            echoed = f"Incorrect API key provided: {h.headers.get('Authorization')}; "
            echoed += f"token {h.headers.get('X-Token')}; url {h.path}"
            return _json(h, 401, {"error": {"message": echoed, "type": "invalid_request_error"}})
        if kind == "hang":
            time.sleep(self.hang_s)
            return _reset(h)
        if kind == "malformed" and stream:  # an SSE event whose data is not JSON
            return _raw(h, 200, b'data: {"id": "x", "choices": [ {not json\n\n', "text/event-stream")
        if kind == "malformed":
            return _raw(h, 200, b'{"id": "x", "choices": [ {not json', "application/json")
        text = f"answer to: {_last_user_text(body.get('messages') or [])}"[:200]
        if kind == "midway":
            if stream:
                h.send_response(200)
                h.send_header("Content-Type", "text/event-stream")
                h.end_headers()
                h.wfile.write(_sse_chunk(body, {"role": "assistant", "content": text[:5]}))
                h.wfile.flush()
                return _reset(h)
            payload = json.dumps(_completion(body, text)).encode()
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload[: len(payload) // 2])
            h.wfile.flush()
            return _reset(h)
        if stream:
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Connection", "close")
            h.end_headers()
            for delta in ({"role": "assistant", "content": text[:5]}, {"content": text[5:]}):
                h.wfile.write(_sse_chunk(body, delta))
            h.wfile.write(_sse_chunk(body, {}, finish="stop"))
            h.wfile.write(b"data: [DONE]\n\n")
            h.wfile.flush()
            h.close_connection = True
            return None
        return _json(h, 200, _completion(body, text))


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "m"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def _sse_chunk(body: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": body.get("model", "m"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _json(
    h: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    _raw(h, status, json.dumps(payload).encode(), "application/json", headers)


def _raw(
    h: BaseHTTPRequestHandler,
    status: int,
    data: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.end_headers()
    h.wfile.write(data)
    h.wfile.flush()


def _reset(h: BaseHTTPRequestHandler) -> None:
    """Close with RST (SO_LINGER 0): the client sees a reset, not a clean end of stream."""
    h.close_connection = True
    with contextlib.suppress(OSError):
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""
