"""Shared pytest configuration and fixtures."""

from __future__ import annotations

import os

# --- router suite ---------------------------------------------------------------------------
# LiteLLM fetches its model-cost map from the network at import unless told to use its bundled
# copy; tests are offline, and the fetch's retries cost seconds per process.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest
from router_support import FakeGatekeeper, OpenAIServer


@pytest.fixture
def router_fake_gatekeeper() -> FakeGatekeeper:
    """A deterministic gatekeeper (scores self=0.9, gpt-4=0.95) that can serve a local tier."""
    return FakeGatekeeper()


@pytest.fixture(scope="session")
def router_openai_server():
    """An OpenAI-compatible server on 127.0.0.1 (ephemeral port) for LiteLLM's real HTTP path."""
    server = OpenAIServer().start()
    yield server
    server.stop()


@pytest.fixture
def router_server(router_openai_server: OpenAIServer) -> OpenAIServer:
    """The shared server with its request log and fault queue cleared for this test."""
    router_openai_server.requests.clear()
    router_openai_server.headers.clear()
    router_openai_server.faults.clear()
    return router_openai_server


# --- data suite -----------------------------------------------------------------------------
# Builders live in data_support.py; the gatekeeper tests use tiny_lm too.
from arch_support import ARCHITECTURES, save_tiny_model  # noqa: E402
from data_support import build_synthetic_data, build_tiny_lm  # noqa: E402


@pytest.fixture
def tiny_lm():
    """``(model, tokenizer)``: a fresh random 2-layer Llama (hidden 64) and a word-level chat
    tokenizer with pad/eos/unk and a ChatML-like template. Fresh per test: PEFT wraps in place."""
    return build_tiny_lm()


@pytest.fixture
def synthetic_data(tmp_path, monkeypatch):
    """A miniature public-data folder (real layout and columns); ``INTROROUTE_DATA`` points at it."""
    root = build_synthetic_data(tmp_path / "data")
    monkeypatch.setenv("INTROROUTE_DATA", str(root))
    return root


@pytest.fixture
def tiny_base_dir(tiny_lm, tmp_path):
    """``tiny_lm`` saved as an HF model directory, loadable by ``introroute.gatekeeper.load_base``."""
    model, tokenizer = tiny_lm
    directory = tmp_path / "tiny-llama"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session", params=ARCHITECTURES)
def arch_dir(request, tmp_path_factory):
    """A tiny random model of each supported architecture (arch_support.py), saved once per session
    as an HF directory: a test that takes it runs once per architecture."""
    return save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
