"""Collector benchmark: stream events/s on one core, and HTTP latency at a fixed request rate.

    python -m bench.collector                 # both, on fresh topics, against POOCH_KAFKA_BOOTSTRAP
    python -m bench.collector --events 200000 --rate 500 --seconds 10

Stream: the simulation's traffic (2% bad input of every kind, old schema versions, re-sends)
is produced to the raw topics first; then one collector stream, in this process and pinned to
one CPU (librdkafka's threads included), consumes it to facts and dead letters in Kafka
transactions. Reported: raw records per second of wall time from the first poll until every
record is decided, and the CPU seconds it took.

HTTP: ``python -m services.collector`` runs as a real process (stream included); an open-loop
client starts one ``POST`` (a single good pupdate or like) every 1/rate seconds, whatever the
previous ones are doing, and measures each latency from the moment it was due (so a stall
counts for every request it delays: no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import confluent_kafka
import httpx

from libs.common.admin import delete_topics, ensure_topics, list_topics
from libs.common.lifecycle import Shutdown
from libs.common.settings import CommonSettings
from services.collector.settings import CollectorSettings
from services.collector.stream import CollectorStream
from sniffable import KafkaSink, ListSink, NullSink, SimConfig, run
from sniffable.sinks import HTTP_PATHS
from tooling.stack.processes import free_port

REPO = Path(__file__).resolve().parents[1]


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def bench_stream(common: CommonSettings, events: int, cpu: int | None) -> dict:
    config = SimConfig(seed=3, max_events=events, bad_share=0.02, horizon_s=600, pupdates_per_hour=60_000)
    # Event time must end near now, or the collector rightly rejects the tail as future: a dry
    # run measures the span, the real one starts that long ago.
    dry = run(config, NullSink())
    config = dataclasses.replace(
        config, start_ms=int(time.time() * 1000) - int(dry.virtual_span_s * 1000) - 10_000
    )
    sink = KafkaSink(common, client_name="bench-feed")
    t0 = time.perf_counter()
    report = run(config, sink)
    sink.close()
    feed_s = time.perf_counter() - t0
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # librdkafka threads start below, so they inherit it
    settings = CollectorSettings(instance_id=f"bench-{uuid.uuid4().hex[:6]}", waiting_timeout_s=2)
    stream = CollectorStream(common, settings)
    t0 = time.perf_counter()
    stream.start(Shutdown())
    start_s = time.perf_counter() - t0
    done = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    while done < report.sent:
        done += stream.run_once()
        if time.perf_counter() - t0 > 600:
            raise TimeoutError(f"only {done} of {report.sent} records after 600 s")
    wall = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0
    totals = stream.totals
    stream.close()
    if cpu is not None:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return {
        "records": report.sent,
        "seconds": round(wall, 3),
        "records_per_s": round(report.sent / wall),
        "cpu_seconds": round(cpu_s, 3),
        "records_per_cpu_s": round(report.sent / cpu_s),
        "accepted": sum(totals.accepted.values()),
        "rejected_so_far": dict(collections.Counter(totals.rejected).most_common()),
        "sent_bad": report.bad_by_kind,
        "duplicates": totals.duplicates,
        "feed_seconds": round(feed_s, 2),
        "start_seconds": round(start_s, 3),
    }


class _Connection:
    """One keep-alive HTTP/1.1 connection: a few lines of asyncio instead of a client library,
    so the load generator costs tens of microseconds a request and does not skew the figures."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        return cls(*await asyncio.open_connection(host, port))

    async def post(self, host: str, path: str, body: bytes) -> int:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status


async def _load(host: str, port: int, bodies: list[tuple[str, bytes]], rate: float, seconds: float) -> dict:
    interval = 1.0 / rate
    n = int(rate * seconds)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(64):
        idle.put_nowait(await _Connection.open(host, port))
    loop = asyncio.get_running_loop()
    for i in range(20):  # warm-up
        conn = await idle.get()
        await conn.post(host, *bodies[i % len(bodies)])
        idle.put_nowait(conn)
    start = loop.time() + 0.1

    async def one(i: int) -> None:
        due = start + i * interval
        await asyncio.sleep(max(0.0, due - loop.time()))
        conn = await idle.get()  # a request waiting for a connection is late, and counted so
        try:
            status = await conn.post(host, *bodies[i % len(bodies)])
            idle.put_nowait(conn)
        except (OSError, asyncio.IncompleteReadError):
            status = 0
            idle.put_nowait(await _Connection.open(host, port))
        latencies.append(loop.time() - due)
        statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return {
        "requests": n,
        "rate": rate,
        "statuses": statuses,
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p90_ms": round(_percentile(latencies, 0.90) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
    }


