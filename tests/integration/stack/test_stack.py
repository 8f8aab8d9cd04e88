"""The local stack and topic admin, against real processes: no mocks."""

from __future__ import annotations

import os
import socket
import uuid

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from typer.testing import CliRunner

from libs.common.admin import (
    AdminUnavailableError,
    admin_client,
    delete_topics,
    describe_topics,
    ensure_topics,
    topic_configs,
)
from libs.common.settings import CommonSettings
from libs.common.topics import CONTRACT, DEADLETTERS, FEATURES, MODELS, PUPDATES
from tooling.cli.main import app
from tooling.stack import LocalStack, StackError
from tooling.stack.processes import free_port, port_free

MiB = 1024 * 1024


def _produce(settings: CommonSettings, topic: str, values: list[bytes]) -> None:
    producer = Producer(settings.kafka_config() | {"acks": "all", "enable.idempotence": True})
    for i, value in enumerate(values):
        producer.produce(settings.topic(topic), value=value, key=str(i).encode())
    assert producer.flush(30) == 0, "messages not delivered"


def _read(settings: CommonSettings, topic: str, partitions: int, expected: int) -> list[bytes]:
    consumer = Consumer(
        settings.kafka_config() | {"group.id": f"reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(settings.topic(topic), p, 0) for p in range(partitions)])
    got: list[bytes] = []
    try:
        for _ in range(60):  # up to ~30 s
            for msg in consumer.consume(100, 0.5):
                if msg.error() is None:
                    got.append(msg.value())
            if len(got) >= expected:
                break
    finally:
        consumer.close()
    return got


# -- the session's stack --


def test_status_reports_processes_up_and_every_contract_topic(stack: LocalStack):
    status = stack.status()
    assert status.infra_up, status.processes
    # Every service with a __main__ is a component of the stack, shown whether up or down.
    assert {"collector", "featurizer"} <= {p.name for p in status.processes}
    kafka = status.process("kafka")
    assert kafka.pid is not None
    assert kafka.ports == (stack.settings.kafka_port, stack.settings.controller_port)
    assert status.process("redis").pid is not None
    assert status.topics is not None, status.topics_error
    settings = stack.common_settings()
    for spec in CONTRACT:
        topic = status.topics[settings.topic(spec.name)]
        assert topic.exists, f"{topic.name} missing"
        assert topic.partitions >= 1
    assert status.topics[settings.topic(MODELS)].partitions == 1


def test_cli_status_prints_processes_and_topics(stack: LocalStack):
    result = CliRunner().invoke(app, ["stack", "status"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "kafka" in result.output and "redis" in result.output
    not_up = next((ln for ln in result.output.splitlines() if ln.startswith("not up:")), "")
    assert "kafka" not in not_up and "redis" not in not_up, not_up
    assert "collector" in result.output  # services are listed, up or down
    for spec in CONTRACT:
        assert spec.name in result.output
    check = CliRunner().invoke(app, ["stack", "status", "--check", "--only", "kafka", "--only", "redis"])
    assert check.exit_code == 0 and check.output == ""
    services = CliRunner().invoke(app, ["stack", "status", "--check", "--only", "collector"])
    assert services.exit_code == 1 and services.output.strip() == "collector"  # no test starts it here


def test_up_when_already_up_starts_nothing(stack: LocalStack):
    pids = (stack.kafka_pid(), stack.redis_pid())
    result = stack.up()
    assert result.started == []
    assert sorted(result.already_running) == ["kafka", "redis"]
    assert result.topics is not None and result.topics.created == []
    assert (stack.kafka_pid(), stack.redis_pid()) == pids


# -- topic admin --


def test_ensure_topics_is_idempotent_and_applies_the_specs_config(kafka_bootstrap: str, topic_prefix: str):
    settings = CommonSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    names = [settings.topic(s.name) for s in CONTRACT]
    try:
        first = ensure_topics(settings, partitions=2)
        assert sorted(first.created) == sorted(names)

        second = ensure_topics(settings, partitions=2)
        assert second.created == []
        assert sorted(second.existing) == sorted(names)
        assert second.reconfigured == {} and second.partition_mismatches == {}

        state = describe_topics(settings)
        assert state[settings.topic(PUPDATES)].partitions == 2
        # Single-partition topics keep their order guarantee whatever the override.
        assert state[settings.topic(MODELS)].partitions == 1
        assert state[settings.topic(DEADLETTERS)].partitions == 1

        models, pupdates, features = (settings.topic(t) for t in (MODELS, PUPDATES, FEATURES))
        configs = topic_configs(settings, [models, pupdates, features])
        assert int(configs[models]["max.message.bytes"]) >= 64 * MiB
        assert configs[models]["retention.ms"] == "-1"
        assert configs[pupdates]["retention.ms"] == "-1"  # facts are kept forever
        assert configs[features]["retention.ms"] == str(7 * 24 * 3600 * 1000)

        # Someone changes a fact topic's retention: the next ensure puts the spec back.
        drift = ConfigResource(
            ConfigResource.Type.TOPIC,
            pupdates,
            incremental_configs=[
                ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        admin = admin_client(settings)  # keep a reference: the futures die with their client
        for future in admin.incremental_alter_configs([drift]).values():
            future.result(timeout=30)
        third = ensure_topics(settings, partitions=2)
        assert third.reconfigured == {pupdates: {"retention.ms": "-1"}}
        assert topic_configs(settings, [pupdates])[pupdates]["retention.ms"] == "-1"

        # Another partition count is reported, never applied (it would move keys).
        fourth = ensure_topics(settings, partitions=4)
        assert fourth.partition_mismatches[pupdates] == (4, 2)
        assert describe_topics(settings)[pupdates].partitions == 2
    finally:
        delete_topics(settings, names)


def test_describe_topics_counts_messages_per_topic(topics: CommonSettings):
    _produce(topics, PUPDATES, [b"a", b"b", b"c", b"d", b"e", b"f", b"g"])
    state = describe_topics(topics)
    assert state[topics.topic(PUPDATES)].end_offset_total == 7
    assert state[topics.topic(PUPDATES)].partitions == 3
    assert state[topics.topic(MODELS)].end_offset_total == 0


def test_admin_fails_fast_and_clearly_without_kafka():
    port = free_port()  # nobody listens there
    settings = CommonSettings(kafka_bootstrap=f"127.0.0.1:{port}")
    with pytest.raises(AdminUnavailableError, match=f"127.0.0.1:{port} did not answer within 2 s"):
        ensure_topics(settings, timeout=2)


# -- a private stack: stopping it disturbs nobody else --


def test_messages_survive_a_kafka_restart_and_wipe_deletes_them(private_stack: LocalStack):
    stack = private_stack
    result = stack.up(components=["kafka"], topic_prefix="", partitions=1)
    assert result.started == ["kafka"]
    settings = stack.common_settings(topic_prefix="")
    _produce(settings, PUPDATES, [b"before-restart-1", b"before-restart-2"])
    cluster_id = stack.paths.cluster_id_file.read_text()
    old_pid = stack.kafka_pid()

    assert stack.stop_kafka() is True
    assert stack.kafka_pid() is None
    assert stack.status(topics=False).process("kafka").state == "down"
    assert port_free(stack.settings.host, stack.settings.kafka_port)
    assert stack.stop_kafka() is False  # stopping a stopped broker is fine

    assert stack.start_kafka() is True
    assert stack.kafka_pid() not in (None, old_pid)
    assert stack.paths.cluster_id_file.read_text() == cluster_id
    got = _read(settings, PUPDATES, partitions=1, expected=2)
    assert got == [b"before-restart-1", b"before-restart-2"]

    # --fresh = stop + wipe, then the from-scratch start this test began with.
    stack.wipe()
    assert stack.kafka_pid() is None
    assert not stack.paths.kafka_data.exists() and not stack.paths.cluster_id_file.exists()
    assert stack.paths.jars_marker.exists()  # the download cache is kept


def test_redis_stops_and_starts(private_stack: LocalStack):
    stack = private_stack
    assert stack.up(components=["redis"]).started == ["redis"]
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=2, socket_connect_timeout=2)
    assert client.ping()
    assert stack.stop_redis() is True
    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert stack.start_redis() is True
    assert client.ping()
    client.close()


def test_a_port_taken_by_a_stranger_is_reported_not_fought(tmp_path):
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        controller, redis_port = free_port(), free_port()
        stack = LocalStack(
            state_dir=tmp_path / "state", kafka_port=port, controller_port=controller, redis_port=redis_port
        )
        with pytest.raises(StackError, match=f"port {port} .* taken by pid {os.getpid()}"):
            stack.up(components=["kafka"])
        assert stack.status(topics=False).process("kafka").state == "port taken"

        env = {
            "POOCH_STATE_DIR": str(tmp_path / "state"),
            "POOCH_STACK_KAFKA_PORT": str(port),
            "POOCH_STACK_CONTROLLER_PORT": str(controller),
            "POOCH_STACK_REDIS_PORT": str(redis_port),
            "COLUMNS": "200",
        }
        result = CliRunner().invoke(app, ["stack", "up"], env=env)
        assert result.exit_code == 1
        assert f"port {port}" in result.output and "Traceback" not in result.output
