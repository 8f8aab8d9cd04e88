"""Fuzzing every consumed topic (issue 11, hardening: the fuzz requirement).

At least 10,000 hostile record values (random bytes, a wrong magic byte, unknown writer
fingerprints, truncated or corrupted bodies, trailing bytes, valid records of another type, valid
records with hostile values; see :class:`tests.integration.fuzz.hostile.Records`) go to each topic
a service consumes, with good records interleaved. The consuming service must stay alive and
healthy, the good records must still produce their outputs (the consumer is not wedged), and
every record the service's reader cannot decode must be in ``deadletters`` with a reason, found by
its source topic, partition and offset.

``pytest -s`` shows the table of counts.
"""

from __future__ import annotations

import collections
import time
import uuid

import confluent_kafka
import pytest

from libs.common.serde import serde
from libs.common.settings import CommonSettings
from libs.common.topics import (
    DEADLETTERS,
    FEATURES,
    INSTANCES,
    LIKES,
    LIKES_RAW,
    MODELS,
    PREDICTIONS,
    PUPDATES,
    PUPDATES_RAW,
)
from services.scorer.fixtures import (
    feature_record,
    make_artifact,
    publish_events,
    synthetic_rows,
    train_model_text,
)
from tests.integration.fuzz.hostile import Pool, Records
from tests.integration.fuzz.sending import print_table
from tests.support.collector import CollectorProcess
from tests.support.kafkautil import read_all
from tests.support.procs import ServiceProcess
from tests.support.scorer import ScorerProcess
from tests.support.supervisor import (
    SupervisorProcess,
    fake_artifact,
    instance,
    prediction,
    publish,
    status_event,
)
from tests.support.trainer import TrainerProc

N = 10_000  # hostile records per consumed topic
GOOD_EVERY = 500  # one good record after this many hostile ones
HEADER = (
    f"{'topic (consumer)':<34} {'sent':>7} {'undecodable':>11} {'dead-lettered':>13} {'good':>5} {'out':>5}"
)


@pytest.fixture(scope="module")
def pool() -> Pool:
    return Pool(seed_value=21)


def now_ms() -> int:
    return int(time.time() * 1000)


class Flood:
    """Hostile values (and good ones) written to one topic; where each one landed."""

    def __init__(self, settings: CommonSettings, topic: str, records: Records, good: list[tuple[str, bytes]]):
        self.settings, self.topic, self.records = settings, settings.topic(topic), records
        self.good = good  # (key, value) of the good records to interleave
        self.undecodable: set[tuple[int, int]] = set()
        self.sent = 0

    def send(self, n: int, seed_value: int) -> None:
        producer = confluent_kafka.Producer(
            self.settings.kafka_config() | {"linger.ms": 20, "message.max.bytes": 1_000_000}
        )
        where: dict[int, tuple[int, int]] = {}
        values = self.records.many(n, seed_value)
        bad_ones = [self.records.undecodable(v) for v in values]

        def delivered(i: int):
            def cb(err, msg) -> None:
                assert err is None, err
                where[i] = (msg.partition(), msg.offset())

            return cb

        goods = iter(self.good)
        for i, value in enumerate(values):
            producer.produce(self.topic, value, key=f"k{i % 97}", on_delivery=delivered(i))
            if i % GOOD_EVERY == GOOD_EVERY // 2:
                key, good = next(goods, (None, None))
                if good is not None:
                    producer.produce(self.topic, good, key=key)
            if i % 1000 == 0:
                producer.poll(0)
        assert producer.flush(60) == 0
        self.sent = n
        self.undecodable = {where[i] for i, bad in enumerate(bad_ones) if bad}

    def dead_lettered(self, service: str) -> dict[tuple[int, int], dict]:
        out = {}
        for m in read_all(self.settings, self.settings.topic(DEADLETTERS), timeout=60):
            d = serde("dead_letter").decode(m.value())
            if d["service"] == service and d["source_topic"] == self.topic:
                out[(d["source_partition"], d["source_offset"])] = d
        return out

    def wait_dead_lettered(self, service: str, *procs, timeout: float = 90) -> dict[tuple[int, int], dict]:
        deadline = time.monotonic() + timeout
        while True:
            for proc in procs:  # a consumer that died will not catch up: say so at once
                assert proc.proc.poll() is None, f"{service} died:\n{proc.log_tail()}"
            letters = self.dead_lettered(service)
            if self.undecodable <= set(letters) or time.monotonic() > deadline:
                return letters
            time.sleep(1)

    def row(self, consumer: str, letters: dict, outputs: int) -> str:
        name = f"{self.topic.split('.', 1)[1]} ({consumer})"
        return (
            f"{name:<34} {self.sent:>7} {len(self.undecodable):>11} {len(letters):>13} "
            f"{len(self.good):>5} {outputs:>5}  reasons {_reasons(letters)}"
        )

    def check(self, letters: dict) -> None:
        missing = self.undecodable - set(letters)
        assert not missing, (
            f"{self.topic}: {len(missing)} of {len(self.undecodable)} undecodable records not dead-lettered, "
            f"e.g. {sorted(missing)[:5]}"
        )
        assert all(d["reason"] and d["value"] is not None for d in letters.values())


