"""One short demo for the whole folder: a real run (every service, real Kafka and Redis) is the
fixture; the tests judge what it produced."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from libs.common.admin import delete_topics, list_topics
from libs.common.settings import CommonSettings
from tooling.demo.plan import DemoPlan
from tooling.demo.run import DemoResult, run_demo

# About two minutes on 2 cores: a small world, a short horizon, 30 s of live posting (and the
# likes still due after it), with the rogue release and a SIGKILLed scorer (supervision too).
SHORT = DemoPlan(
    seed=11,
    horizon_s=8.0,
    history_pupdates=1_500,
    live_seconds=35.0,
    rate=900.0,
    drafts=5,
    n_dogs=1_500,
    rogue=True,
    rogue_at=0.3,
    chaos=True,
    chaos_service="scorer",
    chaos_at=0.1,
    drain_s=20.0,
    warm_timeout_s=90.0,
    free_ports=True,
)


@pytest.fixture(scope="session")
def demo_state_dir(tmp_path_factory) -> Path:
    """The demo remembers its prefix for `pooch stack status` in the state folder: a private one."""
    return tmp_path_factory.mktemp("demo-state")


@pytest.fixture(scope="session")
def short_demo(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory, demo_state_dir
) -> Iterator[DemoResult]:
    out = tmp_path_factory.mktemp("demo-report")
    # Only for the demo's run: the rest of the session keeps its own state folder (the stack's).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POOCH_STATE_DIR", str(demo_state_dir))
        result = run_demo(
            SHORT,
            out=out,
            console=Console(force_terminal=False),
            say=print,
            backend=(kafka_bootstrap, redis_url),
            partitions=3,
        )
    yield result
    if os.environ.get("POOCH_TEST_KEEP_TOPICS") != "1":
        settings = CommonSettings(
            kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_prefix=result.prefix
        )
        with contextlib.suppress(Exception):
            names = [n for n in list_topics(settings, timeout=5) if n.startswith(result.prefix)]
            delete_topics(settings, names, timeout=10)
