"""Reads every partition of the fact topics, so each worker's engine sees the whole world.

Not a group member: the engine's state is global (a hashtag's likes span all partitions), and
it is cheap, so every worker keeps all of it and only the emitting is split between workers.
"""

from __future__ import annotations

import logging
import uuid

import confluent_kafka
from confluent_kafka import TopicPartition

from libs.common.settings import CommonSettings

log = logging.getLogger(__name__)


class ReplicaReader:
    def __init__(self, settings: CommonSettings, topics: list[str], *, name: str) -> None:
        self._consumer = confluent_kafka.Consumer(
            settings.kafka_config()
            | {
                "group.id": f"{name}-replica-{uuid.uuid4().hex[:8]}",  # never commits; needed by librdkafka
                "client.id": name,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 100,
                "queued.max.messages.kbytes": 65536,
            }
        )
        self.partitions: list[TopicPartition] = []
        for topic in topics:
            meta = self._consumer.list_topics(topic, timeout=15)
            if meta.topics[topic].error is not None:
                raise RuntimeError(f"topic {topic}: {meta.topics[topic].error}")
            self.partitions += [TopicPartition(topic, p, 0) for p in sorted(meta.topics[topic].partitions)]
        self._consumer.assign(self.partitions)

    def poll(self, max_messages: int, timeout: float) -> list[confluent_kafka.Message]:
        msgs = self._consumer.consume(1, timeout)
        if msgs:
            msgs += self._consumer.consume(max_messages - 1, 0)
        out = []
        for m in msgs:
            if m.error() is None:
                out.append(m)
            elif m.error().fatal():
                raise confluent_kafka.KafkaException(m.error())
        return out

    def backlog(self) -> dict[tuple[str, int], int]:
        """Per partition: committed messages not read yet (0 = caught up).

        The consumer's position (unlike the last offset read) moves past transaction markers,
        so it reaches the high watermark on topics written transactionally. Watermarks come
        from the fetch responses librdkafka already has (no extra round trip per partition).
        """
        out = {}
        positions = self._consumer.position(
            [TopicPartition(tp.topic, tp.partition) for tp in self.partitions]
        )
        for tp in positions:
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True) or (0, -1)
            if high < 0:
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            out[(tp.topic, tp.partition)] = max(high - max(tp.offset, 0), 0)
        return out

    def caught_up(self) -> dict[tuple[str, int], bool]:
        return {key: lag == 0 for key, lag in self.backlog().items()}

    def close(self) -> None:
        self._consumer.close()
