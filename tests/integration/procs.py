"""Any service as a real process in a test: ``python -m services.<name>`` with the test's topic
prefix, a free port, its own log file, readiness from ``/readyz``, SIGTERM or SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from libs.common.settings import CommonSettings
from libs.stack.processes import free_port

REPO = Path(__file__).resolve().parents[2]


class ServiceProcess:
    def __init__(
        self, name: str, settings: CommonSettings, log_dir: Path, instance: str = "0", **opts
    ) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = log_dir / f"{name}-{instance}-{self.port}.log"
        prefix = f"POOCH_{name.upper()}_"
        env = os.environ | {
            "POOCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "POOCH_REDIS_URL": settings.redis_url,
            "POOCH_TOPIC_PREFIX": settings.topic_prefix,
            "POOCH_LOG_FORMAT": "json",
            f"{prefix}PORT": str(self.port),
            f"{prefix}INSTANCE_ID": instance,
            "PYTHONPATH": str(REPO),
        }
        env |= {f"{prefix}{k.upper()}": str(v) for k, v in opts.items()}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=REPO, env=env, stdout=self._log, stderr=self._log
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> ServiceProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.http.get("/readyz").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready within {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.http.close()
        self._log.close()
        return self.proc.returncode
