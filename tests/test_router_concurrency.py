"""The router under concurrent load: micro-batched scoring, admission control, loading, counters.

Fakes first (timing-controlled, no model), then the real IntroLM on the tiny random Llama:
batched scores equal unbatched ones, and concurrent local-tier answers equal sequential ones.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from router_support import FakeGatekeeper, router_config
from test_gatekeeper import PROMPTS, TARGETS, _gatekeeper

import introroute
from introroute.router import Router
from introroute.training.forward import upcast_trainable

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _router(gatekeeper, **gatekeeper_options) -> Router:
    return Router.from_dict(router_config(gatekeeper=gatekeeper_options), gatekeeper=gatekeeper)


def _decisions(router: Router, n: int, messages=QUESTION) -> list[introroute.Decision]:
    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(lambda _: router.completion(messages=messages), range(n)))
    return [introroute.decision(r) for r in responses]


class CountingGatekeeper(FakeGatekeeper):
    """A fake whose forward takes ``delay_s`` and records which requests ran together."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s=delay_s)
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def scores(self, messages):
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            return super().scores(messages)
        finally:
            with self._lock:
                self.active -= 1


def test_threads_are_scored_in_batches_and_counted():
    gatekeeper = CountingGatekeeper(delay_s=0.02)
    router = _router(gatekeeper, max_batch_size=8, max_wait_ms=20)
    decisions = _decisions(router, 16)
    assert all(d.reason is None and d.tier == "local" for d in decisions)
    assert all(d.gatekeeper_ms >= d.queue_ms >= 0 for d in decisions)
    assert max(d.batch_size for d in decisions) > 1  # requests shared batches
    assert gatekeeper.most_active == 1  # one worker: the model never runs twice at once
    stats = router.stats()
    assert (stats["scored"], stats["shed"], stats["failed"]) == (16, 0, 0)
    assert stats["batches"] < 16 and stats["state"] == "ready"
    router.close()


def test_overload_is_shed_up_front_with_its_reason():
    # A forward takes 0.05 s per request, 0.2 s for a batch of 4, against a 400 ms budget: the
    # first batch fits, one behind it would not.
    router = _router(FakeGatekeeper(delay_s=0.05), timeout_ms=400, max_batch_size=4, max_wait_ms=20)
    router.completion(messages=QUESTION)  # teaches the cost model what a forward costs
    decisions = _decisions(router, 16)
    shed = [d for d in decisions if d.reason == "overload"]
    scored = [d for d in decisions if d.reason is None]
    assert len(shed) >= 4 and len(scored) >= 4
    assert all(d.tier == "large" and d.fail_safe_reason.startswith("gatekeeper overloaded") for d in shed)
    assert max(d.gatekeeper_ms for d in shed) < 40  # decided at once, not after waiting 400 ms
    assert {d.reason for d in decisions} <= {None, "overload", "timeout"}
    stats = router.stats()
    assert stats["shed"] == len(shed) and stats["scored"] == len(scored) + 1
    assert stats["by_reason"].get("overload") == len(shed)
    router.close()


def test_overload_wait_queues_instead_of_shedding():
    router = _router(
        FakeGatekeeper(delay_s=0.05), timeout_ms=2000, max_batch_size=4, max_wait_ms=5, overload="wait"
    )
    router.completion(messages=QUESTION)
    decisions = _decisions(router, 12)
    assert {d.reason for d in decisions} == {None}
    router.close()


def test_the_queue_bound_sheds_even_when_waiting():
    gatekeeper = FakeGatekeeper(delay_s=0.3)
    router = _router(gatekeeper, max_batch_size=1, max_queue=2, overload="wait", max_wait_ms=0)
    decisions = _decisions(router, 6)
    reasons = sorted(str(d.reason) for d in decisions)
    assert reasons.count("overload") >= 2
    full = "gatekeeper overloaded: queue full (2 requests waiting); shedding for "
    assert any((d.fail_safe_reason or "").startswith(full) for d in decisions)
    router.close()


