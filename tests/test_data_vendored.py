"""The committed logs: present, valid, small, split as documented, and reproducible from the source."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from introroute.data.importers import IMPORTERS
from introroute.data.jsonl import read_records, write_records
from introroute.data.paths import VENDORED_DIR, data_root, vendored_path
from introroute.data.records import load_logs, select
from introroute.data.splits import pick_unseen_subjects, split_of
from introroute.data.stats import accuracy_table

EXPECTED = {"routellm_mmlu": 11755, "routellm_gsm8k": 1319, "routerbench": 2218}
MIXTRAL, GPT4 = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


@pytest.fixture(scope="module")
def vendored() -> dict[str, list]:
    return {name: read_records(vendored_path(name)) for name in EXPECTED}


def test_files_licences_and_size() -> None:
    files = [vendored_path(name) for name in EXPECTED]
    assert sum(f.stat().st_size for f in files) < 15e6
    for name in ("ATTRIBUTION.md", "LICENSE-RouteLLM", "LICENSE-GSM8K", "LICENSE-MMLU-REPO"):
        assert (VENDORED_DIR / name).is_file(), name


def test_counts_and_unique_ids(vendored: dict[str, list]) -> None:
    for name, records in vendored.items():
        assert len(records) == EXPECTED[name]
        assert len({r.id for r in records}) == len(records)


def test_splits_are_the_documented_assignment(vendored: dict[str, list]) -> None:
    mmlu = vendored["routellm_mmlu"]
    subjects = {r.subject for r in mmlu}
    assert len(subjects) == 47
    unseen = pick_unseen_subjects(subjects)
    for records in vendored.values():
        assert all(r.split == split_of(r.id, r.subject, unseen) for r in records)
    held_out = {r.subject for r in mmlu if r.split == "test_unseen"}
    assert held_out == unseen and len(held_out) == 7
    splits = Counter(r.split for r in mmlu if r.subject not in unseen)
    assert splits["train"] > 5 * splits["validation"] > 0 and splits["test"] > 0


def test_label_facts(vendored: dict[str, list]) -> None:
    mmlu = accuracy_table(vendored["routellm_mmlu"])["mmlu"]
    assert mmlu[MIXTRAL]["accuracy"] == pytest.approx(0.672, abs=1e-3)
    assert mmlu[GPT4]["accuracy"] == pytest.approx(0.802, abs=1e-3)
    gsm8k = accuracy_table(vendored["routellm_gsm8k"])["gsm8k"]
    assert gsm8k[MIXTRAL]["accuracy"] == pytest.approx(0.638, abs=1e-3)
    bench = accuracy_table(vendored["routerbench"])
    assert set(bench) == {"routerbench/arc-challenge", "routerbench/mbpp", "routerbench/winogrande"}
    assert all(len(targets) == 11 for targets in bench.values())
    assert bench["routerbench/arc-challenge"]["gpt-3.5-turbo-1106"]["missing"] == 5
    costs = [o.cost_usd for r in vendored["routerbench"] for o in r.outcomes.values()]
    assert sum(c is not None for c in costs) > 0.99 * len(costs)


@pytest.mark.skipif(not (data_root() / "routellm_evals").is_dir(), reason="public data folder not present")
def test_vendored_files_regenerate_byte_for_byte(tmp_path: Path) -> None:
    for name, importer in IMPORTERS.items():
        write_records(tmp_path / f"{name}.jsonl.gz", importer())
        assert (tmp_path / f"{name}.jsonl.gz").read_bytes() == vendored_path(name).read_bytes(), name


def test_self_labels_line_up_with_the_routellm_records(vendored: dict[str, list]) -> None:
    """SmolLM2's own outcomes are on RouteLLM's prompts, as logged, for the subsets the results use."""
    self_labels = read_records(vendored_path("self_smollm2_mmlu"))
    assert len(self_labels) == 3300 and len({r.id for r in self_labels}) == 3300
    routellm = {r.id: r for r in vendored["routellm_mmlu"]}
    for record in self_labels:
        logged = routellm[record.id]
        assert (record.messages, record.split, record.gold) == (logged.messages, logged.split, logged.gold)
        assert set(record.outcomes) == {"self"} and record.outcomes["self"].correct is not None
    merged = load_logs(["routellm_mmlu", "self_smollm2_mmlu"])
    assert sum("self" in r.outcomes for r in merged) == 3300
    for split, limit in (("train", 1500), ("validation", 300)):
        assert all("self" in r.outcomes for r in select(merged, [split], limit, 0))
    assert all("self" in r.outcomes for r in select(merged, ["test", "test_unseen"], 1500, 0))


@pytest.mark.skipif(not (data_root() / "entityquestions").is_dir(), reason="public data folder not present")
def test_selfcal_labels_are_the_loaders_questions() -> None:
    """self_smollm2_general / _capitals (docs/results-factual-qa.md): every question the loader builds, once,
    as asked, in the loader's split; the accuracies ATTRIBUTION.md states."""
    from introroute.data.benchmarks import load_benchmark

    for name, dataset, n, accuracy in (
        ("self_smollm2_general", "general-qa", 1378, 0.102),
        ("self_smollm2_capitals", "country-capitals", 105, 0.524),
    ):
        records = {r.id: r for r in read_records(vendored_path(name))}
        items = {i.id: i for i in load_benchmark(dataset)}
        assert set(records) == set(items) and len(records) == n, name
        for item_id, item in items.items():
            record = records[item_id]
            assert (record.split, record.messages[0].content) == (item.split, item.messages[0]["content"])
        right = sum(r.outcomes["self"].correct for r in records.values())
        assert right / n == pytest.approx(accuracy, abs=5e-4), name
