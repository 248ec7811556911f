# Two commands do everything on a fresh machine:
#   make serve   set up, fetch + verify the default models, index data/articles, serve on :8000
#   make test    set up, fetch + verify the small models, run the whole test suite
# Both are idempotent: a second run skips what is done and starts in seconds.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEPS_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(DEPS_HASH)

.PHONY: setup models models-small browser index serve test test-fast lint format eval bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	@# llama-cpp-python compiles from source (~6.5 min on 2 cores) the first time; pip caches the wheel.
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

models: setup
	$(BIN)/rag models fetch --profile default

models-small: setup
	$(BIN)/rag models fetch --profile small

index: models
	$(BIN)/rag ingest

serve: index
	$(BIN)/rag serve

# Debian's Chromium for the browser test (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: models-small browser
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not e2e and not browser and not load"

lint: setup
	$(BIN)/ruff check rag api tests
	$(BIN)/ruff format --check rag api tests
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format rag api tests
	$(BIN)/ruff check --fix rag api tests

eval: models
	$(BIN)/rag eval

bench: models
	$(BIN)/rag bench

clean:
	rm -rf $(VENV) index/gen-* index/CURRENT
