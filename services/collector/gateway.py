"""The HTTP side's way into Kafka: answer within a bound, never hang, know when Kafka is gone.

An idempotent (non-transactional) producer with ``linger.ms`` ~1 ms. :meth:`KafkaGateway.send`
resolves when the delivery reports of *those* messages say they are durable (acks=all), not
after a global flush, and gives up after ``http_delivery_timeout_s`` (0.8 s by default), so the
API answers 503 within a second. When librdkafka reports that all brokers are down, requests
fail at once, without queueing, until a metadata request succeeds again (probed twice a second).

A message queued for a request that was answered 503 may still be delivered when Kafka comes
back; the client retries, and the stream drops the second copy by event_id.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from libs.common.kafka.clients import count_client_error, new_producer
from libs.common.settings import CommonSettings
from services.collector import metrics as m
from services.collector.kafkalog import rdkafka_logger
from services.collector.settings import CollectorSettings

log = logging.getLogger(__name__)
_rdkafka_log = rdkafka_logger("services.collector.rdkafka.http")


class KafkaUnavailable(Exception):
    """The messages are not known to be durable; answer 503."""


class _Batch:
    """Delivery reports of one request's messages; resolves its future once."""

    __slots__ = ("error", "future", "left", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()
        self.left = n
        self.error: str | None = None

    def on_delivery(self, err: KafkaError | None, _msg: Any) -> None:  # poll thread
        if err is not None and self.error is None:
            self.error = err.str()
            self.loop.call_soon_threadsafe(_resolve, self.future, self.error)
            return
        self.left -= 1
        if self.left == 0 and self.error is None:
            self.loop.call_soon_threadsafe(_resolve, self.future, None)


def _resolve(future: asyncio.Future, error: str | None) -> None:
    if not future.done():
        future.set_result(error)


class KafkaGateway:
    def __init__(self, common: CommonSettings, settings: CollectorSettings) -> None:
        self.common = common
        self.settings = settings
        self.timeout = settings.http_delivery_timeout_s
        self.down_since: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._producer = self._new_producer()
        self._fatal = False
        self._last_probe = 0.0
        self._thread = threading.Thread(target=self._poll_loop, name="collector-http-producer", daemon=True)

    def _new_producer(self) -> confluent_kafka.Producer:
        # The raw client: the gateway tracks each request's delivery itself.
        return new_producer(
            self.common,
            name=f"collector-http-{self.settings.instance_id}",
            **{
                "linger.ms": self.settings.http_linger_ms,
                # Undelivered messages are dropped after this: the client was told 503 long ago.
                "delivery.timeout.ms": 10_000,
                "queue.buffering.max.messages": 100_000,
                "socket.connection.setup.timeout.ms": 3_000,
                "reconnect.backoff.ms": 100,
                "reconnect.backoff.max.ms": 1_000,
                "error_cb": self._on_error,
                "logger": _rdkafka_log,
            },
        )

    def start(self) -> KafkaGateway:
        self._thread.start()
        return self

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def _on_error(self, err: KafkaError) -> None:
        count_client_error(err)
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self.down_since is None:
                self.down_since = time.monotonic()
                m.KAFKA_DOWN.set(1)
                log.warning("all brokers down: the HTTP API answers 503 until Kafka is back")
        elif err.fatal():
            log.error("HTTP producer fatal error; it will be replaced", extra={"error": err.str()})
            self._fatal = True
        else:
            _rdkafka_log.info("HTTP producer error: %s", err.str())

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            producer = self._producer
            producer.poll(0.05)
            if self.down_since is not None and time.monotonic() - self._last_probe >= 0.5:
                self._last_probe = time.monotonic()
                try:
                    producer.list_topics(timeout=0.5)
                except KafkaException:
                    continue
                log.info(
                    "Kafka is reachable again", extra={"down_s": round(time.monotonic() - self.down_since, 2)}
                )
                self.down_since = None
                m.KAFKA_DOWN.set(0)

    def _ensure_producer(self) -> confluent_kafka.Producer:
        if self._fatal:
            with self._lock:
                if self._fatal:
                    old, self._producer = self._producer, self._new_producer()
                    self._fatal = False
                    threading.Thread(target=old.flush, args=(1.0,), daemon=True).start()
        return self._producer

    async def send(self, messages: list[tuple[str, bytes, str]]) -> None:
        """Produce ``(topic, value, key)`` messages; return once all are durable, else raise."""
        if self.down_since is not None:
            raise KafkaUnavailable("Kafka is unavailable")
        if not messages:
            return
        producer = self._ensure_producer()
        batch = _Batch(asyncio.get_running_loop(), len(messages))
        try:
            for topic, value, key in messages:
                producer.produce(topic, value, key, on_delivery=batch.on_delivery)
        except (BufferError, KafkaException) as exc:
            raise KafkaUnavailable(f"could not queue: {exc}") from exc
        try:
            error = await asyncio.wait_for(batch.future, self.timeout)
        except TimeoutError:
            raise KafkaUnavailable(f"no acknowledgement within {self.timeout:g} s") from None
        if error is not None:
            raise KafkaUnavailable(error)

    def send_nowait(self, topic: str, value: bytes, key: bytes | str | None) -> bool:
        """Best effort (dead letters of bad requests): queued, or False when Kafka is down."""
        if self.down_since is not None:
            return False
        try:
            self._ensure_producer().produce(topic, value, key, on_delivery=_log_failure)
        except (BufferError, KafkaException):
            return False
        return True

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        left = self._producer.flush(timeout)
        if left:
            log.warning("HTTP producer closed with undelivered messages", extra={"undelivered": left})


def _log_failure(err: KafkaError | None, msg: Any) -> None:
    if err is not None:
        log.warning("best-effort message not delivered", extra={"topic": msg.topic(), "error": err.str()})
