# One entry point for people and CI. `make dev` runs Pulse; `make test` passes the tests.
# Both set up everything they need: a pinned toolchain (uv), the locked environment (.venv).
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

.PHONY: dev test lint format typecheck bench reliability setup clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(BIN)/pulse: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	@touch $@

setup: $(BIN)/pulse

dev: setup
	$(BIN)/pulse dev

test: setup
	@command -v docker-compose >/dev/null || bash scripts/install-docker-compose.sh
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check pulse tests bench
	$(BIN)/ruff format --check pulse tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff check --fix pulse tests bench
	$(BIN)/ruff format pulse tests bench

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The figures of docs/reliability.md: chaos, priorities, bounded memory (also part of `make test`).
reliability: setup
	$(BIN)/pytest -s -q tests/test_chaos.py tests/test_priorities.py tests/test_bounded_memory.py

clean:
	rm -rf $(VENV) $(TOOLS) .bench-venv .pytest_cache .mypy_cache .ruff_cache
