"""``introroute serve`` against hostile or broken clients, and routers against a broken server.

The server: a poison request never fails the requests batched with it, bodies and conversations
are bounded, slow clients are disconnected, errors name no internals, an API key guards /score and
/metrics. The client: one overall deadline on the sync path as on the async one (a server that
drips its body a byte at a time), a 503 is load shedding (``overload``), and a remote router starts
no micro-batcher thread. Everything runs on 127.0.0.1, every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_support import (
    UNREADABLE,
    FaultyGatekeeperServer,
    KeywordScorer,
    keyword_scores,
    remote_router_config,
    serve_in_thread,
)

from introroute.router import Router
from introroute.router.gatekeeping import BatchingOptions
from introroute.server.app import create_app
from introroute.server.options import ServeOptions

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _app(scorer: KeywordScorer, *, delay_s: float = 0.0, batching: BatchingOptions | None = None, **options):
    app = create_app(scorer, batching=batching, options=ServeOptions(**options))
    scorer.batches.clear()  # forget the warm-up forwards
    scorer.delay_s = delay_s
    return app


def _metrics(url: str, **headers: str) -> dict:
    return httpx.get(f"{url}/metrics", params={"format": "json"}, headers=headers).json()


# -- a poison request is its own 400 ---------------------------------------------------------------


def test_a_poison_request_gets_its_own_400_and_never_fails_the_requests_batched_with_it():
    scorer = KeywordScorer()
    batching = BatchingOptions(max_batch_size=16, max_wait_s=0.05)
    good = [{"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(14)]
    unreadable = {"messages": [{"role": "user", "content": f"{UNREADABLE} question"}]}
    surrogate = json.dumps({"messages": [{"role": "user", "content": "caf\ud800"}]})  # \ud800 escaped

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as client:
            headers = {"Content-Type": "application/json"}
            return await asyncio.gather(
                *(client.post(f"{url}/score", json=b) for b in [*good, unreadable]),
                client.post(f"{url}/score", content=surrogate, headers=headers),
            )

    with serve_in_thread(_app(scorer, delay_s=0.05, batching=batching)) as url:
        *answers, bad_text, bad_unicode = asyncio.run(burst(url))
        metrics = _metrics(url)
    assert [r.status_code for r in answers] == [200] * 14
    for body, response in zip(good, answers, strict=True):
        assert response.json()["scores"] == pytest.approx(keyword_scores(body["messages"]))
    assert max(r.json()["batch_size"] for r in answers) > 1  # they were batched together
    assert bad_text.status_code == 400 and "cannot be tokenised" in bad_text.json()["error"]["message"]
    assert bad_unicode.status_code == 400
    assert "lone surrogate" in bad_unicode.json()["error"]["message"]
    assert sum(scorer.batches) == 14  # neither poison request reached a forward
    assert metrics["scored"] == 14 and metrics["rejected"] == 2
    assert metrics["by_reason"] == {"invalid_request": 1}  # the other never left validation


# -- sizes ------------------------------------------------------------------------------------------


def test_bodies_messages_and_characters_are_bounded_before_the_model():
    scorer = KeywordScorer()
    app = _app(scorer, max_body_bytes=4096, max_messages=3, max_chars=200)
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 8000}]})
    headers = {"Content-Type": "application/json"}
    with serve_in_thread(app) as url:
        declared = httpx.post(f"{url}/score", content=big, headers=headers)
        # No Content-Length (chunked): the server counts what arrives and stops at the limit.
        chunked = httpx.post(
            f"{url}/score", content=(big[i : i + 1000].encode() for i in range(0, 8000, 1000))
        )
        many = httpx.post(f"{url}/score", json={"messages": QUESTION * 4})
        long = httpx.post(f"{url}/score", json={"messages": [{"role": "user", "content": "word " * 50}]})
        nested = httpx.post(f"{url}/score", content="[" * 2000 + "]" * 2000, headers=headers)
        fine = httpx.post(f"{url}/score", json={"messages": QUESTION})
        health = httpx.get(f"{url}/health")
        metrics = _metrics(url)
    assert (declared.status_code, chunked.status_code) == (413, 413)
    assert many.status_code == 400 and "4 messages; this server takes at most 3" in many.text
    assert long.status_code == 400 and "250 characters of message text" in long.text
    assert nested.status_code == 400 and nested.json()["error"]["type"] == "invalid_request_error"
    assert fine.status_code == 200 and health.status_code == 200
    assert scorer.batches == [1]  # only the fine request reached the model
    assert "Content Too Large" in declared.text and "Content Too Large" in chunked.text
    assert metrics["requests"] == 6 and metrics["rejected"] == 5


# -- slow clients -----------------------------------------------------------------------------------


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closes ``sock`` (reads EOF or a reset) within ``within_s``."""
    sock.settimeout(within_s)
    try:
        while sock.recv(1024):
            pass  # a 4xx the server chose to send before closing is fine too
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_slow_clients_are_disconnected_and_others_still_served():
    app = _app(KeywordScorer(), request_timeout_s=0.5)
    with serve_in_thread(app) as url:
        port = int(url.rsplit(":", 1)[1])
        half_header = socket.create_connection(("127.0.0.1", port), timeout=5)
        half_header.sendall(b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        stalled_body = socket.create_connection(("127.0.0.1", port), timeout=5)
        stalled_body.sendall(
            b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 500\r\n\r\n{"messages": '
        )
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            closed = [_closed_by_server(s, within_s=8.0) for s in (half_header, stalled_body, silent)]
        finally:
            for s in (half_header, stalled_body, silent):
                s.close()
        served = httpx.post(f"{url}/score", json={"messages": QUESTION})
    assert closed == [True, True, True]
    assert served.status_code == 200


def test_a_dripping_header_does_not_keep_its_connection_alive():
    """uvicorn's keep-alive timer restarts on every byte; the request deadline does not."""
    with serve_in_thread(_app(KeywordScorer(), request_timeout_s=0.5)) as url:
        port = int(url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        header = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200
        sent, closed_early = 0, False
        try:
            for byte in header:  # one byte every 50 ms: 10 s to send all of it
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.05)
        except OSError:
            closed_early = True
        finally:
            sock.close()
    assert closed_early and sent < len(header)


# -- auth -------------------------------------------------------------------------------------------


def test_api_key_guards_score_and_metrics_and_health_stays_open():
    key = "s3cret-serve-key"
    with serve_in_thread(_app(KeywordScorer(), api_key=key)) as url:
        health = httpx.get(f"{url}/health")
        anonymous = httpx.post(f"{url}/score", json={"messages": QUESTION})
        wrong = httpx.post(
            f"{url}/score", json={"messages": QUESTION}, headers={"Authorization": "Bearer nope"}
        )
        metrics_anonymous = httpx.get(f"{url}/metrics")
        good = httpx.post(
            f"{url}/score", json={"messages": QUESTION}, headers={"Authorization": f"Bearer {key}"}
        )
        metrics = _metrics(url, Authorization=f"Bearer {key}")
        keyed = Router.from_dict(remote_router_config(url, timeout_ms=5000, api_key=key))
        keyless = Router.from_dict(remote_router_config(url, timeout_ms=5000))
        routed, refused = keyed.route(QUESTION), keyless.route(QUESTION)
    assert health.status_code == 200
    assert [anonymous.status_code, wrong.status_code, metrics_anonymous.status_code] == [401, 401, 401]
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert good.status_code == 200 and metrics["scored"] == 1
    assert routed.fail_safe_reason is None and routed.scores == pytest.approx(keyword_scores(QUESTION))
    assert refused.reason == "error" and "answered 401" in refused.fail_safe_reason
    assert key not in repr(keyed.config) and key not in json.dumps(routed.model_dump(mode="json"))


# -- the client: one deadline, named reasons, no idle thread ----------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dripping_server_cannot_stretch_the_budget(mode):
    """Each byte arrives well within httpx's read timeout; only an overall deadline stops it."""
    with FaultyGatekeeperServer("drip", drip_s=0.1) as server:  # ~10 s to send the whole body
        router = Router.from_dict(remote_router_config(server.url, timeout_ms=500))
        started = time.perf_counter()
        routed = router.route(QUESTION) if mode == "sync" else asyncio.run(router.aroute(QUESTION))
        waited = time.perf_counter() - started
    assert routed.tier == "strong" and routed.reason == "timeout"
    assert waited < 5.0  # the 0.5 s budget, not the ~10 s drip (generous: shared CI machines)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_503_from_the_server_is_load_shedding(mode):
    with FaultyGatekeeperServer("503") as server:
        router = Router.from_dict(remote_router_config(server.url, timeout_ms=2000))
        routed = router.route(QUESTION) if mode == "sync" else asyncio.run(router.aroute(QUESTION))
    assert routed.tier == "strong" and routed.reason == "overload"
    assert "shed the request: queue full" in routed.fail_safe_reason
    assert router.stats()["shed"] == 1 and router.stats()["failed"] == 0


def test_a_remote_router_starts_no_batching_worker():
    def workers() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("introroute-gk")}

    before = workers()
    with FaultyGatekeeperServer("ok") as server:  # no gatekeeper (and no worker) of its own
        router = Router.from_dict(remote_router_config(server.url, timeout_ms=5000))
        routed = router.route(QUESTION)
        asyncio.run(router.aroute(QUESTION))
        started = workers() - before
    assert routed.fail_safe_reason is None and server.calls == 2
    assert started == set()


def test_closing_a_remote_router_stops_the_client_it_built():
    # Compared by identity: loop threads that other tests left may end at any moment, so a count is racy.
    def loops() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "introroute-remote" and t.is_alive()}

    before = loops()
    with FaultyGatekeeperServer("ok") as server:
        router = Router.from_dict(remote_router_config(server.url, timeout_ms=5000))
        assert router.route(QUESTION).fail_safe_reason is None  # the sync path starts its loop thread
        started = loops() - before
        assert len(started) == 1
        router.close()
    (thread,) = started
    thread.join(timeout=10)
    assert not thread.is_alive()


# -- old option names still work --------------------------------------------------------------------


def test_old_batching_names_still_work_with_a_deprecation():
    from introroute.cli import serve

    with pytest.warns(DeprecationWarning, match="batching=BatchingOptions"):
        app = create_app(KeywordScorer(), max_batch=3, max_wait_ms=7, max_queue=9)
    assert app.state.gatekeeping.options == BatchingOptions(max_batch_size=3, max_wait_s=0.007, max_queue=9)
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    assert serve.batching_options(parser.parse_args(["--max-batch", "4"])).max_batch_size == 4
    assert serve.batching_options(parser.parse_args([])) == BatchingOptions()
