"""Running the real collector (``python -m services.collector``) in tests, and reading what it wrote.

Not a test module: helpers for ``test_collector_stream.py`` and ``test_collector_http.py``.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

from confluent_kafka import KafkaException

from libs.common.serde import serde
from libs.common.settings import CommonSettings
from libs.common.topics import DEADLETTERS, LIKES, PUPDATES
from tests.support.kafkautil import read_all
from tests.support.procs import ServiceProcess


class CollectorProcess(ServiceProcess):
    """One collector process with its own port and log file."""

    def __init__(self, settings: CommonSettings, log_dir: Path, instance_id: str = "it", **options) -> None:
        super().__init__("collector", settings, log_dir, instance_id, **options)


class Outputs:
    """What a read_committed reader sees on the facts topics and in the dead letters."""

    def __init__(self, settings: CommonSettings) -> None:
        self.pupdates = [
            serde("pupdate").decode(m.value()) for m in read_all(settings, settings.topic(PUPDATES))
        ]
        self.likes = [serde("like").decode(m.value()) for m in read_all(settings, settings.topic(LIKES))]
        self.dead = [
            serde("dead_letter").decode(m.value()) for m in read_all(settings, settings.topic(DEADLETTERS))
        ]

    @property
    def fact_ids(self) -> collections.Counter:
        return collections.Counter(f["event_id"] for f in self.pupdates + self.likes)


def wait_for_outputs(settings: CommonSettings, facts: int, dead: int, timeout: float = 90.0) -> Outputs:
    deadline = time.monotonic() + timeout
    while True:
        try:
            out = Outputs(settings)
        except KafkaException:  # a broker just restarted may not lead its partitions yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        got = (len(out.pupdates) + len(out.likes), len(out.dead))
        if got[0] >= facts and got[1] >= dead:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(
                f"after {timeout}s: {got[0]} facts of {facts}, {got[1]} dead letters of {dead}"
            )
        time.sleep(0.5)
