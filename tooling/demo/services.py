"""The demo's services: every Pooch Predictor service under supervision, on this run's prefix.

Each run has its own supervisord (restarts on crash, with backoff: ``tooling.stack.supervision``)
and its own state folder, so a demo never stops or reuses services another run (or another
checkout) started. Ports are the contract's (8001-8005) unless ``free_ports``, which tests use to
run beside a developer's stack.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from tooling.demo.plan import DemoPlan
from tooling.stack import services
from tooling.stack.errors import StackError
from tooling.stack.processes import free_port, port_free, tail
from tooling.stack.signing_keys import LocalKeys
from tooling.stack.supervision import Program, Supervision


def service_environment(plan: DemoPlan, prefix: str, token: str) -> dict[str, str]:
    """Settings for a run where a simulated 24 h label horizon passes in seconds."""
    import json

    horizon_ms = int(plan.horizon_s * 1000)
    return {
        "POOCH_TOPIC_PREFIX": prefix,
        "POOCH_LOG_FORMAT": "json",
        "POOCH_FEATURIZER_HORIZON_MS": str(horizon_ms),
        # the simulation delays a few likes by up to horizon/50 of event time (phones offline)
        "POOCH_FEATURIZER_LATENESS_MS": str(max(1000, horizon_ms // 50)),
        "POOCH_FEATURIZER_IDLE_FLUSH_MS": "3000",
        # one extractor version: the experiment and the what-if API are on v1
        "POOCH_FEATURIZER_VERSIONS": '["v1"]',
        "POOCH_TRAINER_EXTRACTOR_VERSIONS": '["v1"]',
        # the first model is trained on most of the closed history (about 80 % of it closes before the
        # live phase), not on its first few hundred rows
        "POOCH_TRAINER_MIN_INSTANCES": str(max(200, int(plan.history_pupdates * 0.65))),
        "POOCH_TRAINER_RETRAIN_EVERY": str(plan.retrain_every),
        "POOCH_TRAINER_RETRAIN_INTERVAL_S": str(plan.retrain_interval_s),
        "POOCH_SCORER_ARM_WEIGHTS": json.dumps(plan.weights),
        # the app gives the what-if API 150 ms; the scorer answers within its own deadline
        "POOCH_SCORER_WHATIF_DEADLINE_MS": "50",
        "POOCH_SUPERVISOR_LABEL_HORIZON_S": str(int(plan.horizon_s) + 5),
        "POOCH_SUPERVISOR_OPERATOR_TOKEN": token,
    }


@dataclass
class DemoServices:
    plan: DemoPlan
    prefix: str
    folder: Path
    kafka_bootstrap: str
    redis_url: str

    def __post_init__(self) -> None:
        self.token = secrets.token_hex(16)
        wanted = services.available()
        # The contract ports when they are free; when any is taken (a developer's stack, another
        # demo), free ones for all, so `make demo` runs beside whatever else is up.
        self.moved = self.plan.free_ports or not all(port_free("127.0.0.1", s.port) for s in wanted)
        self.specs = {s.name: replace(s, port=free_port() if self.moved else s.port) for s in wanted}
        extra = service_environment(self.plan, self.prefix, self.token)
        self.keys = LocalKeys.generate()  # this run's model-signing keys (the rogue is a signed release)
        programs = [
            Program(
                spec.name,
                spec.module,
                services.environment(
                    spec, self.kafka_bootstrap, self.redis_url, extra | self.keys.environment(spec.name)
                ),
                services.REPO,
            )
            for spec in self.specs.values()
        ]
        self.supervision = Supervision(self.folder / "supervision", programs)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.specs[name].port}"

    def start(self, report, timeout: float = 120.0) -> None:
        if self.moved and not self.plan.free_ports:
            report(
                "the contract ports 8001-8005 are taken (another stack?): this run's services use free ones"
            )
        report(f"starting {', '.join(self.specs)} under supervisord ({self.supervision.folder})")
        self.supervision.start()
        deadline = time.monotonic() + timeout
        waiting = set(self.specs)
        while waiting:
            for name in sorted(waiting):
                if self.ready(name):
                    waiting.discard(name)
                    report(f"{name} ready on :{self.specs[name].port}")
            if time.monotonic() > deadline:
                name = sorted(waiting)[0]
                log = self.supervision.log_of(name)
                raise StackError(f"{name} was not ready within {timeout:g} s", log=log, log_tail=tail(log))
            time.sleep(0.3)

    def ready(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.url(name)}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.supervision.stop()

    # -- the supervisor's operator API ----------------------------------------------------

    def activate(self, version: str, arm: str, weights: dict[str, float] | None, reason: str) -> dict:
        body = {"arm": arm, "reason": reason, "actor": "demo"}
        if weights:
            body["arm_weights"] = weights
        r = httpx.post(
            f"{self.url('supervisor')}/v1/models/{version}/activate",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=15.0,
        )
        if r.status_code != 200:
            raise StackError(f"activating {version} on {arm} failed: {r.status_code} {r.text[:300]}")
        return r.json()

    def get(self, name: str, path: str, timeout: float = 5.0) -> dict | None:
        try:
            r = httpx.get(f"{self.url(name)}{path}", timeout=timeout)
            return r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
