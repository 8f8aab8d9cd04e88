"""Any service as a real process in a test: ``python -m services.<name>`` with the test's topic
prefix, a free port, its own log file, readiness from ``/readyz``, metrics, SIGTERM or SIGKILL.

The service's own settings (``POOCH_<SERVICE>_*``) come only from the test: whatever the
developer's shell exports for that service is dropped, so an exported token or port never
changes what a test sees.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from libs.common.settings import CommonSettings
from tests.support import REPO
from tooling.stack.processes import free_port


class ServiceProcess:
    def __init__(
        self,
        name: str,
        settings: CommonSettings,
        log_dir: Path,
        instance: str = "0",
        *,
        redis_url: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        **opts: object,
    ) -> None:
        self.name = name
        self.settings = settings
        self.instance_id = instance
        self.port = free_port()
        self.log_path = log_dir / f"{name}-{instance}-{self.port}.log"
        prefix = f"POOCH_{name.upper()}_"
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)} | {
            "POOCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "POOCH_REDIS_URL": redis_url or settings.redis_url,
            "POOCH_TOPIC_PREFIX": settings.topic_prefix,
            "POOCH_LOG_FORMAT": "json",
            f"{prefix}PORT": str(self.port),
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}INSTANCE_ID": instance,
            "PYTHONPATH": str(REPO),
        }
        env |= dict(extra_env or {})
        env |= {f"{prefix}{k.upper()}": str(v) for k, v in opts.items()}
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=REPO, env=env, stdout=self._log, stderr=self._log
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def log_tail(self, n: int = 6000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def wait_ready(self, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.http.get("/readyz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()  # a process that never got ready must not outlive its test
        raise AssertionError(f"{self.name} not ready within {timeout}s:\n{tail}")

    def metrics(self) -> dict[tuple[str, tuple], float]:
        out = {}
        for family in text_string_to_metric_families(self.http.get("/metrics").text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def metric_sum(self, name: str, **labels: str) -> float:
        """A metric summed over the samples whose labels include ``labels``."""
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
        if not self._log.closed:
            self._log.close()
