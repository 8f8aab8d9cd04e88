"""The common Kafka helpers against the real broker: round trips, crashes, bad bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import confluent_kafka
import pytest
from confluent_kafka import TopicPartition
from fastavro.utils import generate_many

from libs.common.kafka.consumer import Consumer
from libs.common.kafka.producer import Producer
from libs.common.serde import Serde, default_store, serde
from libs.common.topics import DEADLETTERS, PUPDATES, PUPDATES_RAW
from tests.support import REPO
from tests.support.kafkautil import end_offsets, read_all, wait_for

RECORDS = sorted(default_store().versions)


@pytest.mark.parametrize("stem", RECORDS)
def test_every_record_type_round_trips_through_the_broker(topics, stem):
    settings = topics
    records = list(generate_many(default_store().current(stem).parsed, 20))
    topic = settings.topic(PUPDATES_RAW)
    producer = Producer(settings, name="roundtrip")
    for i, rec in enumerate(records):
        producer.produce(topic, serde(stem).encode(rec), key=f"k{i}")
    producer.flush(30)

    consumer = Consumer(settings, name="roundtrip", group_id=settings.topic("roundtrip"), topics=[topic])
    got = []
    try:
        wait_for(
            lambda: got.extend(consumer.poll_batch(100, 0.5)) or len(got) >= len(records),
            timeout=30,
            what="20 records back",
        )
    finally:
        consumer.close()
    decoded = sorted((m.key().decode(), serde(stem).decode(m.value())) for m in got)
    assert decoded == sorted((f"k{i}", rec) for i, rec in enumerate(records))


def _sample_pupdates(n: int) -> list[bytes]:
    v3 = default_store().current("pupdate_raw")
    return [
        Serde("pupdate_raw").encode(r | {"event_id": f"e{i}"})
        for i, r in enumerate(generate_many(v3.parsed, n))
    ]


def _start_relay(settings, *extra: str) -> subprocess.Popen:
    env = os.environ | {
        "POOCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "POOCH_TOPIC_PREFIX": settings.topic_prefix,
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.relay_worker", *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _committed(settings, group: str) -> int:
    """Offsets the relay's group has committed on its source topic, summed over partitions."""
    consumer = confluent_kafka.Consumer(settings.kafka_config() | {"group.id": settings.topic(group)})
    try:
        topic = settings.topic(PUPDATES_RAW)
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)
    finally:
        consumer.close()


def _event_ids(messages) -> list[str]:
    return [serde("pupdate_raw").decode(m.value())["event_id"] for m in messages]


def test_consumer_killed_mid_batch_loses_nothing(topics):
    """SIGKILL between producing half a batch and storing its offsets: the restart redoes the batch."""
    settings = topics
    sent = _sample_pupdates(1500)
    producer = Producer(settings, name="feeder")
    for i, value in enumerate(sent):
        producer.produce(settings.topic(PUPDATES_RAW), value, key=f"p{i}")
    producer.flush(30)

    relay = _start_relay(settings, "--batch", "100", "--slow-ms", "2")
    try:
        # Kill only once some progress is committed: that is what the restart must resume from.
        wait_for(lambda: _committed(settings, "relay") > 0, timeout=60, what="a first offset commit")
        relay.send_signal(signal.SIGKILL)
        relay.wait(10)
        killed_at = end_offsets(settings, settings.topic(PUPDATES))
        assert killed_at < len(sent), "the kill came too late to prove anything"
        relay = _start_relay(settings, "--batch", "100")
        wait_for(
            lambda: end_offsets(settings, settings.topic(PUPDATES)) >= len(sent),
            timeout=90,
            what="every pupdate forwarded after restart",
        )
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(30)
    ids = _event_ids(read_all(settings, settings.topic(PUPDATES)))
    assert set(ids) == {f"e{i}" for i in range(len(sent))}, "an event was lost"
    # At-least-once: work stored but not yet committed (auto-commit runs every second) is
    # redone, but the restart resumes from committed progress: had nothing been committed,
    # everything forwarded before the kill would have been forwarded again.
    assert len(ids) - len(set(ids)) < killed_at


def test_sigterm_commits_offsets_so_a_restart_redoes_nothing(topics):
    settings = topics
    sent = _sample_pupdates(400)
    producer = Producer(settings, name="feeder")
    for i, value in enumerate(sent):
        producer.produce(settings.topic(PUPDATES_RAW), value, key=f"p{i}")
    producer.flush(30)
    relay = _start_relay(settings)
    wait_for(lambda: end_offsets(settings, settings.topic(PUPDATES)) >= 400, timeout=60, what="relay output")
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(30) == 0, relay.stderr.read().decode()[-2000:]

    relay = _start_relay(settings)
    try:
        # A fresh member of the group starts from the committed offsets: nothing to redo.
        wait_for(lambda: b"partitions assigned" in relay.stderr.peek(65536), timeout=30, what="assignment")
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(30)
    assert end_offsets(settings, settings.topic(PUPDATES)) == 400


