"""``introroute serve``: batched scoring over HTTP, 400s that name the problem, health and metrics,
load shedding, and routers that call it by URL (concurrently, within their budget, torch-free)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_support import (
    ROOT,
    KeywordScorer,
    free_port,
    keyword_scores,
    remote_router_config,
    serve_in_thread,
    stop,
    subprocess_env,
    wait_for_http,
)

from introroute import decision
from introroute.errors import GatekeeperError, MessagesError
from introroute.router import Router
from introroute.router.gatekeeping import BatchingOptions
from introroute.router.remote import RemoteScorer
from introroute.server.app import create_app

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _question(i: int, hard: bool = False) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{'a hard' if hard else 'an easy'} question number {i}"}]


def _app(scorer: KeywordScorer, *, delay_s: float = 0.0, **batching):
    """The app for ``scorer``, its warm-up forwards forgotten, then ``delay_s`` per forward."""
    app = create_app(scorer, batching=BatchingOptions(**batching))
    scorer.batches.clear()
    scorer.delay_s = delay_s
    return app


async def _post_many(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=10) as client:
        return await asyncio.gather(*(client.post(f"{url}/score", json=b) for b in bodies))


async def _post_many_and_raw(
    url: str, bodies: list[dict], raw: str
) -> tuple[list[httpx.Response], httpx.Response]:
    """``bodies`` as JSON and one raw JSON text (for what httpx would not encode), all at once."""
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=10) as client:
        *good, bad = await asyncio.gather(
            *(client.post(f"{url}/score", json=b) for b in bodies),
            client.post(f"{url}/score", content=raw, headers=headers),
        )
    return good, bad


def test_concurrent_requests_share_forwards_and_each_gets_its_own_scores():
    scorer = KeywordScorer()
    with serve_in_thread(_app(scorer, delay_s=0.05, max_batch_size=8, max_wait_s=0.02)) as url:
        bodies = [{"messages": _question(i, hard=i % 3 == 0)} for i in range(20)]
        responses = asyncio.run(_post_many(url, bodies))
        metrics = httpx.get(f"{url}/metrics", params={"format": "json"}).json()
        prometheus = httpx.get(f"{url}/metrics").text
    assert [r.status_code for r in responses] == [200] * 20
    for body, response in zip(bodies, responses, strict=True):
        assert response.json()["scores"] == pytest.approx(keyword_scores(body["messages"]))
    assert sum(scorer.batches) == 20 and len(scorer.batches) < 20 and max(scorer.batches) <= 8
    assert metrics["scored"] == 20 and metrics["batches"] == len(scorer.batches)
    assert metrics["mean_batch_size"] > 1 and metrics["latency_ms"]["p95"] is not None
    assert "introroute_scored_total 20" in prometheus


def test_health_and_target_subsets():
    with serve_in_thread(create_app(KeywordScorer())) as url:
        health = httpx.get(f"{url}/health").json()
        subset = httpx.post(f"{url}/score", json={"messages": QUESTION, "targets": ["gpt-4"]}).json()
    assert health["status"] == "ok" and health["targets"] == ["self", "gpt-4"]
    assert subset["scores"] == {"gpt-4": 0.9} and subset["batch_size"] == 1


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        ({"messages": []}, "messages must contain at least one message"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role is 'wizard'"),
        ({"messages": "hello"}, "messages: Input should be a valid list"),
        ({"prompt": "hello"}, "messages: Field required"),
        ({"messages": QUESTION, "targets": ["gpt-5"]}, "unknown targets ['gpt-5']"),
    ],
)
def test_bad_requests_are_400s_that_name_the_cause(body, cause):
    scorer = KeywordScorer()
    with serve_in_thread(_app(scorer)) as url:
        response = httpx.post(f"{url}/score", json=body)
        rejected = httpx.get(f"{url}/metrics", params={"format": "json"}).json()["rejected"]
    assert response.status_code == 400, response.text
    assert cause in response.json()["error"]["message"]
    assert scorer.batches == [] and rejected == 1  # never reached the model


def test_a_full_queue_sheds_at_once_with_503_and_retry_after():
    scorer = KeywordScorer()
    with serve_in_thread(_app(scorer, delay_s=1.0, max_batch_size=1, max_wait_s=0, max_queue=2)) as url:
        responses = asyncio.run(_post_many(url, [{"messages": _question(i)} for i in range(8)]))
        metrics = httpx.get(f"{url}/metrics", params={"format": "json"}).json()
    shed = [r for r in responses if r.status_code == 503]
    assert shed and all(r.headers["retry-after"] == "1" for r in shed)
    assert {r.status_code for r in responses} == {200, 503}
    assert metrics["shed"] == len(shed) and metrics["scored"] == 8 - len(shed)
    # Shed at once: none of them waited for even one forward (1 s) to finish.
    assert max(r.elapsed.total_seconds() for r in shed) < 0.9


def test_scorer_failure_is_a_500_that_names_no_internals_and_is_logged(caplog):
    scorer = KeywordScorer()
    app = _app(scorer)
    scorer.fail = RuntimeError("CUDA out of memory at /opt/secret/path")
    with serve_in_thread(app) as url:
        response = httpx.post(f"{url}/score", json={"messages": QUESTION})
        remote = RemoteScorer(url)
        with pytest.raises(
            GatekeeperError, match=r"answered 500: gatekeeper error \(error\); see the server log"
        ):
            remote.scores(QUESTION)
        with pytest.raises(MessagesError, match="messages must contain at least one message"):
            remote.scores([])
        remote.close()
    assert response.status_code == 500
    assert "CUDA" not in response.text and "RuntimeError" not in response.text
    assert "RuntimeError: CUDA out of memory" in caplog.text  # the operator still sees it


def test_router_by_url_routes_on_remote_scores_and_records_them():
    with serve_in_thread(create_app(KeywordScorer())) as url:
        router = Router.from_dict(remote_router_config(url, timeout_ms=2000))
        easy = router.completion(messages=_question(1))
        hard = router.completion(messages=_question(2, hard=True))
    assert (decision(easy).tier, decision(hard).tier) == ("cheap", "strong")
    assert decision(easy).scores == pytest.approx(keyword_scores(_question(1)))
    assert decision(easy).gatekeeper_ms is not None and decision(easy).fail_safe_reason is None


def test_async_requests_through_a_router_reach_the_server_together():
    """The in-process gatekeeper's single worker must not serialise remote calls: they batch."""
    scorer = KeywordScorer()
    with serve_in_thread(_app(scorer, delay_s=0.05, max_batch_size=16, max_wait_s=0.02)) as url:
        router = Router.from_dict(remote_router_config(url, timeout_ms=3000))

        async def run() -> list:
            return await asyncio.gather(
                *(router.acompletion(messages=_question(i, i % 2 == 0)) for i in range(16))
            )

        responses = asyncio.run(run())
    tiers = [decision(r).tier for r in responses]
    assert tiers == ["strong" if i % 2 == 0 else "cheap" for i in range(16)]
    assert len(scorer.batches) < 16 and max(scorer.batches) > 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_slow_or_missing_server_sends_requests_to_the_fail_safe_tier_within_the_budget(mode):
    with serve_in_thread(_app(KeywordScorer(), delay_s=3.0)) as url:
        router = Router.from_dict(remote_router_config(url, timeout_ms=150))
        started = time.perf_counter()
        slow = router.route(QUESTION) if mode == "sync" else asyncio.run(router.aroute(QUESTION))
        waited = time.perf_counter() - started
    assert slow.tier == "strong" and slow.fail_safe_reason == "gatekeeper exceeded its time budget of 150 ms"
    assert waited < 2.0  # the budget, not the 3 s forward (generous: shared CI machines)
    gone = Router.from_dict(remote_router_config(f"http://127.0.0.1:{free_port()}", timeout_ms=500)).route(
        QUESTION
    )
    assert gone.tier == "strong" and "unreachable: ConnectError" in gone.fail_safe_reason


