"""The paper's routing setting: reliability = 1 - share kept local and wrong; latency accounting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from introroute.routing_eval.deferral import LatencyModel, curve, evaluate, kept_at, main


def test_oracle_keeps_every_right_answer_plus_the_allowed_failures() -> None:
    right = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    oracle = curve(None, right, LatencyModel(), "oracle")
    assert kept_at(oracle, 1.0)[0] == pytest.approx(0.2)
    assert kept_at(oracle, 0.9)[0] == pytest.approx(0.3)  # one wrong local answer in ten allowed


def test_a_perfect_scorer_matches_the_oracle_and_latency_follows_the_model() -> None:
    right = np.array([1, 0, 1, 0, 0, 1, 0, 0], dtype=float)
    latency = LatencyModel(local_ttft_s=0.1, local_per_token_s=0.0, remote_ttft_s=1.0, remote_per_token_s=0.0)
    result = evaluate({"perfect": right * 0.8 + 0.1, "inverse": 1 - right}, right, 1.0, latency, n_boot=50)
    perfect = result["methods"]["perfect"]
    assert perfect["kept_local"]["value"] == pytest.approx(3 / 8)
    assert perfect["share_of_oracle"] == pytest.approx(1.0)
    # kept: 0.1 s; escalated: 0.1 s prefill + 1.0 s; always-large: 1.0 s
    expected = (3 / 8 * 0.1 + 5 / 8 * 1.1) / 1.0
    assert perfect["latency_cut"]["value"] == pytest.approx(1 - expected)
    assert result["methods"]["inverse"]["kept_local"]["value"] == 0.0  # nothing kept safely
    assert result["methods"]["random"]["kept_local"]["value"] == pytest.approx(0.0)


def test_command_reads_eval_predictions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        y = float(rng.random() < 0.3)
        rows.append(
            {
                "id": f"q{i}",
                "split": "test",
                "scores": {"a": {"self": 0.3 + 0.5 * y}, "b": {"self": float(rng.random())}},
                "labels": {"self": y},
            }
        )
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (
        main(
            ["--predictions", str(path), "--out", str(tmp_path / "out"), "--versus", "b", "--bootstrap", "20"]
        )
        == 0
    )
    report = json.loads((tmp_path / "out" / "deferral.json").read_text())
    assert report["methods"]["a"]["share_of_oracle"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "deferral.png").stat().st_size > 0
    assert "| a |" in (tmp_path / "out" / "deferral.md").read_text()
