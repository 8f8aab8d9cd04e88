"""The one place that builds confluent-kafka clients.

Every client of every service gets the cluster settings (bootstrap, SASL) and its defaults
from here, so a security or reliability setting is changed once. The typed wrappers
(:mod:`.producer`, :mod:`.consumer`, :mod:`.transactional`, :mod:`.replay`) are built on these;
services use the wrappers, or these two functions where they need the raw client's API
(group membership for leader election, the collector's gateway producer).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, cast

import confluent_kafka
from confluent_kafka.admin import AdminClient

from libs.common.kafka.errors import KafkaUnavailableError
from libs.common.metrics import KAFKA_CLIENT_ERRORS
from libs.common.settings import CommonSettings

log = logging.getLogger(__name__)

PRODUCER_DEFAULTS: dict[str, Any] = {
    # murmur2 is what the Java clients and aiokafka (faust) use: every writer of a topic must
    # agree, or records with the same key land on different partitions and joins break.
    "partitioner": "murmur2_random",
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "compression.type": "lz4",
    "delivery.timeout.ms": 30000,
    "queue.buffering.max.messages": 500000,
    "queue.buffering.max.kbytes": 262144,
}

# The first retry of a transactional producer's requests (see new_producer).
TXN_RETRY_BACKOFF_MS = 10

# For readers that are assigned partitions and never commit (replays, catalogs, reports):
# the group id only satisfies librdkafka.
READER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "isolation.level": "read_committed",
    "auto.offset.reset": "earliest",
    "fetch.wait.max.ms": 100,
}


def position(msg: confluent_kafka.Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed data message (the client's types allow None
    for error events, which the wrappers never hand out)."""
    return cast(str, msg.topic()), cast(int, msg.partition()), cast(int, msg.offset())


Headers = list[tuple[str, str | bytes | None]]


def produce_waiting(
    producer: confluent_kafka.Producer,
    topic: str,
    value: bytes | None,
    key: bytes | str | None,
    *,
    headers: Headers | None = None,
    block_seconds: float = 30.0,
    **callback: Any,
) -> None:
    """Queue one message; on a full queue wait (bounded) for room instead of failing: a full
    queue means Kafka is slow or away, which the caller reports as unavailable."""
    try:
        producer.produce(topic, value, key, headers=headers, **callback)
        return
    except BufferError:
        pass
    deadline = time.monotonic() + block_seconds
    while True:
        producer.poll(0.05)
        try:
            producer.produce(topic, value, key, headers=headers, **callback)
            return
        except BufferError:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"producer queue full for {block_seconds:.0f}s: is Kafka reachable?"
                ) from None


def close_producer(producer: confluent_kafka.Producer, timeout: float) -> None:
    """Flush what is queued, bounded; never raise (closing must not mask the error that led here)."""
    try:
        left = producer.flush(timeout)
        if left:
            log.warning("producer closed with undelivered messages", extra={"undelivered": left})
    except Exception:
        log.exception("producer flush on close failed")


def consume_batch(
    consumer: confluent_kafka.Consumer, max_messages: int, timeout: float
) -> list[confluent_kafka.Message]:
    """Up to ``max_messages`` data messages: blocks only until the first, then takes what is
    already fetched (batches grow under load without adding a timeout of latency when light).
    Error events are logged and dropped, fatal ones raised."""
    messages = consumer.consume(1, timeout)
    if messages and max_messages > 1:
        messages += consumer.consume(max_messages - 1, 0)
    batch = []
    for msg in messages:
        err = msg.error()
        if err is None:
            batch.append(msg)
        elif err.fatal():
            raise confluent_kafka.KafkaException(err)
        elif err.code() != confluent_kafka.KafkaError._PARTITION_EOF:
            log.warning("consumer error", extra={"error": err.str(), "code": err.code()})
    return batch


def count_client_error(err: confluent_kafka.KafkaError) -> None:
    """Count one of librdkafka's client errors (for a client with an error callback of its own)."""
    KAFKA_CLIENT_ERRORS.labels(err.name()).inc()


def client_error(err: confluent_kafka.KafkaError) -> None:
    """librdkafka's error callback for every client built here.

    Errors about the cluster (every broker down, a connection lost) never reach a message or an
    exception while the client retries by itself, so a service riding out a broker outage would
    leave no trace: counted in ``pooch_kafka_client_errors_total`` (alert PoochKafkaUnreachable)
    and logged.
    """
    count_client_error(err)
    level = logging.ERROR if err.fatal() else logging.WARNING
    log.log(level, "kafka client error", extra={"error": err.str(), "code": err.name()})


def _with_error_cb(conf: dict[str, Any]) -> dict[str, Any]:
    return {"error_cb": client_error} | conf


def new_producer(settings: CommonSettings, *, name: str, **overrides: Any) -> confluent_kafka.Producer:
    conf = _with_error_cb(settings.kafka_config() | PRODUCER_DEFAULTS | {"client.id": name} | overrides)
    if "transactional.id" in conf:
        conf.setdefault("transaction.timeout.ms", 15000)
        # A transaction begun right after a commit finds the coordinator still writing the last
        # one's markers (CONCURRENT_TRANSACTIONS) and librdkafka retries after retry.backoff.ms:
        # at its default 100 ms such a transaction took 100 ms (bench/txn_latency.py: 102 vs
        # 14 ms back to back; the Java producer retries that case after 20 ms). Later retries back
        # off exponentially to retry.backoff.max.ms (1 s), so a broker outage is not hammered.
        conf.setdefault("retry.backoff.ms", TXN_RETRY_BACKOFF_MS)
        # librdkafka refuses a message timeout longer than the transaction's.
        conf["delivery.timeout.ms"] = min(
            int(conf["delivery.timeout.ms"]), int(conf["transaction.timeout.ms"])
        )
    return confluent_kafka.Producer(conf)


def new_consumer(
    settings: CommonSettings, *, name: str, group_id: str | None = None, **overrides: Any
) -> confluent_kafka.Consumer:
    """A consumer; without ``group_id`` a reader that never joins a group (assign only)."""
    if group_id is None:
        conf = READER_DEFAULTS | {"group.id": f"{name}-reader-{uuid.uuid4().hex[:8]}"}
    else:
        conf = {"group.id": group_id}
    conf = _with_error_cb(settings.kafka_config() | conf | {"client.id": name} | overrides)
    return confluent_kafka.Consumer(conf)


def new_admin(settings: CommonSettings, **overrides: Any) -> AdminClient:
    return AdminClient(_with_error_cb(settings.kafka_config() | overrides))
