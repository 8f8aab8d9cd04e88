"""Featurizer scaling: the current engine (services/featurizer, one worker) beside the Flink job
(services/featurizer/flink) at parallelism 1 and 2, on the same facts, in the same run.

    python bench/featurizer_scaling.py [--pupdates 4000] [--likes-per-pupdate 20] [--partitions 3]

Each engine gets its own topic prefix holding the same facts (generated once, from one seed),
reads them all from the beginning and writes every features vector (read_committed). Printed per
engine: wall time from launch to the last features vector committed, the start-up part of it
(for Flink: until its Python workers run; the JVM and the MiniCluster start first), facts/s over
the whole run and after start-up, and CPU seconds of the whole process tree (driver, JVM, Python
workers) per 1,000 facts: the per-worker cost that decides how many machines a load needs.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import confluent_kafka

from bench.featurizer import fact_like, fact_pupdate
from libs.common.admin import ensure_topics
from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.settings import CommonSettings
from libs.common.topics import FEATURES, LIKES, PUPDATES
from tooling.stack import flink
from tooling.stack.config import REPO_ROOT, StackSettings

HORIZON_MS = 3_600_000
LATENESS_MS = 7_200_000  # likes come up to two hours after their pupdate, per partition in order
TICKS = os.sysconf("SC_CLK_TCK")


def facts(args) -> list[tuple[str, str, bytes, int | None]]:
    """(topic base, key, value, partition) of the whole run; ticks close every horizon."""
    rng = random.Random(7)
    out: list[tuple[str, str, bytes, int | None]] = []
    t = 1_795_000_000_000
    for i in range(args.pupdates):
        t += rng.randint(0, 400)
        out.append((PUPDATES, f"p{i}", serde("pupdate").encode(fact_pupdate(rng, i, t)), None))
        for j in range(args.likes_per_pupdate):
            like = fact_like(i, j, t + rng.randint(0, 7_200_000))
            out.append((LIKES, f"p{i}", serde("like").encode(like), None))
    # One more fact per partition, past every horizon plus the lateness: an event-time
    # watermark moves only with facts (the current engine also jumps on wall-clock quiet).
    end = t + 7_200_000 + HORIZON_MS + LATENESS_MS + 1
    for part in range(args.partitions):
        pid = f"tick{part}"
        p = fact_pupdate(rng, 10**9 + part, end) | {"pupdate_id": pid}
        out.append((PUPDATES, pid, serde("pupdate").encode(p), part))
        like = fact_like(10**9 + part, 0, end) | {"pupdate_id": pid}
        out.append((LIKES, pid, serde("like").encode(like), part))
    return out


def write(settings: CommonSettings, records) -> None:
    producer = Producer(settings, name="bench-scaling")
    raw = confluent_kafka.Producer(settings.kafka_config())
    for base, key, value, part in records:
        if part is None:
            producer.produce(settings.topic(base), value, key=key)
        else:
            raw.produce(settings.topic(base), value, key=key, partition=part)
    producer.flush(120)
    raw.flush(60)


class Counter(threading.Thread):
    """Counts committed features records from the beginning of the topic."""

    def __init__(self, settings: CommonSettings) -> None:
        super().__init__(daemon=True)
        self.count = 0
        self.stop = threading.Event()
        self.consumer = confluent_kafka.Consumer(
            settings.kafka_config()
            | {
                "group.id": f"bench-count-{uuid.uuid4().hex[:6]}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.subscribe([settings.topic(FEATURES)])

    def run(self) -> None:
        while not self.stop.is_set():
            msgs = self.consumer.consume(10_000, 0.2)
            self.count += sum(1 for m in msgs if m.error() is None)
        self.consumer.close()


def tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [root], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def python_workers_running(root: int) -> bool:
    for pid in tree(root)[1:]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"pyflink.fn_execution.beam.beam_boot" in cmd:
            return True
    return False


def run(name: str, args, records, parallelism: int | None) -> dict:
    prefix = f"bench.scale.{uuid.uuid4().hex[:6]}."
    settings = CommonSettings(topic_prefix=prefix)
    ensure_topics(settings, partitions=args.partitions, timeout=60)
    write(settings, records)
    env = os.environ | {
        "POOCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "POOCH_TOPIC_PREFIX": prefix,
        "POOCH_FEATURIZER_HORIZON_MS": str(HORIZON_MS),
        "POOCH_FEATURIZER_LATENESS_MS": str(LATENESS_MS),
        "POOCH_FEATURIZER_VERSIONS": '["v1"]',
        "POOCH_FEATURIZER_PORT": "0",
        "POOCH_FEATURIZER_INSTANCE_ID": prefix,
        "POOCH_FEATURIZER_REDIS_VIEW": "false",
        "POOCH_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO_ROOT),
    }
    if parallelism is None:
        command = [sys.executable, "-m", "services.featurizer"]
    else:
        jar = flink.connector_jar(StackSettings(), print)
        checkpoints = Path(f"/tmp/{prefix}checkpoints")
        command = flink.job_command()
        env |= flink.job_env(
            jar,
            parallelism=str(parallelism),
            source_parallelism=str(args.partitions),
            checkpoint_dir=str(checkpoints),
            checkpoint_interval_ms="1000",
        )
    counter = Counter(settings)
    counter.start()
    want = args.pupdates  # the ticks stay behind the watermark: nothing comes after them
    started = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(f"/tmp/{prefix}log", "w"),  # noqa: SIM115  (the child keeps it)
        start_new_session=True,
    )
    up = None if parallelism is not None else 0.0
    cpu = 0.0
    try:
        while counter.count < want:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} after {counter.count} outputs")
            if time.perf_counter() - started > args.timeout:
                raise TimeoutError(f"{name}: {counter.count}/{want} outputs after {args.timeout} s")
            if up is None and python_workers_running(proc.pid):
                up = time.perf_counter() - started
            cpu = max(cpu, cpu_seconds(tree(proc.pid)))
            time.sleep(0.2)
        wall = time.perf_counter() - started
        cpu = max(cpu, cpu_seconds(tree(proc.pid)))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        counter.stop.set()
    n = len(records)
    up = up or 0.0
    return {
        "engine": name,
        "facts": n,
        "wall": wall,
        "startup": up,
        "rate": n / wall,
        "steady": n / (wall - up),
        "cpu": cpu,
        "cpu_per_k": 1_000_000 * cpu / n,  # ms of CPU per 1,000 facts
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pupdates", type=int, default=4000)
    parser.add_argument("--likes-per-pupdate", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=3, help="of each topic")
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    records = facts(args)
    rows = [run("current engine (1 worker)", args, records, None)]
    rows += [run(f"flink, parallelism {p}", args, records, p) for p in args.parallelism]
    print(
        f"featurizer scaling: {len(records):,} facts ({args.pupdates:,} pupdates), {args.partitions} "
        f"partitions per fact topic, extractor v1, {os.cpu_count()} cores"
    )
    print(
        f"{'engine':28} {'wall s':>7} {'start s':>8} {'facts/s':>9} {'after start':>12} "
        f"{'CPU s':>7} {'CPU ms/1k':>10}"
    )
    for r in rows:
        print(
            f"{r['engine']:28} {r['wall']:7.1f} {r['startup']:8.1f} {r['rate']:9,.0f} {r['steady']:12,.0f} "
            f"{r['cpu']:7.1f} {r['cpu_per_k']:10.0f}"
        )


if __name__ == "__main__":
    main()
