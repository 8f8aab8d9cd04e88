"""Dead letters: what a service could not accept, with the reason and the untouched bytes.

Bad input must never kill a consumer; it is written here, in the same transaction or flush
as the service's other outputs, so it is never lost either.
"""

from __future__ import annotations

import logging
import time

import confluent_kafka
from prometheus_client import Counter

from libs.common.kafka.producer import Producer
from libs.common.kafka.transactional import TransactionalProducer
from libs.common.serde import serde
from libs.common.settings import CommonSettings
from libs.common.topics import DEADLETTERS

log = logging.getLogger(__name__)

DEADLETTERS_TOTAL = Counter(
    "pooch_deadletters_total", "Records sent to the deadletters topic.", ["service", "reason"]
)


class DeadLetters:
    def __init__(self, settings: CommonSettings, service: str) -> None:
        self.topic = settings.topic(DEADLETTERS)
        self.service = service
        self._serde = serde("dead_letter")

    def record(
        self,
        reason: str,
        detail: str,
        *,
        message: confluent_kafka.Message | None = None,
        request_id: str | None = None,
        key: bytes | None = None,
        value: bytes | None = None,
    ) -> dict:
        if message is not None:
            key = message.key() if key is None else key
            value = message.value() if value is None else value
        return {
            "service": self.service,
            "reason": reason,
            "detail": detail[:2000],
            "source_topic": message.topic() if message is not None else None,
            "source_partition": message.partition() if message is not None else None,
            "source_offset": message.offset() if message is not None else None,
            "request_id": request_id,
            "key": _as_bytes(key),
            "value": _as_bytes(value),
            "failed_at": int(time.time() * 1000),
        }

    def send(self, producer: Producer | TransactionalProducer, reason: str, detail: str, **where) -> None:
        """Queue a dead letter on ``producer``; durable at its next flush or commit."""
        rec = self.record(reason, detail, **where)
        producer.produce(self.topic, self._serde.encode(rec), key=rec["key"])
        DEADLETTERS_TOTAL.labels(self.service, reason).inc()
        log.warning(
            "dead letter",
            extra={
                "reason": reason,
                "detail": rec["detail"][:300],
                "source": f"{rec['source_topic']}[{rec['source_partition']}]@{rec['source_offset']}"
                if rec["source_topic"]
                else rec["request_id"],
            },
        )


def _as_bytes(data: bytes | str | None) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    return data.encode()