def test_async_budget_holds_while_the_worker_hangs_and_the_loop_stays_free():
    router = _router(FakeGatekeeper(delay_s=0.5), timeout_ms=100, max_wait_ms=0)
    gatekeeping = router._gatekeeping  # scoring alone: LiteLLM's own work on the loop aside

    async def main():
        gaps, stop = [], asyncio.Event()

        async def ticker():
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        start = time.perf_counter()
        scorings = await asyncio.gather(*(gatekeeping.ascore(QUESTION) for _ in range(10)))
        elapsed = time.perf_counter() - start
        stop.set()
        await tick
        return scorings, elapsed, max(gaps)

    scorings, elapsed, worst_gap = asyncio.run(main())
    assert {s.reason for s in scorings} <= {"timeout", "overload"}
    assert all(s.gatekeeper_ms < 300 for s in scorings)  # nobody waited for the 0.5 s forward
    assert elapsed < 0.4
    assert worst_gap < 0.3  # a blocked loop would have stalled for the whole 0.5 s forward
    # ...and through the router, the hung gatekeeper sends requests to the fail-safe tier.
    d = introroute.decision(asyncio.run(router.acompletion(messages=QUESTION)))
    assert d.tier == "large" and d.reason in ("timeout", "overload")
    router.close()


def _heads_only_adapter(directory) -> str:
    """An adapter directory that only lists heads: the router checks targets against it at build
    time, and these tests replace the model load itself."""
    directory.mkdir(exist_ok=True)
    (directory / "introroute.json").write_text(json.dumps({"config": {"targets": ["self", "gpt-4"]}}))
    return str(directory)


def test_background_load_sheds_budgeted_requests_until_ready(monkeypatch, tmp_path):
    adapter = _heads_only_adapter(tmp_path / "adapter")
    release = threading.Event()
    gatekeeper = FakeGatekeeper()
    monkeypatch.setattr(Router, "_load_gatekeeper", lambda self: release.wait(5) and gatekeeper)
    start = time.perf_counter()
    router = Router.from_dict(
        router_config(gatekeeper={"timeout_ms": 200, "load": "background", "adapter": adapter})
    )
    assert time.perf_counter() - start < 1.0  # the constructor did not wait for the model
    d = introroute.decision(router.completion(messages=QUESTION))
    assert (d.tier, d.reason) == ("large", "loading")
    shedding = "shedding for 0.0 s: 1 of 1 requests shed (loading 1)"
    assert d.fail_safe_reason == f"gatekeeper is still loading; {shedding}"
    assert router.stats()["state"] == "loading"
    release.set()
    router._gatekeeping._loader.start(wait=True)
    assert introroute.decision(router.completion(messages=QUESTION)).reason is None
    assert router.stats()["by_reason"] == {"loading": 1}
    router.close()


def test_a_failed_load_is_not_retried_by_every_request(monkeypatch, tmp_path):
    adapter = _heads_only_adapter(tmp_path / "adapter")
    calls = []

    def broken(self):
        calls.append(1)
        raise OSError("weights missing")

    monkeypatch.setattr(Router, "_load_gatekeeper", broken)
    router = Router.from_dict(router_config(gatekeeper={"timeout_ms": 200, "adapter": adapter}))
    decisions = [introroute.decision(router.completion(messages=QUESTION)) for _ in range(5)]
    assert len(calls) == 1
    assert {d.reason for d in decisions} == {"load_failed"}
    assert decisions[0].fail_safe_reason.startswith("gatekeeper failed to load: OSError: weights missing")
    assert router.stats()["failed"] == 5 and router.stats()["state"] == "failed"
    router.close()


# -- the real gatekeeper (tiny random Llama) ------------------------------------------------------

MIXED = [*PROMPTS, [{"role": "user", "content": "one two three four five six seven eight nine ten " * 3}]]


def test_prefill_batch_matches_unbatched_prefill(tiny_base_dir):
    gk = _gatekeeper(tiny_base_dir)
    prompts = [gk.encode(m) for m in MIXED]
    batched = gk.prefill_batch(prompts)
    for prompt, row in zip(prompts, batched, strict=True):
        alone = gk.prefill_batch([prompt])[0]
        np.testing.assert_allclose(list(row.scores.values()), list(alone.scores.values()), atol=1e-5, rtol=0)
        assert row.prompt_tokens == len(prompt.ids) == alone.prompt_tokens
        # A batched row keeps no KV cache: generation prefills it alone, so the answer is the
        # unbatched one exactly (a padded forward's cache differs in the last bits).
        assert row.cache is None and alone.cache.get_seq_length() == len(prompt.ids)
        ours = gk.generate_from(row, max_new_tokens=8)
        assert ours.token_ids == gk.generate_from(alone, max_new_tokens=8).token_ids
    scored = gk.scores_encoded(prompts)
    for row, prefill in zip(scored, batched, strict=True):
        np.testing.assert_allclose(list(row.values()), list(prefill.scores.values()), atol=1e-5, rtol=0)


