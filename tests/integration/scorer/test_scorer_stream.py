"""The scorer as a real process on the real broker: exactly one valid prediction per features
record (read_committed) through crashes, model swaps, pauses, rogue models, Redis trouble and a
second scorer dying."""

from __future__ import annotations

import collections
import itertools
import time

import pytest
import redis

from libs.common.artifacts import ModelCache
from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.topics import DEADLETTERS, FEATURES
from services.scorer.fixtures import make_artifact, model_event, publish_events, train_model_text
from tests.support.kafkautil import read_all, wait_for
from tests.support.scorer import (
    Feeder,
    RedisServer,
    ScorerProcess,
    assert_exactly_one_valid,
    predictions,
    wait_predicted,
)


@pytest.fixture(scope="module")
def models():
    return {
        "a": make_artifact(train_model_text(rounds=30, seed=1), created_at=1),
        "b": make_artifact(train_model_text(rounds=30, seed=2), created_at=2),
        # predicts negative likes: LightGBM regression on negative targets
        "rogue": make_artifact(
            train_model_text(objective="regression", negative=True, rounds=20), created_at=3
        ),
        # a valid LightGBM model whose trees expect 5 features where records carry 19
        "raising": make_artifact(train_model_text(rounds=5, n_features=5), created_at=4),
    }


def _ms(t: float) -> int:
    return int(t * 1000)


def _count(settings) -> int:
    return len(predictions(settings))


def test_sigkill_midstream_then_restart_gives_exactly_one_prediction(topics, tmp_path, models):
    publish_events(topics, [models["a"].to_event()])
    scorer = ScorerProcess(topics, tmp_path, batch_size=300).wait_ready()
    feeder = Feeder(topics, rate=3000)
    feeder.start()
    try:
        wait_for(lambda: _count(topics) >= 1500, timeout=60, interval=0.2, what="first predictions")
        scorer.kill()
        killed_at = time.time()
        at_kill = _count(topics)
        time.sleep(1.0)  # records keep arriving while no scorer runs
        assert len(feeder.written) > at_kill, "the kill came after the work was done"
        scorer = ScorerProcess(topics, tmp_path, batch_size=300).wait_ready()
        time.sleep(1.5)
    finally:
        ids = feeder.stop()
    try:
        preds = wait_predicted(topics, ids)
    finally:
        scorer.stop()
    by_id = assert_exactly_one_valid(preds, ids)
    assert {p["model_version"] for p in by_id.values()} == {models["a"].model_version}
    before = sum(1 for p in preds if p["predicted_at"] < _ms(killed_at))
    after = sum(1 for p in preds if p["predicted_at"] > _ms(killed_at))
    assert before >= 1500 and after > 0, (before, after)


@pytest.mark.serial  # asserts effects within a second
def test_model_swap_and_pauses_midstream_take_effect_within_a_second(topics, tmp_path, models):
    a, b = models["a"].model_version, models["b"].model_version
    publish_events(topics, [models["a"].to_event()])
    scorer = ScorerProcess(topics, tmp_path, batch_size=500).wait_ready()
    feeder = Feeder(topics, rate=2000)
    feeder.start()
    # (event, what serves after it) in order; each phase lasts a few seconds of live traffic
    phases = [
        (models["b"].to_event(), (b, None)),  # a newer version serves as soon as it arrives
        (model_event("PAUSED", b), (a, None)),  # paused: the last good version takes over
        (model_event("PAUSED", a), (None, "paused")),  # nothing usable: the baseline, reason paused
        (model_event("RESUMED", b), (b, None)),
    ]
    marks: list[tuple[float, tuple]] = []
    try:
        wait_for(lambda: _count(topics) >= 500, timeout=60, interval=0.2, what="first predictions")
        for event, expected in phases:
            publish_events(topics, [event])
            marks.append((time.time(), expected))
            time.sleep(2.5)
    finally:
        ids = feeder.stop()
    try:
        preds = wait_predicted(topics, ids)
        swaps = scorer.metric_sum("pooch_scorer_model_swaps_total")
    finally:
        scorer.stop()
    assert_exactly_one_valid(preds, ids)
    assert swaps >= 4
    # Before the first event, only model a.
    assert {p["model_version"] for p in preds if p["predicted_at"] < _ms(marks[0][0])} == {a}
    for k, (t, (version, reason)) in enumerate(marks):
        end = _ms(marks[k + 1][0]) if k + 1 < len(marks) else 2**62
        settled = [p for p in preds if _ms(t + 1.0) <= p["predicted_at"] < end]
        assert len(settled) > 200, f"phase {k} too short to judge ({len(settled)})"
        seen = collections.Counter((p["model_version"], p["fallback_reason"]) for p in settled)
        assert set(seen) == {(version, reason)}, f"phase {k}: one second after the event: {seen}"
    # Scoring never paused for a swap: no gap between batches longer than a second.
    times = sorted({p["predicted_at"] for p in preds if p["predicted_at"] >= _ms(marks[0][0])})
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 1000, f"scoring stalled {max(gaps)} ms"


