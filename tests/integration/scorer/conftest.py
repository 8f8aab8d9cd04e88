"""Fixtures of the scorer's integration tests."""

from __future__ import annotations

import pytest

from tests.support.scorer import RedisServer


@pytest.fixture
def online(tmp_path):
    """A redis-server of the test's own for the online view (stopping it disturbs nobody)."""
    own = RedisServer(tmp_path).start()
    try:
        yield own
    finally:
        own.stop()