def _reasons(letters: dict) -> dict[str, int]:
    return dict(collections.Counter(d["reason"] for d in letters.values()))


# -- collector: pupdates.raw and likes.raw -----------------------------------------------------


def _raw_pupdate(i: int, now: int) -> dict:
    return {
        "event_id": f"good-p{i}-{uuid.uuid4().hex[:6]}",
        "pupdate_id": f"gp{i}",
        "dog_id": f"dog-{i}",
        "posted_at": now - 60_000,
        "hashtags": ["#good"],
        "dog_followers": 10,
        "app_version": "3.1.0",
        "caption": None,
        "photo_filter": None,
        "dog": {"breed": "lab", "size": "SMALL", "age_months": 12},
        "country": "US",
    }


def _raw_like(i: int, now: int) -> dict:
    return {
        "event_id": f"good-l{i}-{uuid.uuid4().hex[:6]}",
        "pupdate_id": f"gp{i}",
        "sniffer_id": f"s{i}",
        "liked_at": now - 30_000,
        "app_version": "3.1.0",
    }


def test_collector_dead_letters_every_undecodable_raw_record_and_keeps_collecting(topics, tmp_path, pool):
    settings = topics
    now = now_ms()
    pupdates = [_raw_pupdate(i, now) for i in range(40)]
    likes = [_raw_like(i, now) for i in range(40)]
    others = {
        "like_raw": likes[0],
        "pupdate_raw": pupdates[0],
        "feature_vector": feature_record(0, [0.0] * 3),
    }
    floods = {
        PUPDATES_RAW: Flood(
            settings,
            PUPDATES_RAW,
            Records(pool, "pupdate_raw", pupdates, {k: v for k, v in others.items() if k != "pupdate_raw"}),
            [(p["pupdate_id"], serde("pupdate_raw").encode(p)) for p in pupdates[20:]],
        ),
        LIKES_RAW: Flood(
            settings,
            LIKES_RAW,
            Records(pool, "like_raw", likes, {k: v for k, v in others.items() if k != "like_raw"}),
            [(p["pupdate_id"], serde("like_raw").encode(p)) for p in likes[20:]],
        ),
    }
    collector = CollectorProcess(settings, tmp_path).wait_ready()
    try:
        for n, flood in enumerate(floods.values()):
            flood.send(N, seed_value=400 + n)
        rows = []
        for flood in floods.values():
            letters = flood.wait_dead_lettered("collector", collector)
            facts = {
                serde("pupdate" if "pupdates" in flood.topic else "like").decode(m.value())["event_id"]
                for m in read_all(settings, flood.topic.replace(".raw", ""), timeout=60)
            }
            good_ids = {serde(flood.records.stem).decode(v)["event_id"] for _, v in flood.good}
            rows.append(flood.row("collector", letters, len(good_ids & facts)))
            flood.check(letters)
            assert good_ids <= facts, f"{len(good_ids - facts)} good records not collected\n{rows[-1]}"
        print_table("collector Kafka fuzz", rows, HEADER)
        assert collector.proc.poll() is None, collector.log_tail()
        assert collector.http.get("/healthz").status_code == 200
    finally:
        collector.stop()


# -- scorer: features --------------------------------------------------------------------------


