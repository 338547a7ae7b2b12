"""``introroute serve`` (the real CLI, the shipped adapter) against the clients of issue 19's red team.

Starts the server as a subprocess on 127.0.0.1, then:

- **poison**: 16 concurrent ``/score`` requests, one of them ``"caf\\ud800"`` (a lone surrogate):
  how many of the 15 good ones are answered 200, and what the bad one gets;
- **big body**: a 52 MB body, and a body of 10^6 messages: their status, how long the server took
  to refuse them, the server's RSS before and after, and the slowest ``/health`` meanwhile;
- **half headers**: 300 connections that send half a request header and stop: how many the server
  has closed ``--request-timeout-s`` (+ 2 s) later, and the slowest ``/health`` meanwhile;
- **drip** (the client side): a router with ``timeout_ms: 500`` against a stand-in server that
  drips its ``/score`` body one byte every 100 ms (tests/server_support.py): how long a sync
  ``route`` and an async ``aroute`` take, and the reason they record.

    python benchmarks/serve_hostile.py --out benchmarks/results/serve_hostile.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[1] / "tests"))
from server_support import FaultyGatekeeperServer, remote_router_config
from support import write_result

from introroute.router import Router

ROOT = Path(__file__).resolve().parents[1]
GOOD = [{"role": "user", "content": "What is the capital of France?"}]


def server_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class HealthProbe:
    """Polls ``/health`` every 50 ms on a thread; the slowest answer (or failure) while it runs."""

    def __init__(self, url: str) -> None:
        self.url, self.worst_ms, self.failures = url, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    client.get(f"{self.url}/health").raise_for_status()
                except httpx.HTTPError:
                    self.failures += 1
                self.worst_ms = max(self.worst_ms, (time.perf_counter() - start) * 1000.0)
                self._stop.wait(0.05)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def poison(url: str) -> dict[str, Any]:
    bad = json.dumps({"messages": [{"role": "user", "content": "caf\ud800"}]})

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            good = [client.post(f"{url}/score", json={"messages": GOOD}) for _ in range(15)]
            raw = client.post(f"{url}/score", content=bad, headers={"Content-Type": "application/json"})
            return await asyncio.gather(*good, raw)

    *good, bad_response = asyncio.run(burst())
    return {
        "good_ok": sum(r.status_code == 200 for r in good),
        "good_total": len(good),
        "max_batch_size": max(
            (r.json().get("batch_size", 0) for r in good if r.status_code == 200), default=0
        ),
        "bad_status": bad_response.status_code,
        "bad_message": bad_response.json()["error"]["message"],
    }


def refused_body(url: str, pid: int, body: bytes) -> dict[str, Any]:
    before = server_rss_mib(pid)
    with HealthProbe(url) as probe:
        start = time.perf_counter()
        try:
            status: Any = httpx.post(
                f"{url}/score", content=body, headers={"Content-Type": "application/json"}, timeout=120
            ).status_code
        except httpx.HTTPError as exc:  # the server may close before the client has sent it all
            status = type(exc).__name__
        elapsed = time.perf_counter() - start
        time.sleep(0.3)
    return {
        "body_mb": round(len(body) / 1e6, 1),
        "status": status,
        "answered_s": round(elapsed, 3),
        "server_rss_mib_before": round(before, 1),
        "server_rss_mib_after": round(server_rss_mib(pid), 1),
        "worst_health_ms": round(probe.worst_ms, 1),
        "health_failures": probe.failures,
    }


def half_headers(url: str, port: int, connections: int, timeout_s: float) -> dict[str, Any]:
    socks = []
    with HealthProbe(url) as probe:
        for _ in range(connections):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
            socks.append(s)
        time.sleep(timeout_s + 2.0)
        closed = 0
        for s in socks:
            s.settimeout(0.05)
            try:
                closed += s.recv(1024) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
            s.close()
    return {
        "connections": connections,
        "closed_by_server": closed,
        "worst_health_ms": round(probe.worst_ms, 1),
    }


def drip(budget_ms: float = 500.0) -> dict[str, Any]:
    result: dict[str, Any] = {"budget_ms": budget_ms, "drip_ms_per_byte": 100}
    for mode in ("sync", "async"):
        with FaultyGatekeeperServer("drip", drip_s=0.1) as server:
            router = Router.from_dict(remote_router_config(server.url, timeout_ms=budget_ms))
            start = time.perf_counter()
            routed = router.route(GOOD) if mode == "sync" else asyncio.run(router.aroute(GOOD))
            result[mode] = {"took_ms": round((time.perf_counter() - start) * 1000.0), "reason": routed.reason}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scorer", help="serve 'pkg.mod:factory' instead of the shipped adapter")
    parser.add_argument("--request-timeout-s", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_hostile.json"))
    args = parser.parse_args()
    port = _free_port()
    command = [sys.executable, "-m", "introroute.cli", "serve", "--port", str(port)]
    command += ["--request-timeout-s", str(args.request_timeout_s)]
    command += ["--scorer", args.scorer] if args.scorer else []
    server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.perf_counter() - started > 300:
                raise SystemExit("introroute serve did not start")
            time.sleep(0.5)
        big = b'{"messages": [{"role": "user", "content": "' + b"x" * 52_000_000 + b'"}]}'
        many = json.dumps({"messages": [{"role": "user", "content": "hi"}] * 1_000_000}).encode()
        result = {
            "benchmark": "serve_hostile",
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
            "scorer": args.scorer or "shipped adapter",
            "poison": poison(url),
            "body_52mb": refused_body(url, server.pid, big),
            "messages_1e6": refused_body(url, server.pid, many),
            "half_headers": half_headers(url, port, args.connections, args.request_timeout_s),
            "after": {"health": httpx.get(f"{url}/health", timeout=10).status_code, "poison": poison(url)},
            "drip": drip(),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    write_result(args.out, result)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
