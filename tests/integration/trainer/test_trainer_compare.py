"""``pooch trainer compare``: two extractor versions trained on the same backfilled history."""

from __future__ import annotations

import math

import numpy as np
from typer.testing import CliRunner

from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.topics import INSTANCES, LIKES, PUPDATES
from services.trainer.train import TrainParams
from tests.support.kafkautil import end_offsets
from tooling.cli.trainer import trainer_app
from tooling.offline.compare import compare_versions

HORIZON_MS = 60_000
# Concepts, their effect on likes, and how people spell them (v2 maps the puns onto the concept).
CONCEPTS = {
    "adorable": (0.9, ["#adorable", "#Adorabull", "#adorbs"]),
    "awesome": (0.5, ["#awesome", "#pawsome"]),
    "perfect": (0.3, ["#perfect", "#pawfect"]),
    "fluffy": (0.6, ["#fluffy", "#floof", "#floofy"]),
    "dog": (-0.3, ["#dog", "#doggo", "#doge"]),
    "puppy": (0.1, ["#puppy", "#pupper"]),
}


def produce_facts(settings, n: int = 1500, seed: int = 5) -> int:
    rng = np.random.default_rng(seed)
    dogs = [
        {"id": f"d{i}", "followers": int(rng.lognormal(5, 1.2)), "breed": ["Pug", "Beagle", "Corgi"][i % 3]}
        for i in range(60)
    ]
    start = 1_750_000_000_000
    producer = Producer(settings, name="facts")
    pupdate, like = serde("pupdate"), serde("like")
    likes_total = 0
    for i in range(n):
        dog = dogs[int(rng.integers(len(dogs)))]
        posted = start + i * 10_000
        chosen = rng.choice(list(CONCEPTS), size=int(rng.integers(1, 4)), replace=False)
        tags = [str(rng.choice(CONCEPTS[c][1])) for c in chosen]
        mu = math.exp(0.2 + 0.25 * math.log1p(dog["followers"]) + sum(CONCEPTS[c][0] for c in chosen))
        rec = {
            "event_id": f"e-p{i}",
            "pupdate_id": f"p{i}",
            "dog_id": dog["id"],
            "posted_at": posted,
            "hashtags": tags,
            "caption": None,
            "photo_filter": None,
            "dog": {"breed": dog["breed"], "size": "SMALL", "age_months": 24},
            "dog_followers": dog["followers"],
            "country": "US",
            "app_version": "3.0.0",
            "raw_schema": "",
            "collected_at": posted,
        }
        producer.produce(settings.topic(PUPDATES), pupdate.encode(rec), key=rec["pupdate_id"])
        for j in range(int(rng.poisson(mu))):
            liked = posted + int(rng.integers(0, int(HORIZON_MS * 0.9)))
            producer.produce(
                settings.topic(LIKES),
                like.encode(
                    {
                        "event_id": f"e-l{i}-{j}",
                        "pupdate_id": rec["pupdate_id"],
                        "sniffer_id": f"s{int(rng.integers(5000))}",
                        "liked_at": liked,
                        "app_version": "3.0.0",
                        "collected_at": liked,
                    }
                ),
                key=rec["pupdate_id"],
            )
            likes_total += 1
    producer.flush(60)
    return likes_total


def test_compare_backfills_both_versions_and_trains_them_on_the_same_pupdates(topics, monkeypatch):
    settings = topics
    produce_facts(settings)
    params = TrainParams(num_boost_round=150, num_threads=1, min_validation_rows=50)
    result = compare_versions(settings, ["v1", "v2"], params, backfill="auto", horizon_ms=HORIZON_MS)

    assert set(result.backfilled) == {"v1", "v2"}, "neither version had instances: both were backfilled"
    assert result.backfilled["v1"] == result.backfilled["v2"] > 1000
    assert end_offsets(settings, settings.topic(INSTANCES)) == 2 * result.backfilled["v1"]
    assert result.common_rows == result.read["v1"] == result.read["v2"]
    v1, v2 = (result.candidates[v].metrics for v in ("v1", "v2"))
    # The same rows, labels and split: only the features differ, so the baseline is identical.
    for key in ("validation_rows", "train_rows", "mean_label", "baseline_poisson_deviance", "baseline_mae"):
        assert v1[key] == v2[key], key
    for m in (v1, v2):
        assert {"mae", "rmse", "poisson_deviance", "poisson_deviance_ratio_to_baseline"} <= set(m)
        assert m["improvement_vs_baseline"] > 0
    assert result.best() in ("v1", "v2")

    # The CLI prints them side by side (the instances are there now: no backfill).
    for key, value in {
        "POOCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "POOCH_TOPIC_PREFIX": settings.topic_prefix,
        "POOCH_TRAINER_NUM_BOOST_ROUND": "150",
        "POOCH_TRAINER_NUM_THREADS": "1",
        "POOCH_TRAINER_MIN_VALIDATION_ROWS": "50",
    }.items():
        monkeypatch.setenv(key, value)
    out = CliRunner().invoke(
        trainer_app, ["compare", "-e", "v1", "-e", "v2", "--backfill", "never"], env={"COLUMNS": "160"}
    )
    assert out.exit_code == 0, out.output
    assert "Poisson deviance" in out.output and "improvement vs baseline" in out.output
    assert "v1" in out.output and "v2" in out.output
    assert f"{v1['poisson_deviance']:.4f}" in out.output
    assert f"{v2['poisson_deviance']:.4f}" in out.output
    assert "beats" in out.output
    print(out.output)

    bad = CliRunner().invoke(trainer_app, ["compare", "-e", "v1"])
    assert bad.exit_code == 1 and "two different" in bad.output
