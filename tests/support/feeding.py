"""A background writer at a steady rate: the role of an upstream service in a test."""

from __future__ import annotations

import threading
import time
from typing import Any

from libs.common.kafka.producer import Producer
from libs.common.settings import CommonSettings


class RateFeeder(threading.Thread):
    """Calls ``write(n)`` every 50 ms with ``rate / 20`` records; ``stop()`` returns what
    ``written`` holds and fails the test if writing ever raised."""

    def __init__(self, settings: CommonSettings, *, rate: float) -> None:
        super().__init__(name="feeder", daemon=True)
        self.settings = settings
        self.rate = rate
        self.written: list[str] = []
        self._halt = threading.Event()
        self._producer = Producer(settings, name="feeder", **{"linger.ms": 2})
        self.error: BaseException | None = None

    def write(self, n: int) -> Any:
        raise NotImplementedError

    def run(self) -> None:
        try:
            tick = 0.05
            per_tick = max(1, int(self.rate * tick))
            while not self._halt.is_set():
                started = time.monotonic()
                self.write(per_tick)
                self._halt.wait(max(0.0, tick - (time.monotonic() - started)))
        except BaseException as exc:
            self.error = exc

    def stop(self) -> list[str]:
        self._halt.set()
        self.join(30)
        assert self.error is None, f"feeder failed: {self.error!r}"
        return self.written
