"""LocalStack: start, stop and inspect the local Kafka and Redis (the API behind ``pooch stack``).

Every operation is idempotent and guarded by a file lock in the state folder, so two commands
(say ``make test`` and a developer's ``pooch stack up``) never start two brokers on one folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from libs.common.admin import EnsureReport, TopicAdminError, TopicState, describe_topics, ensure_topics
from libs.common.settings import CommonSettings
from tooling.stack import kafka, prereqs, redis, services
from tooling.stack.config import StackPaths, StackSettings
from tooling.stack.errors import StackError
from tooling.stack.processes import ManagedProcess, cmdline, cwd, describe_pid, port_free, port_owner
from tooling.stack.signing_keys import LocalKeys
from tooling.stack.supervision import Program, SupervisedService, Supervision

log = logging.getLogger(__name__)

INFRA = (kafka.NAME, redis.NAME)
SERVICES = tuple(s.name for s in services.available())
COMPONENTS = INFRA + SERVICES
# Redis first: it is quick, and a missing redis-server is reported before the slow Kafka start.
# Services come last, and stopping goes the other way round (services first).
START_ORDER = (redis.NAME, kafka.NAME, *SERVICES)
LOCK_WAIT_SECONDS = 1800  # a first run may spend minutes in Maven while holding the lock


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int | None
    ports: tuple[int, ...]
    state: str  # up | down | unresponsive | port taken
    detail: str = ""

    @property
    def up(self) -> bool:
        return self.state == "up"


@dataclass(frozen=True)
class StackStatus:
    processes: list[ProcessStatus]
    kafka_bootstrap: str
    redis_url: str
    state_dir: Path
    topic_prefix: str
    topics: dict[str, TopicState] | None = None  # None when Kafka could not be asked
    topics_error: str | None = None

    @property
    def all_up(self) -> bool:
        return all(p.up for p in self.processes)

    @property
    def infra_up(self) -> bool:
        """Kafka and Redis answer (what tests need; they start their own services)."""
        return all(p.up for p in self.processes if p.name in INFRA)

    def process(self, name: str) -> ProcessStatus:
        return next(p for p in self.processes if p.name == name)


@dataclass
class UpResult:
    started: list[str] = field(default_factory=list)  # components this call started
    already_running: list[str] = field(default_factory=list)
    topics: EnsureReport | None = None


class LocalStack:
    """The local Kafka (KRaft, single node) and Redis of one state folder.

    ``LocalStack()`` reads ``POOCH_STATE_DIR``, ``POOCH_CACHE_DIR`` and ``POOCH_STACK_*``;
    keyword arguments (``state_dir=``, ``kafka_port=`` ...) override them.
    """

    def __init__(
        self,
        settings: StackSettings | None = None,
        *,
        report: Callable[[str], None] | None = None,
        **overrides: Any,
    ) -> None:
        if settings is not None and overrides:
            # Re-validate (model_copy would not), so "state_dir='/tmp/x'" becomes a Path.
            settings = type(settings)(**(settings.model_dump() | overrides))
        self.settings = settings or StackSettings(**overrides)
        ports = [self.settings.kafka_port, self.settings.controller_port, self.settings.redis_port]
        if len(set(ports)) != len(ports):
            raise StackError(f"the Kafka, controller and Redis ports must differ, got {ports}")
        self.paths = StackPaths.of(self.settings)
        self.report = report or log.info
        self._kafka = ManagedProcess(kafka.NAME, self.paths.pid_file(kafka.NAME), self.paths.log(kafka.NAME))
        self._redis = ManagedProcess(redis.NAME, self.paths.pid_file(redis.NAME), self.paths.log(redis.NAME))
        # Services run under the stack's supervisord: restarted when they crash, with backoff.
        self._supervision = Supervision(
            self.paths.state_dir / "supervision",
            [
                Program(name, services.by_name(name).module, {}, services.REPO, autostart=False)
                for name in SERVICES
            ],
        )
        self._services = {name: SupervisedService(name, self._supervision) for name in SERVICES}
        # Extra environment for the services this object starts (``pooch demo`` sets its horizons).
        self.service_env: dict[str, str] = {}
        self._lock_depth = 0

    # -- addresses --
    @property
    def kafka_bootstrap(self) -> str:
        return self.settings.kafka_bootstrap

    @property
    def redis_url(self) -> str:
        return self.settings.redis_url

    @property
    def state_dir(self) -> Path:
        return self.paths.state_dir

    def common_settings(self, topic_prefix: str | None = None) -> CommonSettings:
        """Settings pointing at this stack (topic prefix from the environment unless given)."""
        kwargs: dict[str, Any] = {"kafka_bootstrap": self.kafka_bootstrap, "redis_url": self.redis_url}
        if topic_prefix is not None:
            kwargs["topic_prefix"] = topic_prefix
        return CommonSettings(**kwargs)

    def kafka_pid(self) -> int | None:
        return self._kafka.pid()

    def redis_pid(self) -> int | None:
        return self._redis.pid()

    # -- whole stack --
    def up(
        self,
        *,
        fresh: bool = False,
        partitions: int | None = None,
        topic_prefix: str | None = None,
        components: Sequence[str] = INFRA,
        create_topics: bool = True,
    ) -> UpResult:
        """Start what is not running, wait until it answers, then ensure the contract topics.

        By default Kafka and Redis only (what tests and tools need); ``pooch stack up`` asks for
        every component, services included.

        A no-op (apart from the topic check) when everything is already up. ``fresh`` first
        stops everything and wipes Kafka's and Redis's data (the Maven cache is kept).
        """
        unknown = set(components) - set(COMPONENTS)
        if unknown:
            raise StackError(f"unknown component(s) {sorted(unknown)}; known: {list(COMPONENTS)}")
        result = UpResult()
        with self._locked():
            if fresh:
                self.wipe()
            starters = {kafka.NAME: self.start_kafka, redis.NAME: self.start_redis}
            starters |= {name: (lambda n=name: self.start_service(n)) for name in SERVICES}
            # Refuse before starting anything if a port is taken by a stranger.
            for name in components:
                if not self._running(name):
                    self._check_ports(name)
            try:
                for name in (n for n in START_ORDER if n in components):
                    (result.started if starters[name]() else result.already_running).append(name)
                    # Topics before any service: services never auto-create them.
                    if name == kafka.NAME and create_topics:
                        settings = self.common_settings(topic_prefix)
                        try:
                            result.topics = ensure_topics(settings, partitions=partitions)
                        except TopicAdminError as exc:
                            raise StackError(f"creating the contract topics failed: {exc}") from exc
            except BaseException:
                # Leave nothing half-started by this call behind (Ctrl-C included).
                for name in result.started:
                    self._stop(name)
                raise
        return result

    def down(self, components: Sequence[str] = COMPONENTS) -> list[str]:
        """Stop the named components in reverse start order; returns those that were running."""
        stopped = []
        with self._locked():
            for name in reversed(START_ORDER):
                if name in components and self._stop(name):
                    stopped.append(name)
        return stopped

    def wipe(self) -> None:
        """Stop everything and delete Kafka's data and Redis's folder (``--fresh``)."""
        with self._locked():
            self.down(COMPONENTS)
            self.report(f"wiping Kafka and Redis data in {self.state_dir}")
            shutil.rmtree(self.paths.kafka_dir, ignore_errors=True)
            shutil.rmtree(self.paths.redis_dir, ignore_errors=True)

    def is_up(self) -> bool:
        return self.status(topics=False).infra_up

    def status(self, *, topics: bool = True, topic_prefix: str | None = None) -> StackStatus:
        settings = self.common_settings(topic_prefix)
        s = self.settings
        procs = [
            self._process_status(kafka.NAME, lambda: kafka.answers(s)),
            self._process_status(redis.NAME, lambda: redis.answers(s)),
        ]
        procs += [
            self._process_status(name, lambda n=name: services.answers(services.by_name(n)))
            for name in SERVICES
        ]
        status = StackStatus(
            processes=procs,
            kafka_bootstrap=self.kafka_bootstrap,
            redis_url=self.redis_url,
            state_dir=self.state_dir,
            topic_prefix=settings.topic_prefix,
        )
        if not topics:
            return status
        # A broker of another state folder on the same address still has the topics to show.
        if not procs[0].up and not kafka.answers(s):
            return replace(status, topics_error="Kafka is not answering")
        try:
            return replace(status, topics=describe_topics(settings))
        except TopicAdminError as exc:
            return replace(status, topics_error=str(exc))

    # -- single components (tests use these for "broker stopped" scenarios) --
    def start_kafka(self) -> bool:
        """Start Kafka unless it runs; wait until it answers. True if this call started it."""
        with self._locked():
            if self._running(kafka.NAME):
                kafka.wait_ready(self.settings, self._kafka)
                return False
            self._check_ports(kafka.NAME)
            java = prereqs.java()
            jars = kafka.ensure_jars(self.paths, self.report)
            kafka.write_configs(self.settings, self.paths)
            kafka.ensure_storage(self.settings, self.paths, java, jars, self.report)
            self.report(f"starting Kafka on {self.kafka_bootstrap} (log: {self._kafka.log_file})")
            t0 = time.monotonic()
            self._kafka.start(kafka.argv(self.settings, self.paths, java, jars), cwd=self.paths.kafka_dir)
            self._wait_or_stop(kafka.NAME, lambda: kafka.wait_ready(self.settings, self._kafka))
            self.report(f"Kafka is ready ({time.monotonic() - t0:.1f} s)")
            return True

    def stop_kafka(self) -> bool:
        with self._locked():
            return self._stop(kafka.NAME)

    def start_redis(self) -> bool:
        """Start Redis unless it runs; wait for PING. True if this call started it."""
        with self._locked():
            if self._running(redis.NAME):
                redis.wait_ready(self.settings, self._redis)
                return False
            self._check_ports(redis.NAME)
            server = prereqs.redis_server(self.report)
            self.paths.redis_dir.mkdir(parents=True, exist_ok=True)
            self.report(f"starting Redis on {self.redis_url} (log: {self._redis.log_file})")
            self._redis.start(redis.argv(self.settings, self.paths, server), cwd=self.paths.redis_dir)
            self._wait_or_stop(redis.NAME, lambda: redis.wait_ready(self.settings, self._redis))
            return True

    def stop_redis(self) -> bool:
        with self._locked():
            return self._stop(redis.NAME)

    def start_service(self, name: str) -> bool:
        """Start one service unless it runs; wait for its /readyz. True if this call started it."""
        spec = services.by_name(name)
        process = self._services[name]
        with self._locked():
            if self._running(name):
                return False
            self._check_ports(name)
            keys = LocalKeys.in_folder(self.paths.state_dir).environment(name)
            env = services.environment(spec, self.kafka_bootstrap, self.redis_url, keys | self.service_env)
            self.report(f"starting {name} on :{spec.port} (log: {process.log_file})")
            process.start(services.argv(spec), cwd=services.REPO, env=env)
            self._wait_or_stop(name, lambda: services.wait_ready(spec, process, self.settings.ready_timeout))
            return True

    def stop_service(self, name: str) -> bool:
        with self._locked():
            return self._stop(name)

    def prerequisites(self) -> None:
        """Check java and mvn, install redis-server when missing (root), fetch the Kafka jars."""
        prereqs.java()
        prereqs.redis_server(self.report)
        kafka.ensure_jars(self.paths, self.report)

    # -- internals --
    def _process(self, name: str) -> ManagedProcess | SupervisedService:
        return {kafka.NAME: self._kafka, redis.NAME: self._redis}.get(name) or self._services[name]

    def _stop(self, name: str) -> bool:
        process = self._process(name)
        pid = process.pid()
        if pid is None:
            return False
        self.report(f"stopping {name} (pid {pid})")
        process.stop(self.settings.stop_timeout)
        return True

    def _wait_or_stop(self, name: str, wait: Callable[[], None]) -> None:
        try:
            wait()
        except BaseException:
            self._process(name).stop(self.settings.stop_timeout)
            raise

    def _ports(self, name: str) -> tuple[int, ...]:
        s = self.settings
        if name in self._services:
            return (services.by_name(name).port,)
        return {kafka.NAME: (s.kafka_port, s.controller_port), redis.NAME: (s.redis_port,)}[name]

    def _is_ours(self, name: str, pid: int) -> bool:
        """Whether a pid is this state folder's process (its pid file may have been lost)."""
        if name == kafka.NAME:
            return str(self.paths.server_properties) in cmdline(pid)
        if name in self._services:
            line = cmdline(pid)
            return f"-m services.{name}" in line or (
                "tooling.stack.launch" in line and f" services.{name}" in line
            )
        # redis-server rewrites its command line, but it runs in our --dir.
        return cwd(pid) == self.paths.redis_dir

    def _running(self, name: str) -> bool:
        """Ours and running, adopting it when only its pid file was lost."""
        process = self._process(name)
        if process.pid() is not None:
            return True
        port = self._ports(name)[0]
        if port_free(self.settings.host, port):
            return False
        pid = port_owner(port)
        if pid is None or not self._is_ours(name, pid):
            return False
        self.report(f"found this stack's {name} running as pid {pid} without a pid file: adopting it")
        process.adopt(pid)
        return True

    def _check_ports(self, name: str) -> None:
        for port in self._ports(name):
            if port_free(self.settings.host, port):
                continue
            owner = port_owner(port)
            raise StackError(
                f"cannot start {name}: port {port} on {self.settings.host} is taken by "
                f"{describe_pid(owner)}, which is not this stack's {name} (state folder {self.state_dir})",
                hint=(
                    "stop that process, or point this stack at free ports with "
                    "POOCH_STACK_KAFKA_PORT / POOCH_STACK_CONTROLLER_PORT / POOCH_STACK_REDIS_PORT "
                    "(and POOCH_KAFKA_BOOTSTRAP / POOCH_REDIS_URL for the services). If it is the "
                    "stack of another checkout, stop it there or set POOCH_STATE_DIR to its folder."
                ),
            )

    def _process_status(self, name: str, answers: Callable[[], bool]) -> ProcessStatus:
        ports = self._ports(name)
        pid = self._process(name).pid() if self._running(name) else None
        if pid is not None:
            if answers():
                return ProcessStatus(name, pid, ports, "up")
            return ProcessStatus(name, pid, ports, "unresponsive", "running but not answering")
        for port in ports:
            if not port_free(self.settings.host, port):
                owner = port_owner(port)
                return ProcessStatus(name, owner, ports, "port taken", f"port {port}: {describe_pid(owner)}")
        return ProcessStatus(name, None, ports, "down")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock_depth:  # re-entrant: up() calls start_kafka() under the same lock
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.paths.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.paths.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._acquire(fd)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _acquire(self, fd: int) -> None:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if not told:
                    self.report(f"waiting for another `pooch stack` command on {self.state_dir}")
                    told = True
                if time.monotonic() > deadline:
                    raise StackError(
                        f"another `pooch stack` command has held {self.paths.lock_file} "
                        f"for {LOCK_WAIT_SECONDS} s"
                    ) from None
                time.sleep(0.2)
