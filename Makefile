# Developer entry points. On a fresh machine they need only Python 3.11, Java 17+ and Maven:
# the venv, the Kafka jars and (as root) redis-server are fetched once and then reused.
#   make demo   venv, local stack and services, the Sniffable simulation, a report
#   make test   venv, ruff, import layers, mypy, stack up (if not running), pytest, stack down (what it started)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null || echo python3.11)
VENV := .venv
BIN := $(VENV)/bin
POOCH := $(BIN)/pooch
RUFF := $(BIN)/ruff
# Holds the hash of pyproject.toml + constraints.txt the venv was installed from.
STAMP := $(VENV)/.pooch-installed

.PHONY: help venv tools demo test lint format down constraints

help:
	@echo "make demo         the main job: stack + services + simulated Sniffable, ending in a report"
	@echo "make test         ruff + the whole pytest suite against the real Kafka and Redis"
	@echo "make lint         ruff check, ruff format --check, import layers (import-linter), mypy"
	@echo "make down         stop the local stack (data is kept)"
	@echo "make venv         (re)install .venv when pyproject.toml or constraints.txt changed"
	@echo "make constraints  re-freeze constraints.txt from .venv"

venv:
	@want="$$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"; \
	if [ -x $(BIN)/python ] && $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
	   && [ "$$(cat $(STAMP) 2>/dev/null)" = "$$want" ]; then exit 0; fi; \
	if ! $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then \
	  echo "make venv: Python 3.11 is needed (tried '$(PYTHON)'); install python3.11 or run make PYTHON=/path/to/python3.11" >&2; \
	  exit 1; \
	fi; \
	if ! { [ -x $(BIN)/python ] && $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; }; then \
	  echo "creating $(VENV) with $(PYTHON)"; rm -rf $(VENV); \
	  $(PYTHON) -m venv $(VENV) || { echo "make venv: '$(PYTHON) -m venv' failed (Debian: apt-get install python3.11-venv)" >&2; exit 1; }; \
	fi; \
	echo "installing pinned dependencies into $(VENV)"; \
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'; \
	echo "$$want" > $(STAMP)

# promtool checks the alert rules in deploy/prometheus (Debian's prometheus package ships it).
tools:
	@command -v promtool >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing promtool (Debian package prometheus)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else echo "promtool missing: install Debian's prometheus package (the alert-rule tests need it)" >&2; fi

demo: venv
	$(POOCH) demo
	$(POOCH) stack status

# The stack is started only if it is not running, and only what this run started is stopped
# afterwards (also on failure or Ctrl-C). pytest's exit code is make's; "no tests collected"
# (5) is a failure too, since it means the suite silently vanished.
test: venv tools
	$(RUFF) check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(POOCH) stack prereqs
	@record="$$(mktemp)"; \
	trap 'for c in $$(cat "$$record"); do $(POOCH) stack down --only "$$c"; done; rm -f "$$record"' EXIT; \
	$(POOCH) stack up --only kafka --only redis --record "$$record"; \
	rc=0; $(BIN)/pytest || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: failing" >&2; fi; \
	exit $$rc

# ruff, the import layers (import-linter contracts in pyproject.toml) and mypy on libs/common.
lint: venv
	$(RUFF) check .
	$(RUFF) format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: venv
	$(RUFF) format .
	$(RUFF) check --fix .

down: venv
	$(POOCH) stack down

constraints: venv
	$(BIN)/pip freeze --exclude-editable > constraints.txt
