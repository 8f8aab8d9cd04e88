"""Shared helpers of the static deployment checks (no Kafka, no Redis, no network).

The tools come from the project's own files: helm and kubeconform are built by `make tools` with
`go install` into ~/.cache/pooch/bin, promtool and prometheus from Debian's `prometheus` package,
hadolint, check-jsonschema and kubernetes-validate from the dev dependencies. A missing tool fails
the test in CI (where `make test` installs it first) and skips it on a developer's machine.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.support import REPO

CHART = REPO / "deploy" / "k8s" / "pooch"
RULES = CHART / "files" / "alerts.yml"
TOOLS_BIN = Path(os.environ.get("POOCH_TOOLS_BIN", Path.home() / ".cache" / "pooch" / "bin"))


def tool(name: str) -> str:
    """The path of an external tool: the tools cache, then the venv's bin (wheels that ship a
    binary), then PATH."""
    for folder in (TOOLS_BIN, Path(sys.executable).parent):
        cached = folder / name
        if cached.is_file() and os.access(cached, os.X_OK):
            return str(cached)
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is missing in CI: `make tools` installs it")
    pytest.skip(f"{name} not installed (run `make tools`)")
    raise AssertionError("unreachable")
