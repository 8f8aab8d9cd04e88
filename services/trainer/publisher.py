"""Publishing a model version: a PUBLISHED record on ``models`` (the record), then Redis (a cache).

The record goes out in a Kafka transaction under a ``transactional.id`` shared by every trainer
replica. Whichever replica leads initialises it (once per leadership term), which fences the
previous leader: if that one is only stalled, not dead, its next commit fails with a fencing
error instead of publishing behind the new leader's back.
"""

from __future__ import annotations

import logging
import threading

import redis

from libs.common.artifacts import ModelArtifact, ModelCache
from libs.common.kafka.transactional import Fenced, TransactionalProducer
from libs.common.serde import serde
from libs.common.settings import CommonSettings
from libs.common.topics import MODEL_MAX_BYTES, MODELS

log = logging.getLogger(__name__)

# Room for the record's other fields and Kafka's batch overhead under the topic's limit.
MAX_RECORD_BYTES = int(MODEL_MAX_BYTES) - 64 * 1024


class ArtifactTooLarge(ValueError):
    pass


class FencedError(RuntimeError):
    """Another replica took over publishing: this one must stand by."""


class Publisher:
    def __init__(self, settings: CommonSettings, *, name: str = "trainer") -> None:
        self.settings = settings
        self.topic = settings.topic(MODELS)
        self.name = name
        self._producer: TransactionalProducer | None = None
        self._term: int | None = None
        self._serde = serde("model_event")
        self._lock = threading.RLock()
        self._fenced_term: int | None = None

    def _producer_for(self, term: int) -> TransactionalProducer:
        if self._producer is not None and self._term == term:
            return self._producer
        if term == self._fenced_term:
            # Never initialise again in a term that was fenced: that would fence the real leader.
            raise FencedError(f"term {term} was fenced by another trainer replica")
        self.close()
        producer = TransactionalProducer(
            self.settings,
            name=f"{self.name}-publisher",
            transactional_id=self.settings.topic("trainer-publisher"),
            **{"message.max.bytes": int(MODEL_MAX_BYTES), "compression.type": "none", "linger.ms": 0},
        )
        producer.init()  # fences whichever replica published before
        self._producer, self._term = producer, term
        log.info("publisher ready (previous publishers fenced)", extra={"term": term})
        return producer

    def prepare(self, term: int) -> None:
        """Initialise (and so fence every earlier publisher) as soon as leadership is acquired:
        a leader that stalls later, and resumes after another replica took over, then finds its
        producer fenced instead of fencing the new leader with a fresh one."""
        with self._lock:
            self._producer_for(term)

    def publish(self, art: ModelArtifact, *, term: int) -> None:
        value = self._serde.encode(art.to_event())
        if len(value) > MAX_RECORD_BYTES:
            raise ArtifactTooLarge(
                f"{art.model_version}: record of {len(value):,} bytes over the models topic limit "
                f"({MAX_RECORD_BYTES:,}); lower num_boost_round or num_leaves"
            )
        with self._lock:
            self._publish(value, art, term)

    def _publish(self, value: bytes, art: ModelArtifact, term: int) -> None:
        producer = self._producer_for(term)
        try:
            with producer.transaction() as out:
                out.produce(self.topic, value, key=art.model_version)
        except Fenced as exc:
            self.close()
            self._fenced_term = term
            raise FencedError(f"publishing fenced by another trainer replica: {exc}") from exc
        except Exception:  # the next publish starts from a new producer
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(5)
            self._producer, self._term = None, None


def cache_put(cache: ModelCache, art: ModelArtifact) -> bool:
    """Best effort: Redis is a cache, rebuilt from the topic when it was missed."""
    try:
        cache.put(art)
        return True
    except redis.RedisError as exc:
        log.warning(
            "model not cached in Redis; it will be from the models topic",
            extra={"model_version": art.model_version, "error": str(exc)},
        )
        return False