def test_remote_gatekeeper_config_is_validated():
    from introroute.errors import ConfigError

    config = remote_router_config("http://127.0.0.1:1")
    config["gatekeeper"]["adapter"] = "my-adapter/"
    with pytest.raises(
        ConfigError, match=r"gatekeeper: \['adapter'\] configure the model of a local gatekeeper"
    ):
        Router.from_dict(config)
    config = remote_router_config("http://127.0.0.1:1")
    config["tiers"][0].pop("litellm_params")
    with pytest.raises(ConfigError, match="a remote gatekeeper cannot generate"):
        Router.from_dict(config)
    with pytest.raises(ConfigError, match=r"gatekeeper\.url"):
        Router.from_dict(remote_router_config("127.0.0.1:8765"))


def test_introlm_scores_over_http_equal_in_process_scores(tiny_base_dir):
    """Mixed prompt lengths batched together: each equals its unbatched score within 1e-5."""
    from introroute.gatekeeper import IntroConfig, IntroLM, load_base

    gk = IntroLM.build(load_base(tiny_base_dir), IntroConfig(targets=["self", "gpt-4"]))
    gk.eval()
    prompts = [[{"role": "user", "content": "word " * n + f"end {n}"}] for n in (1, 7, 30, 3, 12, 60)]
    with serve_in_thread(create_app(gk, batching=BatchingOptions(max_batch_size=8, max_wait_s=0.05))) as url:
        # A lone surrogate is valid JSON and a valid Python str, but no tokenizer takes it: it once
        # failed every request batched with it (500s); now it is its own 400.
        poison = json.dumps({"messages": [{"role": "user", "content": "caf\ud800"}]})
        responses, bad = asyncio.run(_post_many_and_raw(url, [{"messages": p} for p in prompts], poison))
    assert (
        bad.status_code == 400
        and "messages[0].content is not valid Unicode" in bad.json()["error"]["message"]
    )
    assert max(r.json()["batch_size"] for r in responses) > 1
    for prompt, response in zip(prompts, responses, strict=True):
        assert response.json()["scores"] == pytest.approx(gk.scores(prompt), abs=1e-5)


