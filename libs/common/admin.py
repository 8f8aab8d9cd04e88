"""Topic administration: create the contract's topics idempotently and describe them.

Used by ``pooch stack up``, ``pooch topics`` and the test fixtures. Every call has a deadline
and turns librdkafka's errors into :class:`TopicAdminError` with a readable message, so a
missing broker is reported in seconds instead of hanging a command.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)

from libs.common.kafka.clients import new_admin
from libs.common.kafka.errors import KafkaUnavailableError
from libs.common.settings import CommonSettings
from libs.common.topics import CONTRACT, TopicSpec

log = logging.getLogger(__name__)
# librdkafka logs each refused connection; the exceptions below already say what went wrong.
_rdkafka_log = logging.getLogger(f"{__name__}.rdkafka")
_rdkafka_log.addHandler(logging.NullHandler())

DEFAULT_TIMEOUT = 30.0
K = TypeVar("K")


class TopicAdminError(RuntimeError):
    """A topic operation failed; the message says which topic and why."""


class AdminUnavailableError(TopicAdminError, KafkaUnavailableError):
    """Kafka did not answer within the deadline."""


@dataclass
class EnsureReport:
    """What :func:`ensure_topics` did, topic by topic (real, prefixed names)."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    # Existing topics whose config differed from the spec and was set: name -> changed keys.
    reconfigured: dict[str, dict[str, str]] = field(default_factory=dict)
    # Existing topics with another partition count than asked: name -> (wanted, actual).
    # Partitions are never changed here: adding some would move keys between partitions.
    partition_mismatches: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicState:
    name: str
    exists: bool
    partitions: int = 0
    end_offsets: tuple[int, ...] = ()
    spec: TopicSpec | None = None

    @property
    def end_offset_total(self) -> int:
        """Messages ever written (ignoring retention), summed over partitions."""
        return sum(self.end_offsets)


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.1, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def admin_client(settings: CommonSettings) -> AdminClient:
    return new_admin(
        settings,
        **{
            "socket.connection.setup.timeout.ms": 5000,
            "reconnect.backoff.max.ms": 1000,
            "logger": _rdkafka_log,
        },
    )


def _unavailable(settings: CommonSettings, seconds: float, exc: BaseException) -> AdminUnavailableError:
    detail = f": {exc}" if str(exc) else ""
    return AdminUnavailableError(
        f"Kafka at {settings.kafka_bootstrap} did not answer within {seconds:.0f} s{detail}"
    )


def _topic_partitions(settings: CommonSettings, admin: AdminClient, deadline: _Deadline) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=deadline.left())
    except KafkaException as exc:
        raise _unavailable(settings, deadline.seconds, exc) from exc
    return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}


# States a freshly created topic or a restarted broker passes through for a moment. librdkafka
# does not flag all of them as retriable in admin results.
_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_CONTROLLER,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.OFFSET_NOT_AVAILABLE,
    KafkaError.KAFKA_STORAGE_ERROR,
}


class _RetriableError(TopicAdminError):
    """A transient state (no leader yet, topic still propagating) that a retry resolves."""


def _result(future: concurrent.futures.Future[Any], what: str, deadline: _Deadline, settings: CommonSettings):
    try:
        return future.result(timeout=deadline.left())
    except concurrent.futures.TimeoutError as exc:
        raise _unavailable(settings, deadline.seconds, exc) from exc
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError):
            raise TopicAdminError(f"{what}: {exc}") from exc
        if error.code() in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            raise _unavailable(settings, deadline.seconds, exc) from exc
        kind = _RetriableError if error.retriable() or error.code() in _TRANSIENT else TopicAdminError
        raise kind(f"{what}: {error.str()}") from exc


def _results(
    request: Callable[[], dict[K, concurrent.futures.Future[Any]]],
    what: Callable[[K], str],
    deadline: _Deadline,
    settings: CommonSettings,
) -> dict[K, Any]:
    """Run an idempotent admin request, retrying while the cluster settles (new topics,
    a restarted broker) until the deadline."""
    while True:
        futures = request()
        try:
            return {key: _result(f, what(key), deadline, settings) for key, f in futures.items()}
        except _RetriableError:
            if deadline.expired():
                raise
            time.sleep(0.2)


def _wait_for_leaders(
    settings: CommonSettings, admin: AdminClient, names: list[str], deadline: _Deadline
) -> None:
    """Return once every partition of the new topics has a leader: then they are usable."""
    while True:
        try:
            topics = admin.list_topics(timeout=deadline.left()).topics
        except KafkaException as exc:
            raise _unavailable(settings, deadline.seconds, exc) from exc
        waiting = [
            name
            for name in names
            if name not in topics
            or topics[name].error is not None
            or any(p.leader < 0 for p in topics[name].partitions.values())
        ]
        if not waiting:
            return
        if deadline.expired():
            raise AdminUnavailableError(f"topics {waiting} have no leader after {deadline.seconds:.0f} s")
        time.sleep(0.1)


def _code(exc: TopicAdminError) -> int | None:
    cause = exc.__cause__
    error = cause.args[0] if isinstance(cause, KafkaException) and cause.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _wanted_partitions(spec: TopicSpec, override: int | None) -> int:
    # Single-partition topics (models, deadletters) are single on purpose: order matters.
    if override is None or spec.partitions == 1:
        return spec.partitions
    if override < 1:
        raise ValueError(f"partitions must be >= 1, got {override}")
    return override