def test_unknown_fingerprints_and_garbage_go_to_deadletters_and_the_consumer_keeps_going(topics):
    settings = topics
    good = _sample_pupdates(50)
    bad = {
        "garbage": b"\x00\x01not avro at all",
        "json": b'{"pupdate_id": "p1"}',
        "unknown_fingerprint": b"\xc3\x01" + b"\x11" * 8 + b"\x02\x04",
        "truncated": good[0][:15],
    }
    producer = Producer(settings, name="feeder")
    stream = [*good[:25], *bad.values(), *good[25:]]
    for value in stream:
        producer.produce(settings.topic(PUPDATES_RAW), value, key="same-partition")
    producer.flush(30)

    relay = _start_relay(settings)
    try:
        wait_for(
            lambda: end_offsets(settings, settings.topic(PUPDATES)) >= 50, timeout=60, what="good records"
        )
        wait_for(
            lambda: end_offsets(settings, settings.topic(DEADLETTERS)) >= 4, timeout=30, what="dead letters"
        )
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(30)
    assert relay.returncode == 0
    letters = [
        serde("dead_letter").decode(m.value()) for m in read_all(settings, settings.topic(DEADLETTERS))
    ]
    by_value = {letter["value"]: letter for letter in letters}
    assert set(by_value) == set(bad.values())
    assert by_value[bad["garbage"]]["reason"] == "undecodable"
    assert by_value[bad["json"]]["reason"] == "undecodable"
    assert by_value[bad["unknown_fingerprint"]]["reason"] == "unknown_schema"
    assert "1111111111111111" in by_value[bad["unknown_fingerprint"]]["detail"]
    assert by_value[bad["truncated"]]["reason"] == "undecodable"
    for letter in letters:
        assert letter["service"] == "relay"
        assert letter["source_topic"] == settings.topic(PUPDATES_RAW)
        assert letter["source_offset"] is not None
    assert sorted(_event_ids(read_all(settings, settings.topic(PUPDATES)))) == sorted(
        f"e{i}" for i in range(50)
    )


class _FatalAbortOnce:
    """A real producer whose first abort fails fatally, as librdkafka#4849 makes it do."""

    def __init__(self, producer: confluent_kafka.Producer) -> None:
        self._producer = producer
        self.aborts = 0

    def abort_transaction(self, timeout: float = 30.0) -> None:
        self.aborts += 1
        raise confluent_kafka.KafkaException(
            confluent_kafka.KafkaError(confluent_kafka.KafkaError.INVALID_TXN_STATE, "injected", fatal=True)
        )

    def __getattr__(self, name):
        return getattr(self._producer, name)


def _fed_raw_consumer(settings, values: list[bytes], name: str) -> Consumer:
    """``values`` written to pupdates.raw, and a consumer of it for a transactional loop."""
    feeder = Producer(settings, name="feeder")
    for i, value in enumerate(values):
        feeder.produce(settings.topic(PUPDATES_RAW), value, key=f"p{i}")
    feeder.flush(30)
    return Consumer(
        settings,
        name=name,
        group_id=settings.topic(name),
        topics=[settings.topic(PUPDATES_RAW)],
        **{"enable.auto.commit": False},
    )


def test_transactional_loop_replaces_a_producer_whose_abort_fails_fatally(topics):
    from libs.common.kafka.transactional import TransactionalLoop, TransactionalProducer

    settings = topics
    sent = _sample_pupdates(300)
    consumer = _fed_raw_consumer(settings, sent, "loop")
    producer = TransactionalProducer(settings, name="loop", transactional_id=settings.topic("loop-test"))
    doomed = producer.raw = _FatalAbortOnce(producer.raw)
    loop = TransactionalLoop(consumer, producer, batch_size=100)
    calls = {"n": 0}

    def handler(batch, producer) -> None:
        for msg in batch:
            producer.produce(settings.topic(PUPDATES), msg.value(), key=msg.key())
        calls["n"] += 1
        if calls["n"] == 1:  # the first transaction fails after producing: it must leave no trace
            raise confluent_kafka.KafkaException(
                confluent_kafka.KafkaError(
                    confluent_kafka.KafkaError._STATE, "injected", txn_requires_abort=True
                )
            )

    try:
        done = 0
        for _ in range(200):
            done += loop.run_once(handler)
            if done >= len(sent):
                break
    finally:
        consumer.close()
        loop.producer.close()
    assert doomed.aborts == 1 and loop.producer.renewed == 1 and loop.producer.raw is not doomed
    ids = _event_ids(read_all(settings, settings.topic(PUPDATES)))
    assert sorted(ids) == sorted(f"e{i}" for i in range(len(sent))), "lost or duplicated across the renewal"


def test_back_to_back_transactions_do_not_wait_out_librdkafkas_100_ms_retry_backoff(topics):
    # A hop commits a transaction and begins the next at once; the coordinator, still writing
    # the last one's markers, answers CONCURRENT_TRANSACTIONS, which librdkafka retried after
    # its default retry.backoff.ms: each transaction took >= 100 ms (bench/txn_latency.py).
    import time

    from libs.common.kafka.transactional import TransactionalLoop, TransactionalProducer

    settings = topics
    n = 61
    consumer = _fed_raw_consumer(settings, [b"x"] * n, "pace")
    producer = TransactionalProducer(settings, name="pace", transactional_id=settings.topic("pace-test"))
    loop = TransactionalLoop(consumer, producer, batch_size=1)

    def forward(batch, out) -> None:
        for msg in batch:
            out.produce(settings.topic(PUPDATES), msg.value(), key=msg.key())

    try:
        done = 0
        while done == 0:  # the first record: the group joined, the partitions assigned
            done += loop.run_once(forward)
        seconds = []
        while done < n:
            started = time.perf_counter()
            got = loop.run_once(forward)
            if got:
                seconds.append(time.perf_counter() - started)
            done += got
    finally:
        consumer.close()
        producer.close()
    # A retried request waits retry.backoff.ms: at 100 ms a fifth of these took over 90 ms.
    slow = [round(s * 1000) for s in seconds if s >= 0.09]
    assert len(slow) <= 3, f"{len(slow)} of {len(seconds)} back-to-back transactions took >= 90 ms: {slow}"
