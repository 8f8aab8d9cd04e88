"""Redis is a cache of the models topic: wiped, it is rebuilt; tampered records never enter it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest
import redis
from prometheus_client import REGISTRY

from libs.common.artifacts import ModelCache, build_artifact, rebuild_cache
from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.topics import MODELS
from services.trainer.synthetic import SyntheticWorld
from tests.support.kafkautil import wait_for
from tests.support.trainer import TrainerProc, feed, wait_published
from tooling.stack.processes import free_port


@pytest.fixture
def private_redis(tmp_path) -> Iterator[str]:
    """A redis-server of this test's own: FLUSHALL must not wipe anyone else's data."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _pings(url), timeout=10, what="private redis")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def test_flushall_the_trainer_recovers_every_model_from_the_models_topic(topics, tmp_path, private_redis):
    settings = topics
    world = SyntheticWorld(seed=31)
    trainer = TrainerProc(settings, tmp_path, redis_url=private_redis)
    client = redis.Redis.from_url(private_redis)
    cache = ModelCache(client, settings.topic_prefix)
    try:
        trainer.wait_ready()
        for i, regime in enumerate((0, 1)):
            feed(settings, world.instances(300, regime))
            arts = wait_published(settings, i + 1, trainer)
        versions = [a.model_version for a in arts]
        wait_for(lambda: not cache.missing(versions), timeout=10, what="both cached")

        client.flushall()
        assert cache.missing(versions) == versions
        wait_for(lambda: not cache.missing(versions), timeout=15, what="the cache rebuilt")
        for art in arts:
            assert cache.load_text(art.model_version) == art.model_text()
        assert cache.versions("v1") == versions
        assert trainer.metric("pooch_trainer_cache_repairs_total") == 2
        assert any("model cache repaired" in line.get("msg", "") for line in trainer.logs())
    finally:
        trainer.stop()


def _integrity_failures(service: str, source: str) -> float:
    labels = {"service": service, "source": source}
    return REGISTRY.get_sample_value("pooch_model_integrity_failures_total", labels) or 0.0


def test_rebuild_cache_puts_every_verified_model_back_and_refuses_tampered_ones(topics, private_redis):
    """What the scorer (or anyone) calls on a wiped Redis: the models topic is the record."""
    settings = topics
    good = [build_artifact(f"model {i}", extractor_version="v1", feature_names=["a"]) for i in range(3)]
    evil = build_artifact("evil model", extractor_version="v2", feature_names=["a"])
    tampered = evil.to_event() | {"artifact": good[0].artifact}  # bytes that are not its sha256
    producer = Producer(settings, name="test-models")
    for event in [*(a.to_event() for a in good), tampered]:
        producer.produce(
            settings.topic(MODELS), serde("model_event").encode(event), key=event["model_version"]
        )
    producer.flush(30)

    cache = ModelCache(redis.Redis.from_url(private_redis), settings.topic_prefix, service="scorer")
    before = _integrity_failures("scorer", "topic")
    report = rebuild_cache(settings, cache)
    assert (report.read, report.published, report.cached) == (4, 4, 3)
    assert report.refused == [evil.model_version]
    assert _integrity_failures("scorer", "topic") == before + 1
    assert set(cache.versions()) == {a.model_version for a in good}
    assert cache.missing([evil.model_version]) == [evil.model_version]
    for art in good:
        assert cache.load_text(art.model_version) == art.model_text()
    again = rebuild_cache(settings, cache)
    assert again.cached == 0, "only what is missing is written"
