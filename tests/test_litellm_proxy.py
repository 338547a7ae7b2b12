"""The real LiteLLM Proxy with ``examples/litellm_proxy_config.yaml``: introroute as the complexity
router's classifier plugin, the gatekeeper behind ``introroute serve``, the official ``openai``
client on 127.0.0.1.

One proxy serves the whole module (it takes tens of seconds to start). The example's two upstream
deployments are pointed at a loopback fake OpenAI server, the router YAML at a gatekeeper server
running a keyword scorer ("hard" questions go to the strong tier); everything else is the shipped
example. Checked: plain, streaming and 20 concurrent calls answered by the tier introroute chose
and saying so in headers; bad messages are 400s with the cause and reach no upstream; upstream
400s pass through once; 5xxs cost LiteLLM's retries and fallback only; the proxy never imports
torch; a dead gatekeeper sends requests to LiteLLM's fallback tier.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import httpx
import pytest
import yaml

# Importing litellm.proxy.proxy_server here would cost the test process 15 s: look the proxy's
# dependencies up instead (the proxy itself runs in a child process).
_MISSING = [
    m
    for m in ("fastapi", "uvicorn", "apscheduler", "orjson", "backoff", "websockets", "mcp")
    if not find_spec(m)
]
if _MISSING:
    pytest.skip(
        f"the LiteLLM Proxy's dependencies {_MISSING} are missing: pip install '.[proxy]'",
        allow_module_level=True,
    )
openai = pytest.importorskip("openai")

from router_support import OpenAIServer  # noqa: E402
from server_support import ROOT, free_port, stop, subprocess_env, wait_for_http  # noqa: E402

MASTER_KEY = "sk-introroute-proxy-test-0001"
TIER = "x-litellm-complexity-router-tier"
CAUSE = "x-litellm-complexity-router-cause"
STARTUP_S = 400  # a cold proxy imports for ~20 s; shared CI machines have been seen 10x slower

# Writes which heavy modules the proxy process has imported to a file, twice a second, then runs
# the proxy exactly as `litellm --config ...` does.
LAUNCH = """
import json, os, runpy, sys, threading, time
report = sys.argv.pop(1)
def watch():
    while True:
        heavy = sorted(m for m in list(sys.modules) if m.split(".")[0] in ("torch", "transformers", "peft"))
        plugin = "introroute.integrations.litellm_complexity" in sys.modules
        with open(report + ".tmp", "w") as f:
            json.dump({"heavy": heavy, "plugin": plugin}, f)
        os.replace(report + ".tmp", report)
        time.sleep(0.5)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ["litellm"] + sys.argv[1:]
