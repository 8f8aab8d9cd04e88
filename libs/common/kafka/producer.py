"""An idempotent producer whose delivery failures are never silent (at-least-once outputs).

Transactional producers are :class:`libs.common.kafka.transactional.TransactionalProducer`.

confluent-kafka reports delivery asynchronously; this wrapper gathers failures from the
delivery callbacks and raises them at ``flush()``, which is where a caller decides that its
outputs are durable and it may store its input offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import confluent_kafka

from libs.common.kafka.clients import Headers, close_producer, new_producer, produce_waiting
from libs.common.kafka.errors import DeliveryError, KafkaUnavailableError
from libs.common.settings import CommonSettings

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[confluent_kafka.KafkaError | None, confluent_kafka.Message], None]


class Producer:
    def __init__(
        self,
        settings: CommonSettings,
        *,
        name: str,
        **overrides: Any,
    ) -> None:
        self.name = name
        self._producer = new_producer(settings, name=name, **overrides)
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
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
        block_seconds: float = 30.0,
    ) -> None:
        """Queue one message; waits (bounded) for queue space instead of failing on a full queue."""
        produce_waiting(
            self._producer,
            topic,
            value,
            key,
            headers=headers,
            block_seconds=block_seconds,
            on_delivery=on_delivery or self._on_delivery,
        )

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

    def close(self, timeout: float = 10.0) -> None:
        close_producer(self._producer, timeout)
