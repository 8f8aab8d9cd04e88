"""Where the local stack keeps things and which ports it uses, read from the environment.

Defaults follow the contract (Kafka on 127.0.0.1:9092, Redis on 127.0.0.1:6379), so services
started with default settings find the stack without any configuration.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "stack" / "pom.xml"


def _default_state_dir() -> Path:
    # In a checkout the state lives next to the code (and is git-ignored); an installed copy
    # has no repository, so it falls back to the working directory.
    base = REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()
    return base / ".state"


def _default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pooch"


class StackSettings(BaseSettings):
    """``POOCH_STACK_*`` settings, plus ``POOCH_STATE_DIR`` and ``POOCH_CACHE_DIR``."""

    model_config = SettingsConfigDict(
        env_prefix="POOCH_STACK_", frozen=True, extra="ignore", populate_by_name=True
    )

    state_dir: Path = Field(
        default_factory=_default_state_dir,
        validation_alias="POOCH_STATE_DIR",
        description="Kafka data, generated configs, logs and pid files.",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        validation_alias="POOCH_CACHE_DIR",
        description="Downloaded Kafka jars, shared by every checkout.",
    )
    host: str = Field("127.0.0.1", description="Address every process binds to.")
    kafka_port: int = Field(9092, description="Kafka client (PLAINTEXT) port.")
    controller_port: int = Field(9093, description="KRaft controller port.")
    redis_port: int = Field(6379, description="Redis port.")
    # Sized for a small 2-core machine: the broker idles around 300 MiB and one 64 MiB model
    # message plus its copies still fits in 1 GiB.
    kafka_heap: str = Field("-Xms256m -Xmx1g", description="JVM heap options for the broker.")
    kafka_jvm_opts: str = Field("", description="Extra JVM options for the broker.")
    ready_timeout: float = Field(90.0, description="Seconds to wait for a process to be ready.")
    stop_timeout: float = Field(30.0, description="Seconds between SIGTERM and SIGKILL.")

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version ``stack/pom.xml`` pins: the one place it is written down."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if not match:
        raise ValueError(f"{pom} has no <kafka.version> property")
    return match.group(1).strip()


@dataclass(frozen=True)
class StackPaths:
    """Every file the stack writes, derived from the state and cache folders."""

    state_dir: Path
    cache_dir: Path
    version: str

    @classmethod
    def of(cls, settings: StackSettings) -> StackPaths:
        return cls(
            settings.state_dir.expanduser().resolve(),
            settings.cache_dir.expanduser().resolve(),
            kafka_version(),
        )

    # -- cache (shared, reused across checkouts and --fresh) --
    @cached_property
    def jars_dir(self) -> Path:
        return self.cache_dir / f"kafka-{self.version}" / "libs"

    @cached_property
    def jars_marker(self) -> Path:
        # Written only after Maven succeeded, so a half-finished download is never used.
        return self.cache_dir / f"kafka-{self.version}" / "fetched.ok"

    # -- state --
    @cached_property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @cached_property
    def kafka_data(self) -> Path:
        return self.kafka_dir / "data"

    @cached_property
    def server_properties(self) -> Path:
        return self.kafka_dir / "server.properties"

    @cached_property
    def log4j_config(self) -> Path:
        return self.kafka_dir / "log4j2.properties"

    @cached_property
    def cluster_id_file(self) -> Path:
        return self.kafka_dir / "cluster.id"

    @cached_property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    @cached_property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @cached_property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @cached_property
    def lock_file(self) -> Path:
        return self.state_dir / "stack.lock"

    def log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"
