"""Running the real collector (``python -m services.collector``) in tests, and reading what it wrote.

Not a test module: helpers for ``test_collector_stream.py`` and ``test_collector_http.py``.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from confluent_kafka import KafkaException
from prometheus_client.parser import text_string_to_metric_families

from libs.common.serde import serde
from libs.common.settings import CommonSettings
from libs.common.topics import DEADLETTERS, LIKES, PUPDATES
from libs.stack.processes import free_port

from .kafkautil import read_all

REPO = Path(__file__).resolve().parents[2]


class CollectorProcess:
    """One collector process with its own port and log file."""

    def __init__(self, settings: CommonSettings, log_dir: Path, instance_id: str = "it", **options) -> None:
        self.settings = settings
        self.instance_id = instance_id
        self.port = free_port()
        self.log_path = log_dir / f"collector-{instance_id}-{self.port}.log"
        env = os.environ | {
            "POOCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "POOCH_TOPIC_PREFIX": settings.topic_prefix,
            "POOCH_LOG_FORMAT": "json",
            "POOCH_COLLECTOR_INSTANCE_ID": instance_id,
            "POOCH_COLLECTOR_PORT": str(self.port),
            "POOCH_COLLECTOR_HOST": "127.0.0.1",
            "PYTHONPATH": str(REPO),
        }
        env |= {f"POOCH_COLLECTOR_{k.upper()}": str(v) for k, v in options.items()}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.collector"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> CollectorProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.http.get("/readyz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"collector not ready after {timeout}s:\n{self.log_tail()}")

    def metrics(self) -> dict[tuple[str, tuple], float]:
        text = self.http.get("/metrics").text
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def metric_sum(self, name: str, **labels) -> float:
        return sum(
            value
            for (n, lbl), value in self.metrics().items()
            if n == name and all(dict(lbl).get(k) == v for k, v in labels.items())
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        self.http.close()
        self._log.close()


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
