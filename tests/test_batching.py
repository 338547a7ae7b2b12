"""The micro-batcher, its cost model and the gatekeeper loader, without any model."""

from __future__ import annotations

import threading
import time

import pytest

from introroute.router.availability import Loader, Unavailable
from introroute.router.batching import CostModel, MicroBatcher, batch_units


class Gate:
    """A batch function that records its batches and blocks until released."""

    def __init__(self, blocked: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.open = threading.Event()
        if not blocked:
            self.open.set()
        self.started = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.started.set()
        self.open.wait(10)
        return [i * 10 for i in items]


def test_concurrent_items_share_a_batch_and_each_gets_its_own_result():
    gate = Gate(blocked=True)
    batcher = MicroBatcher(gate, max_batch_size=4, max_wait_s=0.0)
    first = batcher.submit(0).future
    assert gate.started.wait(5)  # item 0 runs alone; the next ones queue behind it
    futures = [batcher.submit(i).future for i in range(1, 7)]
    gate.open.set()
    assert first.result(5).value == 0
    results = [f.result(5) for f in futures]
    assert [r.value for r in results] == [10, 20, 30, 40, 50, 60]
    assert gate.batches == [[0], [1, 2, 3, 4], [5, 6]]
    assert [r.batch_size for r in results] == [4, 4, 4, 4, 2, 2]
    assert batcher.batches == 3 and batcher.items == 7
    batcher.close()


def test_a_lone_item_waits_at_most_max_wait_for_company():
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch_size=8, max_wait_s=0.3)
    future = batcher.submit(1).future
    threading.Timer(0.01, lambda: batcher.submit(2)).start()
    assert future.result(5).value == 10
    assert gate.batches[0] == [1, 2]  # the second arrived within the wait and joined
    start = time.perf_counter()
    assert batcher.submit(3).future.result(5).value == 30  # alone: runs once the wait is over
    assert 0.25 < time.perf_counter() - start < 2.0
    batcher.close()


def test_callers_that_come_one_at_a_time_do_not_wait_for_company():
    batcher = MicroBatcher(Gate(), max_batch_size=8, max_wait_s=0.05)
    latencies = []
    for i in range(8):
        start = time.perf_counter()
        batcher.submit(i).future.result(5)
        latencies.append(time.perf_counter() - start)
        time.sleep(0.1)
    assert latencies[0] >= 0.04  # nothing known yet about arrivals: it waits
    assert latencies[-1] < 0.04  # arrivals 0.1 s apart: waiting 0.05 s would gain nothing
    batcher.close()


def test_a_failing_batch_fails_each_of_its_items():
    def explode(items):
        raise ValueError("boom")

    batcher = MicroBatcher(explode, max_wait_s=0.0)
    with pytest.raises(ValueError, match="boom"):
        batcher.submit(1).future.result(5)
    batcher.close()


def test_admission_sheds_up_front_when_the_expected_wait_exceeds_the_budget():
    gate = Gate(blocked=True)
    batcher = MicroBatcher(gate, max_batch_size=2, max_wait_s=0.0, max_queue=3)
    batcher.cost.observe(2, 0.1)  # 0.05 s per unit (an item costs 1 unit)
    running = batcher.submit(0, budget_s=10).future
    assert gate.started.wait(5)
    # Behind the running batch (<= 0.05 s left), one batch of two more (0.1 s) fits 0.2 s...
    assert batcher.submit(1, budget_s=0.2).future is not None
    assert batcher.submit(2, budget_s=0.2).future is not None
    # ...a third needs a batch of its own: ~0.05 + 0.1 + 0.05 = 0.2 s > 0.15 s, refused at once.
    start = time.perf_counter()
    refused = batcher.submit(3, budget_s=0.15)
    assert time.perf_counter() - start < 0.05
    assert refused.future is None and refused.refused.startswith("expected wait")
    assert refused.expected_s == pytest.approx(0.2, abs=0.05)
    # Without shedding it queues, until the queue bound refuses anyway.
    assert batcher.submit(3, budget_s=0.15, shed=False).future is not None
    full = batcher.submit(4, shed=False)
    assert full.future is None and full.refused == "queue full (3 requests waiting)"
    assert batcher.depth() == 3
    gate.open.set()
    assert running.result(5).value == 0
    batcher.close()


