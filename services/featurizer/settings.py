"""Featurizer settings (``POOCH_FEATURIZER_*``)."""

from __future__ import annotations

import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.common.features.extractors import EXTRACTORS, LIVE_VERSION
from libs.common.settings import CommonSettings


class FeaturizerSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="POOCH_FEATURIZER_", frozen=True, extra="ignore")

    host: str = Field("0.0.0.0", description="Address /healthz, /readyz and /metrics bind.")
    port: int = Field(8002, description="Port of /healthz, /readyz, /metrics.")
    versions: list[str] = Field(
        default_factory=lambda: [LIVE_VERSION],
        description='Extractor versions side by side as JSON, live first: \'["v1","v2"]\'.',
    )
    horizon_ms: int = Field(86_400_000, description="Label horizon in event time (24 h in production).")
    lateness_ms: int = Field(2_000, description="How far out of event-time order facts may arrive.")
    idle_flush_ms: int = Field(
        3_000,
        description="Wall time every input must be caught up before the watermark jumps to the newest fact.",
    )
    group_id: str = Field(
        "featurizer", description="Consumer group deciding which worker emits which partitions."
    )
    instance_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="Names this replica (default: the hostname, a StatefulSet pod's name): "
        "transactional.id = <prefix>featurizer-<instance_id>. Stable across restarts of one replica, "
        "so the restarted one fences its predecessor; distinct per replica (two on one host set it).",
    )
    batch_size: int = Field(2000, description="Facts read per cycle.")
    redis_view: bool = Field(True, description="Maintain the online view in Redis for the what-if API.")
    view_ttl_s: int = Field(
        7 * 86_400,
        ge=0,
        description="TTL of every online-view key; the whole view is rewritten every third of it, so "
        "only keys no featurizer writes any more expire (0: keys never expire).",
    )
    view_check_s: float = Field(
        5.0,
        gt=0,
        description="How often a worker checks its epoch key and rewrites the whole view when Redis lost "
        "it (FLUSHALL, a restart without persistence, eviction).",
    )
    view_rewrite_batch: int = Field(
        5000, ge=1, description="Keys written per loop cycle while the whole view is rewritten."
    )

    def model_post_init(self, _context) -> None:
        unknown = [v for v in self.versions if v not in EXTRACTORS]
        if unknown:
            raise ValueError(f"unknown extractor versions {unknown}; known: {sorted(EXTRACTORS)}")

    @property
    def transactional_id(self) -> str:
        return self.topic(f"featurizer-{self.instance_id}")
