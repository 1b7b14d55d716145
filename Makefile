# The one entry point. `make demo` and `make test` are the two set-up commands: each
# installs what it needs first (idempotent: re-running skips what is already there).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SANDBOX_ENV   := .venv-sandbox
SANDBOX_STAMP := $(SANDBOX_ENV)/.installed
NODE_STAMP    := node_modules/.installed
PYTEST_WORKERS ?= 2

.PHONY: install demo test bench lint fmt docs messages clean

install: $(STAMP) $(SANDBOX_STAMP) $(NODE_STAMP)

# Re-install only when the pinned versions or the system package list change.
$(STAMP): pyproject.toml system-packages.txt
	scripts/install-system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# The sandbox's own Python environment: rebuilt when the pins or the sandbox code change.
$(SANDBOX_STAMP): pyproject.toml $(shell find sandbox -name '*.py')
	scripts/install-sandbox-env
	touch $@

# JupyterHub's proxy, at the version package-lock.json pins.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

demo: install
	$(BIN)/sbx demo

test: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS)

bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Reference pages generated from the code (a test fails when they are stale).
docs: install
	$(BIN)/typer gateway.cli utils docs --name sbx --output docs/reference/cli.md
	$(BIN)/python -c 'from pathlib import Path; from gateway.settings import write_reference; write_reference(Path("docs/reference/configuration.md"))'
	$(BIN)/python -c 'from pathlib import Path; from gateway.applications.workflow import write_diagram; write_diagram(Path("docs/explanation/applications.md"))'

# The console's zh-CN catalogue, brought in line with the messages in use (a test fails
# while one lacks a translation).
messages: install
	$(BIN)/python -m gateway.web.catalogue

clean:
	rm -rf $(VENV) $(SANDBOX_ENV) node_modules var .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
