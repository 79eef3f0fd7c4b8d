# One entry point for developers and CI. Everything runs in ./.venv, created on demand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo proto lint test check clean image docker-env test-docker helm bench bench-env

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

bench-env: setup  ## redis-server, memcached and the bench's Python packages (idempotent)
	bash scripts/bench_env.sh

test: setup bench-env  ## unit, component, integration tests and a quick bench run (real processes)
	$(BIN)/pytest

check: lint test test-docker  ## everything CI runs (the docker tier needs root: it installs docker)

image:  ## the container image (python:3.11-slim base, wheels from PyPI)
	docker build -t memcluster .

docker-env: setup  ## as root: docker engine, compose, a local base image, wheelhouse, memcluster:test
	bash scripts/docker_test_env.sh

test-docker: docker-env  ## the image, the compose cluster, and the integration suite against it
	MEMCLUSTER_DOCKER_TESTS=1 $(BIN)/pytest tests/docker
	MEMCLUSTER_TEST_TARGET=compose $(BIN)/pytest tests/integration/test_cluster.py

helm: setup  ## install helm into .tools/bin, lint and test the chart
	bash scripts/install_helm.sh
	$(BIN)/pytest -q tests/helm

bench: bench-env  ## benchmarks against Redis and memcached (installs them)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