def ensure_topics(
    settings: CommonSettings,
    specs: Sequence[TopicSpec] = CONTRACT,
    partitions: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> EnsureReport:
    """Create missing topics and set each spec's config on existing ones; never delete.

    ``partitions`` overrides the spec's count for every topic that has more than one.
    Idempotent: a second call creates nothing and changes nothing.
    """
    deadline = _Deadline(timeout)
    admin = admin_client(settings)
    report = EnsureReport()
    present = _topic_partitions(settings, admin, deadline)
    wanted = {settings.topic(s.name): (s, _wanted_partitions(s, partitions)) for s in specs}

    missing = [
        NewTopic(name, num_partitions=n, replication_factor=-1, config=dict(spec.config))
        for name, (spec, n) in wanted.items()
        if name not in present
    ]
    if missing:
        futures = admin.create_topics(
            missing, operation_timeout=min(deadline.left(), 30), request_timeout=deadline.left()
        )
        for name, future in futures.items():
            try:
                _result(future, f"creating topic {name}", deadline, settings)
                report.created.append(name)
            except TopicAdminError as exc:
                # Someone else (another test, another `up`) created it meanwhile: fine.
                if _code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
                    present[name] = wanted[name][1]
                    continue
                raise

    if report.created:
        _wait_for_leaders(settings, admin, report.created, deadline)

    existing = [name for name in wanted if name in present]
    for name in existing:
        report.existing.append(name)
        want = wanted[name][1]
        if present[name] != want:
            report.partition_mismatches[name] = (want, present[name])
            log.warning("topic %s has %d partitions, the spec asks for %d", name, present[name], want)

    current = topic_configs(settings, existing, timeout=deadline.left(), admin=admin)
    changes = {
        name: {k: v for k, v in wanted[name][0].config.items() if current[name].get(k) != v}
        for name in existing
    }
    changes = {name: diff for name, diff in changes.items() if diff}
    if changes:
        resources = [
            ConfigResource(
                ConfigResource.Type.TOPIC,
                name,
                incremental_configs=[
                    ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in diff.items()
                ],
            )
            for name, diff in changes.items()
        ]
        _results(
            lambda: admin.incremental_alter_configs(resources, request_timeout=deadline.left()),
            lambda r: f"setting the config of topic {r.name}",
            deadline,
            settings,
        )
        report.reconfigured = changes
    return report


def topic_configs(
    settings: CommonSettings,
    names: Iterable[str],
    timeout: float = DEFAULT_TIMEOUT,
    admin: AdminClient | None = None,
) -> dict[str, dict[str, str]]:
    """The effective config (including broker defaults) of each named topic."""
    names = list(names)
    if not names:
        return {}
    deadline = _Deadline(timeout)
    admin = admin or admin_client(settings)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    results = _results(
        lambda: admin.describe_configs(resources, request_timeout=deadline.left()),
        lambda r: f"describing topic {r.name}",
        deadline,
        settings,
    )
    return {resource.name: {k: e.value for k, e in entries.items()} for resource, entries in results.items()}


def describe_topics(
    settings: CommonSettings,
    specs: Sequence[TopicSpec] = CONTRACT,
    *,
    all_topics: bool = False,
    timeout: float = 10.0,
) -> dict[str, TopicState]:
    """Partitions and end offsets of each contract topic (missing ones have exists=False).

    ``all_topics`` adds every other topic of the cluster, except Kafka's internal ones.
    """
    deadline = _Deadline(timeout)
    admin = admin_client(settings)
    present = _topic_partitions(settings, admin, deadline)
    by_name: dict[str, TopicSpec | None] = {settings.topic(s.name): s for s in specs}
    if all_topics:
        for name in sorted(present):
            if not name.startswith("__"):
                by_name.setdefault(name, None)

    requests = {
        TopicPartition(name, p): OffsetSpec.latest()
        for name in by_name
        if name in present
        for p in range(present[name])
    }
    ends: dict[tuple[str, int], int] = {}
    if requests:
        results = _results(
            lambda: admin.list_offsets(requests, request_timeout=deadline.left()),
            lambda tp: f"reading the end offsets of {tp.topic}",
            deadline,
            settings,
        )
        ends = {(tp.topic, tp.partition): info.offset for tp, info in results.items()}

    return {
        name: TopicState(
            name=name,
            exists=name in present,
            partitions=present.get(name, 0),
            end_offsets=tuple(ends.get((name, p), 0) for p in range(present.get(name, 0))),
            spec=spec,
        )
        for name, spec in by_name.items()
    }


def list_topics(settings: CommonSettings, timeout: float = 10.0) -> dict[str, int]:
    """Every topic of the cluster with its partition count."""
    deadline = _Deadline(timeout)
    return _topic_partitions(settings, admin_client(settings), deadline)


def delete_topics(
    settings: CommonSettings, names: Iterable[str], timeout: float = DEFAULT_TIMEOUT
) -> list[str]:
    """Delete the named topics that exist; returns those deleted. For tests and tools only."""
    deadline = _Deadline(timeout)
    admin = admin_client(settings)
    present = _topic_partitions(settings, admin, deadline)
    doomed = [name for name in names if name in present]
    if not doomed:
        return []
    futures = admin.delete_topics(
        doomed, operation_timeout=min(deadline.left(), 30), request_timeout=deadline.left()
    )
    for name, future in futures.items():
        try:
            _result(future, f"deleting topic {name}", deadline, settings)
        except TopicAdminError as exc:
            if _code(exc) != KafkaError.UNKNOWN_TOPIC_OR_PART:  # deleted meanwhile: fine
                raise
    return doomed
