# One entry point for developers and CI. Everything runs in ./.venv, created on demand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo proto lint test check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create the virtualenv and install memcluster with its dev tools

demo: setup  ## the main job: a real node, a short workload, the tiers at work
	$(BIN)/memcluster demo

proto: setup  ## regenerate gRPC code and type stubs from proto/*.proto
	$(BIN)/python scripts/gen_proto.py

lint: setup  ## formatting, lint, types, import layers, generated-code drift
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy proto/memcluster common/memcluster client/memcluster coordinator/memcluster node/memcluster cli/memcluster
	$(BIN)/lint-imports
	$(BIN)/python scripts/gen_proto.py --check

test: setup  ## unit, component and integration tests (real processes)
	$(BIN)/pytest

check: lint test  ## everything CI runs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
