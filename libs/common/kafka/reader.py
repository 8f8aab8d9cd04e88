"""Reading a topic from the beginning to its current end, as a read_committed reader downstream
sees it: for reports (``pooch demo``), rebuilds and tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import confluent_kafka
from confluent_kafka import TopicPartition

from libs.common.settings import CommonSettings


def read_topic(
    settings: CommonSettings, topic: str, *, timeout: float = 30.0
) -> list[confluent_kafka.Message]:
    """Every committed message on ``topic`` (already prefixed), up to its end as of the call."""
    return list(iter_topic(settings, topic, timeout=timeout))


def iter_topic(
    settings: CommonSettings, topic: str, *, timeout: float = 30.0
) -> Iterator[confluent_kafka.Message]:
    """The same, one message at a time (for topics too big to hold, like ``models``)."""
    consumer = confluent_kafka.Consumer(
        settings.kafka_config()
        | {
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",  # never commits; librdkafka needs one
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 64 * 1024 * 1024,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        if meta.topics[topic].error is not None:
            raise RuntimeError(f"topic {topic}: {meta.topics[topic].error}")
        partitions = sorted(meta.topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        position = dict.fromkeys(partitions, 0)
        deadline = time.monotonic() + timeout
        while any(position[p] < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout}s ({position} of {ends})")
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise confluent_kafka.KafkaException(err)
                    continue
                if msg.offset() < ends[msg.partition()]:  # written after the call: not ours
                    yield msg
            # The position moves past transaction markers and aborted records, which are
            # never returned but take offsets.
            for tp in consumer.position([TopicPartition(topic, p) for p in partitions]):
                if tp.offset >= 0:
                    position[tp.partition] = tp.offset
    finally:
        consumer.close()
