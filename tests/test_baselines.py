"""Baselines: one interface, NaN labels masked, save/load round trips, cached features, and the
"[INTRO] embedding + head only" ablation (IntroLM with ``lora_r=0``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from introroute.errors import AdapterError, DataError
from introroute.gatekeeper import IntroConfig, IntroLM, load_base
from introroute.training.baselines import KINDS, load_baseline
from introroute.training.baselines.base import length_batches
from introroute.training.baselines.encoder import MiniLMFineTuned, MiniLMLogistic
from introroute.training.baselines.features import FeatureCache
from introroute.training.baselines.logistic import PerTargetLogistic
from introroute.training.baselines.prior import GroupPrior, RandomScores
from introroute.training.baselines.probe import HiddenStateProbe
from introroute.training.forward import fast_head_logits, naive_head_logits
from introroute.training.gatekeeper import trainable_parameters

TARGETS = ["small", "large"]
WORDS = [
    "the",
    "answer",
    "is",
    "what",
    "capital",
    "of",
    "france",
    "paris",
    "london",
    "berlin",
    "rome",
    "solve",
    "problem",
    "step",
]


def toy_examples(n: int, seed: int = 0) -> tuple[list, np.ndarray]:
    """Conversations where "paris" means the small target succeeds; the large one lacks some labels."""
    rng = np.random.default_rng(seed)
    conversations, labels = [], []
    for i in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(3, 10))))
        words.insert(int(rng.integers(0, len(words))), "paris" if i % 2 == 0 else "rome")
        conversations.append([{"role": "user", "content": " ".join(words)}])
        labels.append([float(i % 2 == 0), np.nan if i % 4 == 1 else float(i % 3 == 0)])
    return conversations, np.array(labels)


@pytest.fixture(autouse=True)
def feature_cache_dir(tmp_path, monkeypatch):
    """Feature caches go to a fresh folder, never the user's ~/.cache."""
    monkeypatch.setenv("INTROROUTE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_registry_names_every_kind():
    assert set(KINDS) == {"minilm_ft", "minilm_lr", "probe", "prior", "random"}
    assert all(KINDS[kind].kind == kind for kind in KINDS)


def test_labels_are_checked():
    conversations, labels = toy_examples(4)
    with pytest.raises(DataError, match="labels must be"):
        GroupPrior(TARGETS).fit(conversations, labels[:, :1], groups=[("d",)] * 4)
    with pytest.raises(DataError, match="0, 1 or NaN"):
        GroupPrior(TARGETS).fit(conversations, labels + 0.5, groups=[("d",)] * 4)
    with pytest.raises(DataError, match="one entry per conversation"):
        GroupPrior(TARGETS).fit(conversations, labels, groups=[("d",)])


def test_length_batches_cover_every_row_once():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    ordered = length_batches(lengths, 3)
    assert [lengths[i] for batch in ordered for i in batch] == sorted(lengths)
    shuffled = length_batches(lengths, 3, seed=1)
    assert sorted(i for batch in shuffled for i in batch) == list(range(7))
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, ordered))


def test_prior_falls_back_from_subject_to_dataset_to_global(tmp_path):
    conversations = [[{"role": "user", "content": "q"}]] * 6
    labels = np.array([[1, 1], [0, np.nan], [1, 0], [1, 1], [0, 0], [np.nan, 1]], dtype=float)
    groups = [("mmlu", "law"), ("mmlu", "law"), ("mmlu", "art"), ("mmlu", "art"), ("gsm8k",), ("gsm8k",)]
    prior = GroupPrior(TARGETS).fit(conversations, labels, groups=groups)
    queries = [("mmlu", "law"), ("mmlu", "unseen"), ("other",)]
    expected = [[0.5, 1.0], [0.75, 2 / 3], [3 / 5, 3 / 5]]
    np.testing.assert_allclose(prior.predict_proba(conversations[:3], groups=queries), expected)
    prior.save(tmp_path / "prior")
    loaded = load_baseline(tmp_path / "prior")
    np.testing.assert_allclose(loaded.predict_proba(conversations[:3], groups=queries), expected)
    with pytest.raises(DataError, match="groups"):
        prior.predict_proba(conversations[:1])


def test_random_scores_are_seeded_and_round_trip(tmp_path):
    conversations, _ = toy_examples(5)
    scores = RandomScores(TARGETS, seed=3).predict_proba(conversations)
    assert scores.shape == (5, 2) and ((scores >= 0) & (scores <= 1)).all()
    RandomScores(TARGETS, seed=3).save(tmp_path / "random")
    np.testing.assert_array_equal(load_baseline(tmp_path / "random").predict_proba(conversations), scores)
    assert RandomScores(TARGETS).predict_proba([]).shape == (0, 2)


def test_load_rejects_a_directory_that_is_no_baseline(tmp_path):
    with pytest.raises(AdapterError, match=r"baseline\.json is missing"):
        load_baseline(tmp_path)
    (tmp_path / "baseline.json").write_text(
        '{"format_version": 1, "kind": "nope", "targets": [], "params": {}}'
    )
    with pytest.raises(AdapterError, match="unknown baseline kind"):
        load_baseline(tmp_path)


def test_logistic_fits_each_target_on_its_observed_rows_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)) * [1.0, 10.0, 0.1]
    labels = np.stack([(x[:, 0] > 0), (x[:, 1] > 0)], axis=1).astype(float)
    labels[::3, 1] = np.nan
    head = PerTargetLogistic(TARGETS).fit(x, labels)
    observed = ~np.isnan(labels[:, 1])
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    reference = LogisticRegression(C=1.0, max_iter=2000).fit(z[observed], labels[observed, 1])
    np.testing.assert_allclose(head.state["coef"][1], reference.coef_[0], rtol=1e-4)
    np.testing.assert_allclose(head.predict(x)[:, 1], reference.predict_proba(z)[:, 1], rtol=1e-4)
    with pytest.raises(DataError, match="single class"):
        PerTargetLogistic(TARGETS).fit(x, np.ones((40, 2)))


