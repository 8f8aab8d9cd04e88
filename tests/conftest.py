"""Fixtures giving tests the real Kafka and Redis, and topics of their own.

Where Kafka and Redis come from, first match wins (each of the two on its own):

1. ``POOCH_KAFKA_BOOTSTRAP`` / ``POOCH_REDIS_URL`` when set;
2. testcontainers, when a Docker engine answers;
3. the local stack (``tooling.stack``): reused when already up, else started for the session
   and stopped at its end (only what this session started).

Every test under ``tests/integration`` gets the ``integration`` marker automatically.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from libs.common.admin import delete_topics, ensure_topics, list_topics
from libs.common.settings import CommonSettings, common_settings
from tooling.stack import LocalStack, StackError
from tooling.stack.config import StackSettings
from tooling.stack.processes import free_port

INTEGRATION = Path(__file__).parent / "integration"
# Contract topics per test: few partitions keep creation and consumer-group joins fast.
TEST_PARTITIONS = 3


SCENARIOS = Path(__file__).parent / "scenarios"
# The incident suite takes about 15 minutes on 2 cores: more than CI's budget beside the rest
# (README), so it runs on request: `make scenarios`, or POOCH_SCENARIOS=1.
_SKIP_SCENARIOS = pytest.mark.skip(reason="the incident suite runs with `make scenarios` (POOCH_SCENARIOS=1)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_scenarios = os.environ.get("POOCH_SCENARIOS", "") == "1"
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)
        if SCENARIOS in item.path.parents and not run_scenarios:
            item.add_marker(_SKIP_SCENARIOS)


@dataclass(frozen=True)
class Backend:
    kafka_bootstrap: str
    redis_url: str
    stack: LocalStack | None  # set when the tests run against this machine's local stack


def _docker_answers() -> bool:
    """Cheap check that a Docker engine answers (a CLI or a stale socket is not enough)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A CLI command run in-process (click's CliRunner) configures the root logger; left so, its
    handler and level would leak into every later test of the process (log lines in another
    command's captured output)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def backend() -> Iterator[Backend]:
    kafka = os.environ.get("POOCH_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("POOCH_REDIS_URL")
    saved_env = {k: os.environ.get(k) for k in ("POOCH_KAFKA_BOOTSTRAP", "POOCH_REDIS_URL")}
    with contextlib.ExitStack() as cleanup:
        if (kafka is None or redis_url is None) and _docker_answers():
            from testcontainers.community.kafka import KafkaContainer
            from testcontainers.community.redis import RedisContainer

            if kafka is None:
                big = str(72 * 1024 * 1024)  # the models topic carries 64 MiB artifacts
                container = (
                    KafkaContainer()
                    .with_env("KAFKA_MESSAGE_MAX_BYTES", big)
                    .with_env("KAFKA_REPLICA_FETCH_MAX_BYTES", big)
                    .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
                )
                container.start()
                cleanup.callback(container.stop)
                kafka = container.get_bootstrap_server()
            if redis_url is None:
                rc = RedisContainer()
                rc.start()
                cleanup.callback(rc.stop)
                redis_url = f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0"
        if kafka is None or redis_url is None:
            stack = LocalStack()
            needed = [name for name, have in (("kafka", kafka), ("redis", redis_url)) if have is None]
            try:
                result = stack.up(components=needed)
            except StackError as exc:
                pytest.fail(f"could not start the local stack for the tests:\n{exc}", pytrace=False)
            if result.started:  # stop at the end only what this session started
                cleanup.callback(stack.down, result.started)
            kafka = kafka or stack.kafka_bootstrap
            redis_url = redis_url or stack.redis_url
        # Tests may stop and start the broker only if it is this machine's local stack.
        stack = LocalStack() if _is_local_stack(kafka) else None
        # Code under test that reads CommonSettings() (or spawns processes) finds the same ones.
        os.environ["POOCH_KAFKA_BOOTSTRAP"] = kafka
        os.environ["POOCH_REDIS_URL"] = redis_url
        common_settings.cache_clear()
        try:
            yield Backend(kafka, redis_url, stack)
        finally:
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            common_settings.cache_clear()


def _is_local_stack(bootstrap: str) -> bool:
    try:
        stack = LocalStack()
    except (StackError, ValueError):
        return False
    return stack.kafka_bootstrap == bootstrap and stack.kafka_pid() is not None


@pytest.fixture(scope="session")
def kafka_bootstrap(backend: Backend) -> str:
    return backend.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(backend: Backend) -> str:
    return backend.redis_url


@pytest.fixture(scope="session")
def stack(backend: Backend) -> LocalStack:
    """The session's local stack, for tests that stop and start its processes.

    Stopping it affects every other user of that stack; ``private_stack`` is isolated.
    """
    if backend.stack is None:
        pytest.skip(f"Kafka at {backend.kafka_bootstrap} is not this machine's local stack")
    return backend.stack


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[LocalStack]:
    """A LocalStack of its own (state in tmp_path, free ports), not started; stopped after."""
    try:
        stack = LocalStack(
            StackSettings(),  # cache folder, heap and timeouts as configured
            state_dir=tmp_path / "state",
            host="127.0.0.1",
            kafka_port=free_port(),
            controller_port=free_port(),
            redis_port=free_port(),
        )
        stack.prerequisites()
    except StackError as exc:
        pytest.skip(f"cannot run a private local stack here: {exc.message}")
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture
def topic_prefix() -> str:
    """A unique topic prefix, so tests never see each other's messages."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def topics(kafka_bootstrap: str, redis_url: str, topic_prefix: str) -> Iterator[CommonSettings]:
    """The contract topics under a fresh prefix; yields settings pointing at them.

    The topics (and any other topic under the prefix) are deleted afterwards, unless
    POOCH_TEST_KEEP_TOPICS=1, so repeated runs do not pile up partitions on the broker.
    """
    settings = CommonSettings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_prefix=topic_prefix)
    ensure_topics(settings, partitions=TEST_PARTITIONS, timeout=60)
    yield settings
    if os.environ.get("POOCH_TEST_KEEP_TOPICS") != "1":
        with contextlib.suppress(Exception):  # Kafka may be down after a failure test
            names = [n for n in list_topics(settings, timeout=5) if n.startswith(topic_prefix)]
            delete_topics(settings, names, timeout=10)
