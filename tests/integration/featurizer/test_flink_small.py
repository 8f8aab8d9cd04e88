"""The Flink featurizer job on a handful of hand-made facts: the label edge cases and an idle
partition, checked against the offline reference in one short run (a MiniCluster start, then
seconds of work).

- Labels: a like at exactly ``posted_at`` counts, one at ``posted_at + horizon`` does not, one
  before ``posted_at`` does not, a re-sent like (same ``event_id``) counts once, and the likes of
  a pupdate may be read before the pupdate itself (another topic). A later pupdate of the same
  dog, posted after the first one's horizon closed, reads its label in its features.
- Idleness: partition 2 of both fact topics never gets a fact. Without an idleness timeout its
  watermark stays at the beginning of time and holds every timer back: no instance is ever
  written (docs/flink.md, the stuck watermark).

Needs ``.venv-flink`` (``make venv-flink``): skipped without it. ~60-90 s on a 2-core machine,
most of it the MiniCluster's and the Python workers' start; serial because it takes both cores.
"""

from __future__ import annotations

import confluent_kafka
import pytest

from libs.common.serde import serde
from libs.common.topics import FEATURES, INSTANCES, LIKES, PUPDATES
from tests.integration.featurizer.test_featurizer import _outputs
from tests.integration.featurizer.test_flink_featurizer import _kill, _needs_pyflink, _start
from tests.support.facts import pupdate_fact
from tests.support.feature_reference import reference
from tests.support.kafkautil import wait_for
from tooling.stack import flink
from tooling.stack.config import StackSettings

pytestmark = [pytest.mark.integration, pytest.mark.serial]

HORIZON_MS = 60_000
LATENESS_MS = 1_000
T0 = 1_800_000_000_000


def _like(event_id: str, pid: str, at: int) -> dict:
    return {
        "event_id": event_id,
        "pupdate_id": pid,
        "sniffer_id": "s1",
        "liked_at": at,
        "app_version": "3.0.0",
        "collected_at": at,
    }


def _facts():
    """(topic, partition, fact) in the order written; partition 2 stays empty."""
    a, b, c = (pupdate_fact(p, T0 + at, dog="rex") for p, at in (("a", 10_000), ("b", 20_000), ("c", 75_000)))
    out = [
        # b's likes are written before b itself: Labels sees them first.
        (LIKES, 1, _like("lb1", "b", T0 + 21_000)),
        (LIKES, 1, _like("lb2", "b", T0 + 79_999)),  # the last millisecond of b's window
        (PUPDATES, 0, a),
        (PUPDATES, 1, b),
        (LIKES, 0, _like("la1", "a", T0 + 10_000)),  # at posted_at: counted
        (LIKES, 0, _like("la2", "a", T0 + 30_000)),
        (LIKES, 0, _like("la2", "a", T0 + 30_000)),  # re-sent: counted once
        (LIKES, 0, _like("la3", "a", T0 + 69_999)),
        (LIKES, 0, _like("la0", "a", T0 + 9_999)),  # before posted_at: not counted
        (LIKES, 0, _like("la4", "a", T0 + 70_000)),  # at posted_at + horizon: not counted
        (PUPDATES, 0, c),  # posted after a's horizon closed: its dog stats hold a's label
        (LIKES, 0, _like("lc1", "c", T0 + 80_000)),
    ]
    # Past every horizon plus the lateness, on partitions 0 and 1 only.
    end = T0 + 400_000
    for part in (0, 1):
        tick = pupdate_fact(f"tick-{part}", end, dog=f"tick-dog-{part}")
        out += [(PUPDATES, part, tick), (LIKES, part, _like(f"tick-like-{part}", tick["pupdate_id"], end))]
    return out


def _write(settings, facts) -> None:
    producer = confluent_kafka.Producer(settings.kafka_config())
    for topic, part, fact in facts:
        stem = "pupdate" if topic == PUPDATES else "like"
        value = serde(stem).encode(fact)
        producer.produce(settings.topic(topic), value, key=fact["pupdate_id"], partition=part)
    assert producer.flush(30) == 0


@pytest.mark.timeout(300)
def test_labels_and_an_idle_partition_equal_the_reference(topics, tmp_path):
    _needs_pyflink()
    settings = topics
    jar = flink.connector_jar(StackSettings(), print)
    facts = _facts()
    _write(settings, facts)
    pupdates = [f for t, _, f in facts if t == PUPDATES]
    likes = [f for t, _, f in facts if t == LIKES]
    # The reference counts every like once: the re-sent copy is left out of its input.
    unique = list({lk["event_id"]: lk for lk in likes}.values())
    ref = reference(pupdates, unique, "v1", HORIZON_MS)
    ref = {p: r for p, r in ref.items() if not p.startswith("tick-")}
    assert {p: r["label"] for p, r in ref.items()} == {"a": 3, "b": 2, "c": 1}

    proc = _start(
        settings,
        jar,
        tmp_path / "checkpoints",
        None,
        horizon_ms=HORIZON_MS,
        lateness_ms=LATENESS_MS,
        versions=("v1",),
        idle_timeout_ms="3000",
    )
    try:
        instances = wait_for(
            lambda: (got := _outputs(settings, INSTANCES, "instance")) and len(got) >= len(ref) and got,
            timeout=240,
            interval=1,
            what="an instance of every pupdate (a partition without facts holds the watermark back)",
        )
    finally:
        _kill(proc)
    features = _outputs(settings, FEATURES, "feature_vector")
    for pid, expected in ref.items():
        [got] = features[(pid, "v1")]
        assert got["values"] == expected["values"], f"features of {pid}"
        [inst] = instances[(pid, "v1")]
        assert inst["likes"] == expected["label"], f"label of {pid}"
        assert inst["values"] == expected["values"], f"instance values of {pid}"
    assert set(instances) == {(p, "v1") for p in ref}
