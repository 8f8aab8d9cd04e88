"""Scorer settings (``POOCH_SCORER_*``; the common ones keep their ``POOCH_*`` names)."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from libs.common.features.extractors import LIVE_VERSION
from libs.common.http_limits import ApiKeyList
from libs.common.models_ledger import ARMS
from libs.common.settings import CommonSettings


class ScorerSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="POOCH_SCORER_", frozen=True, extra="ignore")

    role: Literal["all", "stream", "whatif"] = Field(
        "all",
        description="all: the stream and the what-if API in one process; stream or whatif alone "
        "(separate processes keep the API's latency free of the stream's batches).",
    )
    port: int = Field(8004, description="HTTP: POST /v1/predict, /healthz, /readyz, /metrics.")
    host: str = Field("0.0.0.0", description="Address the HTTP API binds.")
    instance_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="Names this scorer process (default: the hostname, a StatefulSet pod's name): "
        "transactional.id = <prefix>scorer-<instance_id>. Stable across restarts of one instance, so "
        "the restarted one fences its predecessor at once; distinct per process (two on one host set it).",
    )
    group_id: str = Field("scorer", description="Consumer group sharing the features partitions.")
    api_keys: ApiKeyList = Field(
        default_factory=list,
        description="X-API-Key values POST /v1/predict accepts, comma-separated; empty: anyone may ask.",
    )

    # -- the stream --
    batch_size: int = Field(5000, ge=1, description="Most features records scored per transaction.")
    poll_timeout_s: float = Field(0.1, gt=0, description="Wait for the first record of a batch.")
    transaction_timeout_s: float = Field(30.0, gt=0)
    registry_sync_timeout_s: float = Field(
        30.0,
        ge=0,
        description="How long the stream waits for the models topic to be read to its end before "
        "scoring with what it has (the Redis seed, or the historical baseline).",
    )

    # -- experiment arms --
    arm_weights: dict[str, float] = Field(
        default_factory=lambda: {"champion": 1.0, "challenger": 0.0, "baseline": 0.0},
        description="Traffic per arm until an ACTIVATED record says otherwise, as JSON: "
        '\'{"champion":0.8,"challenger":0.1,"baseline":0.1}\'.',
    )
    routing_salt: str = Field(
        "pooch-arms-v1", description="Salt of the stable dog_id hash; changing it reshuffles every dog."
    )

    # -- models --
    predict_threads: int = Field(1, ge=1, description="LightGBM threads per predict call.")
    probe_on_load: bool = Field(
        True,
        description="Predict one row when a model is loaded; a model that cannot is refused and the "
        "last good version serves instead.",
    )
    loaded_models_kept: int = Field(
        8, ge=1, description="Parsed models kept in memory beyond those serving (least recently used go)."
    )
    artifacts_kept: int = Field(
        8,
        ge=1,
        description="Newest non-retired versions per extractor version whose compressed artifacts stay in "
        "memory, beside champion, challenger and activated ones; an older one selected again is fetched "
        "back from the Redis model cache (refused, until a restart, when it is not there).",
    )
    compile_models: bool = Field(
        True,
        description="Compile each loaded model to native code with lleaves, in a child process; LightGBM "
        "predicts until it is done and whenever compiling fails (services/scorer/compiled.py).",
    )
    compile_cache_dir: Path = Field(
        Path(tempfile.gettempdir()) / "pooch-scorer-compiled",
        description="Where compiled models are kept, by artifact sha256 (must be writable).",
    )
    compile_timeout_s: float = Field(300.0, gt=0, description="A compile that takes longer is abandoned.")
    seed_from_redis: bool = Field(True, description="Seed the registry from the Redis model cache at start.")
    write_back_cache: bool = Field(
        True, description="Put models read from the topic that the Redis cache lacks into it (best effort)."
    )
    redis_timeout_s: float = Field(1.0, gt=0, description="Socket timeout of the registry's Redis calls.")

    # -- what-if --
    whatif_extractor_version: str = Field(
        LIVE_VERSION, description="Extractor version the what-if API featurizes drafts with by default."
    )
    whatif_deadline_ms: float = Field(
        25.0, gt=0, description="Per-request deadline: past it, the answer is the fallback, never late."
    )
    whatif_state_budget: float = Field(
        0.6, gt=0, le=1, description="Share of the deadline the online-view read may take."
    )
    whatif_shed_after_ms: float = Field(
        100.0,
        ge=0,
        description="Load shedding: a what-if request that has waited this long in the server before "
        "its handler runs (an overloaded event loop) is answered at once with 503 and Retry-After "
        "instead of being worked on late; 0 never sheds. Below it, one queued past its deadline "
        "(which counts from arrival) gets the fast fallback: the model on default state, no Redis "
        "read. Shedding is for real overload: an app backs off a whole second on a 503.",
    )
    whatif_retry_after_s: int = Field(1, ge=0, description="Retry-After (seconds) of a shed request's 503.")

    @field_validator("arm_weights")
    @classmethod
    def _known_arms(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(ARMS)
        if unknown:
            raise ValueError(f"unknown arms {sorted(unknown)}; known: {', '.join(ARMS)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("arm weights must be >= 0 with a positive sum")
        return v

    @property
    def transactional_id(self) -> str:
        return self.topic(f"scorer-{self.instance_id}")