def test_logistic_picks_c_on_validation():
    rng = np.random.default_rng(1)
    x, labels = rng.normal(size=(60, 4)), rng.integers(0, 2, size=(60, 2)).astype(float)
    head = PerTargetLogistic(TARGETS).fit(x[:40], labels[:40], (x[40:], labels[40:]))
    assert set(head.state["C"]) <= {0.01, 0.1, 1.0, 10.0}


def test_feature_cache_computes_each_conversation_once(tmp_path):
    calls: list[int] = []

    def extract(conversations):
        calls.append(len(conversations))
        return np.array([[len(c[0]["content"]), 1.0] for c in conversations])

    conversations, _ = toy_examples(5)
    cache = FeatureCache(tmp_path / "f.safetensors", "toy", chunk=2)
    first = cache.get(conversations[:3], extract)
    again = FeatureCache(tmp_path / "f.safetensors", "toy").get(conversations, extract)
    assert calls == [2, 1, 2]  # chunks of 2, then only the two new conversations
    np.testing.assert_array_equal(again[:3], first)
    with pytest.raises(DataError, match="not 'other'"):
        FeatureCache(tmp_path / "f.safetensors", "other")


def test_minilm_logistic_caches_features_and_round_trips(tmp_path, feature_cache_dir):
    conversations, labels = toy_examples(16)
    model = MiniLMLogistic(TARGETS, max_length=32)
    probabilities = model.fit(conversations, labels, *toy_examples(8, seed=1)).predict_proba(conversations)
    assert probabilities.shape == (16, 2) and np.isfinite(probabilities).all()
    assert len(list((feature_cache_dir / "features").glob("minilm-*-len32.safetensors"))) == 1
    model.save(tmp_path / "lr")
    loaded = load_baseline(tmp_path / "lr")
    np.testing.assert_allclose(loaded.predict_proba(conversations), probabilities, atol=1e-6)


def test_minilm_finetuned_learns_masks_nan_and_round_trips(tmp_path):
    conversations, labels = toy_examples(16)
    model = MiniLMFineTuned(TARGETS, max_length=32, batch_size=8, epochs=2, lr=1e-3)
    model.fit(conversations, labels, *toy_examples(8, seed=1))
    assert [row["epoch"] for row in model.history] == [1, 2]
    assert all(np.isfinite(row["train_loss"]) and "val_auc" in row for row in model.history)
    probabilities = model.predict_proba(conversations)
    assert probabilities.shape == (16, 2) and ((probabilities > 0) & (probabilities < 1)).all()
    model.save(tmp_path / "ft")
    loaded = load_baseline(tmp_path / "ft")
    np.testing.assert_allclose(loaded.predict_proba(conversations), probabilities, atol=1e-5)


def test_probe_reads_the_last_prompt_token_exactly_as_unbatched(tiny_base_dir, tmp_path):
    conversations, labels = toy_examples(12)
    probe = HiddenStateProbe(TARGETS, base=str(tiny_base_dir), max_context=64, batch_size=4)
    features = probe.extract(conversations)  # left-padded batches of mixed lengths
    gk = probe.gatekeeper
    for row in (0, 5):
        ids = torch.tensor([gk.encode(conversations[row]).ids])
        with torch.inference_mode():
            hidden = gk.plain(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
        np.testing.assert_allclose(features[row], hidden.numpy(), atol=1e-5)
    probabilities = probe.fit(conversations, labels).predict_proba(conversations)
    probe.save(tmp_path / "probe")
    loaded = load_baseline(tmp_path / "probe")
    np.testing.assert_allclose(loaded.predict_proba(conversations), probabilities, atol=1e-6)


def test_no_lora_ablation_trains_only_the_intro_row_and_head(tiny_base_dir, tmp_path):
    gk = IntroLM.build(load_base(tiny_base_dir), IntroConfig(targets=TARGETS, lora_r=0))
    trainable = [n for n, p in gk.peft_model.named_parameters() if p.requires_grad]
    assert len(trainable) == 1 and "trainable_tokens" in trainable[0]
    hidden = gk.plain.config.hidden_size
    assert sum(p.numel() for p in trainable_parameters(gk)) == hidden + hidden * 2 + 2
    with torch.no_grad():
        next(p for n, p in gk.peft_model.named_parameters() if p.requires_grad).normal_(std=0.5)
    gk.train()
    conversations, _ = toy_examples(6)
    batch = gk.collate([gk.encode(c) for c in conversations])
    torch.testing.assert_close(
        fast_head_logits(gk, batch), naive_head_logits(gk, batch), rtol=1e-5, atol=1e-6
    )
    gk.eval()
    gk.save_pretrained(str(tmp_path / "ablation"))
    loaded = IntroLM.from_pretrained(str(tmp_path / "ablation"), base=str(tiny_base_dir))
    assert not loaded.config.uses_lora
    np.testing.assert_allclose(loaded.scores_batch(conversations), gk.scores_batch(conversations), atol=1e-6)


def test_no_lora_config_is_validated():
    assert not IntroConfig(target_modules=[]).uses_lora
    assert IntroConfig().uses_lora
    with pytest.raises(ValueError, match="lora_r"):
        IntroConfig(lora_r=-1)
    with pytest.raises(ValueError, match="embedding must train"):
        IntroConfig(lora_r=0, train_intro_embedding=False)
