"""End to end: pupdates/s and the app's event-to-prediction latency through the whole system,
against a pass-through chain of the same Kafka hops on the same machine, and the ratio.

    flock /tmp/pooch-heavy.lock .venv/bin/python -m bench.e2e            # about 10 minutes
    flock /tmp/pooch-heavy.lock .venv/bin/python -m bench.e2e --quick    # under 2 minutes

**System chain.** All five services run under supervisord on a topic prefix of their own
(``tooling.demo.services.DemoServices``, free ports); the simulated history is sent and a first
model trained and made champion for every dog (``tooling.demo.phases.warm_start``), so the
scorer predicts with a model, not a fallback. Then steps of open-loop load: the app produces
pupdates (the simulated world's dogs, hashtags, captions and app schema versions; fresh ids and
``posted_at`` = the moment each was due, so a stall of the app counts against the system, not
for it) and ``--likes`` likes per pupdate to the raw topics. A read_committed reader of
``predictions`` measures, per pupdate id, from ``posted_at`` to the moment its prediction is
readable: app -> pupdates.raw -> collector -> pupdates -> featurizer -> features -> scorer ->
predictions, four Kafka hops, three of them transactional consume-transform-produce.

**Pass-through chain.** The same three hops as processes that only forward (likes are dropped
at the second hop, as the featurizer consumes them without forwarding), built from the same
wrappers and settings as the services (``Consumer``, ``TransactionalProducer``,
``TransactionalLoop``; each hop's batch size and poll timeout as its service's), fed by the same
app with the same records, measured by the same reader. It runs after the services are stopped,
so it has the machine to itself: it is what the machine and broker allow.

**Rates.** 100/s, 1,000/s, then a search for the highest rate sustained without growing lag
(:func:`sustained`, :func:`next_rate`): double until a step fails, then bisect.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# -- pure parts (tests/unit/tooling/test_bench_e2e.py) -----------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in [0, 100]): a value that was measured, never interpolated."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two distinct x)."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    why: str


def sustained(
    samples: Sequence[tuple[float, int]],
    rate: float,
    *,
    offered: int,
    seconds: float,
    growth_share: float = 0.05,
    backlog_s: float = 5.0,
    schedule_share: float = 0.98,
) -> Verdict:
    """Whether a step at ``rate`` pupdates/s was sustained without growing lag.

    ``samples``: (seconds into the step, pupdates sent but not yet predicted) while the app was
    sending. A system that keeps up holds that backlog near rate x latency; one that does not
    grows it by (offered - served)/s. Sustained when, over the second half of the step, the
    backlog grew by less than ``growth_share`` of the offered rate per second and never held more
    than ``backlog_s`` seconds of offered load, and the app itself kept its schedule (sent at least
    ``schedule_share`` of what was due: else the machine could not even offer the load).
    """
    due = rate * seconds
    if offered < schedule_share * due:
        return Verdict(False, f"the app sent only {offered:,} of {due:,.0f} due")
    half = [(t, float(n)) for t, n in samples if t >= seconds / 2]
    if len(half) < 3:
        return Verdict(False, "too few lag samples in the second half of the step")
    growth = slope(half)
    # at low rates a few records of scheduling noise are a large share: a floor of 25/s still
    # fails a system that serves 75 of 100/s
    limit = max(growth_share * rate, 25.0)
    if growth > limit:
        return Verdict(False, f"backlog grew {growth:,.0f}/s (limit {limit:,.0f}/s)")
    worst = max(n for _, n in half)
    if worst > max(backlog_s * rate, 50):
        return Verdict(False, f"backlog reached {worst:,.0f} ({worst / rate:.1f} s of load)")
    return Verdict(True, f"backlog <= {worst:,.0f}, growth {growth:+,.0f}/s")


def next_rate(
    tried: dict[float, bool],
    *,
    max_rate: float,
    factor: float = 2.0,
    resolution: float = 0.15,
    step: int = 50,
) -> float | None:
    """The next offered rate of the search, or None when it is done.

    Up from the best sustained rate by ``factor`` until a rate fails (or ``max_rate`` is reached),
    then halfway between the best sustained rate below the lowest failure and that failure, until
    they are within ``resolution`` of each other. Rates are rounded to ``step``.
    """
    good = [r for r, ok in tried.items() if ok]
    bad = [r for r, ok in tried.items() if not ok]
    if not bad:
        top = max(good, default=0.0)
        if not good or top >= max_rate:
            return None
        return min(max_rate, _round(top * factor, step))
    hi = min(bad)
    below = [r for r in good if r < hi]
    if not below:
        return None  # even the first rate failed: nothing to bisect towards
    lo = max(below)
    if hi / lo - 1 <= resolution:
        return None
    mid = _round((lo + hi) / 2, step)
    return mid if lo < mid < hi and mid not in tried else None


def _round(x: float, step: int) -> float:
    return float(max(step, round(x / step) * step))


def best_sustained(tried: dict[float, bool]) -> float | None:
    """The highest rate sustained below the lowest failure (a lucky pass above it is noise)."""
    bad = [r for r, ok in tried.items() if not ok]
    ceiling = min(bad, default=math.inf)
    good = [r for r, ok in tried.items() if ok and r < ceiling]
    return max(good, default=None)


# -- the app: open-loop load on the raw topics ---------------------------------------------------


@dataclasses.dataclass
class StepResult:
    chain: str
    rate: float
    seconds: float
    sent: int
    delivered: int
    doubled: int
    missing: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    delivered_per_s: float
    drain_s: float
    verdict: Verdict
    fallbacks: dict[str, int] = dataclasses.field(default_factory=dict)
    cores: dict[str, float] = dataclasses.field(default_factory=dict)  # CPU cores used while sending
    hops: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)  # (p50, p99) to there

    def row(self) -> str:
        mark = "sustained" if self.verdict.ok else "NOT sustained"
        fb = sum(self.fallbacks.values())
        extra = f"  fallbacks {fb:,} {dict(self.fallbacks)}" if fb else ""
        return (
            f"{self.chain:<12} {self.rate:>7,.0f}/s  sent {self.sent:>7,}  delivered {self.delivered:>7,} "
            f"({self.delivered_per_s:>7,.0f}/s)  p50 {self.p50_ms:7.1f} ms  p99 {self.p99_ms:7.1f} ms  "
            f"doubled {self.doubled}  late {self.missing}  drain {self.drain_s:4.1f} s  {mark}: "
            f"{self.verdict.why}{extra}\n{'':>14}cores busy: "
            + ", ".join(f"{k} {v:.2f}" for k, v in self.cores.items())
            + f"\n{'':>14}p50/p99 from the app to: "
            + ", ".join(f"{k} {a:.0f}/{b:.0f} ms" for k, (a, b) in self.hops.items())
            + f", {self.chain} output {self.p50_ms:.0f}/{self.p99_ms:.0f} ms"
        )


class App:
    """The simulated Sniffable's posts, replayed at a fixed rate with fresh ids and times.

    The templates come from the simulation (its world's dogs, hashtags, captions, filters and the
    app versions that send a dog profile); each send takes the next template, gives it a new
    pupdate and event id and ``posted_at`` = when it was due, and sends ``likes`` likes after it.
    """

    def __init__(
        self, settings, topics: tuple[str, str], templates: list[dict], likes: int, run: str
    ) -> None:
        from libs.common.kafka.producer import Producer
        from sniffable.app import Codec, like_record

        self.producer = Producer(settings, name="e2e-app")
        self.codec = Codec()
        self.like_record = like_record
        self.topics = topics
        self.templates = templates
        self.likes = likes
        self.run = run
        self.n = 0
        self.due: dict[str, int] = {}  # pupdate_id -> posted_at (ms)
        self.sent = 0

    def send_one(self, posted_at: int) -> str:
        i = self.n
        self.n += 1
        rec = dict(self.templates[i % len(self.templates)])
        pid = f"e2e-{self.run}-{i}"
        rec["event_id"] = f"{pid}-p"
        rec["pupdate_id"] = pid
        rec["posted_at"] = posted_at
        self.due[pid] = posted_at
        self.producer.produce(self.topics[0], self.codec.encode_pupdate(rec), pid)
        for k in range(self.likes):
            like = self.like_record(
                2,
                event_id=f"{pid}-l{k}",
                pupdate_id=pid,
                sniffer_id=f"sniffer-{(i * 7 + k) % 20_000}",
                liked_at=posted_at + 1 + k,
                app_version="3.2.0",
            )
            self.producer.produce(self.topics[1], self.codec.encode_like(like), pid)
        self.sent += 1
        return pid

    def feed(self, rate: float, seconds: float, stop: threading.Event) -> float:
        """Open loop: the i-th pupdate is due at start + i/rate whatever happened before it."""
        n = int(rate * seconds)
        t0 = time.monotonic()
        wall0 = time.time() * 1000
        i = 0
        while i < n and not stop.is_set():
            elapsed = time.monotonic() - t0
            due = min(n, int(elapsed * rate) + 1)
            while i < due:
                self.send_one(int(wall0 + i * 1000 / rate))
                i += 1
            self.producer.poll(0)
            nxt = t0 + i / rate
            pause = nxt - time.monotonic()
            if pause > 0:
                time.sleep(min(pause, 0.05))
        self.producer.flush(60)
        return time.monotonic() - t0

    def close(self) -> None:
        self.producer.close()


class Reader:
    """Reads the chain's output read_committed from its end; one arrival time per pupdate id.

    ``hops`` (label, topic): intermediate topics read the same way, so the latency splits by hop
    (the first arrival of each id there; the keys alone are read, nothing decoded)."""

    def __init__(
        self, settings, topic: str, app: App, decode: bool, hops: Sequence[tuple[str, str]] = ()
    ) -> None:
        from confluent_kafka import OFFSET_END, TopicPartition

        from libs.common.kafka.clients import new_consumer

        self.app = app
        self.topic = topic
        self.consumer = new_consumer(settings, name="e2e-reader")
        self.hop_of = {t: label for label, t in hops}
        self.hop_arrived: dict[str, dict[str, float]] = {label: {} for label, _ in hops}
        assignment = []
        for t in [topic, *self.hop_of]:
            parts = self.consumer.list_topics(t, timeout=10).topics[t].partitions
            assignment += [TopicPartition(t, p, OFFSET_END) for p in parts]
        self.consumer.assign(assignment)
        self.serde = None
        if decode:
            from libs.common.serde import Serde

            self.serde = Serde("prediction")
        self.arrived: dict[str, float] = {}  # pupdate_id -> wall ms readable
        self.doubled = 0
        self.fallbacks: Counter[str] = Counter()
        self.fallback_of: dict[str, str] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="e2e-reader", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        from libs.common.kafka.clients import consume_batch

        while not self.stop.is_set():
            batch = consume_batch(self.consumer, 5000, 0.05)
            now = time.time() * 1000
            with self.lock:
                for msg in batch:
                    key = msg.key().decode()
                    if key not in self.app.due:
                        continue  # the warm start's history
                    hop = self.hop_of.get(msg.topic())
                    if hop is not None:
                        self.hop_arrived[hop].setdefault(key, now)
                        continue
                    if key in self.arrived:
                        self.doubled += 1
                        continue
                    self.arrived[key] = now
                    if self.serde is not None:
                        rec = self.serde.decode(msg.value())
                        if rec["fallback"]:
                            self.fallback_of[key] = rec["fallback_reason"] or "unknown"

    def delivered(self) -> int:
        return len(self.arrived)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.consumer.close()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its threads so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid() -> int | None:
    """The local Kafka broker's JVM, to show its share of the machine (it serves every helper)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"kafka.Kafka" in (proc / "cmdline").read_bytes():
                    return int(proc.name)
            except OSError:
                continue
    return None