def bench_http(common: CommonSettings, rate: float, seconds: float, *, stream: bool = True) -> dict:
    sink = ListSink()
    config = SimConfig(
        seed=4,
        transport="http",
        max_events=int(rate * seconds) + 20,
        bad_share=0.0,
        pupdates_per_hour=60_000,
        horizon_s=600,
        start_ms=int(time.time() * 1000) - 3_600_000,
    )
    run(config, sink)
    bodies = [(HTTP_PATHS[ev.topic_base], json.dumps(ev.json_payload).encode()) for ev in sink.events]
    port = free_port()
    env = os.environ | {
        "POOCH_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
        "POOCH_TOPIC_PREFIX": common.topic_prefix,
        "POOCH_COLLECTOR_PORT": str(port),
        "POOCH_COLLECTOR_HOST": "127.0.0.1",
        "POOCH_COLLECTOR_INSTANCE_ID": f"bench-http-{uuid.uuid4().hex[:6]}",
        "POOCH_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO),
        "POOCH_COLLECTOR_STREAM_ENABLED": "true" if stream else "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.collector"], cwd=REPO, env=env, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the collector did not become ready")
            time.sleep(0.2)
        result = asyncio.run(_load("127.0.0.1", port, bodies, rate, seconds))
        result["server_histogram"] = _server_histogram(url)
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def bench_kafka_ack(common: CommonSettings, rate: float, seconds: float) -> dict:
    """The floor under the HTTP figures: the broker's own acks=all latency at the same rate,
    with the HTTP producer's settings (idempotent, linger 1 ms), measured after a warm-up."""
    producer = confluent_kafka.Producer(
        common.kafka_config()
        | {"enable.idempotence": True, "acks": "all", "linger.ms": 1, "compression.type": "lz4"}
    )
    topic = common.topic("pupdates.raw")
    latencies: list[float] = []
    warmup = int(rate)  # the first second: connections, producer id, metadata
    n = int(rate * seconds) + warmup
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        while time.perf_counter() < due:
            producer.poll(0.0002)
        sent = time.perf_counter()

        def done(err, _msg, sent=sent, i=i) -> None:
            if err is None and i >= warmup:
                latencies.append(time.perf_counter() - sent)

        producer.produce(topic, b"x" * 300, f"k{i}", on_delivery=done)
    producer.flush(30)
    return {
        "messages": len(latencies),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


def _server_histogram(url: str) -> dict[str, float]:
    """The collector's own view: share of 202 answers within each latency bucket."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    buckets = {}
    for line in text.splitlines():
        if line.startswith("pooch_collector_http_request_duration_seconds_bucket") and 'status="202"' in line:
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = buckets.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    total = buckets.get("+Inf", 0.0)
    return {le: round(n / total, 4) for le, n in buckets.items()} if total else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000, help="raw records for the stream benchmark")
    ap.add_argument("--cpu", type=int, default=0, help="CPU to pin the stream to (-1: no pinning)")
    ap.add_argument("--rate", type=float, default=500.0, help="HTTP requests per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="HTTP load duration")
    ap.add_argument("--only", choices=("stream", "http"), default=None)
    ap.add_argument("--keep-topics", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    common = CommonSettings(topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")
    prefixes = [common]
    ensure_topics(common)
    results: dict[str, dict] = {}
    try:
        if args.only in (None, "stream"):
            results["stream"] = bench_stream(common, args.events, None if args.cpu < 0 else args.cpu)
            r = results["stream"]
            print(
                f"stream: {r['records']:,} raw records in {r['seconds']:.2f} s = {r['records_per_s']:,}/s "
                f"on one core ({r['records_per_cpu_s']:,} per CPU second; start {r['start_seconds']:.2f} s)"
            )
        if args.only in (None, "http"):
            own = CommonSettings(topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")
            prefixes.append(own)
            ensure_topics(own)
            results["kafka_ack"] = r = bench_kafka_ack(own, args.rate, args.seconds)
            print(
                f"kafka acks=all at {args.rate:.0f}/s (the floor): p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms"
            )
            for name, stream in (("http", True), ("http_api_only", False)):
                own = CommonSettings(topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")
                prefixes.append(own)
                ensure_topics(own)
                results[name] = r = bench_http(own, args.rate, args.seconds, stream=stream)
                what = "stream in the same process" if stream else "API-only process"
                print(
                    f"http ({what}): {r['requests']:,} requests at {r['rate']:.0f}/s: p50 {r['p50_ms']} ms, "
                    f"p90 {r['p90_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms, {r['statuses']}"
                )
    finally:
        if not args.keep_topics:
            for settings in prefixes:
                names = [n for n in list_topics(settings) if n.startswith(settings.topic_prefix)]
                delete_topics(settings, names)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
