"""ModelSpec: one description of the gatekeeper model for the CLI commands and the router YAML."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from introroute.gatekeeper.spec import ModelSpec, add_model_arguments
from introroute.router.config import GatekeeperConfig


def test_flags_become_the_spec_and_missing_flags_keep_its_defaults():
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, adapter=False, base=False, max_context=False, prefix_cache=False)
    args = parser.parse_args(["--device", "cuda:1", "--dtype", "bf16", "--threads", "2"])
    spec = ModelSpec.from_args(args, adapter="some/dir")
    assert spec == ModelSpec(adapter="some/dir", threads=2, device="cuda:1", dtype="bf16")
    full = argparse.ArgumentParser()
    add_model_arguments(full)
    assert ModelSpec.from_args(full.parse_args(["--no-prefix-cache", "--max-context", "64"])) == ModelSpec(
        max_context=64, prefix_cache=False
    )


def test_bad_device_is_a_usage_error():
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "tpu"])


def test_router_config_loads_through_the_same_spec(monkeypatch):
    config = GatekeeperConfig(adapter="a", max_context=32, threads=1, device="cpu", dtype="fp16")
    assert config.model_spec() == ModelSpec(
        adapter="a", base="smollm2-135m-instruct", max_context=32, threads=1, device="cpu", dtype="fp16"
    )
    loaded = []
    monkeypatch.setattr(ModelSpec, "load", lambda self: loaded.append(self) or "model")
    assert config.load_introlm() == "model"
    assert loaded == [config.model_spec()]
    assert {f.name for f in dataclasses.fields(ModelSpec)} <= set(GatekeeperConfig.model_fields)


def test_spec_and_flags_do_not_import_torch():
    code = (
        "import sys, argparse; from introroute.gatekeeper import ModelSpec, add_model_arguments; "
        "add_model_arguments(argparse.ArgumentParser()); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("command", ["serve", "score", "train", "eval", "export"])
def test_every_command_that_loads_a_model_places_it_the_same_way(command):
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(f"introroute.cli.{command}").add_arguments(parser)
    flags = {flag for action in parser._actions for flag in action.option_strings}
    assert {"--device", "--dtype", "--threads"} <= flags
