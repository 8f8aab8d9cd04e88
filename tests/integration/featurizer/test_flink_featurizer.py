"""The Flink featurizer job (services/featurizer/flink) at parallelism 2 in a local MiniCluster,
on the simulated run of test_featurizer.py, checked pupdate by pupdate against the offline
reference, through a crash of the whole cluster (job manager, task manager and Python workers
SIGKILLed) and a restart from the last retained checkpoint, and a task failure inside the
restarted run (a Python worker SIGKILLed: Flink restarts the tasks from the last checkpoint).

Read read_committed, every pupdate has exactly one features value per version (and every matured
one exactly one instance): the exactly-once sinks leave no duplicate, not even an identical one.

Needs ``.venv-flink`` (``make venv-flink``): skipped without it. ~6.5 min on a 2-core machine
(2026-12-01: 389 s and 397 s), most of it PyFlink's Python workers; serial because it takes both cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import confluent_kafka
import pytest

from libs.common.serde import serde
from libs.common.topics import FEATURES, INSTANCES, LIKES, PUPDATES
from tests.conftest import TEST_PARTITIONS
from tests.integration.featurizer.test_featurizer import HORIZON_MS, SIM_MAX_JITTER_MS, _outputs
from tests.support import REPO
from tests.support.facts import pupdate_fact
from tests.support.feature_reference import reference
from tests.support.kafkautil import wait_for
from tests.support.simworld import facts_from_simulation
from tooling.stack import flink
from tooling.stack.config import StackSettings
from tooling.stack.errors import StackError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.serial,
]
VERSIONS = ("v1", "v2")
SIM_EVENTS = 160_000  # the simulated run of test_featurizer.py, same seed


@pytest.fixture
def simulated(topics):
    """The facts, not written yet: the test writes them in three parts around its failures."""
    pupdates, likes = facts_from_simulation(topics, SIM_EVENTS, seed=20261127, write=False)
    assert len(pupdates) >= 5000, f"only {len(pupdates)} pupdates simulated"
    return topics, pupdates, likes


def _write(settings, pupdates: list[dict], likes: list[dict]) -> None:
    producer = confluent_kafka.Producer(settings.kafka_config())
    for topic, stem, facts in ((PUPDATES, "pupdate", pupdates), (LIKES, "like", likes)):
        for fact in facts:
            producer.produce(settings.topic(topic), serde(stem).encode(fact), key=fact["pupdate_id"])
            producer.poll(0)
    assert producer.flush(60) == 0


def _parts(pupdates: list[dict], likes: list[dict], n: int):
    """The run cut in n parts by event time (likes with the part their time falls in)."""
    times = sorted(p["posted_at"] for p in pupdates)
    cuts = [times[len(times) * i // n] for i in range(1, n)] + [2**62]
    low = -(2**62)
    for cut in cuts:
        yield (
            [p for p in pupdates if low <= p["posted_at"] < cut],
            [lk for lk in likes if low <= lk["liked_at"] < cut],
        )
        low = cut


def _needs_pyflink() -> None:
    try:
        flink.python()
    except StackError as exc:
        pytest.skip(f"no PyFlink: {exc} ({exc.hint})")


def _ticks(pupdates) -> tuple[list[dict], list[dict]]:
    """One more pupdate and like for every partition, a horizon plus the lateness after the run.

    An event-time watermark moves only with facts: without these the job would hold the last
    horizons open (the current engine jumps on wall-clock quiet instead). They are facts like
    any other, so the reference sees them too: every simulated horizon closes in both. Likes
    later than the ticks move the watermark past the ticks' own postings (checked too).
    """
    at = max(p["posted_at"] for p in pupdates) + HORIZON_MS + SIM_MAX_JITTER_MS + 1
    ticks = [pupdate_fact(f"tick-{part}", at, dog=f"tick-dog-{part}") for part in range(TEST_PARTITIONS)]
    likes = [
        {
            "event_id": f"tick-like-{p['pupdate_id']}",
            "pupdate_id": p["pupdate_id"],
            "sniffer_id": "tick",
            "liked_at": at,
            "app_version": "1",
            "collected_at": at,
        }
        for p in ticks
    ]
    return ticks, likes


def _write_ticks(settings, ticks: list[dict], likes: list[dict]) -> None:
    producer = confluent_kafka.Producer(settings.kafka_config())
    for part, (p, like) in enumerate(zip(ticks, likes, strict=True)):
        for topic, value in ((PUPDATES, serde("pupdate").encode(p)), (LIKES, serde("like").encode(like))):
            producer.produce(settings.topic(topic), value, key=p["pupdate_id"], partition=part)
    assert producer.flush(30) == 0


def _start(
    settings,
    jar: Path,
    checkpoints: Path,
    restore: Path | None,
    *,
    horizon_ms: int = HORIZON_MS,
    lateness_ms: int = SIM_MAX_JITTER_MS,
    versions: tuple[str, ...] = VERSIONS,
    **flink_settings: str,
) -> subprocess.Popen:
    extra = {
        "parallelism": "2",
        "source_parallelism": str(TEST_PARTITIONS),
        "checkpoint_dir": str(checkpoints),
        "checkpoint_interval_ms": "1500",
    } | flink_settings
    if restore is not None:
        extra["restore_from"] = str(restore)
    env = (
        os.environ
        | {
            "POOCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "POOCH_REDIS_URL": settings.redis_url,
            "POOCH_TOPIC_PREFIX": settings.topic_prefix,
            "POOCH_FEATURIZER_HORIZON_MS": str(horizon_ms),
            "POOCH_FEATURIZER_VERSIONS": json.dumps(list(versions)),
            "POOCH_FEATURIZER_LATENESS_MS": str(lateness_ms),
        }
        | flink.job_env(jar, **extra)
    )
    # Its own session: the driver, the MiniCluster's JVM and the Python workers die together.
    return subprocess.Popen(
        flink.job_command(),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open("/tmp/flink-featurizer-test.log", "a"),
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def _python_workers(root: int) -> list[int]:
    """The PyFlink Python worker processes under ``root`` (the test's own child)."""
    children: dict[int, list[int]] = {}
    cmd: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            todo.append(child)
            if "pyflink.fn_execution.beam.beam_boot" in cmd.get(child, ""):
                found.append(child)
    return found


def _count(settings, base: str, stem: str) -> int:
    return len(_outputs(settings, base, stem))


@pytest.mark.timeout(900)
def test_flink_job_equals_the_reference_through_a_crash_and_a_task_failure(simulated, tmp_path):
    settings, pupdates, likes = simulated
    _needs_pyflink()
    jar = flink.connector_jar(StackSettings(), print)
    first, second, third = _parts(pupdates, likes, 3)
    tick_pupdates, tick_likes = _ticks(pupdates)
    pupdates, likes = pupdates + tick_pupdates, likes + tick_likes
    every = {v: reference(pupdates, likes, v, HORIZON_MS) for v in VERSIONS}
    refs = {v: {pid: r for pid, r in every[v].items() if not pid.startswith("tick-")} for v in VERSIONS}
    matured = {pid for pid, r in refs["v1"].items() if r["label"] is not None}
    checkpoints = tmp_path / "checkpoints"

    # 1. The first part, until a checkpoint has committed outputs; then kill everything at once.
    _write(settings, *first)
    proc = _start(settings, jar, checkpoints, None)
    try:
        wait_for(
            lambda: _count(settings, FEATURES, "feature_vector") > 0, timeout=240, interval=1, what="a commit"
        )
    finally:
        _kill(proc)
    before = _count(settings, FEATURES, "feature_vector")
    assert before < len(refs["v1"]) * len(VERSIONS), "the crash came after the work was done"
    restore = flink.latest_checkpoint(checkpoints)
    assert restore is not None, "no retained checkpoint"

    # 2. The second part, and a restart from the retained checkpoint; once it has committed more,
    # a Python worker is killed (a task failure) and the third part written.
    _write(settings, *second)
    proc = _start(settings, jar, checkpoints, restore)
    try:
        wait_for(lambda: _python_workers(proc.pid), timeout=90, interval=0.5, what="python workers")
        started = _count(settings, FEATURES, "feature_vector")
        wait_for(
            lambda: _count(settings, FEATURES, "feature_vector") > started,
            timeout=240,
            interval=1,
            what="outputs after the restore",
        )
        victim = _python_workers(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        _write(settings, *third)
        _write_ticks(settings, tick_pupdates, tick_likes)
        want_features, want_instances = len(refs["v1"]) * len(VERSIONS), len(matured) * len(VERSIONS)
        wait_for(
            lambda: (
                _count(settings, FEATURES, "feature_vector") >= want_features
                and _count(settings, INSTANCES, "instance") >= want_instances
            ),
            timeout=420,
            interval=2,
            what="every features and instances record",
        )
        time.sleep(3)  # a duplicate would be committed with the next checkpoint
        assert proc.poll() is None, "the job failed instead of restarting its tasks"
    finally:
        _kill(proc)

    features = _outputs(settings, FEATURES, "feature_vector")
    instances = _outputs(settings, INSTANCES, "instance")
    for version in VERSIONS:
        for pid, expected in refs[version].items():
            [got] = features[(pid, version)]  # exactly one: no duplicate despite two failures
            assert got["values"] == expected["values"], f"{version} features of {pid}"
            assert got["baseline"] == expected["baseline"], f"{version} baseline of {pid}"
            if pid in matured:
                [inst] = instances[(pid, version)]
                assert inst["likes"] == expected["label"], f"label of {pid}"
                assert inst["values"] == expected["values"]
                assert (
                    inst["closed_at"]
                    == next(p["posted_at"] for p in pupdates if p["pupdate_id"] == pid) + HORIZON_MS
                )
            else:
                assert (pid, version) not in instances, f"instance for {pid} before its horizon closed"
    # The simulated likes run on past the ticks (7,437 of them, up to 39 hours), so the
    # watermark passes the ticks too: their features are the reference's as well, and the only
    # extra ones.
    ticks = {key for key in features if key[0].startswith("tick-")}
    for pid, version in ticks:
        [got] = features[(pid, version)]
        assert got["values"] == every[version][pid]["values"], f"{version} features of {pid}"
    assert set(features) - ticks == {(pid, v) for v in VERSIONS for pid in refs[v]}