def run_step(
    chain: str,
    app: App,
    reader: Reader,
    rate: float,
    seconds: float,
    drain_timeout: float,
    say,
    procs=lambda: {},
) -> StepResult:
    pids = procs() | {"bench (app + reader)": os.getpid()}
    kafka = broker_pid()
    if kafka:
        pids["kafka broker"] = kafka
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    first = app.n
    base_delivered = reader.delivered()
    base_doubled = reader.doubled
    stop = threading.Event()
    took: list[float] = []
    feeder = threading.Thread(target=lambda: took.append(app.feed(rate, seconds, stop)), daemon=True)
    t0 = time.monotonic()
    feeder.start()
    samples: list[tuple[float, int]] = []
    last_say = t0
    while feeder.is_alive():
        feeder.join(0.25)
        t = time.monotonic() - t0
        if t <= seconds:
            samples.append((t, (app.n - first) - (reader.delivered() - base_delivered)))
        if time.monotonic() - last_say >= 5:
            last_say = time.monotonic()
            say(f"  {chain} {rate:,.0f}/s: {t:4.0f} s, sent {app.n - first:,}, backlog {samples[-1][1]:,}")
    feed_s = took[0] if took else time.monotonic() - t0
    end_feed = time.monotonic()
    cpu = {}
    for name, pid in pids.items():
        after = cpu_seconds(pid)
        if after is not None and cpu0.get(name) is not None:
            cpu[name] = round((after - cpu0[name]) / max(end_feed - t0, 1e-3), 2)
    ids = [f"e2e-{app.run}-{i}" for i in range(first, app.n)]
    deadline = end_feed + drain_timeout
    while time.monotonic() < deadline and reader.delivered() - base_delivered < len(ids):
        time.sleep(0.05)
    drain_s = time.monotonic() - end_feed
    time.sleep(0.5)  # a doubled record would arrive right behind the first
    with reader.lock:
        lat = [reader.arrived[i] - app.due[i] for i in ids if i in reader.arrived]
        in_time = sum(
            1 for i in ids if i in reader.arrived and reader.arrived[i] - app.due[ids[0]] <= seconds * 1000
        )
        fallbacks = Counter(reader.fallback_of[i] for i in ids if i in reader.fallback_of)
        hops = {}
        for label, arrived in reader.hop_arrived.items():
            at = [arrived[i] - app.due[i] for i in ids if i in arrived]
            hops[label] = (round(percentile(at, 50), 1), round(percentile(at, 99), 1))
        doubled = reader.doubled - base_doubled
    verdict = sustained(samples, rate, offered=len(ids), seconds=seconds)
    if feed_s > seconds * 1.05 and verdict.ok:
        verdict = Verdict(False, f"the app needed {feed_s:.1f} s to send {seconds:g} s of load")
    return StepResult(
        chain=chain,
        rate=rate,
        seconds=seconds,
        sent=len(ids),
        delivered=len(lat),
        doubled=doubled,
        missing=len(ids) - len(lat),
        p50_ms=percentile(lat, 50),
        p99_ms=percentile(lat, 99),
        max_ms=max(lat, default=math.nan),
        delivered_per_s=in_time / seconds,
        drain_s=drain_s,
        verdict=verdict,
        fallbacks=dict(fallbacks),
        cores=cpu,
        hops=hops,
    )