def test_a_newcomer_may_not_push_an_admitted_request_past_its_budget():
    gate = Gate(blocked=True)
    batcher = MicroBatcher(gate, max_wait_s=0.0)
    batcher.cost.observe(4, 2.0)  # 0.5 s per unit
    batcher.submit(0, cost=4)  # runs: ~2 s
    assert gate.started.wait(5)
    early = batcher.submit(1, budget_s=2.7)  # done after ~2 + 0.5 s: fits
    assert early.future is not None
    # Alone the next one would fit its own budget, but in the same batch (2 + 1.0 s) the first
    # would miss its 2.7 s: it is refused instead of making the first one time out.
    late = batcher.submit(2, budget_s=10.0)
    assert late.future is None and late.refused.startswith("the next batch is full")
    assert batcher.submit(3, budget_s=10.0, shed=False).future is not None  # wait: no such check
    gate.open.set()
    early.future.result(5)
    batcher.close()


def test_an_idle_worker_admits_despite_a_pessimistic_estimate():
    gate = Gate(blocked=True)
    batcher = MicroBatcher(gate, max_wait_s=0.0)
    batcher.cost.observe(1, 10.0)  # e.g. a warm-up that ran while the machine was swamped
    probe = batcher.submit(0, budget_s=0.1)
    assert probe.future is not None  # nothing ahead of it: its forward re-measures the cost
    assert gate.started.wait(5)
    assert batcher.submit(1, budget_s=0.1).future is None  # behind it, the estimate rules
    gate.open.set()
    probe.future.result(5)
    batcher.close()


def test_cancelled_and_expired_items_cost_no_forward():
    gate = Gate(blocked=True)
    batcher = MicroBatcher(gate, max_batch_size=8, max_wait_s=0.0)
    batcher.submit(0)
    assert gate.started.wait(5)
    cancelled = batcher.submit(1).future
    expired = batcher.submit(2, budget_s=0.01).future
    live = batcher.submit(3).future
    assert cancelled.cancel()
    time.sleep(0.05)
    gate.open.set()
    assert live.result(5).value == 30
    with pytest.raises(TimeoutError):
        expired.result(5)
    assert gate.batches == [[0], [3]]
    batcher.close()


def test_an_overrunning_batch_makes_newcomers_wait_longer():
    gate = Gate(blocked=True)
    batcher = MicroBatcher(gate, max_wait_s=0.0)
    batcher.cost.observe(1, 0.01)
    batcher.submit(0)
    assert gate.started.wait(5)
    time.sleep(0.1)  # ten times its estimate: a hung forward
    assert batcher.expected_wait() >= 0.09
    gate.open.set()
    batcher.close()


def test_cost_model_fits_fixed_and_per_unit_cost():
    model = CostModel()
    assert model.estimate(100) == 0.0
    model.observe(10, 0.02)
    assert model.estimate(20) == pytest.approx(0.04)  # one size seen: proportional
    for units in (10, 40, 80, 10, 40):
        model.observe(units, 0.01 + 0.001 * units)
    fixed, per_unit = model.coefficients()
    assert fixed == pytest.approx(0.01, rel=0.05) and per_unit == pytest.approx(0.001, rel=0.05)
    assert batch_units([3, 7, 5]) == 21
    steady = model.spread
    for seconds in (0.03, 0.09, 0.03, 0.09):  # 40 units, estimated ~0.05 s: +-50% noise
        model.observe(40, seconds)
    assert model.spread > steady + 0.2  # admission then plans with a margin


def test_loader_backs_off_instead_of_retrying_per_request():
    calls = []
    now = [0.0]

    def factory():
        calls.append(now[0])
        raise OSError("no weights")

    loader = Loader(factory, clock=lambda: now[0])
    loader.start(wait=True)
    assert loader.state == "failed"
    for _ in range(5):  # requests during the back-off fail fast, without a new attempt
        with pytest.raises(Unavailable, match="failed to load: OSError: no weights") as info:
            loader.get(timeout=None)
        assert info.value.reason == "load_failed"
    assert len(calls) == 1
    now[0] = 1.5  # past the first back-off (1 s): the next request starts one retry
    with pytest.raises(Unavailable):
        loader.get(timeout=None)
    assert len(calls) == 2
    now[0] = 3.0  # the second back-off is 2 s
    with pytest.raises(Unavailable):
        loader.get(timeout=None)
    assert len(calls) == 2


def test_loader_in_background_reports_loading_then_serves():
    release = threading.Event()
    loader = Loader(lambda: release.wait(5) and "model")
    loader.start()
    with pytest.raises(Unavailable) as info:
        loader.get(timeout=0.0)
    assert info.value.reason == "loading"
    release.set()
    assert loader.get(timeout=None) == "model"
    assert loader.state == "ready" and loader.load_s is not None
