"""``python -m services.featurizer.flink``: run the Flink featurizer job in a local MiniCluster
(or submit it where PyFlink's configuration points). Needs the flink extra (`make venv-flink`)."""

from __future__ import annotations

import logging
import os

from libs.common.logs import configure_logging
from services.featurizer.flink.job import JobConfig, build
from services.featurizer.flink.settings import FlinkSettings
from services.featurizer.settings import FeaturizerSettings


def main() -> None:
    featurizer, flink = FeaturizerSettings(), FlinkSettings()
    configure_logging("featurizer-flink", flink.log_level, flink.log_format)
    if flink.connector_jar is None or not flink.connector_jar.is_file():
        raise SystemExit(
            "POOCH_FLINK_CONNECTOR_JAR must name the flink-sql-connector-kafka jar "
            "(`pooch featurizer flink` fetches it from Maven Central)"
        )
    # In a local MiniCluster PyFlink runs every Python function in this one process ("loopback"),
    # one GIL for all subtasks: parallelism would add nothing. Its switch (read by
    # StreamExecutionEnvironment._open) gives each task slot a Python worker process instead.
    os.environ.setdefault("_python_worker_execution_mode", "process")
    cfg = JobConfig(
        bootstrap=flink.kafka_bootstrap,
        topic_prefix=flink.topic_prefix,
        versions=list(featurizer.versions),
        horizon_ms=featurizer.horizon_ms,
        lateness_ms=featurizer.lateness_ms,
        parallelism=flink.parallelism,
        partitions=flink.source_parallelism,
        connector_jar=flink.connector_jar,
        checkpoint_dir=flink.checkpoint_dir,
        checkpoint_interval_ms=flink.checkpoint_interval_ms,
        transaction_timeout_ms=flink.transaction_timeout_ms,
        idle_timeout_ms=flink.idle_timeout_ms,
        restore_from=flink.restore_from,
        restart_attempts=flink.restart_attempts,
        redis_url=flink.redis_url,
        redis_view=featurizer.redis_view,
        view_ttl_s=featurizer.view_ttl_s,
    )
    logging.getLogger(__name__).info("flink featurizer starting", extra={"config": repr(cfg)})
    build(cfg).execute(cfg.job_name)


if __name__ == "__main__":
    main()
