"""The featurizer as a real process on the real broker, checked pupdate by pupdate against the
offline reference (tests/integration/feature_reference.py) on a simulated Sniffable run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.topics import FEATURES, INSTANCES, PUPDATES
from sniffable import SimConfig
from tests.support import REPO
from tests.support.facts import pupdate_fact
from tests.support.feature_reference import reference
from tests.support.kafkautil import read_all, wait_for
from tests.support.simworld import START_MS, facts_from_simulation
from tooling.offline.backfill import backfill
from tooling.stack.processes import free_port

HORIZON_MS = 6 * 3600 * 1000  # simulated hours; plenty of horizons close within the run
# The simulation delays a share of likes by up to this much event time (a phone offline, a
# retry); the featurizer's allowed lateness must cover it, or such likes count as late.
SIM_MAX_JITTER_MS = SimConfig(seed=0).max_jitter_ms


@pytest.fixture
def simulated(topics):
    pupdates, likes = facts_from_simulation(topics, 160_000, seed=20261127)
    assert len(pupdates) >= 5000, f"only {len(pupdates)} pupdates simulated"
    return topics, pupdates, likes


def _start(
    settings, *, instance: str = "0", versions: str = '["v1","v2"]', port: int = 0
) -> subprocess.Popen:
    env = os.environ | {
        "POOCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "POOCH_REDIS_URL": settings.redis_url,
        "POOCH_TOPIC_PREFIX": settings.topic_prefix,
        "POOCH_FEATURIZER_HORIZON_MS": str(HORIZON_MS),
        "POOCH_FEATURIZER_VERSIONS": versions,
        "POOCH_FEATURIZER_INSTANCE_ID": instance,
        "POOCH_FEATURIZER_IDLE_FLUSH_MS": "1500",
        "POOCH_FEATURIZER_LATENESS_MS": str(SIM_MAX_JITTER_MS),
        "POOCH_FEATURIZER_PORT": str(port),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.featurizer"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open("/tmp/feat-worker.log", "a"),
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _outputs(settings, topic_base: str, stem: str) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for msg in read_all(settings, settings.topic(topic_base), timeout=60):
        rec = serde(stem).decode(msg.value())
        assert msg.key().decode() == rec["pupdate_id"]
        out.setdefault((rec["pupdate_id"], rec["extractor_version"]), []).append(rec)
    return out


def _assert_matches_reference(settings, pupdates, likes, versions=("v1", "v2")) -> None:
    features = _outputs(settings, FEATURES, "feature_vector")
    instances = _outputs(settings, INSTANCES, "instance")
    for version in versions:
        ref = reference(pupdates, likes, version, HORIZON_MS)
        matured = {pid for pid, r in ref.items() if r["label"] is not None}
        assert len(matured) > len(ref) // 2
        for pid, expected in ref.items():
            got = features.get((pid, version))
            assert got, f"no {version} features for {pid}"
            # Exactly one value; a duplicate after a crash must be identical.
            assert all(g == got[0] for g in got), f"differing duplicates for {pid}"
            assert got[0]["values"] == expected["values"], f"{version} features of {pid}"
            assert got[0]["baseline"] == expected["baseline"]
            inst = instances.get((pid, version))
            if pid in matured:
                assert inst, f"no {version} instance for matured {pid}"
                assert all(i == inst[0] for i in inst)
                assert inst[0]["likes"] == expected["label"], f"label of {pid}"
                assert inst[0]["values"] == expected["values"]
            else:
                assert not inst, f"instance for {pid} before its horizon closed"
        assert {pid for pid, v in features if v == version} == set(ref)


def _wait_complete(settings, pupdates, likes, versions=("v1", "v2"), timeout=180) -> None:
    n_features = len(pupdates) * len(versions)
    matured = sum(1 for r in reference(pupdates, likes, "v1", HORIZON_MS).values() if r["label"] is not None)

    def done() -> bool:
        f = {(k, v) for k, v in _outputs(settings, FEATURES, "feature_vector") if v in versions}
        i = {(k, v) for k, v in _outputs(settings, INSTANCES, "instance") if v in versions}
        return len(f) >= n_features and len(i) >= matured * len(versions)

    wait_for(done, timeout=timeout, interval=2.0, what="every features and instances record")


def test_streaming_outputs_equal_the_offline_reference(simulated):
    settings, pupdates, likes = simulated
    proc = _start(settings)
    try:
        _wait_complete(settings, pupdates, likes)
    finally:
        _stop(proc)
    assert proc.returncode == 0
    _assert_matches_reference(settings, pupdates, likes)


def test_sigkill_twice_midway_still_one_value_per_pupdate(simulated):
    settings, pupdates, likes = simulated
    total = 2 * len(pupdates)
    written_at_kill = []
    for _ in range(2):
        proc = _start(settings)
        # Let it rebuild and commit part of the outputs, then kill it without warning.
        before = len(read_all(settings, settings.topic(FEATURES)))
        wait_for(
            lambda before=before: len(read_all(settings, settings.topic(FEATURES))) > before,
            timeout=120,
            interval=0.05,
            what="more outputs",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        written_at_kill.append(len({m.key() for m in read_all(settings, settings.topic(FEATURES))}))
    assert written_at_kill[0] < len(pupdates), f"first kill came after the work was done: {written_at_kill}"
    proc = _start(settings)
    try:
        _wait_complete(settings, pupdates, likes)
    finally:
        _stop(proc)
    assert len(read_all(settings, settings.topic(FEATURES))) >= total
    _assert_matches_reference(settings, pupdates, likes)


def _try(fn, *args) -> float:
    try:
        return fn(*args)
    except Exception:
        return 0.0


def _owned_partitions(port: int) -> float:
    import httpx

    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    line = next(ln for ln in body.splitlines() if ln.startswith("pooch_featurizer_owned_partitions "))
    return float(line.split()[1])


def test_two_workers_share_the_partitions_and_survive_one_dying(simulated):
    settings, pupdates, likes = simulated
    port_a, port_b = free_port(), free_port()
    first = _start(settings, instance="a", versions='["v1"]', port=port_a)
    second = _start(settings, instance="b", versions='["v1"]', port=port_b)
    try:
        # The group splits the pupdates partitions between the two before one of them dies.
        wait_for(
            lambda: _try(_owned_partitions, port_a) > 0 and _try(_owned_partitions, port_b) > 0,
            timeout=60,
            what="both workers owning partitions",
        )
        assert _owned_partitions(port_a) + _owned_partitions(port_b) == 3
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        wait_for(
            lambda: _try(_owned_partitions, port_b) == 3, timeout=60, what="the survivor owning everything"
        )
        _wait_complete(settings, pupdates, likes, versions=("v1",))
    finally:
        _stop(first)
        _stop(second)
    _assert_matches_reference(settings, pupdates, likes, versions=("v1",))


def test_backfill_of_a_second_version_produces_every_matured_instance(simulated):
    settings, pupdates, likes = simulated
    report = backfill(settings, "v2", horizon_ms=HORIZON_MS)
    ref = reference(pupdates, likes, "v2", HORIZON_MS)
    matured = {pid: r for pid, r in ref.items() if r["label"] is not None}
    instances = _outputs(settings, INSTANCES, "instance")
    assert report.instances == len(matured)
    for pid, expected in matured.items():
        [inst] = instances[(pid, "v2")]
        assert inst["likes"] == expected["label"] and inst["values"] == expected["values"]
    assert not [k for k in instances if k[0] not in matured]


def test_bad_facts_are_dead_lettered_and_the_featurizer_keeps_going(topics):
    import httpx

    settings = topics
    producer = Producer(settings, name="bad-facts")
    good = pupdate_fact("p-good", START_MS, event_id="e1")
    producer.produce(settings.topic(PUPDATES), b"\x00not avro", key="p-garbage")
    producer.produce(
        settings.topic(PUPDATES),
        serde("like").encode(
            {
                "event_id": "x",
                "pupdate_id": "p-wrong",
                "sniffer_id": "s",
                "liked_at": START_MS,
                "app_version": "1",
                "collected_at": START_MS,
            }
        ),
        key="p-wrong",
    )  # a valid record of the wrong type on this topic
    producer.produce(settings.topic(PUPDATES), serde("pupdate").encode(good), key="p-good")
    producer.flush(30)

    port = free_port()
    proc = _start(settings, versions='["v1"]', port=port)
    try:
        wait_for(
            lambda: _try(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200),
            timeout=60,
            what="ready after rebuilding",
        )
        wait_for(
            lambda: len(read_all(settings, settings.topic(FEATURES))) == 1, timeout=60, what="the good one"
        )
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    finally:
        _stop(proc)
    letters = [
        serde("dead_letter").decode(m.value()) for m in read_all(settings, settings.topic("deadletters"))
    ]
    assert sorted(d["reason"] for d in letters) == ["undecodable", "unknown_schema"]
    assert {d["value"][:9] for d in letters if d["reason"] == "undecodable"} == {b"\x00not avro"}
    assert all(
        d["service"] == "featurizer" and d["source_topic"] == settings.topic(PUPDATES) for d in letters
    )
    for name in (
        "pooch_featurizer_features_total",
        "pooch_featurizer_extraction_errors_total",
        "pooch_featurizer_likes_total",
        "pooch_featurizer_open_horizons",
        "pooch_consumer_lag_messages",
        "pooch_messages_consumed_total",
    ):
        assert name in metrics, name
    assert 'pooch_featurizer_extraction_errors_total{reason="undecodable"} 1.0' in metrics
