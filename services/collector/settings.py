"""Collector settings, read from ``POOCH_COLLECTOR_*`` (Kafka and topics come from ``POOCH_*``).

Frozen: decided at start. Every limit the collector enforces is here, with its default and why.
"""

from __future__ import annotations

import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.common.http_limits import ApiKeyList

DAY_S = 86_400


class CollectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POOCH_COLLECTOR_", frozen=True, extra="ignore")

    # --- identity and serving ---------------------------------------------------------------
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="Stable id of this instance (a StatefulSet pod name): transactional.id is "
        "collector-<instance_id>, so a restarted instance fences its predecessor at once.",
    )
    host: str = Field("0.0.0.0", description="HTTP bind address.")
    port: int = Field(8001, description="HTTP port (API, probes, metrics).")
    http_enabled: bool = Field(True, description="Serve the HTTP API (probes are served either way).")
    stream_enabled: bool = Field(True, description="Run the raw-topics stream.")
    api_keys: ApiKeyList = Field(
        default_factory=list, description="Accepted X-API-Key values, comma-separated; empty: no auth."
    )

    # --- stream -------------------------------------------------------------------------------
    group_id: str = Field("collector", description="Consumer group of the raw topics (topic prefix applied).")
    batch_size: int = Field(2000, ge=1, description="Most raw records in one transaction.")
    poll_timeout_s: float = Field(0.1, gt=0, description="Longest wait for a first record of a batch.")
    batch_linger_s: float = Field(
        0.05,
        ge=0,
        description="After a batch's first record, gather more for up to this long: fewer, larger "
        "transactions under light load (each commit costs the broker a marker per partition).",
    )
    transaction_timeout_ms: int = Field(
        12_000, ge=1000, description="transaction.timeout.ms: how long a dead instance can hold readers."
    )
    state_window_s: float = Field(
        30 * DAY_S,
        gt=0,
        description="Facts of this window rebuild the state on start (dedup, dogs, pupdates).",
    )
    max_seen: int = Field(2_000_000, ge=1, description="Most event_ids remembered for dedup.")
    max_pupdates: int = Field(2_000_000, ge=1, description="Most pupdates remembered for likes.")
    max_dogs: int = Field(1_000_000, ge=1, description="Most dog profiles remembered.")
    max_dead_positions: int = Field(
        1_000_000, ge=1, description="Most dead-lettered raw positions remembered (restart idempotence)."
    )
    waiting_timeout_s: float = Field(
        10.0, gt=0, description="How long a like or profile-less pupdate waits for its pupdate or dog."
    )
    waiting_max: int = Field(
        50_000, ge=1, description="Most events waiting; beyond it the oldest is rejected."
    )
    rebuild_timeout_s: float = Field(600.0, gt=0, description="Longest state rebuild before giving up.")

    # --- validation limits --------------------------------------------------------------------
    future_tolerance_s: float = Field(
        300.0, ge=0, description="Event times up to this far ahead of the collector's clock are accepted."
    )
    like_before_tolerance_ms: int = Field(
        0, ge=0, description="A like may be this much older than its pupdate (clock skew) and still count."
    )
    max_caption_chars: int = Field(4096, ge=1)
    max_hashtags: int = Field(30, ge=0)
    max_hashtag_chars: int = Field(100, ge=1)
    max_id_chars: int = Field(128, ge=1)
    max_value_bytes: int = Field(64 * 1024, ge=1, description="Largest raw record accepted.")
    min_event_time_ms: int = Field(
        1_262_304_000_000, description="Event times before this (2010-01-01) are invalid."
    )

    # --- HTTP ---------------------------------------------------------------------------------
    http_max_body_bytes: int = Field(1024 * 1024, ge=1, description="Larger request bodies get 413.")
    http_max_batch: int = Field(1000, ge=1, description="Most events in one request.")
    http_delivery_timeout_s: float = Field(
        0.8, gt=0, description="Longest wait for Kafka's acknowledgement before answering 503."
    )
    http_linger_ms: float = Field(1.0, ge=0, description="linger.ms of the HTTP producer.")

    @property
    def transactional_id(self) -> str:
        return f"collector-{self.instance_id}"
