"""Test doubles and process helpers for the gatekeeper server, the LiteLLM plugin and the proxy.

``KeywordScorer`` scores like a gatekeeper that finds "hard" questions hard, records every batch
it was given, and can be slowed down or broken; ``keyword_scorer`` is its factory for
``introroute serve --scorer server_support:keyword_scorer``. Servers bind 127.0.0.1 on a free port;
every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from introroute.errors import MessagesError
from introroute.messages import normalize_messages

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TARGETS = ["self", "gpt-4"]


def text_of(messages: Any) -> str:
    return " ".join(str(m.get("content") or "") for m in messages)


def keyword_scores(messages: Any) -> dict[str, float]:
    """``self`` is unlikely to answer a message containing "hard"; a per-text digit keeps answers distinct."""
    text = text_of(messages)
    digits = [c for c in text if c.isdigit()]
    jitter = int(digits[-1]) / 100.0 if digits else 0.0
    return {"self": (0.1 if "hard" in text else 0.8) + jitter, "gpt-4": 0.9}


#: Text the double's "tokenizer" rejects, as IntroLM.encode rejects what its tokenizer cannot take.
UNREADABLE = "<unreadable>"


@dataclass
class Encoded:
    messages: Any
    ids: list[int]


@dataclass
class KeywordScorer:
    """A ``BatchScorer`` like IntroLM: ``encode`` validates one request (``MessagesError`` for
    text containing ``UNREADABLE``), ``scores_encoded`` is one forward over many (recorded in
    ``batches``, ``delay_s`` long, raising ``fail`` if set)."""

    delay_s: float = 0.0
    fail: Exception | None = None
    batches: list[int] = field(default_factory=list)

    @property
    def targets(self) -> list[str]:
        return list(TARGETS)

    def encode(self, messages: Any) -> Encoded:
        text = " ".join(m["content"] for m in normalize_messages(messages).messages)
        if UNREADABLE in text:
            raise MessagesError("messages[0].content cannot be tokenised (TypeError)")
        return Encoded(messages, list(range(len(text.split()))))

    def scores_encoded(self, prompts: list[Encoded]) -> list[dict[str, float]]:
        self.batches.append(len(prompts))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return [keyword_scores(p.messages) for p in prompts]

    prefill_batch = scores_encoded  # never called (not a LocalModel); completes the BatchScorer protocol

    def scores(self, messages: Any) -> dict[str, float]:
        return self.scores_encoded([self.encode(messages)])[0]


def keyword_scorer() -> KeywordScorer:
    """Factory for ``introroute serve --scorer``; ``KEYWORD_SCORER_DELAY_S`` slows each forward."""
    return KeywordScorer(delay_s=float(os.environ.get("KEYWORD_SCORER_DELAY_S", "0")))


def mocked_tiers(cheap: str = "cheap", strong: str = "strong") -> list[dict[str, Any]]:
    """Two tiers LiteLLM answers with ``mock_response`` (their names): ``cheap`` reads the ``self``
    score, ``strong`` the ``gpt-4`` one."""
    pairs = ((cheap, "self"), (strong, "gpt-4"))
    return [
        {"name": name, "target": target, "litellm_params": {"model": f"openai/{name}", "mock_response": name}}
        for name, target in pairs
    ]


def remote_router_config(url: str, **gatekeeper: Any) -> dict[str, Any]:
    """A router scoring through ``introroute serve`` at ``url``: easy questions to ``cheap``."""
    return {
        "name": "remote",
        "gatekeeper": {"url": url, **gatekeeper},
        "tiers": mocked_tiers(),
        "policy": {"type": "threshold", "params": {"tau": 0.5}},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run an app from ``create_app`` under uvicorn as ``introroute serve`` does (same protocol,
    timeouts), on 127.0.0.1 in a daemon thread; yields its base URL."""
    import uvicorn

    from introroute.server.http import uvicorn_config

    config = uvicorn_config(app, host="127.0.0.1", port=free_port(), log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 30 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test environment for a child process: this checkout and tests/ first on the path, offline."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(
        HF_HUB_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"
    )
    env.update(extra)
    return env


def wait_for_http(
    url: str, process: subprocess.Popen[Any], timeout_s: float, log: Path | None = None
) -> float:
    """Poll ``url`` until it answers 200; seconds it took. Fails early if ``process`` exits."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s:\n{tail}")


def stop(process: subprocess.Popen[Any], timeout_s: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class FaultyGatekeeperServer:
    """A stdlib stand-in for ``introroute serve`` on 127.0.0.1 whose ``/score`` misbehaves.

    ``mode``: ``"drip"`` answers 200 with a valid body sent one byte every ``drip_s`` (each read
    is quick, so per-read timeouts never fire); ``"503"`` sheds every request; ``"ok"`` answers.
    ``/health`` is normal. Handler threads are daemons and stop writing once the client hangs up.
    """

    def __init__(self, mode: str, drip_s: float = 0.1) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, {"status": "ok", "targets": TARGETS})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.calls += 1
                if outer.mode == "503":
                    self._send(503, {"error": {"message": "queue full", "type": "overloaded"}})
                    return
                scores = {"scores": {t: 0.5 for t in TARGETS}, "batch_size": 1}
                if outer.mode == "ok":
                    self._send(200, scores)
                    return
                body = (
                    json.dumps(scores).encode() + b" " * 60
                )  # long enough that dripping it takes many read timeouts
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(outer.drip_s)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.mode, self.drip_s, self.calls = mode, drip_s, 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> FaultyGatekeeperServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
