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


@dataclass
class KeywordScorer:
    """A batch-capable ``Scorer``; ``delay_s`` per forward, ``fail`` raises from every forward."""

    delay_s: float = 0.0
    fail: Exception | None = None
    batches: list[int] = field(default_factory=list)

    @property
    def targets(self) -> list[str]:
        return list(TARGETS)

    def scores(self, messages: Any) -> dict[str, float]:
        return dict(zip(TARGETS, self.scores_batch([messages])[0], strict=True))

    def scores_batch(self, conversations: list[Any], batch_size: int = 8) -> list[list[float]]:
        """``[N, targets]`` rows, like ``IntroLM.scores_batch``."""
        self.batches.append(len(conversations))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return [[keyword_scores(m)[t] for t in TARGETS] for m in conversations]


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
    """Run an ASGI app with uvicorn on 127.0.0.1 in a daemon thread; yields its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="error", loop="asyncio")
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
