"""Test doubles and process helpers for the gatekeeper server, the LiteLLM plugin and the proxy.

``KeywordScorer`` scores like a gatekeeper that finds "hard" questions hard, records every batch
it was given, and can be slowed down or broken; ``keyword_scorer`` is its factory for
``introroute serve --scorer server_support:keyword_scorer``. Servers bind 127.0.0.1 on a free port;
every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
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
