"""The featurizer as an Apache Flink job (PyFlink DataStream API): docs/flink.md.

Sources: one Kafka source per fact topic, read_committed, with one reader per partition, so the
watermark (bounded out-of-orderness = the featurizer's ``lateness_ms``) is per partition as in
the current engine; Flink takes the minimum across partitions and carries it through every
shuffle. Stages: ``Labels`` by pupdate, ``Subjects`` by what each statistic is about (dog,
(version, hashtag), global), ``Assemble`` by pupdate (services/featurizer/flink/functions.py).
State lives in Flink's state backend and is checkpointed; the two Kafka sinks write in
exactly-once mode (a transaction per checkpoint), keyed by pupdate_id, in the same Avro
single-object encoding (services/featurizer/outputs.py) as the current engine.

Bytes cross the Java/Python boundary as ISO-8859-1 strings: that charset maps every byte to one
code point and back, so the Avro bytes are carried unchanged without a Java deserializer of ours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pyflink.common import Configuration, Duration, Row, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment
from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource
from pyflink.table import StreamTableEnvironment

from libs.common.serde import SerdeError, serde
from libs.common.topics import FEATURES, INSTANCES, LIKES, PUPDATES
from services.featurizer.flink.functions import (
    CLOSE,
    FEATURES_KIND,
    POST,
    SNAP,
    Assemble,
    Labels,
    Subjects,
    ViewSink,
    subject_keys,
)

log = logging.getLogger(__name__)
BYTES = "ISO-8859-1"


@dataclass(frozen=True)
class JobConfig:
    bootstrap: str
    topic_prefix: str
    versions: list[str]
    horizon_ms: int
    lateness_ms: int
    parallelism: int
    partitions: int  # of each fact topic: one source reader each
    connector_jar: Path
    checkpoint_dir: Path
    checkpoint_interval_ms: int = 2000
    # Above the checkpoint interval plus a restart: a transaction left open by a failed attempt
    # must outlive the restart that commits or aborts it (and stay below the broker's maximum).
    transaction_timeout_ms: int = 300_000
    # A partition without facts for this long is left out of the watermark's minimum, as the
    # current engine leaves out a caught-up partition; 0 keeps every partition in (docs/flink.md).
    idle_timeout_ms: int = 30_000
    restore_from: Path | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_view: bool = True  # the online view of the scorer's what-if API
    view_ttl_s: int = 7 * 86_400
    restart_attempts: int = 5
    group_id: str = "featurizer-flink"
    job_name: str = "pooch-featurizer"

    def topic(self, base: str) -> str:
        return f"{self.topic_prefix}{base}"


class EventTime(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp: int) -> int:
        rec = value[1]
        return int(rec["posted_at"] if value[0] == "pupdate" else rec["liked_at"])


def _decoder(kind: str):
    codec = serde(kind)

    def decode(text: str):
        try:
            rec = codec.decode(text.encode(BYTES))
        except SerdeError:
            # The current engine dead-letters these; the collector only writes valid facts, so
            # here they are dropped and counted by the Flink metrics of the filter below.
            return None
        return kind, rec

    return decode


def _fanout(versions: list[str]):
    def fan(event):
        pupdate = event[1]
        for key in subject_keys(pupdate, versions):
            if event[0] == POST:
                yield POST, key, pupdate
            else:
                yield CLOSE, key, pupdate, event[2]

    return fan


def configuration(cfg: JobConfig) -> Configuration:
    conf = Configuration()
    conf.set_string("pipeline.jars", cfg.connector_jar.resolve().as_uri())
    conf.set_string("parallelism.default", str(cfg.parallelism))
    conf.set_string("state.backend.type", "hashmap")
    conf.set_string("execution.checkpointing.dir", cfg.checkpoint_dir.resolve().as_uri())
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    conf.set_string("execution.checkpointing.num-retained", "2")
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", str(cfg.restart_attempts))
    conf.set_string("restart-strategy.fixed-delay.delay", "1 s")
    conf.set_string("taskmanager.numberOfTaskSlots", str(max(cfg.parallelism, cfg.partitions)))
    # Keyed state is read from the JVM's backend through Beam's state API; the Python side caches
    # it per key, and the default (1,000 keys) misses on every few pupdates of a busy stream.
    conf.set_string("python.state.cache-size", "200000")
    conf.set_string("python.map-state.read-cache-size", "200000")
    conf.set_string("python.map-state.write-cache-size", "200000")
    if cfg.restore_from is not None:
        conf.set_string("execution.state-recovery.path", cfg.restore_from.resolve().as_uri())
    return conf


def _source(cfg: JobConfig, base: str) -> KafkaSource:
    return (
        KafkaSource.builder()
        .set_bootstrap_servers(cfg.bootstrap)
        .set_topics(cfg.topic(base))
        .set_group_id(cfg.topic(cfg.group_id))
        # First start: the whole history (the facts are the record); a restore resumes at the
        # offsets in the checkpoint.
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_value_only_deserializer(SimpleStringSchema(BYTES))
        .set_property("isolation.level", "read_committed")
        .set_property("partition.discovery.interval.ms", "60000")
        .build()
    )


def _sink_table(t_env: StreamTableEnvironment, cfg: JobConfig, name: str, base: str) -> None:
    t_env.execute_sql(
        f"""
        CREATE TEMPORARY TABLE {name} (k BYTES, v BYTES) WITH (
          'connector' = 'kafka',
          'topic' = '{cfg.topic(base)}',
          'properties.bootstrap.servers' = '{cfg.bootstrap}',
          'key.format' = 'raw',
          'key.fields' = 'k',
          'value.format' = 'raw',
          'value.fields-include' = 'EXCEPT_KEY',
          'sink.delivery-guarantee' = 'exactly-once',
          'sink.transactional-id-prefix' = '{cfg.topic(cfg.group_id)}-{base}',
          'properties.transaction.timeout.ms' = '{cfg.transaction_timeout_ms}'
        )"""
    )


def build(cfg: JobConfig) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment.get_execution_environment(configuration(cfg))
    env.enable_checkpointing(cfg.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    watermarks = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(cfg.lateness_ms))
    if cfg.idle_timeout_ms > 0:
        watermarks = watermarks.with_idleness(Duration.of_millis(cfg.idle_timeout_ms))
    watermarks = watermarks.with_timestamp_assigner(EventTime())

    # Each reader's chain runs once per partition, forward, so each watermark generator sees
    # exactly one partition in offset order. The parallelism is the environment's while the chain
    # is built: assign_timestamps_and_watermarks with a Python assigner adds three operators and
    # set_parallelism on the stream it returns reaches only the last; the generator then ran at
    # the keyed stages' parallelism behind a rebalance, fed several partitions at once, and one
    # partition ahead of another moved the watermark past likes still to come (test_flink_plan).
    env.set_parallelism(cfg.partitions)
    facts = []
    for base, kind in ((PUPDATES, "pupdate"), (LIKES, "like")):
        raw = env.from_source(_source(cfg, base), WatermarkStrategy.no_watermarks(), f"{base}-source")
        decoded = (
            raw.map(_decoder(kind))
            .filter(lambda v: v is not None)
            .assign_timestamps_and_watermarks(watermarks)
        )
        facts.append(decoded)
    env.set_parallelism(cfg.parallelism)

    labelled = (
        facts[0]
        .union(facts[1])
        .key_by(lambda v: v[1]["pupdate_id"], key_type=Types.STRING())
        .process(Labels(cfg.horizon_ms))
        .name("labels-by-pupdate")
    )
    view = ViewSink(cfg.redis_url, cfg.topic_prefix, cfg.view_ttl_s) if cfg.redis_view else None
    snaps = (
        labelled.flat_map(_fanout(cfg.versions))
        .key_by(lambda e: e[1], key_type=Types.STRING())
        .process(Subjects(view))
        .name("stats-by-subject")
    )
    outputs = (
        labelled.union(snaps)
        .key_by(lambda e: e[1] if e[0] == SNAP else e[1]["pupdate_id"], key_type=Types.STRING())
        .process(Assemble(cfg.versions, cfg.horizon_ms))
        .name("assemble-by-pupdate")
    )

    t_env = StreamTableEnvironment.create(env)
    row = Types.ROW_NAMED(
        ["k", "v"], [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.PRIMITIVE_ARRAY(Types.BYTE())]
    )
    statements = t_env.create_statement_set()
    for name, base, kind in (
        ("features_out", FEATURES, FEATURES_KIND),
        ("instances_out", INSTANCES, "instance"),
    ):
        _sink_table(t_env, cfg, name, base)
        rows = outputs.filter(lambda o, kind=kind: o[0] == kind).map(
            lambda o: Row(o[1].encode(), o[2]), output_type=row
        )
        statements.add_insert(name, t_env.from_data_stream(rows))
    statements.attach_as_datastream()
    return env
