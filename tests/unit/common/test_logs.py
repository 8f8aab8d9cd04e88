"""Structured logs: JSON lines on the stderr of the moment."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from libs.common.logs import configure_logging


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    root.handlers[:], level = saved
    root.setLevel(level)


def test_log_lines_go_to_the_current_stderr_even_after_the_configuring_one_is_closed(
    monkeypatch, restore_root_logging
):
    # A CLI command configured logging inside click's CliRunner, whose stderr buffer then closed.
    runner_stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", runner_stderr)
    configure_logging("cli", "INFO", "json")
    runner_stderr.close()
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logging.getLogger("httpx").info("HTTP Request: %s %s", "GET", "/v1/models")
    [line] = later.getvalue().splitlines()
    record = json.loads(line)
    assert (record["service"], record["msg"]) == ("cli", "HTTP Request: GET /v1/models")
