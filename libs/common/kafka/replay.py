"""Reads every partition of some topics from the beginning, without a consumer group.

For state every process needs whole, rebuilt by replaying the topics at every start: the
featurizer's engine (a hashtag's likes span all partitions) and the trainer's window (one model
learns from all partitions). Partitions are assigned, not shared, and nothing is committed.
"Rebuilt" means read up to the end offsets the topics had when the reader started.
"""

from __future__ import annotations

import logging
import time
import uuid

import confluent_kafka
from confluent_kafka import TopicPartition

from libs.common.settings import CommonSettings

log = logging.getLogger(__name__)


class ReplayReader:
    def __init__(self, settings: CommonSettings, topics: list[str], *, name: str) -> None:
        self.topics = topics
        self._consumer = confluent_kafka.Consumer(
            settings.kafka_config()
            | {
                "group.id": f"{name}-replay-{uuid.uuid4().hex[:8]}",  # never joins, never commits
                "client.id": name,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
                "queued.max.messages.kbytes": 65536,
            }
        )
        self.partitions: list[TopicPartition] = []
        self.rebuild_to: dict[tuple[str, int], int] = {}
        self._last_discovery = time.monotonic()
        for topic in topics:
            self._add_partitions(topic, self._partitions_of(topic))
        self.rebuilt_at: float | None = None

    def _partitions_of(self, topic: str) -> list[int]:
        meta = self._consumer.list_topics(topic, timeout=15)
        if meta.topics[topic].error is not None:
            raise RuntimeError(f"topic {topic}: {meta.topics[topic].error}")
        return sorted(meta.topics[topic].partitions)

    def _add_partitions(self, topic: str, partitions: list[int]) -> None:
        new = [TopicPartition(topic, p, 0) for p in partitions if (topic, p) not in self.rebuild_to]
        if not new:
            return
        for tp in new:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=15
            )
            self.rebuild_to[(tp.topic, tp.partition)] = high
        self.partitions += new
        if len(self.partitions) == len(new):
            self._consumer.assign(new)
        else:
            self._consumer.incremental_assign(new)
            log.info(
                "new partitions assigned", extra={"partitions": [f"{t.topic}[{t.partition}]" for t in new]}
            )

    def discover(self, every_s: float = 30.0) -> None:
        """Pick up partitions added to the topics since the start (read from their beginning)."""
        if time.monotonic() - self._last_discovery < every_s:
            return
        self._last_discovery = time.monotonic()
        for topic in self.topics:
            try:
                self._add_partitions(topic, self._partitions_of(topic))
            except Exception as exc:  # metadata hiccups must not stop the loop
                log.warning("partition discovery failed", extra={"topic": topic, "error": str(exc)})

    @property
    def assigned(self) -> bool:
        return all(any(tp.topic == t for tp in self.partitions) for t in self.topics)

    def poll(self, max_messages: int, timeout: float) -> list[confluent_kafka.Message]:
        msgs = self._consumer.consume(1, timeout)
        if msgs:
            msgs += self._consumer.consume(max_messages - 1, 0)
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(m)
            elif err.fatal():
                raise confluent_kafka.KafkaException(err)
            elif err.code() != confluent_kafka.KafkaError._PARTITION_EOF:
                log.warning("consumer error", extra={"error": err.str()})
        return out

    def rebuilt(self) -> bool:
        """Has every partition been read up to where it ended when this reader started?"""
        if self.rebuilt_at is not None:
            return True
        positions = self._consumer.position(
            [TopicPartition(tp.topic, tp.partition) for tp in self.partitions]
        )
        for tp in positions:
            if max(tp.offset, 0) < self.rebuild_to[(tp.topic, tp.partition)]:
                return False
        self.rebuilt_at = time.monotonic()
        return True

    def lag(self) -> dict[tuple[str, int], int]:
        """Per partition: committed messages not read yet (0 = caught up).

        The consumer's position (unlike the last offset read) moves past transaction markers,
        so it reaches the high watermark on topics written transactionally. Watermarks come
        from the fetch responses librdkafka already has, asked for only while still unknown.
        """
        out = {}
        positions = self._consumer.position(
            [TopicPartition(tp.topic, tp.partition) for tp in self.partitions]
        )
        for tp in positions:
            got = self._consumer.get_watermark_offsets(tp, cached=True)
            high = got[1] if got else -1
            if high < 0:
                high = self._consumer.get_watermark_offsets(tp, timeout=5, cached=False)[1]
            out[(tp.topic, tp.partition)] = max(high - max(tp.offset, 0), 0)
        return out

    def close(self) -> None:
        self._consumer.close()
