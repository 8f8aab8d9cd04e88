"""Reading topics to their end in tests, as a read_committed consumer downstream would."""

from __future__ import annotations

import time

import confluent_kafka
from confluent_kafka import TopicPartition

from libs.common.kafka.replay import read_topic
from libs.common.settings import CommonSettings


def read_all(settings: CommonSettings, topic: str, *, timeout: float = 30.0) -> list[confluent_kafka.Message]:
    """Every committed message on ``topic`` (already prefixed), up to its end as of now."""
    return read_topic(settings, topic, timeout=timeout)


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
