"""Apache Kafka as a local single-node KRaft process (broker and controller in one JVM).

The official jars come from Maven Central (``stack/pom.xml``) into a cache folder shared by
every checkout; the storage is formatted once, and the generated configs are rewritten at each
start so a changed port or setting always applies.
"""

from __future__ import annotations

import base64
import logging
import os
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from tooling.stack import prereqs
from tooling.stack.config import POM, StackPaths, StackSettings
from tooling.stack.errors import StackError
from tooling.stack.processes import ManagedProcess, port_accepts, tail

NAME = "kafka"
# The models topic allows 64 MiB messages; the broker must accept that plus batch overhead,
# and followers and consumers must be able to fetch it.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024 + 8 * 1024 * 1024

# librdkafka reports every refused connection while the broker boots; those are expected here.
_quiet = logging.getLogger("tooling.stack.rdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def ensure_jars(paths: StackPaths, report: prereqs.Report) -> Path:
    """The folder of Kafka jars, fetched by Maven once and reused while its marker exists."""
    if paths.jars_marker.is_file() and any(paths.jars_dir.glob("kafka_2.13-*.jar")):
        return paths.jars_dir
    mvn = prereqs.maven()
    if not POM.is_file():
        raise StackError(f"{POM} is missing: the local stack runs from a checkout of the repo")
    report(f"fetching Kafka {paths.version} jars from Maven Central into {paths.jars_dir}")
    paths.jars_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.jars_dir.with_name(f"libs.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    argv = [
        mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StackError("Maven did not fetch the Kafka jars within 30 minutes") from exc
    if done.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
        shutil.rmtree(tmp, ignore_errors=True)
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise StackError(
            f"Maven could not fetch the Kafka jars (exit {done.returncode})",
            hint=f"check network access to Maven Central; output:\n{output}",
        )
    if paths.jars_marker.is_file():  # another process finished first; keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
        return paths.jars_dir
    shutil.rmtree(paths.jars_dir, ignore_errors=True)  # a partial fetch without marker
    tmp.replace(paths.jars_dir)
    paths.jars_marker.write_text(f"kafka {paths.version} fetched by {' '.join(argv)}\n")
    return paths.jars_dir


def server_properties(settings: StackSettings, paths: StackPaths) -> str:
    host, port, cport = settings.host, settings.kafka_port, settings.controller_port
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A static one-voter quorum: the controller endpoint comes from this file at each
        # start, so changing a port never strands the data formatted under the old one.
        "controller.quorum.voters": f"1@{host}:{cport}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(paths.kafka_data),
        # One node: every internal topic has one replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # Fewer internal partitions: faster first start and fewer files on a laptop.
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.num.partitions": "12",
        "num.partitions": "1",
        # Topics are created explicitly (ensure_topics); a typo must fail, not create a topic.
        "auto.create.topics.enable": "false",
        # Tests and the demo start consumer groups all the time; don't wait 3 s for each.
        "group.initial.rebalance.delay.ms": "0",
        # Threads sized for 2 cores.
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        "log.cleaner.threads": "1",
        "num.recovery.threads.per.data.dir": "1",
        "num.replica.fetchers": "1",
        # Big model artifacts on the models topic.
        "message.max.bytes": str(MAX_MESSAGE_BYTES),
        "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
        "fetch.max.bytes": str(MAX_MESSAGE_BYTES),
        "socket.request.max.bytes": str(2 * MAX_MESSAGE_BYTES),
    }
    header = "# Generated by `pooch stack` (tooling/stack/kafka.py) at every start: edits are lost.\n"
    return header + "".join(f"{k}={v}\n" for k, v in props.items())


LOG4J2 = """\
# Generated by `pooch stack`: the broker logs to stdout, which the stack appends to kafka.log.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
# Per-request and state-change chatter would drown what matters.
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
"""


def write_configs(settings: StackSettings, paths: StackPaths) -> None:
    paths.kafka_dir.mkdir(parents=True, exist_ok=True)
    paths.server_properties.write_text(server_properties(settings, paths))
    paths.log4j_config.write_text(LOG4J2)


def _new_cluster_id() -> str:
    # Kafka's own format (Uuid.randomUuid): base64url of 16 random bytes without padding,
    # never starting with '-' (it would read as a command-line option).
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def ensure_storage(
    settings: StackSettings, paths: StackPaths, java: str, jars: Path, report: prereqs.Report
) -> str:
    """Format the data folder once; the cluster id is kept for the life of the state folder."""
    if paths.cluster_id_file.is_file():
        cluster_id = paths.cluster_id_file.read_text().strip()
    else:
        cluster_id = _new_cluster_id()
    if (paths.kafka_data / "meta.properties").is_file():
        return cluster_id
    report(f"formatting Kafka storage in {paths.kafka_data} (cluster id {cluster_id})")
    paths.kafka_data.mkdir(parents=True, exist_ok=True)
    argv = [
        java, "-Xmx256m", f"-Dlog4j2.configurationFile={paths.log4j_config}",
        "-cp", f"{jars}/*", "kafka.tools.StorageTool", "format",
        "-t", cluster_id, "-c", str(paths.server_properties),
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    except subprocess.TimeoutExpired as exc:
        raise StackError("formatting the Kafka storage took more than 3 minutes") from exc
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise StackError(
            f"formatting the Kafka storage failed (exit {done.returncode})",
            hint=f"`pooch stack up --fresh` starts from empty storage; output:\n{output}",
        )
    paths.cluster_id_file.write_text(cluster_id + "\n")
    return cluster_id


def argv(settings: StackSettings, paths: StackPaths, java: str, jars: Path) -> list[str]:
    return [
        java,
        *shlex.split(settings.kafka_heap),
        # G1 with short pauses, and a dead JVM instead of a half-alive one on OOM (the
        # supervisor of this process, us, then sees it down).
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        *shlex.split(settings.kafka_jvm_opts),
        f"-Dlog4j2.configurationFile={paths.log4j_config}",
        "-cp",
        f"{jars}/*",
        "kafka.Kafka",
        str(paths.server_properties),
    ]


def admin_probe(settings: StackSettings) -> AdminClient:
    return AdminClient(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            # Retry connections quickly while the broker boots (the default backs off to 10 s).
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 500,
            "socket.connection.setup.timeout.ms": 3000,
            "logger": _quiet,
        }
    )


def answers(settings: StackSettings, admin: AdminClient | None = None, timeout: float = 3.0) -> bool:
    """True when the broker returns metadata naming at least one live broker."""
    if not port_accepts(settings.host, settings.kafka_port):
        return False
    try:
        metadata = (admin or admin_probe(settings)).list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def wait_ready(settings: StackSettings, process: ManagedProcess) -> None:
    """Poll metadata until the broker answers, the process dies, or the deadline passes."""
    deadline = time.monotonic() + settings.ready_timeout
    admin = None
    while True:
        if process.pid() is None:
            raise StackError(
                "Kafka exited while starting",
                hint="`pooch stack up --fresh` wipes its data if the storage is broken",
                log=process.log_file,
                log_tail=tail(process.log_file),
            )
        if port_accepts(settings.host, settings.kafka_port):
            admin = admin or admin_probe(settings)
            remaining = deadline - time.monotonic()
            if answers(settings, admin, timeout=max(0.5, min(3.0, remaining))):
                return
        if time.monotonic() > deadline:
            raise StackError(
                f"Kafka did not answer on {settings.kafka_bootstrap} within {settings.ready_timeout:g} s",
                hint="raise POOCH_STACK_READY_TIMEOUT on a slow machine",
                log=process.log_file,
                log_tail=tail(process.log_file),
            )
        time.sleep(0.25)
