"""The scorer's fast Avro path gives exactly what fastavro gives, and falls back to it otherwise."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.common.serde import SerdeError, serde
from services.scorer.codec import (
    FEATURES_HEADER,
    FeatureBatch,
    FeatureDecoder,
    PredictionEncoder,
    add_record,
    avro_string,
    zigzag,
)
from services.scorer.fixtures import V1_NAMES, feature_record

FV = serde("feature_vector")
PRED = serde("prediction")

text = st.text(min_size=0, max_size=80)
doubles = st.floats(allow_nan=True, allow_infinity=True, width=64)
records = st.fixed_dictionaries(
    {
        "pupdate_id": text,
        "dog_id": text,
        "country": st.none() | st.text(max_size=5),
        "extractor_version": st.sampled_from(["v1", "v2", "v9", ""]),
        "posted_at": st.integers(-(2**62), 2**62),
        "as_of": st.integers(-(2**62), 2**62),
        "names": st.lists(st.text(max_size=30), max_size=25),
        "values": st.lists(doubles, max_size=25),
        "baseline": doubles,
    }
)


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _decoded(batch: FeatureBatch, i: int = 0) -> dict:
    """What the fast batch holds, as a feature_vector dict (via the prediction it would write)."""
    enc = PredictionEncoder()
    out = PRED.decode(
        enc.encode(
            batch.heads[i],
            0.0,
            None,
            enc.middle(None, batch.extractors[i], "champion", "x"),
            batch.posted[i],
            zigzag(0),
            0.0,
        )
    )
    return {
        "pupdate_id": out["pupdate_id"],
        "dog_id": out["dog_id"],
        "country": out["country"],
        "extractor_version": batch.extractors[i],
        "posted_at": out["posted_at"],
        "names": list(batch.names[i]),
        "values": list(np.frombuffer(batch.values[i], dtype="<f8")),
        "baseline": batch.baselines[i],
        "key": batch.keys[i].decode(),
        "dog": batch.dogs[i].decode(),
    }


@settings(max_examples=500, deadline=None)
@given(records)
def test_fast_decode_equals_fastavro(rec):
    data = FV.encode(rec)
    decoder = FeatureDecoder()
    batch = FeatureBatch()
    decoder.add(batch, data)
    decoder.add(batch, data)  # the second time the names block is recognised from cache
    assert decoder.fast == 2 and decoder.slow == 0
    expected = FV.decode(data)
    for i in (0, 1):
        got = _decoded(batch, i)
        for field in ("pupdate_id", "dog_id", "country", "extractor_version", "posted_at", "names"):
            assert got[field] == expected[field], field
        assert got["key"] == expected["pupdate_id"] and got["dog"] == expected["dog_id"]
        assert len(got["values"]) == len(expected["values"])
        assert all(_same_float(a, b) for a, b in zip(got["values"], expected["values"], strict=True))
        assert _same_float(got["baseline"], expected["baseline"])


def _multi_block(rec: dict) -> bytes:
    """The same record with names and values each in two blocks (negative counts with sizes)."""
    body = avro_string(rec["pupdate_id"]) + avro_string(rec["dog_id"]) + b"\x02" + avro_string(rec["country"])
    body += avro_string(rec["extractor_version"]) + zigzag(rec["posted_at"]) + zigzag(rec["as_of"])
    names = rec["names"]
    first, second = b"".join(avro_string(n) for n in names[:5]), b"".join(avro_string(n) for n in names[5:])
    body += zigzag(-5) + zigzag(len(first)) + first + zigzag(len(names) - 5) + second + b"\x00"
    vals = rec["values"]
    body += zigzag(3) + struct.pack("<3d", *vals[:3]) + zigzag(len(vals) - 3)
    body += struct.pack(f"<{len(vals) - 3}d", *vals[3:]) + b"\x00"
    body += struct.pack("<d", rec["baseline"])
    return FEATURES_HEADER + body


def test_multi_block_arrays_fall_back_to_fastavro_with_the_same_values():
    rec = feature_record(7, list(range(19)))
    data = _multi_block(rec)
    assert FV.decode(data)["values"] == rec["values"]
    decoder, batch = FeatureDecoder(), FeatureBatch()
    decoder.add(batch, data)
    got = _decoded(batch)
    assert got["names"] == list(V1_NAMES) and got["values"] == rec["values"]
    assert got["pupdate_id"] == rec["pupdate_id"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not avro",
        FEATURES_HEADER,
        FEATURES_HEADER + b"\x07",
        serde("prediction").writer.header + b"\x00",
    ],
)
def test_garbage_raises_serde_error(data):
    with pytest.raises(SerdeError):
        FeatureDecoder().add(FeatureBatch(), data)


def test_truncated_and_trailing_bytes_are_refused():
    data = FV.encode(feature_record(1, [1.0] * 19))
    for bad in (data[:-1], data[:-9], data + b"\x00"):
        with pytest.raises(SerdeError):
            FeatureDecoder().add(FeatureBatch(), bad)


def test_invalid_utf8_is_refused_like_fastavro():
    rec = feature_record(1, [1.0] * 19)
    data = FV.encode(rec).replace(rec["pupdate_id"].encode(), b"\xff" * len(rec["pupdate_id"]))
    with pytest.raises(SerdeError):
        FeatureDecoder().add(FeatureBatch(), data)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "pupdate_id": text,
            "dog_id": text,
            "country": st.none() | text,
            "predicted_likes": doubles,
            "raw_output": st.none() | doubles,
            "model_version": st.none() | text,
            "extractor_version": text,
            "arm": st.sampled_from(["champion", "challenger", "baseline"]),
            "fallback_reason": st.none() | text,
            "posted_at": st.integers(-(2**62), 2**62),
            "predicted_at": st.integers(-(2**62), 2**62),
            "latency_ms": doubles,
        }
    )
)
def test_prediction_encoding_is_what_fastavro_writes(rec):
    rec = rec | {"fallback": rec["fallback_reason"] is not None}
    batch = FeatureBatch()
    add_record(
        batch,
        {
            "pupdate_id": rec["pupdate_id"],
            "dog_id": rec["dog_id"],
            "country": rec["country"],
            "extractor_version": rec["extractor_version"],
            "posted_at": rec["posted_at"],
            "names": [],
            "values": [],
            "baseline": 0.0,
        },
    )
    enc = PredictionEncoder()
    data = enc.encode(
        batch.heads[0],
        rec["predicted_likes"],
        rec["raw_output"],
        enc.middle(rec["model_version"], rec["extractor_version"], rec["arm"], rec["fallback_reason"]),
        batch.posted[0],
        zigzag(rec["predicted_at"]),
        rec["latency_ms"],
    )
    assert data == PRED.encode(rec)
