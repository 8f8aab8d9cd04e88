"""The trainer as a process under test, and the models it publishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from libs.common.artifacts import ModelArtifact
from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.settings import CommonSettings
from libs.common.topics import INSTANCES, MODELS
from tests.support import REPO
from tests.support.kafkautil import read_all, wait_for
from tooling.stack.processes import free_port

# Small and fast: a version every 300 instances, LightGBM on one thread, short timers.
FAST_ENV = {
    "POOCH_TRAINER_MIN_INSTANCES": "300",
    "POOCH_TRAINER_RETRAIN_EVERY": "300",
    "POOCH_TRAINER_RETRAIN_INTERVAL_S": "3600",
    "POOCH_TRAINER_NUM_BOOST_ROUND": "150",
    "POOCH_TRAINER_NUM_THREADS": "1",
    "POOCH_TRAINER_MIN_VALIDATION_ROWS": "50",
    "POOCH_TRAINER_CACHE_CHECK_INTERVAL_S": "1",
    "POOCH_TRAINER_SESSION_TIMEOUT_MS": "6000",
    "POOCH_TRAINER_HEARTBEAT_INTERVAL_MS": "500",
}


class TrainerProc:
    """``python -m services.trainer`` with its own port, log file and settings."""

    def __init__(
        self,
        settings: CommonSettings,
        log_dir: Path,
        *,
        replica: str = "t1",
        redis_url: str | None = None,
        **env,
    ) -> None:
        self.replica = replica
        self.port = free_port()
        self.log_path = log_dir / f"trainer-{replica}.log"
        full_env = (
            os.environ
            | {
                "POOCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "POOCH_REDIS_URL": redis_url or settings.redis_url,
                "POOCH_TOPIC_PREFIX": settings.topic_prefix,
                "POOCH_LOG_FORMAT": "json",
                "POOCH_TRAINER_PORT": str(self.port),
                "POOCH_TRAINER_HOST": "127.0.0.1",
                "POOCH_TRAINER_REPLICA_ID": replica,
                "PYTHONPATH": str(REPO),
            }
            | FAST_ENV
            | {k: str(v) for k, v in env.items()}
        )
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.trainer"],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def get(self, path: str) -> tuple[int, dict | str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                body = r.read().decode()
                status = r.status
        except urllib.error.HTTPError as e:
            body, status = e.read().decode(), e.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, ""
        try:
            return status, json.loads(body)
        except json.JSONDecodeError:
            return status, body

    def post(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def status(self) -> dict:
        code, body = self.get("/v1/status")
        return body if code == 200 and isinstance(body, dict) else {}

    def metric(self, name: str, **labels: str) -> float | None:
        code, text = self.get("/metrics")
        if code != 200:
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return None

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for(lambda: self.ready() or self._dead(), timeout=timeout, what=f"trainer {self.replica} ready")
        assert self.proc.poll() is None, self.log_tail()

    def _dead(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"trainer {self.replica} exited:\n{self.log_tail()}")
        return False

    def logs(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"msg": line})
        return out

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-n:])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def feed(settings: CommonSettings, records: list[dict]) -> None:
    producer = Producer(settings, name="test-feeder")
    enc = serde("instance")
    for r in records:
        producer.produce(settings.topic(INSTANCES), enc.encode(r), key=r["pupdate_id"])
    producer.flush(30)


def published(settings: CommonSettings) -> list[ModelArtifact]:
    events = [serde("model_event").decode(m.value()) for m in read_all(settings, settings.topic(MODELS))]
    return [ModelArtifact.from_event(e) for e in events if e["kind"] == "PUBLISHED"]


def wait_published(settings: CommonSettings, n: int, trainer: TrainerProc, timeout: float = 60) -> list:
    def enough():
        trainer._dead()
        arts = published(settings)
        return arts if len(arts) >= n else None

    try:
        return wait_for(enough, timeout=timeout, interval=0.5, what=f"{n} published versions")
    except TimeoutError:
        raise AssertionError(f"{trainer.status()}\n{trainer.log_tail()}") from None
