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


def test_the_model_cache_is_bounded_and_a_trimmed_version_comes_back_from_the_topic(
    topics, tmp_path, private_redis
):
    """Issue 11, item 8: the Redis model cache kept every version anyone cached, for ever. The
    leading trainer now trims it to the versions worth keeping; one trimmed and needed again
    (everything newer paused) is read back from the models topic, and cached again."""
    from libs.common.artifacts import ArtifactStore
    from services.scorer.fixtures import make_artifact, model_event, publish_events, train_model_text

    arts = [make_artifact(train_model_text(rounds=5, seed=i), created_at=i + 1) for i in range(6)]
    publish_events(topics, [a.to_event() for a in arts])
    cache = ModelCache(redis.Redis.from_url(private_redis), topics.topic_prefix, service="test")
    for a in arts:
        cache.put(a)  # a cache as a long run leaves it: every version ever published
    trainer = TrainerProc(topics, tmp_path, redis_url=private_redis, POOCH_TRAINER_CACHE_VERSIONS_KEPT=2)
    try:
        trainer.wait_ready()
        newest = {a.model_version for a in arts[-2:]}
        wait_for(
            lambda: set(cache.versions()) == newest, timeout=30, what="the cache trimmed to the 2 newest"
        )
        assert trainer.metric("pooch_trainer_cache_trimmed_total") == 4
    finally:
        trainer.stop()

    # Every version newer than the oldest is paused: the oldest serves again; its artifact is
    # no longer cached, so it comes from the topic (and goes back into the cache).
    publish_events(topics, [model_event("PAUSED", a.model_version) for a in arts[1:]])
    store = ArtifactStore(cache, topics)
    art = store.get(arts[0].model_version)
    assert art is not None and art.model_text() == arts[0].model_text()
    assert arts[0].model_version in cache.versions()
    assert store.get("v1-0000000000000000") is None
