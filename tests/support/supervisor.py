"""Running the real supervisor (``python -m services.supervisor``) in tests, and feeding it.

Not a test module: helpers for the ``test_supervisor_*.py`` tests. Predictions, instances and
model events are written as the scorer, the featurizer and the trainer would write them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from libs.common.artifacts import ModelArtifact, build_artifact
from libs.common.features.extractors import CATEGORICAL, country_code
from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.settings import CommonSettings
from libs.common.topics import FEATURES, INSTANCES, MODELS, PREDICTIONS
from services.scorer.fixtures import V1_NAMES, feature_record, publish_events, synthetic_rows
from tests.support.feeding import RateFeeder
from tests.support.kafkautil import read_all, wait_for
from tests.support.procs import ServiceProcess

PRED = serde("prediction")
INST = serde("instance")
MODEL = serde("model_event")
FV = serde("feature_vector")
COUNTRY_COL = V1_NAMES.index("country")
TOKEN = "operator-secret-token"


def now_ms() -> int:
    return int(time.time() * 1000)


class SupervisorProcess(ServiceProcess):
    """One supervisor process with its own port and log file; the operator token is the test's."""

    def __init__(
        self,
        settings: CommonSettings,
        log_dir: Path,
        *,
        token: str | None = TOKEN,
        extra_env: dict[str, str] | None = None,
        **opts: Any,
    ):
        extra = {"POOCH_SUPERVISOR_LABEL_HORIZON_S": "60"} | (extra_env or {})
        if token is not None:
            extra["POOCH_SUPERVISOR_OPERATOR_TOKEN"] = token
        super().__init__("supervisor", settings, log_dir, extra_env=extra, **opts)

    metric = ServiceProcess.metric_sum  # the supervisor tests' name for it

    def models(self) -> dict[str, Any]:
        return self.http.get("/v1/models").json()

    def version(self, name: str) -> dict[str, Any]:
        return next(v for v in self.models()["versions"] if v["model_version"] == name)

    def window(self, name: str, slice_name: str = "all") -> dict[str, Any]:
        return self.version(name)["window"].get(slice_name) or {}

    def windows_state(self) -> dict[str, Any]:
        return self.http.get("/v1/windows").json()


# -- models ------------------------------------------------------------------------------------


def quantiles(pred: Sequence[float] | np.ndarray, k: int = 21) -> list[float]:
    """What the trainer publishes: k quantiles (0, 5%, ..., 100%) of validation predictions."""
    return [float(q) for q in np.quantile(np.asarray(pred, dtype=float), np.linspace(0.0, 1.0, k))]


def fake_artifact(name: str, validation: Sequence[float], *, created_at: int | None = None) -> ModelArtifact:
    """A PUBLISHED record for supervisor-only tests (no scorer loads it)."""
    return build_artifact(
        f"not a real model: {name} {uuid.uuid4().hex}",
        extractor_version="v1",
        feature_names=V1_NAMES,
        validation_quantiles=quantiles(validation),
        metrics={"poisson_deviance": 1.0},
        reason=f"test model {name}",
        actor="trainer/test",
        created_at=created_at,
    )


def status_event(
    kind: str,
    art: ModelArtifact,
    *,
    arm: str | None = None,
    weights: dict[str, float] | None = None,
    created_at: int | None = None,
    actor: str = "tests",
) -> dict[str, Any]:
    return {
        "kind": kind,
        "event_id": f"test:{kind}:{art.model_version}:{uuid.uuid4().hex[:8]}",
        "model_version": art.model_version,
        "extractor_version": art.extractor_version,
        "feature_names": [],
        "categorical_features": [],
        "metrics": {},
        "params": {},
        "feature_importance": {},
        "validation_quantiles": [],
        "arm": arm,
        "arm_weights": dict(weights or {}),
        "reason": f"test {kind.lower()}",
        "actor": actor,
        "artifact": None,
        "artifact_encoding": "zlib",
        "artifact_sha256": "",
        "created_at": now_ms() if created_at is None else created_at,
    }


def model_events(settings: CommonSettings) -> list[dict[str, Any]]:
    return [MODEL.decode(m.value()) for m in read_all(settings, settings.topic(MODELS))]


def decisions(settings: CommonSettings, kind: str | None = None, version: str | None = None) -> list[dict]:
    return [
        e
        for e in model_events(settings)
        if e["kind"] != "PUBLISHED"
        and (kind is None or e["kind"] == kind)
        and (version is None or e["model_version"] == version)
        and not e["event_id"].startswith("test:")
    ]


def publish(settings: CommonSettings, *events: dict[str, Any]) -> None:
    publish_events(settings, events)


# -- predictions and instances written as the scorer and the featurizer would -----------------


def prediction(
    pid: str,
    *,
    version: str | None,
    raw: float | None,
    country: str = "US",
    arm: str = "champion",
    baseline: float = 3.0,
    at: int | None = None,
    latency_ms: float = 20.0,
    reason: str | None = None,
) -> dict[str, Any]:
    """A prediction as the scorer writes it: containment included."""
    at = now_ms() if at is None else at
    valid = raw is not None and np.isfinite(raw) and raw >= 0
    if version is not None and not valid and reason is None:
        reason = "invalid_output"
    fallback = reason is not None
    return {
        "pupdate_id": pid,
        "dog_id": f"dog-{pid}",
        "country": country,
        "predicted_likes": float(raw) if not fallback and raw is not None else max(baseline, 0.0),
        "raw_output": raw,
        "model_version": None if fallback else version,
        "extractor_version": "v1",
        "arm": arm,
        "fallback": fallback,
        "fallback_reason": reason,
        "posted_at": at - 50,
        "predicted_at": at,
        "latency_ms": latency_ms,
    }


