"""An idempotent producer whose delivery failures are never silent.

confluent-kafka reports delivery asynchronously; this wrapper gathers failures from the
delivery callbacks and raises them at ``flush()``, which is where a caller decides that its
outputs are durable and it may store its input offsets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import confluent_kafka

from libs.common.kafka.errors import DeliveryError, KafkaUnavailableError
from libs.common.settings import CommonSettings

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[confluent_kafka.KafkaError | None, confluent_kafka.Message], None]

DEFAULTS: dict[str, Any] = {
    # murmur2 is what the Java clients and aiokafka (faust) use: every writer of a topic must
    # agree, or records with the same key land on different partitions and joins break.
    "partitioner": "murmur2_random",
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "compression.type": "lz4",
    "delivery.timeout.ms": 30000,
    "queue.buffering.max.messages": 500000,
    "queue.buffering.max.kbytes": 262144,
}


class Producer:
    def __init__(
        self,
        settings: CommonSettings,
        *,
        name: str,
        transactional_id: str | None = None,
        **overrides: Any,
    ) -> None:
        conf = settings.kafka_config() | DEFAULTS | {"client.id": name} | overrides
        if transactional_id:
            conf["transactional.id"] = transactional_id
            conf.setdefault("transaction.timeout.ms", 15000)
            # librdkafka refuses a message timeout longer than the transaction's.
            conf["delivery.timeout.ms"] = min(
                int(conf["delivery.timeout.ms"]), int(conf["transaction.timeout.ms"])
            )
        self.name = name
        self._producer = confluent_kafka.Producer(conf)
        self._failures: list[str] = []
        self.delivered = 0

    # The callback runs inside poll()/flush() on the caller's thread.
    def _on_delivery(self, err: confluent_kafka.KafkaError | None, msg: confluent_kafka.Message) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")
        else:
            self.delivered += 1

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
        on_delivery: DeliveryCallback | None = None,
        block_seconds: float = 30.0,
    ) -> None:
        """Queue one message; waits (bounded) for queue space instead of failing on a full queue."""
        callback = on_delivery or self._on_delivery
        deadline = time.monotonic() + block_seconds
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=callback)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise KafkaUnavailableError(
                        f"producer queue full for {block_seconds:.0f}s: is Kafka reachable?"
                    ) from None
                self._producer.poll(0.05)

    def produce_in_transaction(self, topic: str, value: bytes, key: bytes | str | None = None) -> None:
        """Queue without a per-message delivery callback: only inside a transaction, where a
        message that fails delivery fails ``commit_transaction`` (and the batch is aborted and
        re-read), so the Python callback would only cost time (~1 µs a record at 50,000/s)."""
        try:
            self._producer.produce(topic, value, key)
        except BufferError:  # queue full: the tracked path waits (bounded) for room
            self.produce(topic, value, key)

    def poll(self, timeout: float = 0.0) -> int:
        return self._producer.poll(timeout)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued message is durable; raise if any was not."""
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if failures:
            raise DeliveryError(failures)
        if remaining:
            raise KafkaUnavailableError(f"{remaining} message(s) still undelivered after {timeout}s")

    def __len__(self) -> int:
        return len(self._producer)

    # Transactions: thin pass-throughs so services never reach for the raw client.
    def init_transactions(self, timeout: float = 30.0) -> None:
        self._producer.init_transactions(timeout)

    def begin_transaction(self) -> None:
        self._producer.begin_transaction()

    def send_offsets_to_transaction(self, offsets: list, group_metadata: Any, timeout: float = 30.0) -> None:
        self._producer.send_offsets_to_transaction(offsets, group_metadata, timeout)

    def commit_transaction(self, timeout: float = 30.0) -> None:
        self._producer.commit_transaction(timeout)
        failures, self._failures = self._failures, []
        if failures:  # cannot happen after a successful commit, but never swallow one
            raise DeliveryError(failures)

    def abort_transaction(self, timeout: float = 30.0) -> None:
        self._failures = []
        self._producer.abort_transaction(timeout)

    def close(self, timeout: float = 10.0) -> None:
        try:
            left = self._producer.flush(timeout)
            if left:
                log.warning("producer closed with undelivered messages", extra={"undelivered": left})
        except Exception:  # closing must never mask the error that led here
            log.exception("producer flush on close failed")
