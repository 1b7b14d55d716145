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

.PHONY: install system-packages demo test bench lint fmt docs messages clean

# The three environments are independent of each other once the Debian packages are
# there, so they are made side by side (each one's output kept together).
install:
	@$(MAKE) --no-print-directory --jobs=3 --output-sync=target $(STAMP) $(SANDBOX_STAMP) $(NODE_STAMP)

# Idempotent and quick when nothing is missing; order-only below, so it never forces a
# re-install by itself.
system-packages:
	@scripts/install-system-packages

# Re-install only when the pinned versions or the system package list change.
$(STAMP): pyproject.toml system-packages.txt | system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# The sandbox's own Python environment: rebuilt when the pins or the sandbox code change.
$(SANDBOX_STAMP): pyproject.toml $(shell find sandbox -name '*.py') | system-packages
	scripts/install-sandbox-env
	touch $@

# JupyterHub's proxy, at the version package-lock.json pins.
$(NODE_STAMP): package.json package-lock.json | system-packages
	npm ci --no-audit --no-fund --silent
	touch $@

demo: install
	$(BIN)/sbx demo

test: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

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
	$(BIN)/python -c 'from pathlib import Path; from gateway.reports.evaluation import write_diagram; write_diagram(Path("docs/explanation/reports.md"))'

# The console's zh-CN catalogue, brought in line with the messages in use (a test fails
# while one lacks a translation).
messages: install
	$(BIN)/python -m gateway.web.catalogue

clean:
	rm -rf $(VENV) $(SANDBOX_ENV) node_modules var .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