def test_unknown_extractor_unloadable_and_negative_models_are_contained(topics, tmp_path, models):
    a = models["a"].model_version
    publish_events(topics, [models["a"].to_event()])
    scorer = ScorerProcess(topics, tmp_path).wait_ready()
    feeder = Feeder(topics, rate=2000, extractor_for=lambda i: "v9" if i % 10 == 0 else "v1")
    garbage = Producer(topics, name="garbage")
    for i in range(5):  # not feature vectors at all: dead letters, in the same transactions
        garbage.produce(topics.topic(FEATURES), b"\xc3\x01 not a feature vector", key=f"junk-{i}")
    garbage.flush(10)
    feeder.start()
    try:
        wait_for(lambda: _count(topics) >= 500, timeout=60, interval=0.2, what="first predictions")
        publish_events(topics, [models["raising"].to_event()])
        t_raising = time.time()
        time.sleep(2.0)
        publish_events(topics, [models["rogue"].to_event()])
        t_rogue = time.time()
        time.sleep(2.5)
    finally:
        ids = feeder.stop()
    try:
        preds = wait_predicted(topics, ids)
        refused = scorer.metric_sum("pooch_scorer_models_refused_total", reason="unloadable")
        invalid = scorer.metric_sum("pooch_scorer_invalid_outputs_total")
        assert scorer.proc.poll() is None, "the scorer died"
    finally:
        scorer.stop()
    assert_exactly_one_valid(preds, ids)  # the junk got no prediction ...
    dead = [serde("dead_letter").decode(m.value()) for m in read_all(topics, topics.topic(DEADLETTERS))]
    assert sorted(d["key"] for d in dead) == [f"junk-{i}".encode() for i in range(5)]  # ... but a dead letter
    assert {(d["service"], d["source_topic"]) for d in dead} == {("scorer", topics.topic(FEATURES))}
    v9 = [p for p in preds if p["extractor_version"] == "v9"]
    assert v9 and all(p["fallback_reason"] == "extractor_mismatch" for p in v9)
    v1 = [p for p in preds if p["extractor_version"] == "v1"]
    # The unloadable model never served: the last good one did until the rogue arrived.
    assert all(p["model_version"] != models["raising"].model_version for p in preds)
    mid = [p for p in v1 if _ms(t_raising) <= p["predicted_at"] < _ms(t_rogue)]
    assert mid and {p["model_version"] for p in mid} == {a}
    assert refused == 1
    # The rogue model's negatives never reach a prediction: each falls back with its raw value.
    late = [p for p in v1 if p["predicted_at"] >= _ms(t_rogue + 1.0)]
    assert late and all(p["fallback_reason"] == "invalid_output" for p in late)
    assert all(p["raw_output"] < 0 and p["predicted_likes"] >= 0 for p in late)
    assert invalid >= len(late)