@pytest.mark.parametrize(("flag", "expected"), [([], True), (["--no-prefix-cache"], False)])
def test_serve_prefix_cache_flag_overrides_the_adapter(tiny_base_dir, tmp_path, flag, expected):
    import argparse

    from introroute.cli import serve
    from introroute.gatekeeper import IntroConfig, IntroLM, load_base

    IntroLM.build(load_base(tiny_base_dir), IntroConfig(targets=["self"])).save_pretrained(
        str(tmp_path / "a")
    )
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    args = parser.parse_args(["--adapter", str(tmp_path / "a"), "--base", str(tiny_base_dir), *flag])
    assert serve.load_scorer(args).config.prefix_cache is expected


TORCH_FREE = """
import asyncio, json, sys
from litellm.types.router import RoutingContext
from introroute.integrations.litellm_complexity import IntrorouteClassifier
from introroute.router import Router
router = Router.from_dict(json.loads(sys.argv[1]))
plugin = IntrorouteClassifier(router)
context = RoutingContext(raw_messages=[], structured_messages=json.loads(sys.argv[2]), candidate_models=[])
tier = asyncio.run(plugin.classify(context))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "peft"))
print(json.dumps({"tier": tier, "route": router.route(json.loads(sys.argv[2])).tier, "heavy": heavy}))
"""


def test_cli_serves_and_a_routing_process_never_imports_torch(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "introroute.cli", "serve", "--port", str(port)]
    command += ["--scorer", "server_support:keyword_scorer", "--max-wait-ms", "2"]
    with log.open("w") as out:
        server = subprocess.Popen(
            command, cwd=ROOT, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server, timeout_s=120, log=log)
        config = remote_router_config(f"http://127.0.0.1:{port}", timeout_ms=5000)
        child = subprocess.run(
            [sys.executable, "-c", TORCH_FREE, json.dumps(config), json.dumps(_question(3, hard=True))],
            cwd=ROOT,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        stop(server)
    assert child.returncode == 0, child.stderr[-3000:]
    assert json.loads(child.stdout.strip().splitlines()[-1]) == {
        "tier": "strong",
        "route": "strong",
        "heavy": [],
    }
    assert "KeywordScorer targets=['self', 'gpt-4']" in log.read_text()
