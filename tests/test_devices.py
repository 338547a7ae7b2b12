"""Device and dtype options (API, CLI, router YAML) and the architecture checks of the loader.

Devices this machine lacks are simulated by patching torch's availability probes, so the error
paths are the ones a user without a GPU (or with an old one) meets; nothing here needs a GPU.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from transformers import (
    CohereConfig,
    Gemma3TextConfig,
    LlamaConfig,
    MambaConfig,
    Phi3Config,
    Qwen3NextConfig,
    T5Config,
)

from introroute.cli import main as cli_main
from introroute.errors import ConfigError, ModelLoadError
from introroute.gatekeeper import load_base
from introroute.gatekeeper.loading import check_architecture, resolve_device, resolve_dtype
from introroute.router import load_config


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("fp32", torch.float32), ("float32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)],
)
def test_dtype_spellings(name, dtype):
    assert resolve_dtype(name) == dtype == resolve_dtype(dtype)


def test_bad_dtype_and_device_names():
    with pytest.raises(ModelLoadError, match="dtype 'int8' is not one of"):
        resolve_dtype("int8")
    with pytest.raises(ModelLoadError, match="not cpu, cuda, cuda:N or mps"):
        resolve_device("tpu")
    assert resolve_device("cpu", "bf16") == torch.device("cpu")  # bf16 and fp16 run on CPU
    assert resolve_device("cpu", "fp16") == torch.device("cpu")


def test_missing_accelerators_fail_before_loading(monkeypatch, tiny_base_dir):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="no CUDA GPU on this machine"):
        load_base(tiny_base_dir, device="cuda", dtype="bf16")
    with pytest.raises(ModelLoadError, match="no MPS"):
        resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ModelLoadError, match="has 1 CUDA GPU"):
        resolve_device("cuda:3")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    with pytest.raises(ModelLoadError, match="no native bfloat16"):
        resolve_device("cuda:0", "bfloat16")


def test_router_yaml_device_and_dtype(tmp_path):
    tiers = [{"name": "local", "target": "self"}]
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"tiers": tiers, "gatekeeper": {"device": "cuda:1", "dtype": "bf16"}}))
    gatekeeper = load_config(path).gatekeeper
    assert (gatekeeper.device, gatekeeper.dtype) == ("cuda:1", "bf16")
    bad = [("dtype", "int4", "dtype 'int4' is not one of"), ("device", "gpu", "not cpu")]
    for key, value, message in bad:
        path.write_text(yaml.safe_dump({"tiers": tiers, "gatekeeper": {key: value}}))
        with pytest.raises(ConfigError, match=f"gatekeeper.{key}: .*{message}"):
            load_config(path)


def test_cli_rejects_bad_device_and_dtype(capsys):
    for option, value in [("--device", "gpu"), ("--dtype", "int8")]:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["score", "hi", option, value])
        assert exit_info.value.code == 2
        assert value in capsys.readouterr().err


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (T5Config(), "encoder-decoder"),
        (Gemma3TextConfig(use_bidirectional_attention=True), "bidirectional attention"),
        (Qwen3NextConfig(), r"layers of type \['linear_attention'\]"),  # Gated DeltaNet layers
        (MambaConfig(), "recurrent state"),
        (CohereConfig(logit_scale=0.0625), "logit_scale=0.0625"),
    ],
)
def test_architectures_that_break_an_invariant_are_refused(config, match):
    with pytest.raises(ModelLoadError, match=match):
        check_architecture(config)


def test_unverified_architectures_load_with_a_warning(recwarn):
    check_architecture(LlamaConfig())
    assert not recwarn.list
    with pytest.warns(UserWarning, match="phi3 is not among the architectures"):
        check_architecture(Phi3Config())
