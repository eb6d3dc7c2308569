# InsightX: `make run` starts the whole stack, `make test` runs every test. `make help` lists the rest.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/insightx/v1/*.proto)

.DEFAULT_GOAL := help
.PHONY: help install proto run test test-fast lint bench clean demo system-deps train-analyst
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create the virtual environment and install everything

proto: $(STAMP) ## Regenerate insightx/v1 from protos/
	$(BIN)/python -m tools.gen_protos

run: install ## Start the whole stack (offline analyst, demo dataset) on http://localhost:8000
	$(BIN)/python -m tools.run_stack

demo: install ## Write the demo dataset (UPI transactions, 250k rows) to data/demo/
	$(BIN)/python -m tools.demo_data

system-deps: ## Debian packages the tests use: Chromium (browser tests), docker-compose (compose validation), PostgreSQL (shared-store tests), iproute2 (binding tests)
	@missing=""; command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing with apt-get"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

test: install system-deps ## Run the whole suite: unit, integration, end-to-end and browser tests
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: install ## Unit tests only
	$(BIN)/python -m pytest -q -m "not integration and not e2e and not browser and not slow"

lint: install ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy common services gateway tools

train-analyst: install ## Refit the built-in analyst's ranker on the train split (writes services/orchestrator/builtin/parser_weights.json)
	$(BIN)/python -m tools.train_analyst

bench: install ## Run every benchmark under bench/
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean: ## Remove the virtual environment and local data
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache

.PHONY: web-deps
install: web-deps
web-deps: gateway/web/node_modules/.package-lock.json ## Install the page's chart libraries (vega, vega-lite, vega-embed) with npm ci

gateway/web/node_modules/.package-lock.json: gateway/web/package.json gateway/web/package-lock.json
	@command -v npm >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null)
	cd gateway/web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@
