"""The Prometheus alert rules load, and fire (and stay quiet) as their unit tests say.

`promtool` comes from Debian's prometheus package; `make test` installs it when missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support import REPO

RULES = REPO / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: make test installs it (Debian package prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus, or run make test)")
    return tool


def test_rules_are_valid(promtool):
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES / "alerts.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_behave_as_their_tests_say(promtool):
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
