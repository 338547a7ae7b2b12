"""Test doubles for the router suite: a fake gatekeeper and an OpenAI-compatible HTTP server.

The fake gatekeeper implements the ``Scorer`` and ``LocalModel`` protocols with deterministic
scores and a canned answer, so router tests never load a model. The server speaks enough of the
OpenAI chat-completions API (JSON and SSE, tool calls, injected 500s and hangs) for LiteLLM's real
``openai/`` HTTP path with ``api_base`` to run offline against 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from introroute.scoring import Generation, GenerationStream

ScoreSpec = Mapping[str, float] | Callable[[Any], Mapping[str, float]]


@dataclass
class FakePrefill:
    scores: dict[str, float]
    prompt_tokens: int
    truncated: bool = False
    used: bool = False


@dataclass
class FakeGatekeeper:
    """Deterministic ``Scorer`` + ``LocalModel``; ``fail`` raises, ``delay_s`` sleeps while scoring.

    ``heads``: the targets it claims (default: those its scores name), for a gatekeeper that
    returns fewer or broken scores than the heads the router checked at build time.
    """

    score_spec: ScoreSpec = field(default_factory=lambda: {"self": 0.9, "gpt-4": 0.95})
    heads: list[str] | None = None
    answer: str = "The capital of France is Paris."
    fail: Exception | None = None
    delay_s: float = 0.0
    truncated: bool = False
    seen: list[Any] = field(default_factory=list)
    prefills: int = 0
    generations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def targets(self) -> list[str]:
        if self.heads is not None:
            return list(self.heads)
        return list(self._scores([{"role": "user", "content": "x"}]))

    def _scores(self, messages: Any) -> dict[str, float]:
        spec = self.score_spec
        return dict(spec(messages) if callable(spec) else spec)

    def scores(self, messages: Any) -> dict[str, float]:
        self.seen.append(messages)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return self._scores(messages)

    def prefill(self, messages: Any) -> FakePrefill:
        scores = self.scores(messages)
        self.prefills += 1
        tokens = sum(len(str(m.get("content") or "").split()) for m in messages) + 3 * len(messages)
        return FakePrefill(scores=scores, prompt_tokens=tokens, truncated=self.truncated)

    def generate_from(
        self, prefill: FakePrefill, max_new_tokens: int = 256, stream: bool = False, **sampling: Any
    ) -> Generation | GenerationStream:
        assert not prefill.used, "a prefill's KV cache can be used once"
        prefill.used = True
        self.generations.append({"prefill": prefill, "max_new_tokens": max_new_tokens, **sampling})
        words = self.answer.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)][:max_new_tokens]
        finish = "length" if len(words) > max_new_tokens else "stop"
        ids = list(range(len(pieces)))
        if not stream:
            return Generation("".join(pieces), ids, finish, prefill.prompt_tokens, len(pieces))
        out = GenerationStream(pieces=iter(()), prompt_tokens=prefill.prompt_tokens)

        def run() -> Iterator[str]:
            for piece in pieces:
                out.completion_tokens += 1
                yield piece
            out.finish_reason = finish
            out.token_ids = ids

        out.pieces = run()
        return out


class ScoresOnly:
    """A gatekeeper that can score but not generate (no local tier possible)."""

    def __init__(self, scores: Mapping[str, float]) -> None:
        self._scores = dict(scores)

    @property
    def targets(self) -> list[str]:
        return list(self._scores)

    def scores(self, messages: Any) -> dict[str, float]:
        return dict(self._scores)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


class OpenAIServer:
    """A threaded stdlib HTTP server answering ``POST .../chat/completions`` on 127.0.0.1.

    ``faults`` is a queue of per-request behaviours: an HTTP status (``500``, ``400``) or
    ``"hang"`` (sleep ``hang_s`` without answering, to trigger client timeouts). Without a fault
    the reply echoes the last user message; with ``tools`` and no tool result yet, it calls the
    first tool; ``reply`` replaces the echo (a fake judge). Every request body is kept in
    ``requests``, its headers in ``headers``.
    """

    def __init__(
        self, hang_s: float = 2.0, reply: Callable[[list[dict[str, Any]]], str] | None = None
    ) -> None:
        self.reply = reply  # the answer's text from the messages (default: the echo)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.faults: deque[Any] = deque()
        self.hang_s = hang_s
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                fault = server.faults.popleft() if server.faults else None
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client gave up
                    server._answer(self, body, fault)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> OpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _answer(self, h: BaseHTTPRequestHandler, body: dict[str, Any], fault: Any) -> None:
        if isinstance(fault, int):
            return self._json(h, fault, {"error": {"message": "injected failure", "type": "server_error"}})
        if fault == "hang":
            time.sleep(self.hang_s)
            return self._json(h, 500, {"error": {"message": "too late", "type": "server_error"}})
        messages = body["messages"]
        tool_call = None
        if body.get("tools") and messages[-1].get("role") != "tool":
            name = body["tools"][0]["function"]["name"]
            tool_call = {
                "id": "call_1",
                "type": "function",
                "function": {"name": name, "arguments": '{"city": "Paris"}'},
            }
        text = None if tool_call else f"echo({len(messages)}): {_last_user_text(messages)}"
        if self.reply is not None and not tool_call:
            text = self.reply(messages)
        if body.get("stream"):
            return self._sse(h, body["model"], text, tool_call)
        message = {"role": "assistant", "content": text}
        if tool_call:
            message["tool_calls"] = [tool_call]
        return self._json(
            h,
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": message, "finish_reason": "tool_calls" if tool_call else "stop"}
                ],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
            },
        )

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _sse(
        h: BaseHTTPRequestHandler, model: str, text: str | None, tool_call: dict[str, Any] | None
    ) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        if tool_call:
            deltas = [{"role": "assistant", "tool_calls": [{"index": 0, **tool_call}]}]
        else:
            assert text is not None
            half = len(text) // 2
            deltas = [
                {"role": "assistant", "content": ""},
                {"content": text[:half]},
                {"content": text[half:]},
            ]
        finish = "tool_calls" if tool_call else "stop"
        events = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
        events.append({"index": 0, "delta": {}, "finish_reason": finish})
        for choice in events:
            chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": model}
            h.wfile.write(f"data: {json.dumps({**chunk, 'choices': [choice]})}\n\n".encode())
            h.wfile.flush()
        h.wfile.write(b"data: [DONE]\n\n")
        h.wfile.flush()


def router_config(name: str = "t", *, large: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A two-tier config: the in-process local tier, and ``large`` (a LiteLLM mock by default)."""
    large_params = large or {"model": "openai/gpt-4o", "mock_response": "large answer"}
    return {
        "name": name,
        "tiers": [
            {"name": "local", "target": "self"},
            {"name": "large", "target": "gpt-4", "litellm_params": large_params},
        ],
        "policy": {"type": "threshold", "params": {"tau": 0.5}},
        "retries": {"attempts": 2, "backoff": {"initial_s": 0, "jitter_s": 0}},
        **extra,
    }
