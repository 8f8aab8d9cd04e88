"""Produce-to-consume throughput and latency through the local broker: the project's helpers
against raw confluent-kafka at the same settings, and the ratio (the helpers' overhead).

    python bench/kafka_roundtrip.py [--messages 100000] [--rate 2000] [--latency-seconds 5]

Throughput: one thread produces --messages as fast as it can while the main thread consumes
them; messages/s is counted from the first produce to the last consume. Latency: messages sent
at --rate, each stamped with its send time; p50/p99 of send-to-consume.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import threading
import time
import uuid

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from libs.common.kafka import consumer as consumer_mod
from libs.common.kafka import producer as producer_mod
from libs.common.kafka.consumer import Consumer
from libs.common.kafka.producer import Producer
from libs.common.settings import CommonSettings

PAYLOAD = b"x" * 262  # a realistic encoded pupdate is ~270 bytes with its 8-byte stamp


class Raw:
    """The same work done directly on confluent-kafka, with the helpers' own settings."""

    def __init__(self, settings: CommonSettings, topic: str, group: str) -> None:
        self.p = confluent_kafka.Producer(
            settings.kafka_config() | producer_mod.DEFAULTS | {"client.id": "raw"}
        )
        self.c = confluent_kafka.Consumer(
            settings.kafka_config() | consumer_mod.DEFAULTS | {"group.id": group, "client.id": "raw"}
        )
        self.c.subscribe([topic])
        self.topic = topic

    def produce(self, value: bytes, key: bytes) -> None:
        while True:
            try:
                self.p.produce(self.topic, value, key)
                return
            except BufferError:
                self.p.poll(0.05)

    def flush(self) -> None:
        self.p.flush(30)

    def poll(self) -> list:
        msgs = self.c.consume(1, 0.1)
        msgs = [m for m in msgs + (self.c.consume(499, 0) if msgs else []) if m.error() is None]
        if msgs:
            self.c.store_offsets(offsets=consumer_mod.next_offsets(msgs))
        return msgs

    def close(self) -> None:
        self.c.close()


class Helpers:
    def __init__(self, settings: CommonSettings, topic: str, group: str) -> None:
        self.p = Producer(settings, name="helpers")
        self.c = Consumer(settings, name="helpers", group_id=group, topics=[topic])
        self.topic = topic

    def produce(self, value: bytes, key: bytes) -> None:
        self.p.produce(self.topic, value, key)

    def flush(self) -> None:
        self.p.flush(30)

    def poll(self) -> list:
        msgs = self.c.poll_batch(500, 0.1)
        self.c.store(msgs)
        return msgs

    def close(self) -> None:
        self.c.close()


def stamped(i: int) -> tuple[bytes, bytes]:
    return struct.pack(">q", time.perf_counter_ns()) + PAYLOAD, str(i % 64).encode()


def warm_up(client, deadline: float = 30.0) -> None:
    """Wait for the partition assignment, so neither variant pays for its rebalance."""
    value, key = stamped(0)
    client.produce(value, key)
    client.flush()
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if client.poll():
            return
    raise TimeoutError("no assignment within 30 s: is the broker up?")


def throughput(client, n: int) -> float:
    def feed() -> None:
        for i in range(n):
            client.produce(*stamped(i))
        client.flush()

    start = time.perf_counter()
    t = threading.Thread(target=feed)
    t.start()
    got = 0
    while got < n:
        got += len(client.poll())
    elapsed = time.perf_counter() - start
    t.join()
    return n / elapsed


def latency(client, rate: float, seconds: float) -> tuple[float, float]:
    n = int(rate * seconds)
    stop = threading.Event()

    def feed() -> None:
        start = time.perf_counter()
        for i in range(n):
            while time.perf_counter() < start + i / rate:
                time.sleep(0.0002)
            client.produce(*stamped(i))
            client.p.poll(0)
        client.flush()
        stop.set()

    t = threading.Thread(target=feed)
    t.start()
    lat = []
    while len(lat) < n:
        now_batch = client.poll()
        now = time.perf_counter_ns()
        lat.extend((now - struct.unpack(">q", m.value()[:8])[0]) / 1e6 for m in now_batch)
    t.join()
    q = statistics.quantiles(lat, n=100)
    return q[49], q[98]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    args = ap.parse_args()

    settings = CommonSettings()
    admin = AdminClient(settings.kafka_config())
    run = uuid.uuid4().hex[:8]
    variants = {"raw confluent-kafka": Raw, "pooch helpers": Helpers}
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    # Alternate the variants round by round, so drift on a shared machine hits both alike.
    for rnd in range(args.rounds):
        for name, cls in variants.items():
            topic = f"bench.roundtrip.{run}.{rnd}.{cls.__name__.lower()}"
            admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
            client = cls(settings, topic, f"bench-{run}-{rnd}-{cls.__name__}")
            try:
                warm_up(client)
                tput = throughput(client, args.messages)
                p50, p99 = latency(client, args.rate, args.latency_seconds)
            finally:
                client.close()
                admin.delete_topics([topic])
            samples[name].append((tput, p50, p99))
            print(f"  round {rnd + 1} {name:<22} {tput:>10,.0f} msg/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    results = {
        name: tuple(statistics.median(col) for col in zip(*rows, strict=True))
        for name, rows in samples.items()
    }

    print(
        f"kafka round trip via {settings.kafka_bootstrap}: {args.messages:,} messages of "
        f"{len(PAYLOAD) + 8} B, {args.partitions} partitions; latency at {args.rate:,.0f} msg/s"
    )
    for name, (tput, p50, p99) in results.items():
        print(f"  median {name:<15} {tput:>10,.0f} msg/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    raw, ours = results["raw confluent-kafka"][0], results["pooch helpers"][0]
    print(f"  helpers/raw throughput ratio: {ours / raw:.2f} (aim >= 0.8)")


if __name__ == "__main__":
    main()