def instance(pid: str, *, likes: int, baseline: float, country: str = "US", at: int | None = None) -> dict:
    at = now_ms() if at is None else at
    return {
        "pupdate_id": pid,
        "dog_id": f"dog-{pid}",
        "country": country,
        "extractor_version": "v1",
        "posted_at": at - 60_000,
        "names": [],
        "values": [],
        "baseline": float(baseline),
        "likes": int(likes),
        "horizon_ms": 60_000,
        "closed_at": at,
    }


class Writer:
    """Writes predictions and instances (flushed per call)."""

    def __init__(self, settings: CommonSettings) -> None:
        self.settings = settings
        self.producer = Producer(settings, name="supervisor-tests", **{"linger.ms": 2})

    def predictions(self, records: Iterable[dict[str, Any]]) -> int:
        n = 0
        topic = self.settings.topic(PREDICTIONS)
        for r in records:
            self.producer.produce(topic, PRED.encode(r), key=r["pupdate_id"])
            n += 1
        self.producer.flush(30)
        return n

    def instances(self, records: Iterable[dict[str, Any]]) -> int:
        n = 0
        topic = self.settings.topic(INSTANCES)
        for r in records:
            self.producer.produce(topic, INST.encode(r), key=r["pupdate_id"])
            n += 1
        self.producer.flush(30)
        return n


def read_predictions(settings: CommonSettings) -> list[dict[str, Any]]:
    return [PRED.decode(m.value()) for m in read_all(settings, settings.topic(PREDICTIONS), timeout=60)]


def read_instances(settings: CommonSettings) -> list[dict[str, Any]]:
    return [INST.decode(m.value()) for m in read_all(settings, settings.topic(INSTANCES), timeout=60)]


# -- real LightGBM models and a features feeder with countries (end-to-end with the scorer) ------

COUNTRIES = ("US", "GB", "DE", "FR", "JP")


def rows_with_countries(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Synthetic v1 rows whose country feature matches a country string, and their targets."""
    x, y = synthetic_rows(n, seed)
    countries = [COUNTRIES[i % len(COUNTRIES)] for i in range(n)]
    x[:, COUNTRY_COL] = [country_code(c) for c in countries]
    return x, y, countries


def _train(x: np.ndarray, y: np.ndarray, objective: str, rounds: int = 30) -> str:
    params = {
        "objective": objective,
        "num_leaves": 15,
        "learning_rate": 0.15,
        "min_data_in_leaf": 10,
        "verbosity": -1,
        "num_threads": 1,
        "seed": 0,
        "deterministic": True,
        "force_row_wise": True,
    }
    ds = lgb.Dataset(
        x, y, feature_name=list(V1_NAMES), categorical_feature=list(CATEGORICAL), free_raw_data=False
    )
    return lgb.train(params, ds, num_boost_round=rounds).model_to_string()


def real_artifact(text: str, validation_x: np.ndarray, *, created_at: int, reason: str) -> ModelArtifact:
    pred = lgb.Booster(model_str=text).predict(validation_x)
    return build_artifact(
        text,
        extractor_version="v1",
        feature_names=V1_NAMES,
        categorical_features=list(CATEGORICAL),
        validation_quantiles=quantiles(pred),
        metrics={"poisson_deviance": 1.0},
        reason=reason,
        actor="trainer/test",
        created_at=created_at,
    )


def good_and_rogue_models(rogue_country: str = "DE") -> tuple[ModelArtifact, ModelArtifact]:
    """A good Poisson model, and a rogue one: regression that learned negative likes for one
    country only (validated, as its trainer saw it, on the other countries)."""
    x, y, countries = rows_with_countries(3000, seed=3)
    good = real_artifact(_train(x, y, "poisson"), x, created_at=now_ms() - 60_000, reason="good model")
    bad = np.array([c == rogue_country for c in countries])
    y_rogue = np.where(bad, -50.0, y + 5.0)
    rogue = real_artifact(
        _train(x, y_rogue, "regression"), x[~bad], created_at=now_ms() - 30_000, reason="rogue model"
    )
    return good, rogue


class CountryFeeder(RateFeeder):
    """Writes feature vectors at a steady rate, countries in turn (the featurizer's role)."""

    def __init__(
        self, settings: CommonSettings, *, rate: float = 1500.0, seed: int = 7, labels: bool = False
    ):
        super().__init__(settings, rate=rate)
        self.labels = labels  # also write each pupdate's realised likes (its instance) at once
        self.x, self.y, self.countries = rows_with_countries(4096, seed)
        self.next = 0

    def write(self, n: int) -> None:
        topic = self.settings.topic(FEATURES)
        for _ in range(n):
            i = self.next
            self.next += 1
            k = i % len(self.x)
            rec = feature_record(
                i, self.x[k], country=self.countries[k], baseline=2.0 + (i % 5), posted_at=now_ms() - 10
            )
            self._producer.produce(topic, FV.encode(rec), key=rec["pupdate_id"])
            if self.labels:
                inst = instance(
                    rec["pupdate_id"],
                    likes=int(self.y[k]),
                    baseline=rec["baseline"],
                    country=self.countries[k],
                )
                self._producer.produce(
                    self.settings.topic(INSTANCES), INST.encode(inst), key=rec["pupdate_id"]
                )
            self.written.append(rec["pupdate_id"])
        self._producer.flush(30)


__all__ = ["wait_for"]
