"""Graceful shutdown: SIGTERM and SIGINT set an event that every loop checks between batches."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Shutdown:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self, reason: str = "requested") -> None:
        if not self._event.is_set():
            self.reason = reason
            log.info("shutting down", extra={"reason": reason})
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def install_signal_handlers(self) -> Shutdown:
        """Only possible from the main thread; a second signal still ends the wait promptly."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: self.set(signal.Signals(signum).name))
        return self


def close_all(*closers: Callable[[], object] | None) -> None:
    """Close each part in turn; a part that fails to close is logged and never stops the rest
    (nor masks the error that led to closing)."""
    for closer in closers:
        if closer is None:
            continue
        try:
            closer()
        except Exception:
            log.exception("close failed", extra={"part": getattr(closer, "__qualname__", repr(closer))})
