"""Supervisor settings (``POOCH_SUPERVISOR_*``; the common ones keep their ``POOCH_*`` names).

What the supervisor *judges* (windows, thresholds, actions, the experiment rule) is not here but
in the policy file (:mod:`services.supervisor.policies`, default ``policies.toml`` next to this
module): settings say how the process runs, the policy file says what it decides.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from libs.common.settings import CommonSettings

DEFAULT_POLICIES = Path(__file__).with_name("policies.toml")


class SupervisorSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="POOCH_SUPERVISOR_", frozen=True, extra="ignore")

    port: int = Field(8005, description="HTTP: /v1/models, /v1/experiments, /healthz, /readyz, /metrics.")
    host: str = Field("0.0.0.0", description="Address the HTTP API binds.")
    operator_token: SecretStr | None = Field(
        None,
        description="Bearer token an operator must send to pause, resume or activate. Unset: nobody "
        "can change anything through the API (reading needs no token).",
    )
    policies_file: Path = Field(
        DEFAULT_POLICIES, description="TOML file with windows, policies and the experiment rule."
    )
    actor: str = Field("supervisor", description="Actor written on automatic decisions.")
    evaluate_interval_s: float = Field(
        0.25, gt=0, description="How often the policies are evaluated while records flow."
    )
    poll_timeout_s: float = Field(0.1, gt=0, description="Wait for the first record of a batch.")
    batch_size: int = Field(5000, ge=1, description="Most records consumed per batch.")
    decision_timeout_s: float = Field(
        10.0, gt=0, description="How long writing a decision to models may take before it is an error."
    )
    label_horizon_s: float = Field(
        86400.0,
        ge=0,
        description="Longest label horizon of instances: on restart, predictions are re-read from "
        "this far (plus the windows) before now, so their labels can still be joined.",
    )
    rebuild_max_lookback_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="Never re-read predictions and instances older than this on restart "
        "(the predictions topic keeps a week).",
    )
    rebuild_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Longest time the rebuild from the topics may take before not-ready is final.",
    )
    redis_status: bool = Field(
        True, description="Mirror each version's status into Redis (P models:status) for online readers."
    )
    redis_timeout_s: float = Field(1.0, gt=0)
    max_pending_labels: int = Field(
        2_000_000, ge=1000, description="Predictions waiting for their label, at most (oldest dropped)."
    )
