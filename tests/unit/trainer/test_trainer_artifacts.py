"""The model-artifact format: content addresses, integrity checks, the PUBLISHED record."""

from __future__ import annotations

import logging
import zlib

import pytest
from prometheus_client import REGISTRY

from libs.common.artifacts import (
    ArtifactIntegrityError,
    ModelArtifact,
    build_artifact,
    model_version,
    pack,
    sha256_hex,
    unpack,
)
from libs.common.serde import serde

TEXT = "tree\nversion=v4\nfeature_names=a b\n" + "Tree=0\nleaf_value=0.5\n" * 50


def failures(service: str, source: str) -> float:
    labels = {"service": service, "source": source}
    return REGISTRY.get_sample_value("pooch_model_integrity_failures_total", labels) or 0.0


@pytest.mark.parametrize("encoding", ["zlib", "lzma", "identity"])
def test_pack_unpack_round_trip(encoding):
    data, sha = pack(TEXT, encoding)
    assert sha == sha256_hex(TEXT)
    assert unpack(data, encoding, sha) == TEXT
    if encoding != "identity":
        assert len(data) < len(TEXT.encode())


def test_version_is_a_content_address_per_extractor():
    v = model_version(TEXT, "v1")
    assert v == f"v1-{sha256_hex(TEXT)[:16]}"
    assert model_version(TEXT, "v1") == v
    assert model_version(TEXT, "v2") != v
    assert model_version(TEXT + "\n", "v1") != v


def test_tampered_bytes_are_refused_with_a_log_line_and_a_metric(caplog):
    _data, sha = pack(TEXT)
    tampered = zlib.compress(TEXT.replace("0.5", "9.5").encode())
    before = failures("unit", "topic")
    with caplog.at_level(logging.ERROR), pytest.raises(ArtifactIntegrityError, match="sha256 mismatch"):
        unpack(tampered, "zlib", sha, model_version="v1-x", service="unit", source="topic")
    assert failures("unit", "topic") == before + 1
    line = next(r for r in caplog.records if "REFUSED" in r.getMessage())
    assert line.levelno == logging.ERROR
    assert "v1-x" in line.getMessage() and sha in line.getMessage()


@pytest.mark.parametrize(
    ("data", "encoding"),
    [(b"not zlib at all", "zlib"), (zlib.compress(TEXT.encode())[:-5], "zlib"), (b"x", "brotli")],
)
def test_undecodable_artifacts_are_refused(data, encoding):
    before = failures("unit", "redis")
    with pytest.raises(ArtifactIntegrityError):
        unpack(data, encoding, sha256_hex(TEXT), service="unit", source="redis")
    assert failures("unit", "redis") == before + 1


def test_a_missing_sha_is_refused():
    data, _sha = pack(TEXT)
    with pytest.raises(ArtifactIntegrityError):
        unpack(data, "zlib", "")


def test_published_event_round_trips_through_avro_and_verifies():
    art = build_artifact(
        TEXT,
        extractor_version="v1",
        feature_names=["a", "b"],
        categorical_features=["b"],
        metrics={"mae": 1.5},
        params={"data.rows": "10"},
        feature_importance={"a": 3.0, "b": 1.0},
        validation_quantiles=[0.1, 0.5, 0.9],
        reason="beats the baseline",
        actor="trainer/test",
        created_at=123,
    )
    event = serde("model_event").decode(serde("model_event").encode(art.to_event()))
    assert event["kind"] == "PUBLISHED"
    assert event["model_version"] == art.model_version == model_version(TEXT, "v1")
    assert event["event_id"] == f"published:{art.model_version}"
    back = ModelArtifact.from_event(event)
    assert back == art
    assert back.model_text() == TEXT


def test_a_version_that_is_not_the_content_address_is_refused():
    art = build_artifact(TEXT, extractor_version="v1", feature_names=["a"])
    forged = ModelArtifact.from_event(art.to_event() | {"model_version": "v1-0000000000000000"})
    with pytest.raises(ArtifactIntegrityError, match="content address"):
        forged.model_text(service="unit", source="topic")
