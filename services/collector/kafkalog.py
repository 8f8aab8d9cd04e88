"""librdkafka's log lines, routed to Python logging and throttled.

While a broker is down every client logs each failed reconnect (several a second); the first of
each kind in a window is enough for people, the metrics and /readyz tell the rest.
"""

from __future__ import annotations

import logging
import time


class Throttle(logging.Filter):
    """Passes one record per (level, facility and client) every ``every_s`` seconds."""

    def __init__(self, every_s: float = 10.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[tuple[int, str], float] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        key = (record.levelno, text[: text.find("]") + 1] if "]" in text else text[:40])
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self.suppressed += 1
            return False
        self._last[key] = now
        if len(self._last) > 1000:
            self._last.clear()
        return True


def rdkafka_logger(name: str = "services.collector.rdkafka") -> logging.Logger:
    logger = logging.getLogger(name)
    if not any(isinstance(f, Throttle) for f in logger.filters):
        logger.addFilter(Throttle())
    return logger