def reconcile(app: App, reader: Reader, timeout: float, say) -> dict[str, int]:
    """The whole run counted by id once the last step has drained: a step's "late" pupdates
    (not predicted by the end of its drain) are lost only if they never arrive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and reader.delivered() < len(app.due):
        time.sleep(0.2)
    time.sleep(0.5)
    with reader.lock:
        out = {
            "sent": len(app.due),
            "predicted": reader.delivered(),
            "never_predicted": len(app.due) - reader.delivered(),
            "doubled": reader.doubled,
        }
    say(f"whole run by id: {out}")
    return out


def measure(
    chain: str, app: App, reader: Reader, plan: argparse.Namespace, say, procs=lambda: {}
) -> list[StepResult]:
    say(f"{chain}: warm-up step at 200/s (not counted)")
    run_step(chain, app, reader, 200, 3, plan.drain, say, procs)
    results = []
    tried: dict[float, bool] = {}
    rate: float | None = None
    for fixed in (100.0, 1000.0):
        res = run_step(chain, app, reader, fixed, plan.seconds, plan.drain, say, procs)
        say(res.row())
        results.append(res)
        tried[fixed] = res.verdict.ok and res.missing == 0
    rate = next_rate(tried, max_rate=plan.max_rate, resolution=plan.resolution)
    while rate is not None:
        res = run_step(chain, app, reader, rate, plan.seconds, plan.drain, say, procs)
        say(res.row())
        results.append(res)
        tried[rate] = res.verdict.ok and res.missing == 0
        rate = next_rate(tried, max_rate=plan.max_rate, resolution=plan.resolution)
    return results


# -- the pass-through chain -----------------------------------------------------------------------

# Each hop as its service: what it reads, writes, and its batch size and poll timeout.
HOPS = {
    1: (
        ("pt.pupdates.raw", "pt.likes.raw"),
        {"pt.pupdates.raw": "pt.pupdates", "pt.likes.raw": "pt.likes"},
        2000,
        0.1,
    ),
    2: (("pt.pupdates", "pt.likes"), {"pt.pupdates": "pt.features"}, 2000, 0.1),
    3: (("pt.features",), {"pt.features": "pt.predictions"}, 5000, 0.1),
}
PT_TOPICS = ("pt.pupdates.raw", "pt.likes.raw", "pt.pupdates", "pt.likes", "pt.features", "pt.predictions")


def forward(hop: int) -> None:
    """One pass-through hop (a process of its own, as each service is): consume, forward, commit
    the outputs with the consumed offsets in one transaction."""
    from libs.common.kafka.consumer import Consumer
    from libs.common.kafka.transactional import TransactionalLoop, TransactionalProducer
    from libs.common.lifecycle import Shutdown
    from libs.common.settings import CommonSettings

    settings = CommonSettings()
    inputs, routes, batch_size, poll_timeout = HOPS[hop]
    routes = {settings.topic(k): settings.topic(v) for k, v in routes.items()}
    shutdown = Shutdown()
    signal.signal(signal.SIGTERM, lambda *_: shutdown.set("SIGTERM"))
    consumer = Consumer(
        settings,
        name=f"e2e-forward-{hop}",
        group_id=settings.topic(f"e2e-forward-{hop}"),
        topics=[settings.topic(t) for t in inputs],
        **{"enable.auto.commit": False},
    )
    producer = TransactionalProducer(
        settings,
        name=f"e2e-forward-{hop}",
        transactional_id=settings.topic(f"e2e-forward-{hop}"),
        timeout_s=30.0,
        **{"transaction.timeout.ms": 30_000},
    )
    producer.init(shutdown=shutdown)
    loop = TransactionalLoop(consumer, producer, batch_size=batch_size, poll_timeout=poll_timeout)

    def handle(batch, out) -> None:
        for msg in batch:
            to = routes.get(msg.topic())
            if to is not None:
                out.produce(to, msg.value(), msg.key())

    try:
        loop.run(handle, shutdown)
    finally:
        consumer.close()
        producer.close()


class PassThrough:
    def __init__(self, settings, folder: Path) -> None:
        self.settings = settings
        self.procs: list[subprocess.Popen] = []
        self.folder = folder

    def start(self) -> None:
        env = os.environ | {"POOCH_TOPIC_PREFIX": self.settings.topic_prefix, "PYTHONPATH": str(REPO)}
        for hop in HOPS:
            log = (self.folder / f"forward-{hop}.log").open("w")
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.e2e", "--forward", str(hop)],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


REPO = Path(__file__).resolve().parents[1]


# -- the run --------------------------------------------------------------------------------------


def templates_from_simulation(seed: int, n_dogs: int, horizon_s: float, n: int) -> list[dict]:
    from sniffable import ListSink, SimConfig, run

    sink = ListSink()
    run(SimConfig(seed=seed, n_dogs=n_dogs, horizon_s=horizon_s, rate=0.0, max_events=n, bad_share=0.0), sink)
    out = [
        dict(e.json_payload)
        for e in sink.events
        if e.kind == "pupdate" and e.json_payload and e.json_payload["schema_version"] >= 2
    ]
    if not out:
        raise RuntimeError("the simulation gave no pupdate templates")
    return out


def system_chain(args, settings, folder: Path, templates: list[dict], say) -> tuple[list[StepResult], dict]:
    from tooling.demo import phases
    from tooling.demo.plan import DemoPlan
    from tooling.demo.services import DemoServices
    from tooling.demo.timeline import RunLog
    from tooling.stack.supervision import Supervision

    weights = {"champion": 1.0, "challenger": 0.0, "baseline": 0.0}
    plan = DemoPlan(
        seed=args.seed,
        horizon_s=args.horizon,
        history_pupdates=args.history,
        n_dogs=args.dogs,
        bad_share=0.0,
        weights=weights,
        rogue=False,
        free_ports=True,
        retrain_every=args.retrain_every,
        retrain_interval_s=args.retrain_interval,
        warm_timeout_s=180.0,
    )
    svc = DemoServices(plan, settings.topic_prefix, folder, settings.kafka_bootstrap, settings.redis_url)
    # the featurizer's allowed lateness is a floor under every pupdate's latency (it is featurized
    # once the event-time watermark has passed it), so it is this benchmark's setting, printed
    overrides = {"POOCH_FEATURIZER_LATENESS_MS": str(args.lateness_ms)} | dict(args.env)
    svc.supervision = Supervision(
        svc.supervision.folder,
        [dataclasses.replace(p, env=dict(p.env) | overrides) for p in svc.supervision.programs],
    )
    info: dict[str, Any] = {}
    try:
        svc.start(say, timeout=180)
        t0 = time.monotonic()
        champion = phases.warm_start(plan, svc, settings, RunLog(), say)
        svc.activate(champion, "champion", weights, reason="bench e2e: every dog on the model")
        info["warm_start_s"] = round(time.monotonic() - t0, 1)
        info["champion"] = champion
        say(f"champion {champion} for every dog, after {info['warm_start_s']} s of warm start")
        app = App(
            settings,
            (settings.topic("pupdates.raw"), settings.topic("likes.raw")),
            templates,
            args.likes,
            uuid.uuid4().hex[:6],
        )
        reader = Reader(
            settings,
            settings.topic("predictions"),
            app,
            decode=True,
            hops=[("pupdates", settings.topic("pupdates")), ("features", settings.topic("features"))],
        )
        profiler = Profiler(svc, args, folder, say) if args.profile else None
        try:
            results = measure(
                "system",
                app,
                reader,
                args,
                say,
                lambda: {n: pid for n in svc.specs if (pid := svc.supervision.pid(n))},
            )
            if profiler:
                # at the lowest rate it could not sustain, where the time goes is the bottleneck
                tried = {r.rate: r.verdict.ok and r.missing == 0 for r in results}
                failed = [r for r, ok in tried.items() if not ok]
                info["profile"] = profiler.run(app, reader, min(failed, default=max(tried)))
            info["reconciled"] = reconcile(app, reader, 120.0, say)
        finally:
            reader.close()
            app.close()
        info["pids"] = {name: svc.supervision.pid(name) for name in svc.specs}
        return results, info
    finally:
        svc.stop()


def passthrough_chain(args, settings, folder: Path, templates: list[dict], say) -> list[StepResult]:
    from confluent_kafka.admin import NewTopic

    from libs.common.admin import admin_client

    admin = admin_client(settings)
    topics = [settings.topic(t) for t in PT_TOPICS]
    futures = admin.create_topics([NewTopic(t, args.partitions, 1) for t in topics])
    for f in futures.values():
        f.result(30)
    time.sleep(1)
    pt = PassThrough(settings, folder)
    pt.start()
    try:
        app = App(
            settings,
            (settings.topic("pt.pupdates.raw"), settings.topic("pt.likes.raw")),
            templates,
            args.likes,
            uuid.uuid4().hex[:6],
        )
        reader = Reader(
            settings,
            settings.topic("pt.predictions"),
            app,
            decode=False,
            hops=[("hop 1", settings.topic("pt.pupdates")), ("hop 2", settings.topic("pt.features"))],
        )
        try:
            # the hops join their groups first: the first records wait for the assignment
            deadline = time.monotonic() + 60
            app.send_one(int(time.time() * 1000))
            app.producer.flush(30)
            while reader.delivered() == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            results = measure(
                "passthrough",
                app,
                reader,
                args,
                say,
                lambda: {f"hop {i + 1}": p.pid for i, p in enumerate(pt.procs)},
            )
            reconcile(app, reader, 120.0, say)
            return results
        finally:
            reader.close()
            app.close()
    finally:
        pt.stop()


class Profiler:
    """Where the time goes: py-spy samples every service at the given rate (if py-spy is there)."""

    def __init__(self, svc, args, folder: Path, say) -> None:
        self.svc = svc
        self.args = args
        self.folder = folder
        self.say = say

    def pids(self) -> dict[str, int]:
        return {n: pid for n in self.svc.specs if (pid := self.svc.supervision.pid(n))}

    def run(self, app: App, reader: Reader, rate: float) -> dict:
        import shutil

        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            self.say("no py-spy: pip install py-spy to profile")
            return {}
        seconds = self.args.seconds
        procs = {}
        for name in self.svc.specs:
            pid = self.svc.supervision.pid(name)
            out = self.folder / f"profile-{name}.txt"
            procs[name] = (
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "-p",
                        str(pid),
                        "-d",
                        str(int(seconds)),
                        "-r",
                        "50",
                        "-f",
                        "raw",
                        "-o",
                        str(out),
                        "--nonblocking",
                        "--idle",
                        "--threads",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ),
                out,
            )
        self.say(f"profiling every service for {seconds:g} s at {rate:,.0f}/s")
        res = run_step("profiled", app, reader, rate, seconds, self.args.drain, self.say, self.pids)
        self.say(res.row())
        summary = {}
        for name, (p, out) in procs.items():
            p.wait(60)
            summary[name] = top_frames(out)
        return {"rate": rate, "services": summary}


def top_frames(path: Path, n: int = 8) -> list[tuple[str, float]]:
    """The service loop's wall time by innermost function, as shares, from py-spy's raw output
    (``thread (tid): name;frame;...;frame count`` lines, idle samples included), so waiting on
    Kafka shows as well as CPU. The loop's thread is the one with the most samples in the
    service's own code (``services/``; the HTTP server's thread is mostly idle in its selector)
    and, first, the one whose samples are least in a single place: py-spy samples every thread
    alike, so a thread parked in one wait (the collector's main thread waiting for its stream's
    thread, a producer's poll thread) has as many samples as the loop."""
    by_thread: dict[str, Counter[str]] = {}
    own_code: Counter[str] = Counter()
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        if len(frames) < 2:
            continue
        thread = frames[0]
        name, _, where = frames[-1].partition(" (")
        by_thread.setdefault(thread, Counter())[f"{name} ({where.split(':')[0]})"] += int(count)
        if any("services/" in f and "http" not in f for f in frames[1:]):
            own_code[thread] += int(count)
    if not own_code:
        return []

    def busy(thread: str) -> tuple[int, int]:
        leaves = by_thread[thread]
        return sum(leaves.values()) - leaves.most_common(1)[0][1], own_code[thread]

    leaves = by_thread[max(own_code, key=busy)]
    total = sum(leaves.values())
    return [(f, round(c / total, 3)) for f, c in leaves.most_common(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short steps and a coarse search: under 2 minutes")
    ap.add_argument("--seconds", type=float, default=20.0, help="wall seconds of each load step")
    ap.add_argument("--likes", type=int, default=1, help="likes the app sends per pupdate")
    ap.add_argument("--lateness-ms", type=int, default=20, help="the featurizer's allowed lateness")
    ap.add_argument("--max-rate", type=float, default=16_000.0)
    ap.add_argument("--resolution", type=float, default=0.15, help="search until within this share")
    ap.add_argument("--drain", type=float, default=30.0, help="longest wait for a step's last predictions")
    ap.add_argument("--history", type=int, default=4000, help="simulated pupdates of the warm start")
    ap.add_argument("--horizon", type=float, default=20.0, help="label horizon, seconds")
    ap.add_argument("--dogs", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--retrain-every", type=int, default=20_000)
    ap.add_argument("--retrain-interval", type=float, default=120.0)
    ap.add_argument("--partitions", type=int, default=6, help="partitions of the pass-through topics")
    ap.add_argument("--profile", action="store_true", help="py-spy every service at the best rate")
    ap.add_argument("--only", choices=("system", "passthrough"), help="measure one chain only")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--env",
        type=_env_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every service of the system chain (repeatable), e.g. "
        "POOCH_COLLECTOR_BATCH_LINGER_S=0.01; printed with the figures",
    )
    ap.add_argument("--forward", type=int, choices=sorted(HOPS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.forward:
        forward(args.forward)
        return 0
    if args.quick:
        args.seconds = min(args.seconds, 5.0)
        args.resolution = 1.0
        args.history = min(args.history, 1500)
        args.drain = min(args.drain, 10.0)
    sys.setswitchinterval(0.001)  # the reader's arrival times should not wait out a 5 ms GIL slice
    from libs.common.admin import delete_topics, ensure_topics, list_topics
    from libs.common.settings import CommonSettings

    started = time.time()
    prefix = f"bench.e2e.{time.strftime('%H%M%S')}{uuid.uuid4().hex[:4]}."
    settings = CommonSettings(topic_prefix=prefix)
    folder = Path(tempfile.mkdtemp(prefix="pooch-e2e-"))

    def say(msg: str) -> None:
        print(f"[{time.time() - started:6.1f} s] {msg}", flush=True)

    say(f"prefix {prefix}, logs in {folder}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    templates = templates_from_simulation(args.seed, args.dogs, args.horizon, 100_000)
    say(f"{len(templates):,} pupdate templates from the simulation; {args.likes} like(s) per pupdate")
    ensure_topics(settings)
    system: list[StepResult] = []
    passthrough: list[StepResult] = []
    info: dict[str, Any] = {}
    try:
        if args.only != "passthrough":
            system, info = system_chain(args, settings, folder, templates, say)
        if args.only != "system":
            passthrough = passthrough_chain(args, settings, folder, templates, say)
    finally:
        mine = [t for t in list_topics(settings) if t.startswith(prefix)]
        delete_topics(settings, mine)
    report(args, system, passthrough, info, say)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                    "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "system": [dataclasses.asdict(r) for r in system],
                    "passthrough": [dataclasses.asdict(r) for r in passthrough],
                    "info": info,
                },
                indent=2,
                default=str,
            )
        )
    return 0


def _env_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("POOCH_"):
        raise argparse.ArgumentTypeError(f"expected POOCH_NAME=VALUE, got {text!r}")
    return name, value


def report(args, system: list[StepResult], passthrough: list[StepResult], info: dict, say) -> None:
    print()
    print(
        f"end to end, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}; {args.likes} like(s) per pupdate, "
        f"steps of {args.seconds:g} s, featurizer lateness {args.lateness_ms} ms"
        + "".join(f", {name}={value}" for name, value in args.env)
    )
    for r in system + passthrough:
        print("  " + r.row())
    best = {}
    for name, rows in (("system", system), ("passthrough", passthrough)):
        if rows:
            best[name] = best_sustained({r.rate: r.verdict.ok and r.missing == 0 for r in rows})
    print()
    heads = ("sustained", "p50@100/s", "p99@100/s", "p50@1000/s", "p99@1000/s")
    print(f"{'chain':<12} " + " ".join(f"{h:>11}" for h in heads))
    for name, rows in (("system", system), ("passthrough", passthrough)):
        if not rows:
            continue
        at = {r.rate: r for r in rows}
        lo, mid = at.get(100.0), at.get(1000.0)
        top = best.get(name)
        print(
            f"{name:<12} {(f'{top:,.0f}/s' if top else 'none'):>11} "
            f"{(f'{lo.p50_ms:.1f} ms' if lo else '-'):>11} {(f'{lo.p99_ms:.1f} ms' if lo else '-'):>11} "
            f"{(f'{mid.p50_ms:.1f} ms' if mid else '-'):>11} {(f'{mid.p99_ms:.1f} ms' if mid else '-'):>11}"
        )
    if best.get("system") and best.get("passthrough"):
        ratio = best["system"] / best["passthrough"]
        print(f"sustained ratio system/passthrough: {ratio:.2f} (aim >= 0.25)")
    if system:
        at = {r.rate: r for r in system}
        if 100.0 in at:
            print(f"system p99 at 100/s: {at[100.0].p99_ms:.1f} ms (aim < 100 ms)")
        print(f"system sustained: {best.get('system') or 0:,.0f} pupdates/s (aim 2,000/s)")
    if info.get("profile"):
        print()
        print(f"profile at {info['profile']['rate']:,.0f}/s (py-spy, main thread's wall time by function):")
        for name, frames in info["profile"]["services"].items():
            print(f"  {name}: " + ", ".join(f"{f} {s:.0%}" for f, s in frames[:6]))


if __name__ == "__main__":
    raise SystemExit(main())
