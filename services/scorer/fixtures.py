"""Synthetic models, model events and feature vectors: for the scorer's tests, bench and demos.

Models are real LightGBM text models trained on rows shaped like extractor v1's features, so
everything downstream (artifact packing, sha256, the registry, predict) runs as in production.
Rogue models on purpose: ``objective="regression"`` on negative targets predicts negatives;
``n_features`` other than the record's gives a model whose predict raises.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np

from libs.common.artifacts import ModelArtifact, build_artifact
from libs.common.features.extractors import BASE_FEATURES, CATEGORICAL

V1_NAMES = BASE_FEATURES


def synthetic_rows(n: int, seed: int = 0, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows with v1-like value ranges and a Poisson count target with real signal."""
    rng = np.random.default_rng(seed)
    k = n_features or len(V1_NAMES)
    x = np.empty((n, len(V1_NAMES)))
    x[:, 0] = rng.integers(1, 40, n)  # breed bucket
    x[:, 1] = rng.integers(1, 6, n)  # size
    x[:, 2] = rng.integers(-1, 200, n)  # age_months
    x[:, 3] = np.log1p(rng.integers(0, 50_000, n))  # log_followers
    x[:, 4] = rng.integers(0, 300, n)  # dog_posts
    x[:, 5] = rng.exponential(30, n)  # hours_since_last_post
    x[:, 6] = rng.exponential(20, n)  # dog_mean_likes
    x[:, 7] = rng.integers(0, 200, n)  # dog_matured_posts
    x[:, 8] = rng.integers(0, 10, n)  # hashtag_count
    x[:, 9] = np.minimum(x[:, 8], rng.integers(0, 10, n))  # hashtag_known
    for j in (10, 11, 12):
        x[:, j] = rng.exponential(15, n)
    x[:, 13] = rng.exponential(5, n)
    x[:, 14] = rng.integers(0, 12, n)  # photo_filter
    x[:, 15] = rng.integers(0, 24, n)  # hour_of_day
    x[:, 16] = rng.integers(0, 7, n)  # day_of_week
    x[:, 17] = rng.choice([0, 547, 177, 4, 240, 235], n)  # country codes
    x[:, 18] = rng.integers(0, 300, n)  # caption_length
    log_mu = 0.3 * x[:, 3] + 0.02 * x[:, 6] + 0.05 * x[:, 10] - 0.4 * (x[:, 1] == 5) - 1.0
    y = rng.poisson(np.exp(np.clip(log_mu, -5, 6)))
    return x[:, :k], y.astype(float)


def train_model_text(
    *,
    objective: str = "poisson",
    rounds: int = 30,
    num_leaves: int = 15,
    n_rows: int = 2000,
    n_features: int | None = None,
    negative: bool = False,
    seed: int = 0,
    names: Sequence[str] = V1_NAMES,
) -> str:
    """A LightGBM text model. ``negative`` (with objective=regression) learns negative targets."""
    x, y = synthetic_rows(n_rows, seed, n_features)
    if negative:
        y = -5.0 - y
    k = x.shape[1]
    feature_names = list(names)[:k] if k <= len(names) else [f"f{i}" for i in range(k)]
    categorical = [c for c in CATEGORICAL if c in feature_names]
    params = {
        "objective": objective,
        "num_leaves": num_leaves,
        "learning_rate": 0.1,
        "min_data_in_leaf": 10,
        "verbosity": -1,
        "num_threads": 1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
    }
    ds = lgb.Dataset(x, y, feature_name=feature_names, categorical_feature=categorical, free_raw_data=False)
    booster = lgb.train(params, ds, num_boost_round=rounds)
    return booster.model_to_string()


def make_artifact(
    text: str,
    *,
    extractor_version: str = "v1",
    feature_names: Sequence[str] = V1_NAMES,
    created_at: int | None = None,
) -> ModelArtifact:
    return build_artifact(
        text,
        extractor_version=extractor_version,
        feature_names=feature_names,
        categorical_features=[c for c in CATEGORICAL if c in feature_names],
        metrics={"poisson_deviance": 1.0},
        reason="test model",
        actor="scorer-fixtures",
        created_at=created_at,
    )


def model_event(
    kind: str,
    model_version: str,
    extractor_version: str = "v1",
    *,
    arm: str | None = None,
    arm_weights: Mapping[str, float] | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """A status event (PAUSED, RESUMED, RETIRED, ACTIVATED) for ``serde("model_event")``."""
    return {
        "kind": kind,
        "event_id": f"{kind.lower()}:{model_version}:{uuid.uuid4().hex[:8]}",
        "model_version": model_version,
        "extractor_version": extractor_version,
        "feature_names": [],
        "categorical_features": [],
        "metrics": {},
        "params": {},
        "feature_importance": {},
        "validation_quantiles": [],
        "arm": arm,
        "arm_weights": dict(arm_weights or {}),
        "reason": reason or f"test {kind.lower()}",
        "actor": "scorer-tests",
        "artifact": None,
        "artifact_encoding": "zlib",
        "artifact_sha256": "",
        "created_at": int(time.time() * 1000),
    }


def publish_events(settings: Any, events: Iterable[dict[str, Any]]) -> None:
    """Write model events to the ``models`` topic (keyed by model_version), durably."""
    from libs.common.kafka.producer import Producer
    from libs.common.serde import serde
    from libs.common.topics import MODEL_MAX_BYTES, MODELS

    producer = Producer(
        settings, name="scorer-fixtures", **{"message.max.bytes": int(MODEL_MAX_BYTES), "linger.ms": 0}
    )
    codec = serde("model_event")
    for event in events:
        producer.produce(settings.topic(MODELS), codec.encode(event), key=event["model_version"])
    producer.flush(30)


def feature_record(
    i: int,
    values: Sequence[float],
    *,
    extractor_version: str = "v1",
    names: Sequence[str] = V1_NAMES,
    baseline: float = 3.0,
    dogs: int = 500,
    posted_at: int = 1_795_000_000_000,
    country: str | None = "US",
) -> dict[str, Any]:
    return {
        "pupdate_id": f"p{i:08d}",
        "dog_id": f"dog-{i % dogs:05d}",
        "country": country,
        "extractor_version": extractor_version,
        "posted_at": posted_at + i * 1000,
        "as_of": posted_at + i * 1000,
        "names": list(names),
        "values": [float(v) for v in values],
        "baseline": float(baseline),
    }