runpy.run_module("litellm.proxy.proxy_cli", run_name="__main__")
"""


@dataclass
class Proxy:
    url: str
    upstream: OpenAIServer
    gatekeeper: subprocess.Popen
    gatekeeper_url: str
    report: Path
    startup_s: float

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=MASTER_KEY, max_retries=0, timeout=60, **kw)

    def upstream_models(self) -> list[str]:
        return [r["model"] for r in self.upstream.requests]

    def gatekeeper_metrics(self) -> dict:
        return httpx.get(f"{self.gatekeeper_url}/metrics", params={"format": "json"}, timeout=5).json()


def _write_configs(tmp: Path, upstream: OpenAIServer, gatekeeper_url: str) -> Path:
    proxy_config = yaml.safe_load((ROOT / "examples" / "litellm_proxy_config.yaml").read_text())
    for deployment in proxy_config["model_list"]:
        params = deployment["litellm_params"]
        if params["model"].startswith("openai/"):  # the upstreams: a loopback fake, not api.openai.com
            params.update(
                api_base=upstream.url, api_key="sk-upstream-fake", model=f"openai/fake-{params['model'][7:]}"
            )
    # Budgets for a shared, overloaded test machine, not for production (the example's are).
    proxy_config["model_list"][0]["litellm_params"]["complexity_router_config"][
        "classifier_plugin_timeout_ms"
    ] = 60000
    (tmp / "proxy.yaml").write_text(yaml.safe_dump(proxy_config))
    router = yaml.safe_load((ROOT / "examples" / "proxy_router.yaml").read_text())
    router["gatekeeper"].update(url=gatekeeper_url, timeout_ms=30000)
    for tier, target in zip(router["tiers"], ["self", "gpt-4"], strict=True):
        tier["target"] = target  # the keyword scorer's targets
    (tmp / "router.yaml").write_text(yaml.safe_dump(router))
    return tmp / "proxy.yaml"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proxy")
    upstream = OpenAIServer().start()
    gk_port, proxy_port = free_port(), free_port()
    gatekeeper_url = f"http://127.0.0.1:{gk_port}"
    serve = [sys.executable, "-m", "introroute.cli", "serve", "--port", str(gk_port)]
    serve += ["--scorer", "server_support:keyword_scorer", "--max-wait-ms", "5"]
    gk_log, proxy_log = tmp / "serve.log", tmp / "proxy.log"
    with gk_log.open("w") as out:
        gatekeeper = subprocess.Popen(
            serve, cwd=ROOT, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT
        )
    config = _write_configs(tmp, upstream, gatekeeper_url)
    env = subprocess_env(
        LITELLM_MASTER_KEY=MASTER_KEY, INTROROUTE_CONFIG=str(tmp / "router.yaml"), OPENAI_API_KEY="sk-unused"
    )
    report = tmp / "modules.json"
    command = [sys.executable, "-c", LAUNCH, str(report), "--config", str(config)]
    command += ["--host", "127.0.0.1", "--port", str(proxy_port)]
    with proxy_log.open("w") as out:
        process = subprocess.Popen(command, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"{gatekeeper_url}/health", gatekeeper, timeout_s=STARTUP_S, log=gk_log)
        started = time.monotonic()
        wait_for_http(f"http://127.0.0.1:{proxy_port}/health/liveliness", process, STARTUP_S, log=proxy_log)
        yield Proxy(
            f"http://127.0.0.1:{proxy_port}",
            upstream,
            gatekeeper,
            gatekeeper_url,
            report,
            time.monotonic() - started,
        )
    finally:
        stop(process)
        stop(gatekeeper)
        upstream.stop()


@pytest.fixture
def fresh(proxy: Proxy) -> Proxy:
    proxy.upstream.requests.clear()
    proxy.upstream.faults.clear()
    return proxy


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_the_example_starts_offline_with_the_plugin_router_registered(fresh: Proxy):
    # The proxy drops deployments it cannot build with only a log line: check "smart" is served.
    models = fresh.client().models.list()
    assert "smart" in {m.id for m in models.data}
    print(f"\nproxy started in {fresh.startup_s:.1f} s after the gatekeeper was up")


def test_the_chosen_tier_answers_and_says_so(fresh: Proxy):
    client = fresh.client()
    for text, tier in [("what is the capital of France?", "cheap"), ("a hard proof, please", "strong")]:
        raw = client.chat.completions.with_raw_response.create(model="smart", messages=_ask(text))
        response = raw.parse()
        assert raw.headers[TIER] == tier and raw.headers[CAUSE] == "classifier_plugin"
        assert (
            raw.headers["x-litellm-model-name"]
            == f"openai/fake-{'gpt-4o-mini' if tier == 'cheap' else 'gpt-4o'}"
        )
        assert response.choices[0].message.content == f"echo(1): {text}"
    assert fresh.upstream_models() == ["fake-gpt-4o-mini", "fake-gpt-4o"]


def test_streaming_carries_the_tier_header(fresh: Proxy):
    client = fresh.client()
    with client.chat.completions.with_streaming_response.create(
        model="smart", messages=_ask("a hard question"), stream=True
    ) as response:
        assert response.headers[TIER] == "strong"
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
    assert text == "echo(1): a hard question"
    assert fresh.upstream_models() == ["fake-gpt-4o"] and fresh.upstream.requests[0]["stream"] is True


def test_twenty_concurrent_requests(fresh: Proxy):
    before = fresh.gatekeeper_metrics()

    async def run():
        client = openai.AsyncOpenAI(base_url=fresh.url, api_key=MASTER_KEY, max_retries=0, timeout=120)
        calls = [
            client.chat.completions.with_raw_response.create(
                model="smart", messages=_ask(f"{'hard' if i % 4 == 0 else 'easy'} question {i}")
            )
            for i in range(20)
        ]
        started = time.perf_counter()
        raws = await asyncio.gather(*calls)
        return raws, time.perf_counter() - started

    raws, elapsed = asyncio.run(run())
    after = fresh.gatekeeper_metrics()
    for i, raw in enumerate(raws):
        assert raw.parse().choices[0].message.content.endswith(f"question {i}")  # its own answer
        assert raw.headers[TIER] == ("strong" if i % 4 == 0 else "cheap")
    assert Counter(fresh.upstream_models()) == {"fake-gpt-4o-mini": 15, "fake-gpt-4o": 5}
    scored, batches = after["scored"] - before["scored"], after["batches"] - before["batches"]
    assert scored == 20
    print(f"\n20 concurrent: {elapsed:.2f} s, gatekeeper {scored} scored in {batches} batches")


@pytest.mark.parametrize(
    ("messages", "cause"),
    [
        ([], "messages must contain at least one message"),
        ([{"role": "wizard", "content": "hi"}], "messages[0].role is 'wizard'"),
        ([{"role": "user", "content": 5}], "messages[0].content must be a string or a list of parts"),
    ],
)
def test_bad_messages_are_400s_with_the_cause_and_reach_no_model(fresh: Proxy, messages, cause):
    before = fresh.gatekeeper_metrics()["requests"]
    started = time.perf_counter()
    with pytest.raises(openai.BadRequestError) as caught:
        fresh.client().chat.completions.create(model="smart", messages=messages)
    elapsed = time.perf_counter() - started
    assert caught.value.status_code == 400 and cause in str(caught.value)
    assert fresh.upstream.requests == [] and fresh.gatekeeper_metrics()["requests"] == before
    print(f"\n400 for {messages!r} in {elapsed * 1000:.0f} ms")


def test_an_upstream_400_comes_back_as_a_400_after_one_call(fresh: Proxy):
    fresh.upstream.faults.append(400)
    with pytest.raises(openai.BadRequestError) as caught:
        fresh.client().chat.completions.create(model="smart", messages=_ask("easy one"))
    assert caught.value.status_code == 400
    assert fresh.upstream_models() == ["fake-gpt-4o-mini"]  # not retried, no fallback


def test_an_upstream_5xx_costs_litellms_retry_and_fallback_only(fresh: Proxy):
    fresh.upstream.faults.extend([500, 500])
    raw = fresh.client().chat.completions.with_raw_response.create(model="smart", messages=_ask("easy one"))
    calls = fresh.upstream_models()
    assert raw.parse().choices[0].message.content == "echo(1): easy one"
    # After LiteLLM's fallback the answering model is still named (the tier header is LiteLLM's to drop).
    assert raw.headers["x-litellm-model-name"] == "openai/fake-gpt-4o"
    assert raw.headers["x-litellm-attempted-fallbacks"] == "1"
    assert calls[-1] == "fake-gpt-4o" and len(calls) <= 3  # cheap (+ 1 retry), then the fallback
    fresh.upstream.requests.clear()
    fresh.upstream.faults.extend([500] * 10)
    with pytest.raises(openai.InternalServerError):
        fresh.client().chat.completions.create(model="smart", messages=_ask("easy one"))
    failing = fresh.upstream_models()
    fresh.upstream.faults.clear()
    assert len(failing) <= 4  # was 9 (3 proxy tries x 3 router tries) through the custom provider
    print(
        f"\n5xx: recovered after {len(calls)} upstream calls {calls}; all failing: {len(failing)} {failing}"
    )


def test_the_proxy_process_never_imports_torch(fresh: Proxy):
    report = json.loads(fresh.report.read_text())
    assert report == {"heavy": [], "plugin": True}


def test_zz_a_dead_gatekeeper_sends_requests_to_litellms_fallback_tier(fresh: Proxy):
    """Runs last (it stops the module's gatekeeper server)."""
    stop(fresh.gatekeeper)
    raw = fresh.client().chat.completions.with_raw_response.create(model="smart", messages=_ask("easy one"))
    assert raw.headers[TIER] == "strong" and raw.headers[CAUSE] == "classifier_fallback"
    assert fresh.upstream_models() == ["fake-gpt-4o"]
