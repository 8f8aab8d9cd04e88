"""Retry policies, stated once and run by tenacity.

Two kinds of waiting, with their deadlines and back-offs here and nowhere else:

* :func:`kafka_call`: one call to Kafka (init transactions, commit, read a topic's metadata)
  retried while the error is transient, with exponential back-off from ``CALL_BACKOFF_S`` to
  ``CALL_BACKOFF_MAX_S``, until a deadline or shutdown. The last error is raised as it was.
* :class:`RestartBackoff`: how long a supervising loop waits before starting a failed part
  again: ``RESTART_BACKOFF_S`` doubling to ``RESTART_BACKOFF_MAX_S``.

:class:`Restarting` is that supervising loop, the one every service's Kafka loop runs under: a
part (the collector's stream, the featurizer, the scorer's stream) that fails for any reason (a
start, commit or ``committed()`` that timed out while the broker was away, a transaction error
that cannot be aborted, a fenced producer) is closed and built again inside the process, as a
process restart would, without losing the process (its HTTP server, its probes, its registry).
Parts are written so that a new incarnation resumes from what Kafka has committed, which is what
keeps their outputs exact across the restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import confluent_kafka
import tenacity

from libs.common.kafka.errors import KafkaUnavailableError
from libs.common.lifecycle import Shutdown, close_all
from libs.common.metrics import RESTARTS

log = logging.getLogger(__name__)
T = TypeVar("T")

CALL_BACKOFF_S = 0.2
CALL_BACKOFF_MAX_S = 5.0
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0


def transient(exc: BaseException) -> bool:
    """Kafka away or slow, a topic not there yet: worth another try. A fatal error is not."""
    if isinstance(exc, confluent_kafka.KafkaException):
        err = exc.args[0] if exc.args else None
        return not (isinstance(err, confluent_kafka.KafkaError) and err.fatal())
    return isinstance(exc, KafkaUnavailableError | TimeoutError)


def kafka_call(
    fn: Callable[[], T],
    *,
    what: str,
    deadline_s: float | None = None,
    shutdown: Shutdown | threading.Event | None = None,
    retry_if: Callable[[BaseException], bool] = transient,
) -> T:
    """``fn()``, retried on ``retry_if`` errors until ``deadline_s`` (None: until shutdown)."""
    stops: list[Any] = []
    if deadline_s is not None:
        stops.append(tenacity.stop_after_delay(deadline_s))
    if shutdown is not None:
        stops.append(lambda _state: shutdown.is_set())
    if not stops:
        raise ValueError("kafka_call needs a deadline or a shutdown to stop retrying")

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            f"{what} failed; retrying",
            extra={"attempt": state.attempt_number, "error": str(exc)[:300]},
        )

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(retry_if),
        stop=tenacity.stop_any(*stops),
        wait=tenacity.wait_exponential(multiplier=CALL_BACKOFF_S, min=CALL_BACKOFF_S, max=CALL_BACKOFF_MAX_S),
        sleep=_sleeper(shutdown),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)


def _sleeper(shutdown: Shutdown | threading.Event | None) -> Callable[[float], None]:
    """Sleeps that end early at shutdown, so a retrying caller stops at once."""
    if shutdown is None:
        return tenacity.nap.sleep

    def sleep(seconds: float) -> None:
        shutdown.wait(seconds)

    return sleep


class RestartBackoff:
    """``next()`` gives the wait before the next restart; ``reset()`` after a good start."""

    def __init__(self) -> None:
        self._wait = tenacity.wait_exponential(
            multiplier=RESTART_BACKOFF_S, min=RESTART_BACKOFF_S, max=RESTART_BACKOFF_MAX_S
        )
        self._failures = 0

    def next(self) -> float:
        self._failures += 1
        # wait_exponential reads only the attempt number of the state it is given.
        state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
        state.attempt_number = self._failures
        return float(self._wait(state))

    def reset(self) -> None:
        self._failures = 0


class Part(Protocol):
    """What :class:`Restarting` runs: ``start`` (may wait for Kafka until shutdown), ``run``
    (returns at shutdown, raises when the part is broken) and ``close`` (must not raise)."""

    def start(self, shutdown: Shutdown) -> None: ...

    def run(self, shutdown: Shutdown) -> None: ...

    def close(self) -> None: ...


P = TypeVar("P", bound=Part)


class Restarting(Generic[P]):
    """Runs one incarnation of a part at a time and builds a new one when it fails.

    ``build()`` makes a fresh incarnation (no state carried over: a new one rebuilds from Kafka);
    ``current`` is the one running (for probes); the back-off resets once a start succeeded.
    Every restart is logged with its error and counted in ``pooch_part_restarts_total``."""

    def __init__(self, service: str, part: str, build: Callable[[], P], shutdown: Shutdown) -> None:
        self.service = service
        self.part = part
        self._build = build
        self.shutdown = shutdown
        self.current: P | None = None
        self.started = False  # the current incarnation's start() returned
        self.restarts = 0

    def run(self) -> None:
        backoff = RestartBackoff()
        while not self.shutdown.is_set():
            part: P | None = None
            self.started = False
            try:
                part = self._build()
                self.current = part
                part.start(self.shutdown)
                self.started = True
                backoff.reset()
                part.run(self.shutdown)
            except Exception as exc:
                if self.shutdown.is_set():  # failures while stopping are the stop's, not a crash
                    log.warning(f"{self.part} failed while stopping", extra={"error": str(exc)[:300]})
                else:
                    self.restarts += 1
                    RESTARTS.labels(self.service, self.part, type(exc).__name__).inc()
                    log.exception(
                        f"{self.part} failed; starting it again",
                        extra={"part": self.part, "restarts": self.restarts, "error": type(exc).__name__},
                    )
            finally:
                if part is not None:
                    close_all(part.close)
            if not self.shutdown.is_set():
                wait = backoff.next()
                log.info(f"{self.part} restarts after a back-off", extra={"seconds": wait})
                self.shutdown.wait(wait)
        self.current = None
        log.info(f"{self.part} stopped")
