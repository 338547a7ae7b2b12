"""The ``budget`` policy's window in Redis: shared by routers in two processes, identical to one
in-memory window fed the same decisions, the cap held across replicas, and a Redis outage that
neither stops routing nor leaks the store's password.

A real ``redis-server`` (Debian package ``redis-server``) runs on 127.0.0.1 on a free port without
persistence. Without the binary the tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from server_support import ROOT, free_port, mocked_tiers, stop, subprocess_env

from introroute.errors import ConfigError, PolicyError
from introroute.policies import RequestContext, TierInfo
from introroute.policies.budget import BudgetPolicy
from introroute.router import Router
from introroute.router.config import load_config

pytest.importorskip("redis")
import redis

TIERS = (TierInfo("local", "self", local=True), TierInfo("large", "gpt-4"))
CONTEXT = RequestContext(tiers=TIERS)
PARAMS = {"target_share": 0.2, "window": 40, "tau": 0.5, "warmup": 10}


def _start_redis(port: int, workdir) -> subprocess.Popen:
    """A redis-server on 127.0.0.1:``port`` without persistence, answering PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is not installed (CI must install it: .ci/run does)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                stop(process)
                pytest.fail(f"redis-server did not answer on port {port} within 20 s")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    port = free_port()
    process = _start_redis(port, tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{port}/0"
    stop(process)


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test alone, which the test may kill, pause or restart (same port)."""
    port = free_port()
    servers = [_start_redis(port, tmp_path)]

    def restart() -> None:
        servers.append(_start_redis(port, tmp_path))

    yield f"redis://127.0.0.1:{port}/0", servers, restart
    for process in servers:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
        stop(process)


def _store(url: str, key: str, **extra) -> dict:
    return {"backend": "redis", "url": url, "key": key, **extra}


def _replay(ps: list[float], policy: BudgetPolicy | None = None) -> list[tuple[bool, float, float]]:
    """(went up, tau, share) per decision of ``policy`` (default: a fresh in-memory one)."""
    policy = policy or BudgetPolicy(**PARAMS)
    out = []
    for p in ps:
        choice = policy.decide({"self": p, "gpt-4": 0.9}, CONTEXT)
        out.append((choice.tier == "large", choice.detail["tau"], choice.detail["share"]))
    return out


def _every_window_within_the_cap(went_up: list[bool], window: int, limit: int) -> bool:
    return all(sum(went_up[i : i + window]) <= limit for i in range(max(1, len(went_up) - window + 1)))


@pytest.mark.parametrize(
    "params",
    [
        PARAMS,
        {"target_share": 1.0, "window": 1, "tau": 0.5, "warmup": 0},
        {"target_share": 0.5, "window": 2, "tau": 0.3, "warmup": 0},
        {"target_share": 0.3, "window": 7, "tau": 0.9, "warmup": 3},
    ],
    ids=["default", "window-1", "window-2", "window-7"],
)
def test_a_redis_window_decides_exactly_like_an_in_memory_one(redis_url, params):
    rng = random.Random(7)
    ps = [rng.random() ** 2 if i < 150 else rng.random() for i in range(300)]  # a shift in traffic
    ps[10:20] = [0.25] * 10  # ties
    key = f"equivalence-{params['window']}"
    shared, memory = BudgetPolicy(**params, store=_store(redis_url, key)), BudgetPolicy(**params)
    seqs = []
    for p, expected in zip(ps, _replay(ps, memory), strict=True):
        choice = shared.decide({"self": p, "gpt-4": 0.9}, CONTEXT)
        assert (choice.tier == "large", choice.detail["tau"], choice.detail["share"]) == expected
        assert choice.detail["store"] == "redis"
        seqs.append(choice.detail["seq"])
    assert seqs == list(range(1, 301))
    assert shared.current_tau() == memory.current_tau()


CHILD = """
import json, sys
from router_support import FakeGatekeeper
from introroute import decision
from introroute.router import Router
from introroute.router.config import load_config

config = json.loads(sys.argv[1])

def scores(messages):  # the request text is P(self); the router's warm-up prompt is not a number
    text = messages[-1]["content"]
    return {"self": float(text) if text[:1].isdigit() else 0.5, "gpt-4": 0.9}

gatekeeper = FakeGatekeeper(scores)
router = Router.from_dict(config, gatekeeper=gatekeeper)
out = []
for p in json.loads(sys.argv[2]):
    d = decision(router.completion(messages=[{"role": "user", "content": repr(p)}]))
    out.append({"p": p, "tier": d.tier, "tau": d.policy_detail["tau"], "seq": d.policy_detail["seq"],
                "store": d.policy_detail["store"], "url": d.policy_params["store"]["url"]})
print(json.dumps(out))
"""


def test_two_routers_in_two_processes_share_one_budget(redis_url, monkeypatch):
    monkeypatch.setenv("BUDGET_REDIS_URL", redis_url)
    config = {
        "name": "replica",
        "tiers": mocked_tiers("local", "large"),
        "policy": {
            "type": "budget",
            "params": {
                **PARAMS,
                "store": {"backend": "redis", "url": "${BUDGET_REDIS_URL}", "key": "two-procs"},
            },
        },
    }
    rng = random.Random(11)
    per_process = [[round(rng.random(), 6) for _ in range(80)] for _ in range(2)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(config), json.dumps(ps)],
            cwd=ROOT,
            env=subprocess_env(BUDGET_REDIS_URL=redis_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ps in per_process
    ]
    outputs = []
    for child in children:
        stdout, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stderr[-3000:]
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    merged = sorted((r for out in outputs for r in out), key=lambda r: r["seq"])
    assert [r["seq"] for r in merged] == list(range(1, 161))  # one window, one order, no gaps
    assert {r["store"] for r in merged} == {"redis"}
    assert {r["url"] for r in merged} == {"***"}  # ${BUDGET_REDIS_URL} is a secret in decisions
    went_up = [r["tier"] == "large" for r in merged]
    # The shared window is one in-memory window fed the decisions in Redis's order ...
    replayed = [(up, tau) for up, tau, _ in _replay([r["p"] for r in merged])]
    assert list(zip(went_up, [r["tau"] for r in merged], strict=True)) == replayed
    # ... so the cap holds for the deployment, not just per replica.
    limit = int(PARAMS["target_share"] * PARAMS["window"])
    assert _every_window_within_the_cap(went_up, PARAMS["window"], limit)
    assert all(any(r["tier"] == "large" for r in out) for out in outputs)  # both replicas sent some up


def test_an_unreachable_redis_falls_back_to_a_local_window_quickly(caplog):
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    policy = BudgetPolicy(**PARAMS, store=_store(url, "down", timeout_ms=200, retry_s=60))
    assert policy.store == {
        "backend": "redis",
        "url": f"redis://:***@127.0.0.1:{url.split(':')[-1]}",
        "key": "down",
    }
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="introroute.policies.budget_store"):
        choices = [policy.decide({"self": p / 30, "gpt-4": 0.9}, CONTEXT) for p in range(30)]
    assert time.perf_counter() - started < 2.0  # one failed connect, then no retries for retry_s
    assert {c.detail["store"] for c in choices} == {"memory (redis unavailable)"}
    decided = [(c.tier == "large", c.detail["tau"], c.detail["share"]) for c in choices]
    assert decided == _replay([p / 30 for p in range(30)])
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "hunter2" not in warnings[0].getMessage()
    assert "hunter2" not in repr(policy)


def test_store_options_are_validated():
    with pytest.raises(PolicyError, match=r"store\.url: required"):
        BudgetPolicy(store={"backend": "redis"})
    with pytest.raises(PolicyError, match=r"unknown key\(s\) \['host'\]"):
        BudgetPolicy(store={"backend": "redis", "url": "redis://127.0.0.1", "host": "x"})
    with pytest.raises(PolicyError, match=r"store\.backend must be 'memory' or 'redis'"):
        BudgetPolicy(store={"backend": "memcached"})
    assert BudgetPolicy(store="memory").store == {"backend": "memory"}
    config = {
        "name": "bad-store",
        "tiers": [{"name": "only", "target": "self", "litellm_params": {"model": "openai/x"}}],
        "policy": {"type": "budget", "params": {"store": {"backend": "redis", "url": "nope://"}}},
    }
    with pytest.raises(ConfigError, match=r"policy: store\.url"):
        Router.from_dict(config)


# Past warmup the quantile keeps tau near the share; with warmup never reached tau stays 0.5 and
# about half the decisions want to go up, so the cap binds all the time and any overspend shows.
CAP_BINDS = {"target_share": 0.2, "window": 20, "tau": 0.5, "warmup": 10_000}


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


@pytest.mark.parametrize("params", [PARAMS, CAP_BINDS], ids=["adapting", "cap-binds"])
def test_store_switches_and_a_lost_window_change_nothing_for_one_process(own_redis, params, caplog):
    """Redis -> local fallback -> Redis again (restarted empty) -> flushed: for one process every
    decision is the one a single in-memory window takes, so the cap holds across every switch and
    the restored window goes on from the learnt tau, not from the initial one."""
    url, servers, restart = own_redis
    rng = random.Random(3)
    ps = [rng.random() for _ in range(200)]
    policy = BudgetPolicy(**params, store=_store(url, "switches", timeout_ms=200, retry_s=0))
    memory = BudgetPolicy(**params)
    expected = _replay(ps, memory)
    stores = []
    with caplog.at_level(logging.WARNING, logger="introroute.policies.budget_store"):
        for i, p in enumerate(ps):
            if i == 50:
                _kill(servers[-1])  # decisions 50-99: the local fallback
            elif i == 100:
                restart()  # decisions 100-149: Redis again, empty (no persistence)
            elif i == 150:
                redis.Redis.from_url(url).flushall()  # decisions 150-199: emptied under the router
            choice = policy.decide({"self": p, "gpt-4": 0.9}, CONTEXT)
            stores.append(choice.detail["store"])
            assert (choice.tier == "large", choice.detail["tau"], choice.detail["share"]) == expected[i], i
    assert stores[:50] == ["redis"] * 50 and stores[100:] == ["redis"] * 100
    assert set(stores[50:100]) == {"memory (redis unavailable)"}
    went_up = [up for up, _, _ in expected]
    assert _every_window_within_the_cap(went_up, params["window"], int(0.2 * params["window"]))
    assert sum("vanished" in r.getMessage() for r in caplog.records) == 2  # the restart, the flush
    assert policy.current_tau() == memory.current_tau()


def test_four_threads_keep_the_cap_through_a_sigkilled_redis(own_redis):
    url, servers, restart = own_redis
    policy = BudgetPolicy(**CAP_BINDS, store=_store(url, "threads", timeout_ms=200, retry_s=0))
    window = policy._window
    taken: list[bool] = []  # every decision of the process, in the order its lock let them through
    for name in ("record", "step"):
        original = getattr(window._own, name)

        def spy(*args, _original=original, **kwargs):
            step = _original(*args, **kwargs)
            taken.append(args[1] if len(args) > 1 and isinstance(args[1], bool) else step.went_up)
            return step

        setattr(window._own, name, spy)
    rng = random.Random(5)
    ps = [[rng.random() for _ in range(100)] for _ in range(4)]
    killed, restarted = threading.Event(), threading.Event()

    def run(mine: list[float]) -> None:
        for i, p in enumerate(mine):
            if i == 30 and not killed.is_set():
                killed.set()
                _kill(servers[-1])
            if i == 60 and not restarted.is_set():
                restarted.set()
                restart()
            policy.decide({"self": p, "gpt-4": 0.9}, CONTEXT)

    threads = [threading.Thread(target=run, args=(mine,)) for mine in ps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(taken) == 400
    assert _every_window_within_the_cap(taken, CAP_BINDS["window"], 4)
    assert sum(taken) >= 60  # the cap binds: at most 80 could go up, about 200 wanted to


def test_a_step_that_timed_out_while_redis_was_paused_never_commits(own_redis):
    url, servers, _ = own_redis
    probe = redis.Redis.from_url(url, socket_timeout=5)
    policy = BudgetPolicy(**PARAMS, store=_store(url, "paused", timeout_ms=100, retry_s=0))
    for p in (0.1, 0.6, 0.9):
        assert policy.decide({"self": p, "gpt-4": 0.9}, CONTEXT).detail["store"] == "redis"
    seq_key = "introroute:budget:{paused}:seq"
    assert probe.get(seq_key) == b"3"
    servers[-1].send_signal(signal.SIGSTOP)
    try:
        paused = policy.decide({"self": 0.2, "gpt-4": 0.9}, CONTEXT)  # the script sits in the socket
    finally:
        servers[-1].send_signal(signal.SIGCONT)
    assert paused.detail["store"] == "memory (redis unavailable)"
    assert probe.get(seq_key) == b"3"  # the server ran the late script after SIGCONT: it wrote nothing
    after = policy.decide({"self": 0.3, "gpt-4": 0.9}, CONTEXT)
    assert (
        after.detail["store"] == "redis" and after.detail["seq"] == 5
    )  # the local one carried, then this one
    assert [c.tier == "large" for c in (paused, after)] == [
        up for up, _, _ in _replay([0.1, 0.6, 0.9, 0.2, 0.3])[3:]
    ]


@pytest.mark.parametrize(
    "url",
    [
        "${BUDGET_REDIS_URL}",  # the whole URL from the environment
        "redis://:hunter2-pw@127.0.0.1:6390/0",
        "redis://budget:hunter2-pw@127.0.0.1:6390/0",
        "redis://127.0.0.1:6390/0?password=hunter2-pw&db=0",
    ],
    ids=["env", "userinfo", "user-and-password", "query"],
)
def test_the_redis_password_never_shows(url, monkeypatch):
    from router_support import FakeGatekeeper

    monkeypatch.setenv("BUDGET_REDIS_URL", "redis://:hunter2-pw@127.0.0.1:6390/0")
    config = {
        "name": "masked",
        "tiers": mocked_tiers("local", "large"),
        "policy": {"type": "budget", "params": {"store": {"backend": "redis", "url": url}}},
    }
    loaded = load_config(config, check_heads=False)
    router = Router.from_dict(config, gatekeeper=FakeGatekeeper({"self": 0.5, "gpt-4": 0.5}))
    policy = BudgetPolicy(store={"backend": "redis", "url": os.path.expandvars(url)})
    shown = [repr(loaded), str(loaded.model_dump()), loaded.model_dump_json(), repr(loaded.policy)]
    shown += [repr(router), repr(router.config), repr(policy), str(policy.get_params())]
    for text in shown:
        assert "hunter2-pw" not in text, text
    assert "127.0.0.1" in repr(policy)  # the store stays recognisable
    assert "hunter2-pw" in loaded.secrets()  # ... and the log filter knows the password
    assert loaded.policy.params["store"]["url"] == url.replace(
        "${BUDGET_REDIS_URL}", os.environ["BUDGET_REDIS_URL"]
    )
