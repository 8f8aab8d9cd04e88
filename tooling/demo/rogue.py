"""The rogue version: a real LightGBM model that is fine everywhere but one country.

It is the first Pooch Predictor's worst week in one artifact: trained, like the real trainer's
models, on the run's own instances, but as a plain regression on targets that are nonsense for
one country (negative likes), so it predicts negative likes there and sensible ones elsewhere.
It is published like any version (a PUBLISHED record with a verified artifact) and then put in
front of the machine-learned world by an ACTIVATED record, as a careless release would be. The
supervisor has to notice within seconds and put the last good version back.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from libs.common.artifacts import ModelArtifact, build_artifact
from libs.common.features.extractors import CATEGORICAL, country_code
from libs.common.kafka.producer import Producer
from libs.common.serde import serde
from libs.common.settings import CommonSettings
from libs.common.signing import ModelEventSigner
from libs.common.topics import MODEL_MAX_BYTES, MODELS

NONSENSE_LIKES = -50.0


def train_rogue(instances: list[dict], country: str, *, seed: int = 0) -> ModelArtifact:
    rows = [i for i in instances if i["extractor_version"] == "v1"]
    if len(rows) < 200:
        raise ValueError(f"only {len(rows)} v1 instances: too few to train the rogue version on")
    names = list(rows[0]["names"])
    x = np.array([i["values"] for i in rows], dtype=float)
    y = np.array([i["likes"] for i in rows], dtype=float)
    bad = x[:, names.index("country")] == country_code(country)
    if not bad.any():
        raise ValueError(f"no instance from {country}: the rogue version would never misbehave")
    y = np.where(bad, NONSENSE_LIKES, y)
    params = {
        "objective": "regression",
        "num_leaves": 31,
        "learning_rate": 0.1,
        # small leaves and groups: the nonsense country gets leaves of its own even when the run
        # has only a few dozen of its pupdates (LightGBM's default group minimum is 100 rows)
        "min_data_in_leaf": 5,
        "min_data_per_group": 5,
        "cat_smooth": 0.0,
        "cat_l2": 0.0,
        "verbosity": -1,
        "num_threads": 1,
        "seed": seed,
        "deterministic": True,
        # one-vs-rest splits on the country: the nonsense stays in its one country instead of
        # leaking into a group of rare countries the tree lumped together with it
        "max_cat_to_onehot": 1024,
    }
    categorical = [c for c in CATEGORICAL if c in names]
    ds = lgb.Dataset(x, y, feature_name=names, categorical_feature=categorical, free_raw_data=False)
    booster = lgb.train(params, ds, num_boost_round=60)
    # what its trainer would have validated it on: the other countries, where it looks fine
    quantiles = np.quantile(booster.predict(x[~bad]), np.linspace(0, 1, 21)).tolist()
    return build_artifact(
        booster.model_to_string(),
        extractor_version="v1",
        feature_names=names,
        categorical_features=categorical,
        metrics={"validation_rows": float((~bad).sum())},
        validation_quantiles=quantiles,
        reason=f"demo rogue version: regression on nonsense (negative) likes for country={country}",
        actor="demo:rogue",
    )


def publish(
    settings: CommonSettings, artifact: ModelArtifact, signer: ModelEventSigner | None = None
) -> None:
    producer = Producer(
        settings, name="demo-rogue", **{"message.max.bytes": int(MODEL_MAX_BYTES), "linger.ms": 0}
    )
    event = artifact.signed(signer).to_event()  # a careless release is still a signed one
    producer.produce(settings.topic(MODELS), serde("model_event").encode(event), key=event["model_version"])
    producer.flush(30)
    producer.close()
