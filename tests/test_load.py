"""Load: a budget measured on the machine, shedding said out loud, generation beside scoring.

Fakes for the budget and the shed log (no model, a fake clock), then the tiny random Llama for
local answers: equal to sequential ones under concurrency, and scoring that goes on while a
decode step is parked mid-forward.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from router_support import FakeGatekeeper, router_config
from test_gatekeeper import TARGETS, _gatekeeper
from test_router_concurrency import MIXED, QUESTION

import introroute
from introroute.errors import ConfigError
from introroute.router import Router
from introroute.router.gatekeeping import ShedLog

GATEKEEPING_LOG = "introroute.router.gatekeeping"


def test_shedding_is_reported_when_it_starts_while_it_lasts_and_when_it_stops(caplog):
    now = [0.0]
    log = ShedLog("r", interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=GATEKEEPING_LOG):
        assert log.record(None) is None  # scored while calm: nothing to say
        assert log.record("overload") == "shedding for 0.0 s: 1 of 1 requests shed (overload 1)"
        for t in range(1, 10):  # within the interval: counted, not logged
            now[0] = float(t)
            log.record("overload")
            assert (
                log.record(None)
                == f"shedding for {t}.0 s: {t + 1} of {2 * t + 1} requests shed (overload {t + 1})"
            )
        now[0] = 10.0
        log.record("loading")
        now[0] = 15.0
        log.record(None)  # 5 s without a shed: still an episode
        assert log.shedding
        now[0] = 21.0
        assert log.record(None) is None  # 11 s without a shed: it stopped
        assert not log.shedding
        assert log.record(None) is None
    messages = [r.getMessage() for r in caplog.records]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert messages == [
        "introroute r: shedding started (reason overload): requests go to the fail-safe tier unscored "
        "until it keeps up",
        "introroute r: still shedding: 11 of 20 requests shed (loading 1, overload 10) in the last 10 s "
        "(11 of 20 requests shed (loading 1, overload 10) since it started 10 s ago)",
        "introroute r: shedding stopped after 21 s: 11 of 22 requests shed (loading 1, overload 10)",
    ]


def test_auto_budget_is_measured_at_load_and_fits_the_callers_it_names():
    # One call per request of >= 20 ms: 16 simultaneous requests take >= 320 ms, so the budget
    # is at least twice that, and 16 callers are scored within it.
    gatekeeper = FakeGatekeeper(delay_s=0.02)
    config = router_config(gatekeeper={"timeout_ms": "auto", "budget_callers": 16, "max_wait_ms": 5})
    router = Router.from_dict(config, gatekeeper=gatekeeper)
    budget_ms = router.stats()["budget_ms"]
    assert budget_ms >= 2 * 16 * 20
    with ThreadPoolExecutor(16) as pool:
        decisions = list(pool.map(lambda _: router.route(QUESTION), range(16)))
    scored = [d for d in decisions if d.reason is None]
    assert len(scored) >= 15, [d.fail_safe_reason for d in decisions]
    assert router.stats()["budget_ms"] == budget_ms  # fixed at load, not floating with the load
    router.close()


def test_auto_budget_is_refused_for_a_remote_gatekeeper():
    with pytest.raises(ConfigError, match="auto"):
        Router.from_dict(router_config(gatekeeper={"url": "http://127.0.0.1:9", "timeout_ms": "auto"}))


def test_a_shed_decision_says_how_long_shedding_has_lasted():
    # Batches of one 0.3 s call and two waiting at most: the third and later requests are shed.
    router = Router.from_dict(
        router_config(gatekeeper={"max_batch_size": 1, "max_queue": 2, "overload": "wait", "max_wait_ms": 0}),
        gatekeeper=FakeGatekeeper(delay_s=0.3),
    )
    with ThreadPoolExecutor(6) as pool:
        decisions = list(pool.map(lambda _: router.route(QUESTION), range(6)))
    shed = [d for d in decisions if d.reason == "overload"]
    assert shed
    assert all(" requests shed (overload " in d.fail_safe_reason for d in shed)
    assert router.stats()["shedding"]
    router.close()


def _local_router(gk, **gatekeeper_options) -> Router:
    config = router_config(policy={"type": "threshold", "params": {"tau": 0.0}})
    config["tiers"][1]["target"] = TARGETS[1]
    return Router.from_dict({**config, "gatekeeper": gatekeeper_options}, gatekeeper=gk)


def _answer(router: Router, messages) -> tuple[str, introroute.Decision]:
    response = router.completion(messages=messages, max_tokens=12)
    return response.choices[0].message.content, introroute.decision(response)


@pytest.mark.parametrize("max_generations", [None, 1])
def test_concurrent_local_answers_equal_sequential_ones(tiny_base_dir, max_generations):
    # None: eight decodes at once, none under the scoring lock; 1: one at a time, in a queue.
    gk = _gatekeeper(tiny_base_dir)
    router = _local_router(gk, max_wait_ms=30, max_generations=max_generations)
    sequential = [_answer(router, m)[0] for m in MIXED]
    work = [i % len(MIXED) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda i: _answer(router, MIXED[i]), work))
    assert all(d.tier == "local" for _, d in concurrent)
    assert [text for text, _ in concurrent] == [sequential[i] for i in work]
    router.close()


def test_scoring_proceeds_while_a_decode_step_is_parked(tiny_base_dir):
    gk = _gatekeeper(tiny_base_dir)
    router = _local_router(gk, timeout_ms=10_000, max_wait_ms=0)
    expected = _answer(router, MIXED[0])[0]
    inside, release = threading.Event(), threading.Event()
    step = gk.plain.forward
    calls = 0

    def parked(*args, **kwargs):  # the plain view runs decode steps only
        nonlocal calls
        calls += 1
        if calls == 3:
            inside.set()
            assert release.wait(30)
        return step(*args, **kwargs)

    gk.plain.forward = parked
    try:
        with ThreadPoolExecutor(1) as pool:
            local = pool.submit(_answer, router, MIXED[0])
            assert inside.wait(30)  # a generation is in the middle of a decode step
            scored = [router.route(m) for m in MIXED[1:]]
            assert not local.done()
            release.set()
            text, decision = local.result(timeout=30)
    finally:
        release.set()
        del gk.plain.forward
    assert all(d.reason is None for d in scored), [d.fail_safe_reason for d in scored]
    assert (text, decision.tier) == (expected, "local")
    router.close()


def test_async_streams_waiting_for_the_one_slot_all_finish_and_an_abandoned_one_frees_it(tiny_base_dir):
    # More streams than asyncio's default executor has workers, all waiting for one slot: each
    # stream waits on a thread of its own, so the one holding the slot always gets to go on.
    gk = _gatekeeper(tiny_base_dir)
    router = _local_router(gk, max_wait_ms=30, max_generations=1)
    sequential = [_answer(router, m)[0] for m in MIXED]
    work = [i % len(MIXED) for i in range(12)]

    async def streamed(messages) -> str:
        stream = await router.acompletion(messages=messages, max_tokens=12, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    async def abandoned_then_answered() -> str:
        stream = await router.acompletion(messages=MIXED[0], max_tokens=12, stream=True)
        async for _ in stream:
            break  # the caller stops reading: the slot must not stay taken
        await stream.aclose()
        return await asyncio.wait_for(streamed(MIXED[1]), timeout=60)

    async def together():
        return await asyncio.wait_for(asyncio.gather(*(streamed(MIXED[i]) for i in work)), timeout=120)

    assert asyncio.run(together()) == [sequential[i] for i in work]
    assert asyncio.run(abandoned_then_answered()) == sequential[1]
    router.close()
