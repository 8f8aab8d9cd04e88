"""Trainer settings (``POOCH_TRAINER_*``; the common ones keep their ``POOCH_*`` names)."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.common.http_limits import ApiKeyList
from libs.common.settings import CommonSettings
from services.trainer.distributed import DaskOptions
from services.trainer.train import TrainParams


class TrainerSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="POOCH_TRAINER_", frozen=True, extra="ignore")

    port: int = Field(8003, description="HTTP: POST /v1/train, GET /v1/status, /healthz, /readyz, /metrics.")
    host: str = Field("0.0.0.0", description="Address the HTTP API binds.")
    replica_id: str = Field(
        default_factory=socket.gethostname, description="Names this replica in logs, params and status."
    )
    api_keys: ApiKeyList = Field(
        default_factory=list,
        description="X-API-Key values POST /v1/train accepts, comma-separated; empty: anyone may ask.",
    )

    # -- the training window (event time: rebuilt identically by replaying `instances`) --
    window_max_count: int = Field(200_000, ge=100, description="Newest instances kept per extractor_version.")
    window_max_age_ms: int = Field(
        30 * 86_400_000,
        ge=1,
        description="Instances posted more than this before the newest one seen are dropped.",
    )
    extractor_versions: list[str] = Field(
        default_factory=list,
        description='Train only these extractor versions (JSON list, e.g. ["v1"]); empty: all of them.',
    )

    # -- triggers --
    min_instances: int = Field(1_000, ge=10, description="No model for a version with fewer instances.")
    retrain_every: int = Field(5_000, ge=1, description="Retrain after this many new instances of a version.")
    retrain_interval_s: float = Field(
        900.0, gt=0, description="Retrain after this long when any new instance arrived since the last run."
    )
    first_model_asap: bool = Field(
        True,
        description="A version that never had a model trains as soon as min_instances are there, "
        "not at the next count or interval trigger.",
    )

    retry_backoff_s: float = Field(30.0, gt=0, description="First retry after a failed run (doubles).")
    retry_backoff_max_s: float = Field(600.0, gt=0)

    # -- LightGBM and validation --
    objective: Literal["poisson", "tweedie"] = "poisson"
    tweedie_variance_power: float = Field(1.3, gt=1.0, lt=2.0)
    num_boost_round: int = Field(300, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31)
    min_data_in_leaf: int = Field(20, ge=1)
    feature_fraction: float = Field(0.9, gt=0, le=1)
    lambda_l2: float = Field(1.0, ge=0)
    max_bin: int = Field(255, ge=2)
    early_stopping_rounds: int = Field(30, ge=0, description="0: always num_boost_round rounds.")
    num_threads: int = Field(1, ge=1, description="LightGBM threads (1 leaves a core to the consuming loop).")
    seed: int = 20240601
    validation_fraction: float = Field(0.2, gt=0, lt=1, description="Newest share of the window held out.")
    min_validation_rows: int = Field(50, ge=1)
    early_stopping_fraction: float = Field(
        0.1, ge=0, lt=1, description="Newest share of the training part used to pick the number of rounds."
    )
    quantiles: int = Field(21, ge=2, description="Quantiles of validation predictions published for drift.")
    primary_metric: Literal["poisson_deviance", "mae", "rmse"] = "poisson_deviance"
    margin_vs_baseline: float = Field(
        0.02, description="Publish only when 1 - metric/baseline_metric is at least this."
    )
    margin_vs_champion: float = Field(
        0.0, description="... and 1 - metric/champion_metric is at least this (when there is a champion)."
    )

    # -- where the fit runs (docs/trainer.md#training-on-a-dask-cluster) --
    engine: Literal["local", "dask"] = Field(
        "local",
        description="local: LightGBM in this process. dask: lightgbm.dask, data-parallel on a Dask "
        "cluster, for windows whose fit outgrows one machine (same artifact format).",
    )
    dask_scheduler: str = Field(
        "",
        description="With engine=dask: the scheduler's address (tcp://host:8786); empty: a LocalCluster "
        "of dask_workers processes started by this trainer at its first run.",
    )
    dask_workers: int = Field(2, ge=1, description="LocalCluster only: worker processes.")
    dask_threads_per_worker: int = Field(
        1, ge=1, description="LocalCluster only: LightGBM threads per worker."
    )
    dask_memory_limit: str = Field("auto", description="LocalCluster only: memory per worker (e.g. 4GiB).")
    dask_parts_per_worker: int = Field(
        1, ge=1, description="Row parts scattered per worker (more: smaller transfers, same model shape)."
    )

    # -- replicas and plumbing --
    leader_group: str = Field(
        "trainer-leader", description="Consumer group whose owner of the models partition is the leader."
    )
    session_timeout_ms: int = Field(
        6_000, ge=1_000, description="A dead leader is replaced after this (broker minimum: 6 s by default)."
    )
    heartbeat_interval_ms: int = Field(500, ge=100)
    batch_size: int = Field(5_000, ge=1)
    cache_versions_kept: int = Field(
        20,
        ge=1,
        description="The Redis model cache keeps this many newest non-retired versions per extractor "
        "version (plus champion, challenger and activated ones); the leader deletes the rest.",
    )
    cache_check_interval_s: float = Field(
        5.0, gt=0, description="How often Redis is checked for lost models."
    )
    max_run_seconds: float = Field(
        1_800.0, gt=0, description="A training run longer than this fails liveness (restart, failover)."
    )

    def dask_options(self) -> DaskOptions:
        return DaskOptions(
            scheduler=self.dask_scheduler,
            workers=self.dask_workers,
            threads_per_worker=self.dask_threads_per_worker,
            memory_limit=self.dask_memory_limit,
            parts_per_worker=self.dask_parts_per_worker,
        )

    def train_params(self) -> TrainParams:
        return TrainParams(
            objective=self.objective,
            tweedie_variance_power=self.tweedie_variance_power,
            num_boost_round=self.num_boost_round,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_data_in_leaf=self.min_data_in_leaf,
            feature_fraction=self.feature_fraction,
            lambda_l2=self.lambda_l2,
            max_bin=self.max_bin,
            early_stopping_rounds=self.early_stopping_rounds,
            num_threads=self.num_threads,
            seed=self.seed,
            validation_fraction=self.validation_fraction,
            min_validation_rows=self.min_validation_rows,
            early_stopping_fraction=self.early_stopping_fraction,
            quantiles=self.quantiles,
            primary_metric=self.primary_metric,
            margin_vs_baseline=self.margin_vs_baseline,
            margin_vs_champion=self.margin_vs_champion,
        )
