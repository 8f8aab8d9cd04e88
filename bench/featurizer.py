"""Featurizer throughput and lag on one worker, through the local broker.

    python bench/featurizer.py [--pupdates 20000] [--likes-per-pupdate 5] [--rate 1000] [--seconds 10]

1. Throughput: a backlog of facts (pupdates and likes) is written first; one featurizer worker
   then reads it all and writes features and instances transactionally. Prints pupdates/s and
   facts/s from start to the last feature vector committed.
2. Lag: facts are written live at --rate pupdates/s with posted_at = now; lag is the wall time
   from a pupdate's write to its feature vector being readable (read_committed). The allowed
   lateness (--lateness-ms) is part of it by design: a pupdate is featurized only once the
   watermark passes it. Prints p50/p99.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
import uuid

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from libs.common.kafka.producer import Producer
from libs.common.lifecycle import Shutdown
from libs.common.serde import serde
from libs.common.topics import CONTRACT, FEATURES, LIKES, PUPDATES
from services.featurizer.service import Featurizer
from services.featurizer.settings import FeaturizerSettings

TAGS = [f"#tag{i}" for i in range(300)] + ["#adorable", "#Adorabull", "#frenchie", "#walkies"]


def fact_pupdate(rng: random.Random, i: int, posted_at: int) -> dict:
    return {
        "event_id": f"e{i}",
        "pupdate_id": f"p{i}",
        "dog_id": f"d{rng.randint(0, 2000)}",
        "posted_at": posted_at,
        "hashtags": rng.sample(TAGS, rng.randint(0, 6)),
        "caption": "a walk in the park" if rng.random() < 0.5 else None,
        "photo_filter": rng.choice([None, "golden-hour", "mono"]),
        "dog": {"breed": rng.choice(["Pug", "Beagle", "French Bulldog"]), "size": "SMALL", "age_months": 20},
        "dog_followers": rng.randint(0, 100_000),
        "country": rng.choice(["US", "BR", "JP", "DE", "IN"]),
        "app_version": "3.0.0",
        "raw_schema": "",
        "collected_at": posted_at,
    }


def fact_like(i: int, j: int, liked_at: int) -> dict:
    return {
        "event_id": f"l{i}-{j}",
        "pupdate_id": f"p{i}",
        "sniffer_id": f"s{j}",
        "liked_at": liked_at,
        "app_version": "3.0.0",
        "collected_at": liked_at,
    }


def make_topics(prefix: str, base) -> None:
    admin = AdminClient({"bootstrap.servers": base.kafka_bootstrap})
    futures = admin.create_topics(
        [NewTopic(prefix + t.name, min(t.partitions, 6), 1, config=t.config) for t in CONTRACT]
    )
    for f in futures.values():
        f.result(30)


def settings_for(prefix: str, lateness_ms: int, horizon_ms: int) -> FeaturizerSettings:
    return FeaturizerSettings(
        topic_prefix=prefix,
        horizon_ms=horizon_ms,
        lateness_ms=lateness_ms,
        idle_flush_ms=500,
        redis_view=True,
        port=0,
        log_level="WARNING",
    )


def throughput(args) -> None:
    prefix = f"bench.fz.{uuid.uuid4().hex[:6]}."
    s = settings_for(prefix, 1000, 3_600_000)
    make_topics(prefix, s)
    rng = random.Random(7)
    producer = Producer(s, name="bench-feeder")
    t = 1_795_000_000_000
    facts = 0
    for i in range(args.pupdates):
        t += rng.randint(0, 400)
        producer.produce(s.topic(PUPDATES), serde("pupdate").encode(fact_pupdate(rng, i, t)), key=f"p{i}")
        for j in range(args.likes_per_pupdate):
            producer.produce(
                s.topic(LIKES),
                serde("like").encode(fact_like(i, j, t + rng.randint(0, 7_200_000))),
                key=f"p{i}",
            )
        facts += 1 + args.likes_per_pupdate
    producer.flush(60)

    featurizer = Featurizer(s)
    featurizer.start(Shutdown())
    started = time.perf_counter()
    emitted = 0
    deadline = started + 600
    try:
        while emitted < args.pupdates and time.perf_counter() < deadline:
            featurizer.ingest(featurizer.replica.poll(s.batch_size, 0.2))
            wm = featurizer.release()
            featurizer.emit(wm)
            featurizer.write_view(wm)
            emitted = int(sum(c._value.get() for c in _features_counters()))
    finally:
        featurizer.close()
    elapsed = time.perf_counter() - started
    print(f"throughput: {args.pupdates:,} pupdates + {facts - args.pupdates:,} likes on one worker")
    print(f"  {args.pupdates / elapsed:,.0f} pupdates/s  ({facts / elapsed:,.0f} facts/s), {elapsed:.1f} s")


def _features_counters():
    from services.featurizer import metrics

    return [metrics.FEATURES_OUT.labels("v1")]


def lag(args) -> None:
    prefix = f"bench.fz.{uuid.uuid4().hex[:6]}."
    s = settings_for(prefix, args.lateness_ms, 60_000)
    make_topics(prefix, s)
    featurizer = Featurizer(s)
    shutdown = Shutdown()
    featurizer.start(shutdown)
    worker = threading.Thread(target=featurizer.run, args=(shutdown,), daemon=True)
    worker.start()
    sent_at: dict[str, float] = {}
    lags: list[float] = []
    reader = confluent_kafka.Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": prefix + "lag",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    reader.subscribe([s.topic(FEATURES)])

    def read() -> None:
        while not (shutdown.is_set() and time.time() > stop_reading):
            for m in reader.consume(500, 0.2):
                if m.error() is None and m.key().decode() in sent_at:
                    lags.append(time.time() - sent_at[m.key().decode()])

    stop_reading = float("inf")
    t_reader = threading.Thread(target=read, daemon=True)
    t_reader.start()
    time.sleep(3)  # group joins
    rng = random.Random(11)
    producer = Producer(s, name="bench-live", **{"linger.ms": 1})
    n = int(args.rate * args.seconds)
    start = time.time()
    for i in range(n):
        while time.time() < start + i / args.rate:
            time.sleep(0.0005)
        now_ms = int(time.time() * 1000)
        sent_at[f"p{i}"] = time.time()
        producer.produce(
            s.topic(PUPDATES), serde("pupdate").encode(fact_pupdate(rng, i, now_ms)), key=f"p{i}"
        )
        if rng.random() < 0.5:
            producer.produce(s.topic(LIKES), serde("like").encode(fact_like(i, 0, now_ms + 5)), key=f"p{i}")
        producer.poll(0)
    producer.flush(30)
    drain_until = time.time() + 30
    while len(lags) < n and time.time() < drain_until:
        time.sleep(0.1)
    stop_reading = time.time()
    shutdown.set()
    t_reader.join(20)
    worker.join(30)
    reader.close()
    q = statistics.quantiles(lags, n=100) if len(lags) > 2 else [float("nan")] * 99
    print(
        f"lag at {args.rate:,.0f} pupdates/s for {args.seconds:.0f} s (lateness {args.lateness_ms} ms): "
        f"{len(lags):,}/{n:,} featurized, p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pupdates", type=int, default=20_000)
    ap.add_argument("--likes-per-pupdate", type=int, default=5)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--lateness-ms", type=int, default=200)
    ap.add_argument("--skip-lag", action="store_true")
    args = ap.parse_args()
    throughput(args)
    if not args.skip_lag:
        lag(args)


if __name__ == "__main__":
    main()