def test_predict_that_raises_falls_back_with_the_reason(topics, tmp_path, models):
    publish_events(topics, [models["raising"].to_event()])
    # Without the load probe the model serves, and every predict call raises.
    scorer = ScorerProcess(topics, tmp_path, probe_on_load="false").wait_ready()
    feeder = Feeder(topics)
    try:
        ids = feeder.write(1000)
        preds = wait_predicted(topics, ids)
        errors = scorer.metric_sum("pooch_scorer_predict_errors_total")
    finally:
        scorer.stop()
    assert_exactly_one_valid(preds, ids)
    assert {p["fallback_reason"] for p in preds} == {"exception"}
    assert errors >= 1


def test_redis_empty_then_stopped_then_seeding(topics, tmp_path, models):
    a, b = models["a"].model_version, models["b"].model_version
    own = RedisServer(tmp_path).start()
    cache = ModelCache(redis.Redis.from_url(own.url), topics.topic_prefix)
    publish_events(topics, [models["a"].to_event()])
    assert cache.versions() == []
    scorer = ScorerProcess(topics, tmp_path, redis_url=own.url).wait_ready()
    feeder = Feeder(topics, rate=1500)
    try:
        # Redis empty at start: the registry came from the topic, and refilled the cache.
        wait_for(lambda: cache.versions() == [a], timeout=10, what="the cache refilled from the topic")
        feeder.start()
        wait_for(lambda: _count(topics) >= 300, timeout=60, interval=0.2, what="first predictions")
        own.stop()
        publish_events(topics, [models["b"].to_event()])  # a new version while Redis is down
        t_b = time.time()
        time.sleep(2.0)
        scorer.kill()  # and a restart with Redis still down
        scorer = ScorerProcess(topics, tmp_path, redis_url=own.url).wait_ready()
        time.sleep(1.5)
        ids = feeder.stop()
        preds = wait_predicted(topics, ids)
        scorer.stop()
        # Redis back (empty: no persistence), b cached by someone: the next start is seeded.
        own.start()
        cache.put(models["b"])
        scorer = ScorerProcess(topics, tmp_path, redis_url=own.url).wait_ready()
        seeded = "registry seeded from the Redis model cache" in scorer.log_tail(200_000)
        more = feeder.write(200)
        preds = wait_predicted(topics, ids + more)
    finally:
        if feeder.is_alive():
            feeder.stop()
        scorer.stop()
        own.stop()
    by_id = assert_exactly_one_valid(preds, ids + more)
    assert seeded
    after_b = [p for p in by_id.values() if p["predicted_at"] >= _ms(t_b + 1.0)]
    assert after_b and {p["model_version"] for p in after_b} == {b}
    assert {p["model_version"] for p in by_id.values()} == {a, b}


def test_second_scorer_joins_then_dies_and_the_first_takes_over(topics, tmp_path, models):
    publish_events(topics, [models["a"].to_event()])
    first = ScorerProcess(topics, tmp_path, "0", batch_size=300).wait_ready()
    feeder = Feeder(topics, rate=1500)
    feeder.start()
    second = None
    try:
        wait_for(lambda: _count(topics) >= 300, timeout=60, interval=0.2, what="first predictions")
        second = ScorerProcess(topics, tmp_path, "1", batch_size=300).wait_ready()
        wait_for(
            lambda: second.metric_sum("pooch_messages_consumed_total") >= 300,
            timeout=60,
            interval=0.2,
            what="the second scorer to take partitions and score",
        )
        second.kill()
        killed_at = time.time()
        time.sleep(2.0)
    finally:
        ids = feeder.stop()
        if second is not None and second.proc.poll() is None:
            second.kill()
    try:
        # The group notices the dead member after its session timeout (10 s), then rebalances.
        preds = wait_predicted(topics, ids, timeout=90)
        consumed_first = first.metric_sum("pooch_messages_consumed_total")
    finally:
        first.stop()
    assert_exactly_one_valid(preds, ids)
    written_after = [i for i in ids if feeder.written_at[i] > killed_at]
    assert written_after
    assert consumed_first < len(ids)  # the second one did part of the work
