"""Back-to-back Kafka transactions: what one costs in time and in broker CPU, at librdkafka's
default ``retry.backoff.ms`` (100 ms) and at the one ``libs.common.kafka.clients`` sets for
transactional producers, side by side in the same run.

    python bench/txn_latency.py [--transactions 300] [--messages 1] [--rounds 2]

Each transaction is what a consume-transform-produce hop commits: ``--messages`` records
spread over six partitions, then ``send_offsets_to_transaction`` for a consumer group, then
``commit_transaction``; the next one begins at once. A transaction begun right after a commit
finds the coordinator still writing the last one's markers and is told CONCURRENT_TRANSACTIONS;
librdkafka retries after ``retry.backoff.ms`` (KAFKA-5477 lowered the Java client's retry of
that case to 20 ms; confluent-kafka-python#967). Broker CPU is read from /proc when the broker
runs on this machine (the local stack).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from libs.common.kafka.clients import TXN_RETRY_BACKOFF_MS, new_consumer, new_producer
from libs.common.settings import CommonSettings

LIBRDKAFKA_DEFAULT_MS = 100
PARTITIONS = 6


def broker_ticks() -> int | None:
    """User + system CPU ticks of the local broker's JVM, or None when it is not local."""
    found = subprocess.run(["pgrep", "-f", "kafka.Kafka"], capture_output=True, text=True).stdout.split()
    if not found:
        return None
    fields = Path(f"/proc/{found[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run(settings: CommonSettings, backoff_ms: int, transactions: int, messages: int) -> dict:
    admin = AdminClient(settings.kafka_config())
    topic = f"bench.txn.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result()
    producer = new_producer(
        settings,
        name="bench-txn",
        **{"transactional.id": topic, "linger.ms": 0, "retry.backoff.ms": backoff_ms},
    )
    consumer = new_consumer(settings, name="bench-txn", group_id=topic, **{"enable.auto.commit": False})
    try:
        producer.init_transactions(30)
        consumer.subscribe([topic])
        consumer.poll(1.0)
        group = consumer.consumer_group_metadata()
        seconds: list[float] = []
        ticks0, started = broker_ticks(), time.perf_counter()
        for i in range(transactions):
            t0 = time.perf_counter()
            producer.begin_transaction()
            for j in range(messages):
                producer.produce(topic, b"x" * 270, partition=j % PARTITIONS)
            producer.send_offsets_to_transaction([TopicPartition(topic, 0, i + 1)], group, 30)
            producer.commit_transaction(30)
            seconds.append(time.perf_counter() - t0)
        wall, ticks1 = time.perf_counter() - started, broker_ticks()
    finally:
        consumer.close()
        producer.flush(5)
        admin.delete_topics([topic])
    cpu = None if ticks0 is None or ticks1 is None else (ticks1 - ticks0) / 100.0
    ordered = sorted(seconds)
    return {
        "backoff_ms": backoff_ms,
        "per_s": transactions / wall,
        "p50_ms": statistics.median(seconds) * 1000,
        "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000,
        "broker_ms_per_txn": None if cpu is None else cpu * 1000 / transactions,
        "broker_cores": None if cpu is None else cpu / wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transactions", type=int, default=300, help="back-to-back transactions per round")
    ap.add_argument("--messages", type=int, default=1, help="records in each transaction")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each backoff")
    args = ap.parse_args()
    settings = CommonSettings()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.transactions} back-to-back "
        f"transactions of {args.messages} record(s) + send_offsets, {args.rounds} alternating round(s) each"
    )
    heads = ("retry.backoff.ms", "txn/s", "p50", "p99", "broker CPU/txn", "broker cores")
    print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (16, 7, 9, 9, 15, 13), strict=True)))
    for _ in range(args.rounds):
        for backoff in (LIBRDKAFKA_DEFAULT_MS, TXN_RETRY_BACKOFF_MS):
            r = run(settings, backoff, args.transactions, args.messages)
            cpu = "-" if r["broker_ms_per_txn"] is None else f"{r['broker_ms_per_txn']:.1f} ms"
            cores = "-" if r["broker_cores"] is None else f"{r['broker_cores']:.2f}"
            label = f"{backoff}" + (" (ours)" if backoff == TXN_RETRY_BACKOFF_MS else " (default)")
            times = f"{r['p50_ms']:>6.1f} ms {r['p99_ms']:>6.1f} ms"
            print(f"{label:>16} {r['per_s']:>7.0f} {times} {cpu:>15} {cores:>13}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
