"""A broker that cannot be reached leaves a trace in every client built by libs.common.kafka.

librdkafka retries by itself, so a service riding out a broker outage raises nothing and logs
only librdkafka's lines; the error callback counts them (pooch_kafka_client_errors_total), which
is what the alert PoochKafkaUnreachable and the incident suite's scenario 4 read.
"""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from libs.common.kafka.clients import consume_batch, new_consumer, new_producer
from libs.common.settings import CommonSettings
from tooling.stack.processes import free_port

DOWN = ("_ALL_BROKERS_DOWN", "_TRANSPORT")


def _counted() -> float:
    return sum(
        REGISTRY.get_sample_value("pooch_kafka_client_errors_total", {"code": code}) or 0.0 for code in DOWN
    )


def test_producer_and_consumer_count_an_unreachable_cluster():
    settings = CommonSettings(kafka_bootstrap=f"127.0.0.1:{free_port()}")  # nothing listens there
    before = _counted()
    producer = new_producer(settings, name="unreachable-test")
    consumer = new_consumer(settings, name="unreachable-test", group_id="unreachable-test")
    try:
        consumer.subscribe(["anything"])
        producer.produce("anything", b"x")
        deadline = time.monotonic() + 20
        seen_producer = seen_consumer = False
        while time.monotonic() < deadline and not (seen_producer and seen_consumer):
            mark = _counted()
            producer.poll(0.2)
            seen_producer |= _counted() > mark
            mark = _counted()
            assert consume_batch(consumer, 10, 0.2) == []
            seen_consumer |= _counted() > mark
        assert seen_producer and seen_consumer, f"counted {_counted() - before:.0f} errors"
    finally:
        consumer.close()
        producer.purge()
        producer.flush(1)
