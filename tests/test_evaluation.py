"""Evaluation: metrics equal metrics.py on a hand case, within-task and unseen-subject AUC are
what they claim, the outputs are written, and ``introroute baseline fit`` + ``eval`` run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from introroute.cli import main as cli
from introroute.data.jsonl import write_records
from introroute.data.schema import RoutingRecord, TargetOutcome
from introroute.errors import DataError
from introroute.evaluation.metrics import brier, ece, pr_auc, roc_auc
from introroute.evaluation.report import evaluate, task_aucs, weighted_within_auc, write_outputs
from introroute.gatekeeper import IntroConfig, IntroLM, load_base

TARGETS = ["m1", "m2"]
# (dataset, subject, split, m1 correct, m2 correct or None, prediction for m1)
ROWS = [
    ("mmlu", "law", "test", 1, 1, 0.9),
    ("mmlu", "law", "test", 0, 1, 0.4),
    ("mmlu", "law", "test", 1, None, 0.3),
    ("mmlu", "law", "test", 0, 0, 0.2),
    ("mmlu", "art", "test", 1, 1, 0.6),
    ("mmlu", "art", "test", 0, 0, 0.7),
    ("mmlu", "art", "test", 1, 1, 0.8),
    ("mmlu", "virology", "test_unseen", 1, 1, 0.5),
    ("mmlu", "virology", "test_unseen", 0, 0, 0.1),
    ("mmlu", "virology", "test_unseen", 0, 1, 0.6),
    ("gsm8k", None, "test", 1, 1, 0.55),
    ("gsm8k", None, "test", 0, 0, 0.35),
    ("gsm8k", None, "test", 1, 0, 0.75),
]


def make_records(rows=ROWS, split: str | None = None) -> list[RoutingRecord]:
    records = []
    for i, (dataset, subject, row_split, first, second, _) in enumerate(rows):
        outcomes = {"m1": TargetOutcome(model="m1", correct=bool(first))}
        if second is not None:
            outcomes["m2"] = TargetOutcome(model="m2", correct=bool(second))
        records.append(
            RoutingRecord(
                id=f"{dataset}/{i}",
                dataset=dataset,
                subject=subject,
                split=split or row_split,
                messages=[{"role": "user", "content": f"the answer is {i} of {dataset}"}],
                outcomes=outcomes,
            )
        )
    return records


def hand_predictions() -> np.ndarray:
    first = np.array([r[5] for r in ROWS])
    return np.stack([first, 1 - first], axis=1)


def test_task_aucs_match_roc_auc_per_task_with_ties_and_single_class_tasks():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 40))
        tasks = rng.integers(0, 4, n)
        y, p = rng.integers(0, 2, n).astype(float), rng.integers(0, 4, n) / 3
        aucs, sizes = task_aucs(y, p, tasks)
        for task in range(len(aucs)):
            members = tasks == task
            expected = roc_auc(y[members], p[members]) if members.any() else np.nan
            np.testing.assert_allclose(aucs[task], expected)
            assert sizes[task] == members.sum()


def test_report_matches_metrics_on_a_hand_case():
    result = evaluate(make_records(), TARGETS, {"model": hand_predictions()}, n_boot=200)
    first = result["results"]["m1"]["model"]
    y = np.array([r[3] for r in ROWS], dtype=float)
    p = hand_predictions()[:, 0]
    for name, metric in {"roc_auc": roc_auc, "pr_auc": pr_auc, "brier": brier, "ece": ece}.items():
        assert first["pooled"][name]["value"] == pytest.approx(metric(y, p))
        assert first["pooled"][name]["lo"] <= first["pooled"][name]["hi"]
    gsm8k = slice(10, 13)
    assert first["datasets"]["gsm8k"]["roc_auc"]["value"] == pytest.approx(roc_auc(y[gsm8k], p[gsm8k]))
    # within-task: law 4 rows, art 3, virology 3, gsm8k 3 -> size-weighted mean of their AUCs
    tasks = {"law": slice(0, 4), "art": slice(4, 7), "virology": slice(7, 10), "gsm8k": gsm8k}
    aucs = {t: roc_auc(y[s], p[s]) for t, s in tasks.items()}
    expected = (4 * aucs["law"] + 3 * (aucs["art"] + aucs["virology"] + aucs["gsm8k"])) / 13
    assert first["pooled"]["within_task_auc"]["value"] == pytest.approx(expected)
    assert first["pooled"]["within_task_auc"]["tasks"] == 4
    mmlu_expected = (4 * aucs["law"] + 3 * aucs["art"] + 3 * aucs["virology"]) / 10
    assert first["datasets"]["mmlu"]["within_task_auc"]["value"] == pytest.approx(mmlu_expected)
    assert first["unseen"]["n"] == 3
    assert first["unseen"]["roc_auc"]["value"] == pytest.approx(aucs["virology"])
    seen_expected = (4 * aucs["law"] + 3 * aucs["art"] + 3 * aucs["gsm8k"]) / 10  # virology held out
    assert first["seen"]["within_task_auc"]["value"] == pytest.approx(seen_expected)
    assert first["pooled"]["pr_auc_failure"]["value"] == pytest.approx(pr_auc(1 - y, 1 - p))


def test_missing_outcomes_are_left_out_per_target():
    result = evaluate(make_records(), TARGETS, {"model": hand_predictions()}, n_boot=50)
    second = result["results"]["m2"]["model"]
    assert second["pooled"]["n"] == len(ROWS) - 1
    observed = [i for i, r in enumerate(ROWS) if r[4] is not None]
    y = np.array([ROWS[i][4] for i in observed], dtype=float)
    assert second["pooled"]["roc_auc"]["value"] == pytest.approx(roc_auc(y, hand_predictions()[observed, 1]))


def test_weighted_within_auc_ignores_single_class_tasks():
    y = np.array([1, 0, 1, 1, 0, 1.0])
    p = np.array([0.9, 0.1, 0.5, 0.6, 0.8, 0.2])
    tasks = np.array([0, 0, 1, 1, 2, 2])
    assert weighted_within_auc(y, p, tasks) == pytest.approx((1.0 * 2 + 0.0 * 2) / 4)
    assert np.isnan(weighted_within_auc(np.ones(3), p[:3], tasks[:3]))


def test_predictions_are_checked():
    records = make_records()
    with pytest.raises(DataError, match="shape"):
        evaluate(records, TARGETS, {"bad": np.zeros((2, 2))})
    with pytest.raises(DataError, match="probabilities"):
        evaluate(records, TARGETS, {"bad": hand_predictions() + 1})


def test_outputs_are_written_as_strict_json_markdown_and_png(tmp_path):
    records = make_records()
    predictions = {"model": hand_predictions(), "flat": np.full((len(ROWS), 2), 0.5)}
    result = evaluate(records, TARGETS, predictions, n_boot=50)
    written = write_outputs(tmp_path, records, TARGETS, predictions, result)
    names = sorted(p.name for p in written)
    assert names == sorted(
        ["report.json", "report.md", "predictions.jsonl"]
        + [f"{kind}_{t}.png" for kind in ("roc", "reliability") for t in TARGETS]
    )
    report = json.loads((tmp_path / "report.json").read_text(), parse_constant=pytest.fail)
    assert report["results"]["m1"]["flat"]["pooled"]["roc_auc"]["value"] == 0.5
    assert report["results"]["m1"]["flat"]["unseen"]["roc_auc"]["lo"] is not None
    markdown = (tmp_path / "report.md").read_text()
    assert "## m1" in markdown and "| flat |" in markdown and "per dataset" in markdown
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len(ROWS) and json.loads(lines[2])["labels"]["m2"] is None
    assert all((tmp_path / n).read_bytes()[:4] == b"\x89PNG" for n in names if n.endswith(".png"))


@pytest.fixture
def log_file(tmp_path):
    """A routing log with train / validation / test records (the same rows in each split)."""
    path = tmp_path / "log.jsonl"
    records = [r for split in ("train", "validation", "test") for r in make_records(split=split)]
    for i, record in enumerate(records):
        record.id = f"{record.id}/{i}"
    write_records(path, records)
    return path


def test_baseline_fit_then_eval_end_to_end(tmp_path, log_file, tiny_base_dir, monkeypatch, capsys):
    monkeypatch.chdir(tiny_base_dir.parent)  # the adapter records its base by directory name
    IntroLM.build(load_base(tiny_base_dir.name), IntroConfig(targets=["m2", "m1"])).save_pretrained("adapter")
    common = ["--log", str(log_file), "--targets", *TARGETS]
    assert cli(["baseline", "fit", "--kind", "prior", *common, "--out", "prior"]) == 0
    assert json.loads((tmp_path / "prior" / "fit_summary.json").read_text())["train"] == len(ROWS)
    argv = ["eval", *common, "--splits", "test", "--bootstrap", "20", "--out", "results"]
    scorers = ["--scorer", "prior=prior", "--scorer", "random", "--scorer", "introlm=adapter"]
    assert cli(argv + scorers) == 0
    report = json.loads((tmp_path / "results" / "report.json").read_text())
    assert report["scorers"] == ["prior", "random", "introlm"] and report["n_records"] == len(ROWS)
    assert "| introlm |" in capsys.readouterr().out

    # A scorer from a previous run's predictions.jsonl: the same numbers, in a new report.
    previous = tmp_path / "results" / "predictions.jsonl"
    reuse = ["--scorer", f"introlm={previous},{previous}", "--scorer", f"prior={previous}", "--out", "again"]
    assert cli([*argv[:-2], *reuse]) == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["results"]["m1"]["introlm"] == report["results"]["m1"]["introlm"]
    assert cli([*argv[:-2], "--scorer", f"nope={previous}", "--out", "x"]) == 2
    assert "no scorer 'nope'" in capsys.readouterr().err


def test_cli_errors_are_typed(tmp_path, log_file, capsys):
    common = ["--log", str(log_file), "--targets", *TARGETS]
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "report.json").write_text("{}")  # a previous run's report
    for out in (tmp_path / "done", tmp_path / "done" / "report.json" / "r"):  # checked before scoring
        assert cli(["eval", *common, "--scorer", "random", "--out", str(out)]) == 2
        assert ("pass --overwrite" if out.name == "done" else "is not a directory") in capsys.readouterr().err
    assert (tmp_path / "done" / "report.json").read_text() == "{}"
    assert (
        cli(["eval", *common, "--routing", "--predictions", "p.jsonl", "--out", str(tmp_path / "done")]) == 2
    )
    assert "exists and is not empty" in capsys.readouterr().err
    assert cli(["eval", *common, "--scorer", "prior", "--out", str(tmp_path / "r")]) == 2
    assert "prior=DIR" in capsys.readouterr().err
    assert (
        cli(["baseline", "fit", "--kind", "prior", *common, "--epochs", "2", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "--epochs" in capsys.readouterr().err
    one_target = ["--log", str(log_file), "--targets", "m1", "--out", str(tmp_path / "p")]
    assert cli(["baseline", "fit", "--kind", "prior", *one_target]) == 0
    assert cli(["eval", *common, "--scorer", f"p={tmp_path / 'p'}", "--out", str(tmp_path / "r")]) == 2
    assert "predicts ['m1'], not ['m2']" in capsys.readouterr().err


def _predictions(path, scorer, rows):
    with open(path, "w") as f:
        for i, (split, label, score) in enumerate(rows):
            record = {"id": f"r{i}", "dataset": "d", "subject": f"s{i % 2}", "split": split}
            record |= {"labels": {"self": label}, "scores": {scorer: {"self": score}}}
            f.write(json.dumps(record) + "\n")


def test_paired_auc_compares_on_shared_records_and_filters_splits(tmp_path, capsys):
    import argparse

    from introroute.cli import paired_auc
    from introroute.evaluation.paired import compare

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 80).astype(float)
    splits = ["test"] * 40 + ["test_unseen"] * 40
    good = labels * 0.6 + rng.random(80) * 0.4  # ranks well
    noise = rng.random(80)
    _predictions(tmp_path / "a.jsonl", "good", list(zip(splits, labels, good, strict=True)))
    _predictions(tmp_path / "b.jsonl", "noise", list(zip(splits, labels, noise, strict=True)))
    a, b = f"{tmp_path / 'a.jsonl'}:good", f"{tmp_path / 'b.jsonl'}:noise"
    report = compare(a, b, resamples=50, seed=0)
    assert report["records"] == 80 and report["targets"]["self"]["pooled_diff"]["lo"] > 0
    unseen = compare(a, b, resamples=50, seed=0, splits=["test_unseen"])
    assert unseen["records"] == 40 and unseen["splits"] == ["test_unseen"]
    parser = argparse.ArgumentParser()
    paired_auc.add_arguments(parser)
    assert paired_auc.main(parser.parse_args([a, b, "--splits", "validation"])) == 2
    assert "share no records in splits ['validation']" in capsys.readouterr().out
