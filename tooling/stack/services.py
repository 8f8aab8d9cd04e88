"""The Pooch Predictor services as local processes of the stack (``python -m services.<name>``).

Each gets a pid file and a log in the state folder like Kafka and Redis, and is ready when its
``/readyz`` answers 200 (partitions assigned, state or model loaded). Only services whose
package has a ``__main__`` are known, so the stack grows with the code base.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from tooling.stack.errors import StackError
from tooling.stack.processes import ManagedProcess, tail

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int

    @property
    def module(self) -> str:
        return f"services.{self.name}"

    @property
    def port_env(self) -> str:
        return f"POOCH_{self.name.upper()}_PORT"


ALL = (
    ServiceSpec("collector", 8001),
    ServiceSpec("featurizer", 8002),
    ServiceSpec("trainer", 8003),
    ServiceSpec("scorer", 8004),
    ServiceSpec("supervisor", 8005),
)


def _with_port_override(spec: ServiceSpec) -> ServiceSpec:
    """``POOCH_STACK_<NAME>_PORT`` moves a service off its contract port (a second stack beside one)."""
    port = os.environ.get(f"POOCH_STACK_{spec.name.upper()}_PORT")
    return replace(spec, port=int(port)) if port else spec


def available() -> tuple[ServiceSpec, ...]:
    return tuple(
        _with_port_override(s) for s in ALL if importlib.util.find_spec(f"{s.module}.__main__") is not None
    )


def by_name(name: str) -> ServiceSpec:
    return _with_port_override(next(s for s in ALL if s.name == name))


def argv(spec: ServiceSpec) -> list[str]:
    return [sys.executable, "-m", spec.module]


def environment(
    spec: ServiceSpec, kafka_bootstrap: str, redis_url: str, extra: Mapping[str, str]
) -> dict[str, str]:
    env = dict(os.environ) | {
        "POOCH_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "POOCH_REDIS_URL": redis_url,
        spec.port_env: str(spec.port),
        "PYTHONPATH": str(REPO),
    }
    return env | dict(extra)


def _probe(port: int, path: str, timeout: float = 1.0) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def answers(spec: ServiceSpec) -> bool:
    return _probe(spec.port, "/healthz") == 200


def ready(spec: ServiceSpec) -> bool:
    return _probe(spec.port, "/readyz") == 200


def wait_ready(spec: ServiceSpec, process: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready(spec):
        if process.pid() is None:
            raise StackError(
                f"{spec.name} exited while starting", log=process.log_file, log_tail=tail(process.log_file)
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{spec.name} was not ready on :{spec.port}/readyz within {timeout:g} s",
                log=process.log_file,
                log_tail=tail(process.log_file),
            )
        time.sleep(0.2)
