"""Reading topics to their end in tests, as a read_committed consumer downstream would."""

from __future__ import annotations

import time
import uuid

import confluent_kafka
from confluent_kafka import TopicPartition

from libs.common.settings import CommonSettings


def read_all(settings: CommonSettings, topic: str, *, timeout: float = 30.0) -> list[confluent_kafka.Message]:
    """Every committed message on ``topic`` (already prefixed), up to its end as of now."""
    consumer = confluent_kafka.Consumer(
        settings.kafka_config()
        | {
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = list(meta.topics[topic].partitions)
        ends = {}
        for p in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        out: list[confluent_kafka.Message] = []
        position = dict.fromkeys(partitions, 0)
        deadline = time.monotonic() + timeout
        while any(position[p] < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: read {len(out)} messages, positions {position} ends {ends}")
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                out.append(msg)
            # Transaction markers and aborted records occupy offsets but are never returned.
            for tp in consumer.position([TopicPartition(topic, p) for p in partitions]):
                if tp.offset >= 0:
                    position[tp.partition] = tp.offset
        return out
    finally:
        consumer.close()


def wait_for(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def end_offsets(settings: CommonSettings, topic: str) -> int:
    consumer = confluent_kafka.Consumer(settings.kafka_config() | {"group.id": "end-offsets"})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.topics[topic].partitions
        )
    finally:
        consumer.close()