def test_scorer_dead_letters_every_undecodable_feature_vector_and_keeps_predicting(topics, tmp_path, pool):
    settings = topics
    publish_events(settings, [make_artifact(train_model_text(rounds=20, seed=5)).to_event()])
    x, _ = synthetic_rows(64, 1)
    good = [feature_record(i, x[i], posted_at=now_ms() - 1000) for i in range(N // GOOD_EVERY)]
    flood = Flood(
        settings,
        FEATURES,
        Records(pool, "feature_vector", good, _others()),
        [
            (r["pupdate_id"], serde("feature_vector").encode(r | {"pupdate_id": f"good-{i}"}))
            for i, r in enumerate(good)
        ],
    )
    scorer = ScorerProcess(settings, tmp_path, role="stream").wait_ready()
    try:
        flood.send(N, seed_value=500)
        letters = flood.wait_dead_lettered("scorer", scorer)
        good_ids = {serde("feature_vector").decode(v)["pupdate_id"] for _, v in flood.good}
        deadline = time.monotonic() + 60
        while True:
            predicted = {
                serde("prediction").decode(m.value())["pupdate_id"]
                for m in read_all(settings, settings.topic(PREDICTIONS))
            }
            if good_ids <= predicted or time.monotonic() > deadline:
                break
            time.sleep(1)
        row = flood.row("scorer", letters, len(good_ids & predicted))
        print_table("scorer Kafka fuzz", [row], HEADER)
        flood.check(letters)
        assert good_ids <= predicted, f"{len(good_ids - predicted)} good vectors not predicted\n{row}"
        assert scorer.proc.poll() is None, scorer.log_tail()
        assert scorer.http.get("/healthz").status_code == 200
    finally:
        scorer.stop()


def insts_like(pid: str = "gi", likes: int = 1) -> dict:
    return instance(pid, likes=likes, baseline=2.0) | {"names": ["a"], "values": [1.0]}


def _others() -> dict[str, dict]:
    now = now_ms()
    return {"like_raw": _raw_like(0, now), "pupdate_raw": _raw_pupdate(0, now)}


# -- featurizer: pupdates and likes ------------------------------------------------------------


def _fact_pupdate(i: int, now: int) -> dict:
    raw = _raw_pupdate(i, now)
    return raw | {"pupdate_id": f"fp{i}", "raw_schema": "", "collected_at": now}


def _fact_like(i: int, now: int) -> dict:
    return _raw_like(i, now) | {"pupdate_id": f"fp{i}", "collected_at": now}


def test_featurizer_dead_letters_every_undecodable_fact_and_keeps_featurizing(topics, tmp_path, pool):
    settings = topics
    now = now_ms()
    k = N // GOOD_EVERY
    pupdates = [_fact_pupdate(i, now - 5000 + i) for i in range(k)]
    likes = [_fact_like(i, now) for i in range(k)]
    floods = [
        Flood(
            settings,
            PUPDATES,
            Records(
                pool, "pupdate", pupdates, {"like": likes[0], "feature_vector": feature_record(0, [0.0])}
            ),
            [(p["pupdate_id"], serde("pupdate").encode(p)) for p in pupdates],
        ),
        Flood(
            settings,
            LIKES,
            Records(pool, "like", likes, {"pupdate": pupdates[0], "like_raw": _others()["like_raw"]}),
            [(p["pupdate_id"], serde("like").encode(p)) for p in likes],
        ),
    ]
    featurizer = ServiceProcess(
        "featurizer", settings, tmp_path, versions='["v1"]', idle_flush_ms=1000, horizon_ms=3_600_000
    ).wait_ready()
    try:
        for n, flood in enumerate(floods):
            flood.send(N, seed_value=600 + n)
        good_ids = {p["pupdate_id"] for p in pupdates}
        deadline = time.monotonic() + 60
        while True:
            featured = {
                serde("feature_vector").decode(m.value())["pupdate_id"]
                for m in read_all(settings, settings.topic(FEATURES))
            }
            if good_ids <= featured or time.monotonic() > deadline:
                break
            time.sleep(1)
        rows = []
        for flood in floods:
            letters = flood.wait_dead_lettered("featurizer", featurizer)
            rows.append(flood.row("featurizer", letters, len(good_ids & featured)))
        print_table("featurizer Kafka fuzz", rows, HEADER)
        for flood in floods:
            flood.check(flood.dead_lettered("featurizer"))
        assert good_ids <= featured, f"{len(good_ids - featured)} good pupdates not featurized\n{rows}"
        assert featurizer.proc.poll() is None, featurizer.log_tail()
        assert featurizer.http.get("/healthz").status_code == 200
    finally:
        featurizer.stop()


# -- supervisor (predictions, instances, models), trainer (instances, models), scorer (models) ---


def test_supervisor_trainer_and_scorer_survive_hostile_predictions_instances_and_models(
    topics, tmp_path, pool
):
    settings = topics
    k = N // GOOD_EVERY
    preds = [prediction(f"gp{i}", version=None, raw=None) for i in range(k)]
    insts = [
        instance(f"gi{i}", likes=i % 7, baseline=2.0) | {"names": ["a"], "values": [1.0]} for i in range(k)
    ]
    art = fake_artifact("fz", [1.0, 2.0, 3.0])
    models = [status_event("PAUSED", art) for _ in range(k)]
    others = {"like": _fact_like(0, now_ms()), "feature_vector": feature_record(0, [0.0])}
    floods = {
        "predictions": Flood(
            settings, PREDICTIONS, Records(pool, "prediction", preds, others),
            [(p["pupdate_id"], serde("prediction").encode(p)) for p in preds],
        ),
        "instances": Flood(
            settings, INSTANCES, Records(pool, "instance", insts, others),
            [(p["pupdate_id"], serde("instance").encode(p)) for p in insts],
        ),
        "models": Flood(
            settings, MODELS, Records(pool, "model_event", models, others),
            [(p["model_version"], serde("model_event").encode(p)) for p in models],
        ),
    }  # fmt: skip
    publish(settings, art.to_event())
    sup = SupervisorProcess(settings, tmp_path).wait_ready()
    trainer = TrainerProc(settings, tmp_path, POOCH_TRAINER_FIRST_MODEL_ASAP="false")
    scorer = ScorerProcess(settings, tmp_path, role="stream").wait_ready()
    try:
        trainer.wait_ready()
        for n, flood in enumerate(floods.values()):
            flood.send(N, seed_value=700 + n)
        rows = []
        letters = {name: flood.wait_dead_lettered("supervisor", sup) for name, flood in floods.items()}
        trainer_letters = floods["instances"].wait_dead_lettered("trainer", trainer)
        for name, flood in floods.items():
            rows.append(flood.row("supervisor", letters[name], 0))
        # The trainer's window still grows: the good instances (and the decodable hostile ones it
        # did not refuse) are in it. The supervisor's windows have no per-record output to count.
        window = trainer.status().get("windows", {}).get("v1", {}).get("size", 0)
        rows.append(floods["instances"].row("trainer", trainer_letters, window))
        # The scorer and the trainer read models to rebuild their registries: by design they log
        # and count an undecodable model event and skip it (no dead letter: every replica would
        # write one at every start); the scorer's count must be exact.
        bad_models = len(floods["models"].undecodable)
        deadline = time.monotonic() + 60
        while scorer.metric_sum("pooch_scorer_model_events_total", kind="undecodable") < bad_models:
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        counted = scorer.metric_sum("pooch_scorer_model_events_total", kind="undecodable")
        rows.append(
            f"models (scorer): {bad_models} undecodable; "
            f"pooch_scorer_model_events_total{{kind=undecodable}} {counted:.0f}"
        )
        print_table("supervisor, trainer and scorer Kafka fuzz", rows, HEADER)
        for name, flood in floods.items():
            flood.check(letters[name])
        floods["instances"].check(trainer_letters)
        assert counted == bad_models, rows[-1]
        assert window >= len(floods["instances"].good), rows
        for proc in (sup, scorer):
            assert proc.proc.poll() is None, proc.log_tail()
            assert proc.http.get("/healthz").status_code == 200
        assert trainer.proc.poll() is None, trainer.log_tail()
        assert trainer.get("/healthz")[0] == 200
        assert sup.http.get("/v1/models").status_code == 200
    finally:
        for proc in (sup, trainer, scorer):
            proc.stop()
