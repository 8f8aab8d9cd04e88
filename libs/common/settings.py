"""Settings every process shares, read from the environment (``POOCH_*``).

Services extend :class:`CommonSettings` with their own prefix (``POOCH_COLLECTOR_`` ...), so one
variable never means two things. Settings objects are frozen: configuration is decided at start.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    # An explicit alias keeps the contract's name (POOCH_KAFKA_BOOTSTRAP, ...) when a service's
    # settings subclass this with its own prefix (POOCH_COLLECTOR_...), and still accepts the
    # field name as a keyword argument.
    return AliasChoices(f"POOCH_{name.upper()}", name)


class CommonSettings(BaseSettings):
    # An empty variable means "not set" (compose passes ${VAR:-} through): the default applies.
    model_config = SettingsConfigDict(
        env_prefix="POOCH_", frozen=True, extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", validation_alias=_env("kafka_bootstrap"), description="Kafka bootstrap servers."
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=_env("redis_url"),
        description="Redis for caches and views.",
    )
    topic_prefix: str = Field(
        "", validation_alias=_env("topic_prefix"), description="Prefix for every topic name (test isolation)."
    )
    kafka_sasl_username: str | None = Field(
        None,
        validation_alias=_env("kafka_sasl_username"),
        description="SASL/PLAIN user, when the cluster needs one.",
    )
    kafka_sasl_password: SecretStr | None = Field(
        None, validation_alias=_env("kafka_sasl_password"), description="SASL/PLAIN password."
    )
    models_signing_key: SecretStr | None = Field(
        None,
        validation_alias=_env("models_signing_key"),
        description="This writer's Ed25519 private key (base64 of 32 raw bytes) for the events it puts "
        "on models: the trainer's, the supervisor's, a release key. `pooch models keygen` makes one.",
    )
    models_trusted_keys: list[str] = Field(
        default_factory=list,
        validation_alias=_env("models_trusted_keys"),
        description="Ed25519 public keys (JSON list of base64) whose model events are applied; the rest "
        "are refused. Empty: model events are not authenticated (a warning at start).",
    )
    log_level: str = Field("INFO", validation_alias=_env("log_level"), description="Root log level.")
    log_format: str = Field(
        "json", validation_alias=_env("log_format"), description="json (one object a line) or console."
    )

    # The private key is checked where the signer is made (signing.signer_from), not here: a
    # validation error would print the value it refused, and this one is a secret.

    @field_validator("models_trusted_keys")
    @classmethod
    def _trusted_keys_are_ed25519(cls, v: list[str]) -> list[str]:
        from libs.common.signing import parse_public_keys

        parse_public_keys(v)  # raises a clear KeyFormatError
        return v

    @model_validator(mode="after")
    def _sasl_needs_both(self) -> CommonSettings:
        # Half a credential used to mean a plaintext connection without a word; it is a mistake
        # in the deployment, and the process must say so at start, not talk to Kafka unencrypted.
        user = bool(self.kafka_sasl_username)
        password = bool(self.kafka_sasl_password and self.kafka_sasl_password.get_secret_value())
        if user != password:
            given, missing = (
                ("POOCH_KAFKA_SASL_USERNAME", "POOCH_KAFKA_SASL_PASSWORD")
                if user
                else ("POOCH_KAFKA_SASL_PASSWORD", "POOCH_KAFKA_SASL_USERNAME")
            )
            raise ValueError(
                f"{given} is set but {missing} is not: SASL needs both (set both for SASL_SSL, "
                "neither for a plaintext cluster)"
            )
        return self

    def topic(self, base: str) -> str:
        """The real topic name for a contract name such as ``pupdates``."""
        return f"{self.topic_prefix}{base}"

    def kafka_config(self) -> dict[str, str]:
        """librdkafka settings shared by every client of this process."""
        conf = {"bootstrap.servers": self.kafka_bootstrap}
        if self.kafka_sasl_username and self.kafka_sasl_password:  # both or neither (validated)
            conf |= {
                "security.protocol": "SASL_SSL",
                "sasl.mechanisms": "PLAIN",
                "sasl.username": self.kafka_sasl_username,
                "sasl.password": self.kafka_sasl_password.get_secret_value(),
            }
        return conf


@lru_cache(maxsize=1)
def common_settings() -> CommonSettings:
    return CommonSettings()