def test_concurrent_encodes_equal_sequential_ones(tiny_base_dir):
    # The fast tokenizer's special-token splitting is backend state set per call: without the
    # encode lock, a template piece and a user's "[INTRO]" text race for it.
    gk = _gatekeeper(tiny_base_dir)
    conversations = [[{"role": "user", "content": f"x [INTRO] <|im_start|> {i}"}] for i in range(4)]
    expected = [gk.encode(m).ids for m in conversations]
    work = [i % 4 for i in range(400)]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda i: gk.encode(conversations[i]).ids, work))
    assert got == [expected[i] for i in work]


@pytest.mark.parametrize(("dtype", "upcast"), [("float32", False), ("bfloat16", False), ("bfloat16", True)])
def test_fast_path_equals_the_peft_path(arch_dir, dtype, upcast):
    """Every supported architecture (Gemma 3's scaled [INTRO] embedding included), in fp32 and
    bf16, also with fp32 adapter weights over a bf16 base (what ``fit`` trains in)."""
    gk = _gatekeeper(arch_dir, dtype=dtype)
    if upcast:
        upcast_trainable(gk)
        assert next(p for n, p in gk.peft_model.named_parameters() if "lora_A" in n).dtype == torch.float32
    assert gk._view is not None  # the adapter is one the fast path models
    batch = gk.collate([gk.encode(m) for m in MIXED])
    view = gk._view
    try:
        fast = gk.forward_batch(batch, use_cache=True)
        gk._view = None
        slow = gk.forward_batch(batch, use_cache=True)
    finally:
        gk._view = view
    tolerance = 1e-5 if dtype == "float32" else 1e-3
    torch.testing.assert_close(fast.head_logits, slow.head_logits, rtol=tolerance, atol=tolerance)
    for ours, theirs in zip(fast.cache.layers, slow.cache.layers, strict=True):
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)


def test_concurrent_routed_scores_equal_unbatched_scores(tiny_base_dir):
    gk = _gatekeeper(tiny_base_dir)
    expected = {i: gk.scores(m) for i, m in enumerate(MIXED)}
    config = router_config(policy={"type": "threshold", "params": {"tau": 1.0}})
    config["tiers"][1]["target"] = TARGETS[1]
    router = Router.from_dict({**config, "gatekeeper": {"max_wait_ms": 50}}, gatekeeper=gk)
    work = [i % len(MIXED) for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        decisions = list(pool.map(lambda i: router.route(MIXED[i]), work))
    assert max(d.batch_size for d in decisions) > 1
    for i, d in zip(work, decisions, strict=True):
        np.testing.assert_allclose(
            [d.scores[t] for t in TARGETS], [expected[i][t] for t in TARGETS], atol=1e-5, rtol=0
        )
    router.close()


def test_interleaved_local_answers_equal_sequential_ones(tiny_base_dir):
    gk = _gatekeeper(tiny_base_dir)
    config = router_config(policy={"type": "threshold", "params": {"tau": 0.0}})
    config["tiers"][1]["target"] = gk.targets[1]
    router = Router.from_dict({**config, "gatekeeper": {"max_wait_ms": 30}}, gatekeeper=gk)

    def answer(messages):
        response = router.completion(messages=messages, max_tokens=12)
        return response.choices[0].message.content, introroute.decision(response)

    sequential = [answer(m)[0] for m in MIXED]
    work = [i % len(MIXED) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda i: answer(MIXED[i]), work))
    assert all(d.tier == "local" for _, d in concurrent)
    assert [text for text, _ in concurrent] == [sequential[i] for i in work]

    async def streamed(messages):
        stream = await router.acompletion(messages=messages, max_tokens=12, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    async def together():
        return await asyncio.gather(*(streamed(MIXED[i]) for i in work))

    assert asyncio.run(together()) == [sequential[i] for i in work]
    router.close()
