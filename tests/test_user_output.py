"""What a user sees on every run: no deprecation noise caused by how introroute calls transformers,
and an ``introroute --help`` that says what each command is for."""

from __future__ import annotations

import warnings

import pytest
from transformers.utils import generic

from introroute.cli import COMMANDS, main
from introroute.gatekeeper import IntroConfig, IntroLM, load_base
from introroute.training.forward import intro_forward, prompt_cache

MESSAGES = [{"role": "user", "content": "what is the capital of france"}]


def test_the_gatekeeper_passes_and_reads_the_kv_cache_by_its_current_name(tiny_base_dir, monkeypatch):
    """transformers 5 renamed ``past_key_values`` to ``cache``: the old argument raises a
    FutureWarning, reading the old output field logs a warning. Scoring, local generation and the
    training forwards must trigger neither (PEFT's own warnings while building are not ours)."""
    gk = IntroLM.build(load_base(tiny_base_dir), IntroConfig(targets=["self", "gpt-4"]))
    logged: list[tuple[object, ...]] = []
    monkeypatch.setattr(generic.logger, "warning_once", lambda *args, **_: logged.append(args))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        gk.generate_from(gk.prefill(MESSAGES), max_new_tokens=2)
        gk.scores_batch([MESSAGES, MESSAGES])
        batch = gk.collate([gk.encode(MESSAGES)])
        intro_forward(gk, batch, prompt_cache(gk, batch))
    assert logged == []


def test_help_lists_every_command_with_its_purpose(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse may wrap a long command name
    assert text.startswith("usage: introroute") and "Route LiteLLM calls" in text
    assert "add_arguments" not in text  # the module docstring is for developers
    for name, (_, purpose) in COMMANDS.items():
        assert f"{name} {purpose}" in text
