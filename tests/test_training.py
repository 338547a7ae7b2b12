"""Training: the fast path (prompt cache without gradients) equals the naive full forward, and
``fit`` learns a signal, stops early, and saves a loadable best checkpoint."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from introroute.gatekeeper import IntroConfig, IntroLM, load_base
from introroute.training.forward import (
    _shared_prefix,
    fast_head_logits,
    naive_head_logits,
    prefix_first_where_exact,
)
from introroute.training.gatekeeper import (
    TrainConfig,
    fit,
    make_dataset,
    masked_bce,
    pos_weights,
    trainable_parameters,
)

WORDS = [
    "the",
    "answer",
    "is",
    "a",
    "b",
    "c",
    "d",
    "e",
    "yes",
    "no",
    "true",
    "false",
    "what",
    "capital",
    "of",
    "france",
    "london",
    "berlin",
    "rome",
]


def _conversations(n: int, seed: int) -> tuple[list, np.ndarray]:
    rng = np.random.default_rng(seed)
    conversations, labels = [], []
    for i in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(3, 12))))
        positive = i % 2 == 0
        words.insert(int(rng.integers(0, len(words))), "paris" if positive else "rome")
        conversations.append([{"role": "user", "content": " ".join(words)}])
        other = np.nan if i % 5 == 0 else float(rng.random() < 0.5)
        labels.append([float(positive), other])
    return conversations, np.array(labels, dtype=np.float32)


def _adapted(base_dir, num_intro_tokens: int = 1) -> IntroLM:
    """A tiny gatekeeper whose LoRA is not the identity (lora_B is zero at init)."""
    gk = IntroLM.build(
        load_base(base_dir), IntroConfig(targets=["self", "remote"], num_intro_tokens=num_intro_tokens)
    )
    with torch.no_grad():
        for name, param in gk.peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.3)
    return gk


@pytest.mark.parametrize(
    ("num_intro_tokens", "system"), [(1, None), (2, None), (1, "what is the capital of france a b c")]
)
def test_fast_path_equals_naive_loss_and_gradients(arch_dir, num_intro_tokens, system):
    """Every supported architecture (tests/arch_support.py), fp32 on CPU. With a shared system
    prompt the fast path prefills the shared head once (prefix_first); SmolLM2's chat template
    adds a default system prompt, so on its tokenizer every prompt shares a head."""
    gk = _adapted(arch_dir, num_intro_tokens)
    gk.train()
    conversations, labels = _conversations(6, seed=0)
    if system:
        conversations = [[{"role": "system", "content": system}, *c] for c in conversations]
    data = make_dataset(gk, conversations, labels)
    batch = gk.collate(data.prompts)  # mixed lengths: left padding is exercised
    assert _shared_prefix(batch) > 8 or not system
    # the tiny Mistral's and Gemma 3's 8-token windows are narrower than these prompts: the
    # shared head cannot go first there (the pads would fill the windows), the batch stays as is
    windowed = arch_dir.name.startswith(("mistral", "gemma3"))
    assert (prefix_first_where_exact(gk, batch) is batch) == (windowed or _shared_prefix(batch) == 0)
    weight = pos_weights(labels)
    results = []
    for path in (naive_head_logits, fast_head_logits):
        for p in trainable_parameters(gk):
            p.grad = None
        loss = masked_bce(path(gk, batch), torch.from_numpy(labels), weight)
        loss.backward()
        results.append((loss.detach(), [p.grad.detach().clone() for p in trainable_parameters(gk)]))
    (naive_loss, naive_grads), (fast_loss, fast_grads) = results
    torch.testing.assert_close(fast_loss, naive_loss, rtol=1e-5, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in naive_grads)
    for fast, naive in zip(fast_grads, naive_grads, strict=True):
        # fp32 rounding of the two computations, relative to each gradient's scale: an element
        # near cancellation (Qwen2's q/k/v biases make some) has no meaningful relative error
        torch.testing.assert_close(fast, naive, rtol=1e-4, atol=max(1e-6, 1e-4 * naive.abs().max().item()))


def test_masked_bce_ignores_missing_labels():
    logits = torch.tensor([[0.0, 5.0], [1.0, -2.0]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    loss = masked_bce(logits, labels, torch.ones(2))
    expected = masked_bce(logits[:, :1], labels[:, :1], torch.ones(1))
    torch.testing.assert_close(loss, expected)
    np.testing.assert_allclose(pos_weights(np.array([[1, np.nan], [0, 1], [0, 1], [0, 0]])), [3.0, 0.5])


@pytest.mark.parametrize("prompt_cache", ["epoch", "memory", "disk"])
def test_fit_learns_and_saves_best(tiny_base_dir, tmp_path, prompt_cache):
    gk = IntroLM.build(load_base(tiny_base_dir), IntroConfig(targets=["self", "remote"]))
    train = make_dataset(gk, *_conversations(48, seed=1))
    validation = make_dataset(gk, *_conversations(24, seed=2))
    config = TrainConfig(
        epochs=6, batch_size=8, lr=3e-3, patience=3, progress=False, prompt_cache=prompt_cache,
        cache_dir=str(tmp_path / "caches"),
    )  # fmt: skip
    result = fit(gk, train, validation, config, output_dir=tmp_path / "best")
    assert result.history[0]["epoch"] == 1 and len(result.history) <= 6
    assert result.history[result.best_epoch - 1]["val_auc/self"] >= 0.9
    assert gk.trained
    loaded = IntroLM.from_pretrained(str(tmp_path / "best"), base=str(tiny_base_dir))
    assert loaded.trained
    convs, _ = _conversations(4, seed=3)
    np.testing.assert_allclose(loaded.scores_batch(convs), gk.scores_batch(convs), atol=1e-6)
    if prompt_cache != "epoch":
        assert result.history[0]["cache_gib"] > 0
    if prompt_cache == "disk":
        assert list((tmp_path / "caches").iterdir()) == []  # the cache files went with training


def test_disk_cache_trains_as_memory_cache(tiny_base_dir, tmp_path):
    """Files instead of RAM change where the caches live, not one number of the run."""
    histories = []
    for prompt_cache in ("memory", "disk"):
        torch.manual_seed(0)
        gk = IntroLM.build(load_base(tiny_base_dir), IntroConfig(targets=["self", "remote"]))
        train = make_dataset(gk, *_conversations(32, seed=1))
        validation = make_dataset(gk, *_conversations(16, seed=2))
        config = TrainConfig(
            epochs=2, batch_size=8, lr=3e-3, progress=False, prompt_cache=prompt_cache,
            cache_dtype="bfloat16", cache_dir=str(tmp_path),
        )  # fmt: skip
        history = fit(gk, train, validation, config).history
        histories.append([{k: v for k, v in row.items() if k != "epoch_s"} for row in history])
    assert histories[0] == histories[1]


def test_dataset_shape_is_checked(tiny_base_dir):
    gk = IntroLM.build(load_base(tiny_base_dir), IntroConfig(targets=["self"]))
    with pytest.raises(ValueError, match="labels must be"):
        make_dataset(gk, [[{"role": "user", "content": "paris"}]], np.zeros((1, 2)))


def _log(path, records):
    from introroute.data.jsonl import write_records
    from introroute.data.schema import RoutingRecord

    write_records(path, [RoutingRecord.model_validate(r) for r in records])
    return path


def test_train_command_rejects_bad_input_before_loading_a_model(tmp_path, capsys):
    from introroute.cli import main as cli_main

    record = {
        "id": "q1",
        "dataset": "demo",
        "split": "train",
        "messages": [{"role": "user", "content": "paris?"}],
        "outcomes": {"gpt-4": {"model": "gpt-4", "correct": True}},
    }
    log = _log(tmp_path / "log.jsonl", [record])
    out = tmp_path / "adapter"
    assert cli_main(["train", "--log", str(log), "--targets", "nope", "--out", str(out)]) == 2
    assert "no record has an outcome for target(s) ['nope']" in capsys.readouterr().err
    assert (
        cli_main(["train", "--log", str(tmp_path / "missing.jsonl"), "--targets", "gpt-4", "--out", str(out)])
        == 2
    )
    assert "missing.jsonl" in capsys.readouterr().err
    assert not out.exists()


def test_recipe_schedule_and_smoothing() -> None:
    """Warm-up then cosine decay to zero; smoothing pulls targets towards 0.5; NaN stays masked."""
    import torch

    from introroute.training.gatekeeper import TrainConfig, _scheduler, masked_bce

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = _scheduler(optimizer, TrainConfig(schedule="cosine", warmup=0.2), total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.5 and lrs[1] == 1.0  # 2 warm-up steps
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:])) and lrs[-1] < 0.05
    logits = torch.tensor([[10.0, 0.0]])
    labels = torch.tensor([[1.0, float("nan")]])
    ones = torch.ones(2)
    assert masked_bce(logits, labels, ones, smoothing=0.2) > masked_bce(logits, labels, ones)


def test_predict_fast_path_equals_serving_scores(tiny_base_dir):
    """Offline evaluation scores by the fast path; serving runs the full adapter forward."""
    from introroute.cli.eval import introlm_scores

    gk = _adapted(tiny_base_dir)
    gk.eval()
    conversations, _ = _conversations(7, seed=3)
    conversations = [[{"role": "system", "content": "what is the capital"}, *c] for c in conversations]
    np.testing.assert_allclose(
        introlm_scores(gk, conversations, 4), gk.scores_batch(conversations), atol=1e-5
    )


def test_training_methods_that_moved_off_introlm_still_work_and_warn(tiny_base_dir):
    """``IntroLM.prompt_cache`` / ``intro_forward`` / ``upcast_trainable`` moved to
    :mod:`introroute.training.forward`; the old methods warn and give the same results."""
    from introroute.training import forward

    gk = _adapted(tiny_base_dir)
    gk.eval()
    conversations, _ = _conversations(3, seed=5)
    batch = gk.collate([gk.encode(c) for c in conversations])
    with torch.no_grad():
        expected = forward.intro_forward(gk, batch, forward.prompt_cache(gk, batch))
        with pytest.warns(DeprecationWarning, match="introroute.training.forward.prompt_cache"):
            cache = gk.prompt_cache(batch)
        with pytest.warns(DeprecationWarning, match="introroute.training.forward.intro_forward"):
            logits = gk.intro_forward(batch, cache)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match="introroute.training.forward.upcast_trainable"):
        gk.upcast_trainable()


def test_cache_store_keeps_the_shared_head_once(tiny_base_dir):
    """The kept cache rebuilds exactly the prompt cache, storing the shared head once per batch."""
    from introroute.training.forward import prefix_first, shared_prefix_cache
    from introroute.training.gatekeeper import _CacheStore

    gk = IntroLM.build(load_base(tiny_base_dir), IntroConfig(targets=["self"]))
    conversations, _ = _conversations(5, seed=4)
    conversations = [
        [{"role": "system", "content": "what is the capital of france"}, *c] for c in conversations
    ]
    batch = prefix_first(gk.collate([gk.encode(c) for c in conversations]))
    store = _CacheStore(torch.float32)
    rebuilt, direct = store.get(gk, ("b",), batch), shared_prefix_cache(gk, batch)
    for mine, theirs in zip(rebuilt.layers, direct.layers, strict=True):
        torch.testing.assert_close(mine.keys, theirs.keys, rtol=0, atol=0)
        torch.testing.assert_close(mine.values, theirs.values, rtol=0, atol=0)
    head = _shared_prefix(batch)
    full = sum(layer.keys.nbytes + layer.values.nbytes for layer in direct.layers) / 2**30
    rows, width = batch.input_ids.shape
    assert store.gib == pytest.approx(full * (1 - head / width * (1 - 1 / rows)))  # head kept once


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one mixed-precision setting per process; reset it around a test that sets one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fit_with_bf16_autocast(tiny_base_dir, tmp_path, dtype, fresh_accelerate_state):
    """The GPU recipe on the CPU: Accelerate's bf16 autocast over an fp32 or a bf16 base.

    The prompt caches (kept in bf16) and the [INTRO] step mix dtypes under autocast; the head
    still computes in fp32. It must learn as the fp32 run does and save an adapter that loads in
    either precision.
    """
    gk = IntroLM.build(load_base(tiny_base_dir, dtype=dtype), IntroConfig(targets=["self", "remote"]))
    train = make_dataset(gk, *_conversations(48, seed=1))
    validation = make_dataset(gk, *_conversations(24, seed=2))
    config = TrainConfig(
        epochs=6, batch_size=8, lr=3e-3, patience=3, progress=False, prompt_cache="memory",
        cache_dtype="bfloat16", mixed_precision="bf16",
    )  # fmt: skip
    result = fit(gk, train, validation, config, output_dir=tmp_path / "best")
    assert result.history[result.best_epoch - 1]["val_auc/self"] >= 0.9
    convs, _ = _conversations(4, seed=3)
    for load_dtype in ("float32", "bfloat16"):
        loaded = IntroLM.from_pretrained(str(tmp_path / "best"), base=str(tiny_base_dir), dtype=load_dtype)
        np.testing.assert_allclose(loaded.scores_batch(convs), gk.scores_batch(convs), atol=0.05)


def test_unusable_cache_dir_is_a_config_error(tiny_base_dir, tmp_path):
    from introroute.errors import ConfigError

    gk = IntroLM.build(load_base(tiny_base_dir), IntroConfig(targets=["self", "remote"]))
    train = make_dataset(gk, *_conversations(8, seed=1))
    (tmp_path / "a_file").write_text("")
    config = TrainConfig(epochs=1, progress=False, prompt_cache="disk", cache_dir=str(tmp_path / "a_file"))
    with pytest.raises(ConfigError, match="a_file"):
        fit(gk, train, train, config)


def test_heads_only_from_adapter_moves_only_the_named_head(tiny_base_dir, tmp_path, capsys):
    """`train --from-adapter A --heads-only --targets remote`: more labels for one remote head; LoRA,
    [INTRO] rows and the `self` head come back bit for bit, and the result loads as an adapter."""
    from safetensors.torch import load_file

    from introroute.cli import main as cli_main
    from introroute.gatekeeper.persistence import HEAD_FILE

    gk = _adapted(tiny_base_dir)
    gk.trained = True
    gk.save_pretrained(str(tmp_path / "start"))
    conversations, labels = _conversations(32, seed=4)
    records = [
        {
            "id": f"q{i}",
            "dataset": "demo",
            "split": "train" if i < 24 else "validation",
            "messages": messages,
            "outcomes": {"remote": {"model": "remote", "correct": bool(label[0])}},
        }
        for i, (messages, label) in enumerate(zip(conversations, labels, strict=True))
    ]
    log = _log(tmp_path / "remote.jsonl", records)
    common = ["train", "--log", str(log), "--base", str(tiny_base_dir), "--epochs", "2", "--lr", "1e-2"]
    start = ["--from-adapter", str(tmp_path / "start")]
    unused = ["--out", str(tmp_path / "x")]
    assert cli_main([*common, "--targets", "remote", *unused, *start, "--lora-r", "4"]) == 2
    assert "--lora-r: the layout comes from the adapter" in capsys.readouterr().err
    assert cli_main([*common, "--targets", "remote", *unused, "--heads-only"]) == 2
    assert "pass --from-adapter" in capsys.readouterr().err
    assert cli_main([*common, "--targets", "gpt-9", *unused, *start]) == 2
    assert "gpt-9" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    out = tmp_path / "refit"
    assert cli_main([*common, "--targets", "remote", "--out", str(out), *start, "--heads-only"]) == 0
    before, after = load_file(tmp_path / "start" / HEAD_FILE), load_file(out / HEAD_FILE)
    assert torch.equal(before["weight"][0], after["weight"][0]) and before["bias"][0] == after["bias"][0]
    assert not torch.equal(before["weight"][1], after["weight"][1])
    # `self` has no labels here: its AUC is null, so the history is strict JSON
    history = json.loads((out / "training_history.json").read_text(), parse_constant=pytest.fail)
    assert all(row["val_auc/self"] is None for row in history["history"])
    lora_before = load_file(tmp_path / "start" / "adapter_model.safetensors")
    lora_after = load_file(out / "adapter_model.safetensors")
    assert lora_before.keys() == lora_after.keys()
    assert all(torch.equal(lora_before[k], lora_after[k]) for k in lora_before)
    refit = IntroLM.from_pretrained(str(out), base=str(tiny_base_dir))
    np.testing.assert_allclose(
        refit.scores_batch(conversations[:4])[:, 0], gk.scores_batch(conversations[:4])[:, 0], atol=1e-6
    )


def _remote_log(path, n: int = 32):
    conversations, labels = _conversations(n, seed=4)
    records = [
        {
            "id": f"q{i}",
            "dataset": "demo",
            "split": "train" if i < n * 3 // 4 else "validation",
            "messages": messages,
            "outcomes": {"remote": {"model": "remote", "correct": bool(label[0])}},
        }
        for i, (messages, label) in enumerate(zip(conversations, labels, strict=True))
    ]
    return _log(path, records)


def test_train_never_loses_the_previous_adapter(tiny_base_dir, tmp_path, capsys):
    """An existing --out needs --overwrite (checked before loading anything); a SIGINT during
    training leaves the previous adapter whole, with its own history, and no partial directory."""
    import signal
    import subprocess
    import sys
    import time

    from server_support import ROOT, subprocess_env

    from introroute.cli import main as cli_main

    log = _remote_log(tmp_path / "remote.jsonl")
    out = tmp_path / "adapter"
    _adapted(tiny_base_dir).save_pretrained(str(out))
    (out / "training_history.json").write_text('{"previous": true}\n')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    argv = [
        "train",
        "--log",
        str(log),
        "--base",
        str(tiny_base_dir),
        "--targets",
        "remote",
        "--out",
        str(out),
    ]
    assert cli_main(argv) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("x")
    assert cli_main([*argv[:-1], str(tmp_path / "a-file" / "adapter")]) == 2  # was a raw NotADirectoryError
    assert "is not a directory" in capsys.readouterr().err

    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "introroute.cli",
            *argv,
            "--overwrite",
            "--epochs",
            "100000",
            "--patience",
            "100000",
        ],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob(".adapter.*.partial/adapter_model.safetensors")):  # epoch 1 saved
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()[-2000:]
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode != 0 and "KeyboardInterrupt" in stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous run, untouched
    assert not list(tmp_path.glob(".adapter.*"))  # no partial directory left behind
    assert cli_main([*argv, "--overwrite", "--epochs", "1"]) == 0  # a finished run replaces it whole
    assert "previous" not in json.loads((out / "training_history.json").read_text())
    assert not list(tmp_path.glob(".adapter.*"))
