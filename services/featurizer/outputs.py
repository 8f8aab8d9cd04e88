"""Avro records the featurizer writes: one features value per pupdate and version, one instance
per pupdate and version when its horizon closes. Keyed by pupdate_id; a replay writes the same
values, so downstream compaction or de-duplication by key is always safe."""

from __future__ import annotations

from libs.common.serde import serde
from services.featurizer.engine import FeaturesOut, InstanceOut

_FEATURES = serde("feature_vector")
_INSTANCE = serde("instance")


def _vector(out: FeaturesOut | InstanceOut, names: tuple[str, ...]) -> dict:
    """What a features record and an instance share: the pupdate and its values as of posting."""
    p = out.pupdate
    return {
        "pupdate_id": p["pupdate_id"],
        "dog_id": p["dog_id"],
        "country": p.get("country"),
        "extractor_version": out.version,
        "posted_at": p["posted_at"],
        "names": list(names),
        "values": out.values,
        "baseline": out.baseline,
    }


def features_record(out: FeaturesOut, names: tuple[str, ...]) -> dict:
    return _vector(out, names) | {"as_of": out.pupdate["posted_at"]}


def instance_record(out: InstanceOut, names: tuple[str, ...], horizon_ms: int) -> dict:
    return _vector(out, names) | {"likes": out.likes, "horizon_ms": horizon_ms, "closed_at": out.close_at}


def encode_features(out: FeaturesOut, names: tuple[str, ...]) -> bytes:
    return _FEATURES.encode(features_record(out, names))


def encode_instance(out: InstanceOut, names: tuple[str, ...], horizon_ms: int) -> bytes:
    return _INSTANCE.encode(instance_record(out, names, horizon_ms))
