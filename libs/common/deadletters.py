"""Dead letters: what a service could not accept, with the reason and the untouched bytes.

Bad input must never kill a consumer; it is written here, in the same transaction or flush
as the service's other outputs, so it is never lost either.
"""

from __future__ import annotations

import hashlib
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

# A dead letter must always fit the topic (1 MB by default), or writing it fails and the record
# that caused it is retried forever. Larger raw bytes keep their head; the detail says how many
# there were and their sha256, so the original can still be identified in the source topic.
MAX_RAW_BYTES = 256 * 1024

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
        key: bytes | str | None = None,
        value: bytes | None = None,
        failed_at: int | None = None,
    ) -> dict:
        """The dead-letter record (the one place that builds it); raw bytes capped to fit."""
        if message is not None:
            key = message.key() if key is None else key
            value = message.value() if value is None else value
        value, key = _as_bytes(value), _as_bytes(key)
        detail = _text(detail)
        if value is not None and len(value) > MAX_RAW_BYTES:
            detail = (
                f"value truncated to its first {MAX_RAW_BYTES} of {len(value)} bytes "
                f"(sha256 {hashlib.sha256(value).hexdigest()}); " + detail
            )
            value = value[:MAX_RAW_BYTES]
        if key is not None and len(key) > 1024:
            key = key[:1024]
        return {
            "service": self.service,
            "reason": reason,
            "detail": detail[:2000],
            "source_topic": message.topic() if message is not None else None,
            "source_partition": message.partition() if message is not None else None,
            "source_offset": message.offset() if message is not None else None,
            "request_id": request_id,
            "key": key,
            "value": value,
            "failed_at": int(time.time() * 1000) if failed_at is None else failed_at,
        }

    def encode(self, rec: dict) -> bytes:
        return self._serde.encode(rec)

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
    # A key taken from hostile input may hold lone surrogates, which UTF-8 cannot encode: keep
    # them as their surrogate code units rather than fail to write the letter at all.
    return data.encode("utf-8", "surrogatepass")


def _text(text: str) -> str:
    """Text Avro can encode: a lone surrogate (from hostile input, say) becomes ``\\udXXX``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
