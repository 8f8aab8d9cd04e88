# Developer entry points. On a fresh machine they need only Python 3.11, Java 17+, Maven and Go
# (Go builds the deployment checks' tools, see `tools`):
# the venv, the Kafka jars and (as root) redis-server are fetched once and then reused.
#   make demo   venv, local stack and services, the Sniffable simulation, a report
#   make test   venv, .venv-flink (PyFlink: the Flink featurizer must equal the reference too), ruff,
#               import layers, mypy, stack up (if not running), pytest, stack down (what it started)

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

.PHONY: help venv venv-flink tools demo test scenarios lint format down constraints

help:
	@echo "make demo         the main job: stack + services + simulated Sniffable, ending in a report"
	@echo "make test         ruff + the whole pytest suite against the real Kafka and Redis"
	@echo "make scenarios    the incident suite (tests/scenarios, ~15 min): every lesson's incident, whole system"
	@echo "make lint         ruff check, ruff format --check, import layers (import-linter), mypy"
	@echo "make down         stop the local stack (data is kept)"
	@echo "make venv         (re)install .venv when pyproject.toml or constraints.txt changed"
	@echo "make constraints  re-freeze constraints.txt from .venv"
	@echo "make venv-flink   (re)install .venv-flink, PyFlink for the Flink featurizer job (docs/flink.md)"

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

# PyFlink in a venv of its own: its pins clash with the project's (pyproject.toml, dependency
# group flink). pip >= 25.1 reads dependency groups; constraints-flink.txt pins pip too.
FLINK_VENV := .venv-flink
FLINK_STAMP := $(FLINK_VENV)/.pooch-installed

venv-flink:
	@want="$$(cat pyproject.toml constraints-flink.txt | sha256sum | cut -d' ' -f1)"; \
	if [ -x $(FLINK_VENV)/bin/python ] && [ "$$(cat $(FLINK_STAMP) 2>/dev/null)" = "$$want" ]; then exit 0; fi; \
	[ -x $(FLINK_VENV)/bin/python ] || $(PYTHON) -m venv $(FLINK_VENV); \
	echo "installing PyFlink (dependency group flink) into $(FLINK_VENV)"; \
	$(FLINK_VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints-flink.txt pip; \
	$(FLINK_VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints-flink.txt --group flink; \
	echo "$$want" > $(FLINK_STAMP)

# External tools of the deployment checks (tests/deploy, tests/integration/ops), installed once
# and cached; each step is skipped when its tool is already there at the pinned version:
#   promtool, prometheus   Debian's prometheus package (rule tests, the live Prometheus test)
#   helm, kubeconform      built with `go install` from the Go module proxy into $(TOOLS_BIN)
#   pooch-grafana-schemacheck   deploy/grafana/schemacheck (Grafana's dashboard schema, Go SDK)
#   pooch-composecheck     deploy/composecheck (compose-go, the loader of Docker Compose)
#   prometheus-operator    its Go module (the CRDs the ServiceMonitor/PrometheusRule checks use)
# Go builds run one at a time (-p 1): the machines have 2 cores, shared.
TOOLS_BIN ?= $(HOME)/.cache/pooch/bin
HELM_VERSION := v3.22.0
KUBECONFORM_VERSION := v0.8.0
PROMETHEUS_OPERATOR_VERSION := v0.85.0
GO ?= go
# What helm's release builds set with -ldflags: its version, and the Kubernetes version it assumes
# without a cluster (else 1.20, below the chart's kubeVersion).
HELM_KUBE_MINOR := 34
HELM_LDFLAGS := -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(HELM_KUBE_MINOR) \
  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(HELM_KUBE_MINOR)

tools:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing promtool and prometheus (Debian package prometheus)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "promtool/prometheus missing: install Debian's prometheus package (the rule and live tests need it)" >&2; fi; \
	fi
	@mkdir -p $(TOOLS_BIN); \
	if ! command -v $(GO) >/dev/null 2>&1; then \
	  echo "go missing: helm, kubeconform and the dashboard schema check are built with go (tests/deploy skip them)" >&2; exit 0; \
	fi; \
	build() { name=$$1; version=$$2; shift 2; \
	  if [ -x $(TOOLS_BIN)/$$name ] && [ "$$(cat $(TOOLS_BIN)/.$$name.version 2>/dev/null)" = "$$version" ]; then return 0; fi; \
	  echo "building $$name $$version into $(TOOLS_BIN)"; "$$@"; echo "$$version" > $(TOOLS_BIN)/.$$name.version; }; \
	build kubeconform $(KUBECONFORM_VERSION) env GOBIN=$(TOOLS_BIN) $(GO) install -p 1 github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION); \
	build helm $(HELM_VERSION)-k8s$(HELM_KUBE_MINOR) env GOBIN=$(TOOLS_BIN) $(GO) install -p 1 -ldflags "$(HELM_LDFLAGS)" helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); \
	check="$$(cat deploy/grafana/schemacheck/go.mod deploy/grafana/schemacheck/go.sum deploy/grafana/schemacheck/main.go | sha256sum | cut -c1-16)"; \
	build pooch-grafana-schemacheck "$$check" sh -c 'cd deploy/grafana/schemacheck && $(GO) build -p 1 -o $(TOOLS_BIN)/pooch-grafana-schemacheck .'; \
	check="$$(cat deploy/composecheck/go.mod deploy/composecheck/go.sum deploy/composecheck/main.go | sha256sum | cut -c1-16)"; \
	build pooch-composecheck "$$check" sh -c 'cd deploy/composecheck && $(GO) build -p 1 -o $(TOOLS_BIN)/pooch-composecheck .'; \
	$(GO) mod download github.com/prometheus-operator/prometheus-operator@$(PROMETHEUS_OPERATOR_VERSION)

demo: venv
	$(POOCH) demo
	$(POOCH) stack status

# The stack is started only if it is not running, and only what this run started is stopped
# afterwards (also on failure or Ctrl-C). pytest's exit code is make's; "no tests collected"
# (5) is a failure too, since it means the suite silently vanished. One process: on 2 cores the
# suite is CPU-bound (the services it starts and the broker), and two xdist workers took as long
# and made latency-bound tests flaky; on a bigger machine, `pytest -n N -m "not serial"` then
# `pytest -m serial`.
test: venv venv-flink tools
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

# The incident suite (tests/scenarios, about 15 minutes on 2 cores): the five services under
# supervision through every lesson's incident. POOCH_SCENARIO_SCALE stretches its phases.
scenarios: venv tools
	@record="$$(mktemp)"; \
	trap 'for c in $$(cat "$$record"); do $(POOCH) stack down --only "$$c"; done; rm -f "$$record"' EXIT; \
	$(POOCH) stack up --only kafka --only redis --record "$$record"; \
	POOCH_SCENARIOS=1 $(BIN)/pytest tests/scenarios

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
