"""Running the real scorer (``python -m services.scorer``) in tests, feeding it and reading it.

Not a test module: helpers for ``test_scorer_stream.py`` and ``test_scorer_whatif.py``.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import time
from pathlib import Path

from libs.common.serde import serde
from libs.common.settings import CommonSettings
from libs.common.topics import FEATURES, PREDICTIONS
from services.scorer.fixtures import V1_NAMES, feature_record, synthetic_rows
from tests.support.feeding import RateFeeder
from tests.support.kafkautil import read_all, wait_for
from tests.support.procs import ServiceProcess
from tooling.stack.processes import free_port

PRED = serde("prediction")
FV = serde("feature_vector")


class ScorerProcess(ServiceProcess):
    """One scorer process with its own port and log file."""

    def __init__(
        self,
        settings: CommonSettings,
        log_dir: Path,
        instance_id: str = "0",
        *,
        redis_url: str | None = None,
        **opts,
    ) -> None:
        super().__init__("scorer", settings, log_dir, instance_id, redis_url=redis_url, **opts)


class Feeder(RateFeeder):
    """Writes feature vectors at a steady rate in the background (the featurizer's role)."""

    def __init__(
        self,
        settings: CommonSettings,
        *,
        rate: float = 2000.0,
        start: int = 0,
        extractor_for=lambda i: "v1",
        seed: int = 0,
    ) -> None:
        super().__init__(settings, rate=rate)
        self.next = start
        self.extractor_for = extractor_for
        self.x, _ = synthetic_rows(4096, seed)
        self.written_at: dict[str, float] = {}

    def record(self, i: int) -> dict:
        return feature_record(
            i,
            self.x[i % len(self.x)],
            extractor_version=self.extractor_for(i),
            baseline=1.0 + (i % 7),
        )

    def write(self, n: int) -> list[str]:
        """Write n records now (flushed); returns their pupdate ids."""
        ids = []
        for _ in range(n):
            rec = self.record(self.next)
            self.next += 1
            self._producer.produce(self.settings.topic(FEATURES), FV.encode(rec), key=rec["pupdate_id"])
            ids.append(rec["pupdate_id"])
        self._producer.flush(30)
        now = time.time()
        self.written += ids
        self.written_at.update(dict.fromkeys(ids, now))
        return ids


def predictions(settings: CommonSettings) -> list[dict]:
    out = []
    for msg in read_all(settings, settings.topic(PREDICTIONS), timeout=60):
        rec = PRED.decode(msg.value())
        assert msg.key().decode() == rec["pupdate_id"]
        out.append(rec)
    return out


def wait_predicted(settings: CommonSettings, ids: list[str], *, timeout: float = 60.0) -> list[dict]:
    """Wait until every id has a prediction; returns all predictions."""
    wanted = set(ids)
    got: list[dict] = []

    def done() -> bool:
        nonlocal got
        got = predictions(settings)
        return wanted <= {p["pupdate_id"] for p in got}

    wait_for(done, timeout=timeout, interval=0.5, what=f"predictions for {len(wanted)} records")
    return got


def assert_exactly_one_valid(preds: list[dict], ids: list[str]) -> dict[str, dict]:
    """Exactly one prediction per features record, each finite and >= 0; returns them by id."""
    counts = collections.Counter(p["pupdate_id"] for p in preds)
    dupes = [k for k, c in counts.items() if c > 1]
    assert not dupes, f"{len(dupes)} records predicted more than once, e.g. {dupes[:5]}"
    assert set(counts) == set(ids), (
        f"missing {len(set(ids) - set(counts))}, extra {len(set(counts) - set(ids))}"
    )
    for p in preds:
        assert 0 <= p["predicted_likes"] < float("inf"), p
        assert p["fallback"] == (p["fallback_reason"] is not None), p
        if p["fallback"]:
            assert p["model_version"] is None, p
    return {p["pupdate_id"]: p for p in preds}


class RedisServer:
    """A redis-server of the test's own on a free port, to stop and start at will."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_for(lambda: _pings(client), timeout=10, interval=0.05, what="redis-server")
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


V1 = V1_NAMES
