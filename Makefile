# One entry point for people and CI. `make dev` runs Pulse; `make test` passes the tests.
# Both set up everything they need: a pinned toolchain (uv), the locked environment (.venv).
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
# The example channel plugin the tests load (tests/plugins/): installed beside, not into, .venv,
# so `make dev` never shows it; the tests that need it put this folder on their path.
TEST_PLUGINS := .test-plugins
EXAMPLE_PLUGIN := tests/plugins/pulse-example-channel

.PHONY: dev test test-unit test-integration test-system lint format typecheck bench reliability \
	loadtest scaling scaling-cluster setup tools clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(BIN)/pulse: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	@touch $@

$(TEST_PLUGINS)/.installed: $(BIN)/pulse $(shell find $(EXAMPLE_PLUGIN) -name '*.py' -o -name pyproject.toml)
	rm -rf $(TEST_PLUGINS)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --target $(TEST_PLUGINS) $(EXAMPLE_PLUGIN)
	@touch $@

setup: $(BIN)/pulse $(TEST_PLUGINS)/.installed

# Tools some tests call that are not Python packages (docker-compose; prometheus and promtool).
# CI installs them in .ci/run; on a workstation, run it once.
tools:
	bash scripts/install-docker-compose.sh
	bash scripts/install-prometheus.sh

dev: setup
	$(BIN)/pulse dev

# All three tiers (the README's command and CI's). Each tier alone: unit tests need no server
# and run in seconds; integration tests use real Redis, PostgreSQL, SMTP and HTTP on loopback;
# system tests start processes (pulse dev, workers killed mid-flight, chaos, 100k drains).
test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-integration: setup
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

test-system: setup
	$(BIN)/pytest -m system $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check pulse tests bench loadtest
	$(BIN)/ruff format --check pulse tests bench loadtest
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff check --fix pulse tests bench loadtest
	$(BIN)/ruff format pulse tests bench loadtest

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Headless Locust against a Pulse of its own (loadtest/README.md): LOADTEST_USERS (20),
# LOADTEST_RUN_TIME (60s), LOADTEST_WORKERS (0: one process; N: a master and N workers),
# LOADTEST_OUT (loadtest/reports/<time>); PULSE_REDIS_URL/PULSE_DATABASE_URL to use given servers.
loadtest: setup
	$(BIN)/python -m loadtest.run

# docs/scaling.md and docs/scaling.png: drain and accept curves across hosts simulated with
# network namespaces (root needed; bench/scaling.py). SCALING_ARGS: --quick, --workers 1,2,4,
# --apis 1,2,4, --cleanup (remove what a crashed run left); --redis single,cluster1,cluster3:
# the drain curve alone on one Redis and on clusters of 1 and 3 masters on hosts of their own
# (--partitions 6), written to its own section of docs/scaling.md and docs/scaling-cluster.png.
scaling: setup
	$(BIN)/python -m bench.scaling $(SCALING_ARGS)

# docs/scaling.md#redis-cluster: drain on one Redis against a 1- and 3-master Redis Cluster with
# 1 or 3 partitions, on loopback (no root; bench/cluster_drain.py). CLUSTER_ARGS: --jobs N,
# --runs 3, --workers 1,2.
scaling-cluster: setup
	$(BIN)/python -m bench.cluster_drain $(CLUSTER_ARGS)

# The figures of docs/reliability.md: chaos, priorities, bounded memory (also part of `make test`).
reliability: setup
	$(BIN)/pytest -s -q tests/test_chaos.py tests/test_priorities.py tests/test_bounded_memory.py

clean:
	rm -rf $(VENV) $(TOOLS) $(TEST_PLUGINS) .bench-venv .pytest_cache .mypy_cache .ruff_cache \
		loadtest/reports
