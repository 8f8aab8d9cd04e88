"""Settings of the Flink featurizer job (``POOCH_FLINK_*``); the featurizer's own settings
(``POOCH_FEATURIZER_VERSIONS``, ``_HORIZON_MS``, ``_LATENESS_MS``) apply to it unchanged."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.common.settings import CommonSettings
from libs.common.topics import CONTRACT, PUPDATES


class FlinkSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="POOCH_FLINK_", frozen=True, extra="ignore")

    parallelism: int = Field(2, ge=1, description="Parallelism of the keyed stages.")
    source_parallelism: int = Field(
        next(t.partitions for t in CONTRACT if t.name == PUPDATES),
        ge=1,
        description="Readers per fact topic: its partition count, so each reader's watermark is one "
        "partition's (pupdates and likes have the same count in the contract).",
    )
    connector_jar: Path | None = Field(
        None, description="flink-sql-connector-kafka jar (`pooch featurizer flink` fetches and passes it)."
    )
    checkpoint_dir: Path = Field(Path("/tmp/pooch-flink-checkpoints"), description="Checkpoint storage.")
    checkpoint_interval_ms: int = Field(2000, ge=100, description="Checkpoint (and sink commit) interval.")
    transaction_timeout_ms: int = Field(
        300_000,
        description="Kafka transaction timeout of the exactly-once sinks: above the checkpoint interval "
        "plus a restart, below the broker's transaction.max.timeout.ms.",
    )
    idle_timeout_ms: int = Field(
        30_000,
        ge=0,
        description="Wall time without a fact after which a partition no longer holds the watermark back "
        "(Flink's idleness; the time its task is backpressured does not count). 0: never idle.",
    )
    restore_from: Path | None = Field(
        None, description="A retained checkpoint (chk-N folder) to resume from."
    )
    restart_attempts: int = Field(
        5, ge=0, description="Restarts from the last checkpoint before the job fails."
    )

    def model_post_init(self, _context) -> None:
        if self.transaction_timeout_ms <= self.checkpoint_interval_ms + 60_000:
            raise ValueError(
                "transaction_timeout_ms must exceed checkpoint_interval_ms plus a minute of restart"
            )
