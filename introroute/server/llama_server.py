"""Run llama.cpp's ``llama-server`` on a ``gguf-alora`` export (tests, benchmarks, local use).

The command is the one docs/engine.md gives: the base GGUF, the activated LoRA loaded but
inactive until a request asks for it (``--lora-init-without-apply``), 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from introroute.errors import GatekeeperError

BINARY_ENV = "INTROROUTE_LLAMA_SERVER"


def find_binary() -> str | None:
    """``$INTROROUTE_LLAMA_SERVER``, else ``llama-server`` on PATH, else None."""
    return os.environ.get(BINARY_ENV) or shutil.which("llama-server")


def server_command(
    binary: str, export: str | Path, port: int, *, parallel: int = 1, threads: int = 2, context: int = 2048
) -> list[str]:
    """llama-server's command line for ``export``; ``context`` is shared by the ``parallel`` slots."""
    directory = Path(export)
    return [
        binary, "-m", str(directory / "base.gguf"), "--lora", str(directory / "alora.gguf"),
        "--lora-init-without-apply", "--host", "127.0.0.1", "--port", str(port),
        "-c", str(context * parallel), "-np", str(parallel), "-t", str(threads), "--no-webui",
    ]  # fmt: skip


@contextmanager
def running(
    export: str | Path, *, binary: str | None = None, startup_s: float = 120.0, **options: int
) -> Iterator[str]:
    """Start llama-server on a free 127.0.0.1 port, wait for ``/health``, yield its URL, stop it."""
    binary = binary or find_binary()
    if binary is None:
        raise GatekeeperError(f"no llama-server binary: set {BINARY_ENV} or put llama-server on PATH")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = server_command(binary, export, port, **options)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + startup_s
        while not _healthy(url):
            if process.poll() is not None:
                raise GatekeeperError(f"llama-server exited with {process.returncode}: {' '.join(command)}")
            if time.monotonic() > deadline:
                raise GatekeeperError(f"llama-server was not healthy within {startup_s:g} s")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
