"""Fast, exact Avro for the scorer's hot path: ``feature_vector`` in, ``prediction`` out.

fastavro turns each record into a dict of Python objects (~60 us for a feature vector, most of
it the 19 feature names every record repeats); the scorer needs none of that. This codec reads
the single-object encoding of ``feature_vector`` v1 directly:

* the first three fields (pupdate_id, dog_id, country) are copied as raw bytes into the
  prediction, whose first three fields have the same types in the same order;
* the names array is recognised by its exact encoded bytes (a complete Avro encoding parses
  one way only, so equal bytes are equal names) and decoded once per distinct list;
* the values array stays little-endian float64 bytes, joined per batch into one numpy matrix;
* posted_at is copied as its raw zig-zag varint.

Anything else (another writer version, several array blocks, a surprise) goes through fastavro,
which also produces the errors that send a record to dead letters. Unit tests check both paths
give the same values as fastavro on random records (``tests/unit/test_scorer_codec.py``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from libs.common.serde import SerdeError, serde

_D = struct.Struct("<d")
_FEATURES = serde("feature_vector")
_PREDICTION = serde("prediction")
FEATURES_HEADER = _FEATURES.writer.header  # feature_vector v1, the current writer
PREDICTION_HEADER = _PREDICTION.writer.header
_HEADER_LEN = len(FEATURES_HEADER)


class NotFastPath(Exception):
    """The fast decoder does not handle this encoding; fastavro will."""


def zigzag(n: int) -> bytes:
    """Avro long: zig-zag then base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_string(s: str) -> bytes:
    b = s.encode()
    return zigzag(len(b)) + b


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


@dataclass
class FeatureBatch:
    """Feature vectors of one batch, column by column (what scoring and encoding need)."""

    keys: list[bytes] = field(default_factory=list)  # pupdate_id (the Kafka key)
    heads: list[bytes] = field(default_factory=list)  # pupdate_id, dog_id, country as encoded
    dogs: list[bytes] = field(default_factory=list)  # dog_id (UTF-8)
    extractors: list[str] = field(default_factory=list)
    posted: list[bytes] = field(default_factory=list)  # posted_at as encoded
    names: list[tuple[str, ...]] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)  # float64 little-endian
    baselines: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


class FeatureDecoder:
    """Appends decoded feature vectors to a :class:`FeatureBatch`."""

    def __init__(self) -> None:
        self._names_blocks: list[tuple[bytes, tuple[str, ...]]] = []
        self._strings: dict[bytes, str] = {}
        self.fast = 0
        self.slow = 0

    def add(self, batch: FeatureBatch, data: bytes) -> None:
        """Decode one record into ``batch``; raises SerdeError when it is no feature vector."""
        try:
            if data[:_HEADER_LEN] != FEATURES_HEADER:
                raise NotFastPath
            self._add_fast(batch, data)
            self.fast += 1
        except (NotFastPath, IndexError, struct.error, UnicodeDecodeError):
            self._add_slow(batch, data)
            self.slow += 1

    def _string(self, raw: bytes) -> str:
        s = self._strings.get(raw)
        if s is None:
            s = raw.decode()
            if len(self._strings) < 1024:
                self._strings[raw] = s
        return s

    def _add_fast(self, batch: FeatureBatch, data: bytes) -> None:
        # Lengths under 64 take one varint byte: read inline (a call costs more than the work).
        pos = _HEADER_LEN
        # pupdate_id
        b = data[pos]
        n, pos = ((b >> 1) ^ -(b & 1), pos + 1) if b < 0x80 else _read_long(data, pos)
        key = data[pos : pos + n]
        pos += n
        # dog_id
        b = data[pos]
        n2, pos = ((b >> 1) ^ -(b & 1), pos + 1) if b < 0x80 else _read_long(data, pos)
        dog = data[pos : pos + n2]
        pos += n2
        # country: ["null", "string"]
        branch = data[pos]
        pos += 1
        n3 = 0
        if branch == 2:
            b = data[pos]
            n3, pos = ((b >> 1) ^ -(b & 1), pos + 1) if b < 0x80 else _read_long(data, pos)
            pos += n3
        elif branch != 0:
            raise NotFastPath
        if n < 0 or n2 < 0 or n3 < 0:
            raise NotFastPath
        head = data[_HEADER_LEN:pos]
        # Valid UTF-8, as fastavro insists (the strings are copied into the prediction). With
        # short strings the length bytes are ASCII too and one check covers all three.
        try:
            head.decode()
        except UnicodeDecodeError:
            key.decode(), dog.decode(), data[pos - n3 : pos].decode()
        # extractor_version
        b = data[pos]
        n, pos = ((b >> 1) ^ -(b & 1), pos + 1) if b < 0x80 else _read_long(data, pos)
        if n < 0:
            raise NotFastPath
        ev = self._string(data[pos : pos + n])
        pos += n
        # posted_at (kept encoded), as_of (skipped)
        start = pos
        while data[pos] & 0x80:
            pos += 1
        pos += 1
        posted = data[start:pos]
        while data[pos] & 0x80:
            pos += 1
        pos += 1
        # names: a known encoded block, else decoded once and remembered
        for block, known in self._names_blocks:
            if data.startswith(block, pos):
                pos += len(block)
                names = known
                break
        else:
            names, end = self._read_names(data, pos)
            if len(self._names_blocks) < 16:
                self._names_blocks.append((data[pos:end], names))
            pos = end
        # values: one block of doubles then the terminator
        count, pos = _read_long(data, pos)
        if count < 0:
            count = -count
            _size, pos = _read_long(data, pos)
        if count:
            end = pos + 8 * count
            values = data[pos:end]
            if len(values) != 8 * count or data[end] != 0:
                raise NotFastPath  # truncated, or more than one block
            pos = end + 1
        else:
            values = b""
        baseline = _D.unpack_from(data, pos)[0]
        pos += 8
        if pos != len(data):
            raise NotFastPath
        batch.keys.append(key)
        batch.heads.append(head)
        batch.dogs.append(dog)
        batch.extractors.append(ev)
        batch.posted.append(posted)
        batch.names.append(names)
        batch.values.append(values)
        batch.baselines.append(baseline)

    def _read_names(self, data: bytes, pos: int) -> tuple[tuple[str, ...], int]:
        names: list[str] = []
        while True:
            count, pos = _read_long(data, pos)
            if count == 0:
                return tuple(names), pos
            if count < 0:
                count = -count
                _size, pos = _read_long(data, pos)
            for _ in range(count):
                n, pos = _read_long(data, pos)
                if n < 0 or pos + n > len(data):
                    raise NotFastPath
                names.append(data[pos : pos + n].decode())
                pos += n

    def _add_slow(self, batch: FeatureBatch, data: bytes) -> None:
        rec = _FEATURES.decode(data)  # raises SerdeError for what is no feature vector
        add_record(batch, rec)


def add_record(batch: FeatureBatch, rec: dict) -> None:
    """Append a decoded ``feature_vector`` dict (the slow path, and the what-if API)."""
    try:
        country = rec.get("country")
        head = (
            avro_string(rec["pupdate_id"])
            + avro_string(rec["dog_id"])
            + (b"\x00" if country is None else b"\x02" + avro_string(country))
        )
        row = (
            rec["pupdate_id"].encode(),
            head,
            rec["dog_id"].encode(),
            str(rec["extractor_version"]),
            zigzag(int(rec["posted_at"])),
            tuple(rec["names"]),
            np.asarray(rec["values"], dtype="<f8").tobytes(),
            float(rec["baseline"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SerdeError(f"not a feature vector: {exc!r}") from exc
    # Appended only once all of it is known: a batch's columns always have the same length.
    for column, value in zip(
        (
            batch.keys,
            batch.heads,
            batch.dogs,
            batch.extractors,
            batch.posted,
            batch.names,
            batch.values,
            batch.baselines,
        ),
        row,
        strict=True,
    ):
        column.append(value)


class PredictionEncoder:
    """``prediction`` v1 in single-object encoding, from the parts the scorer has at hand."""

    def __init__(self) -> None:
        self._middles: dict[tuple, bytes] = {}

    def middle(
        self, model_version: str | None, extractor_version: str, arm: str, reason: str | None
    ) -> bytes:
        """model_version, extractor_version, arm, fallback, fallback_reason: a few per batch."""
        key = (model_version, extractor_version, arm, reason)
        out = self._middles.get(key)
        if out is None:
            fallback = reason is not None
            out = (
                (b"\x00" if model_version is None else b"\x02" + avro_string(model_version))
                + avro_string(extractor_version)
                + avro_string(arm)
                + (b"\x01" if fallback else b"\x00")
                + (b"\x00" if reason is None else b"\x02" + avro_string(reason))
            )
            if len(self._middles) > 4096:
                self._middles.clear()
            self._middles[key] = out
        return out

    @staticmethod
    def encode(
        head: bytes,
        predicted: float,
        raw_output: float | None,
        middle: bytes,
        posted: bytes,
        predicted_at: bytes,
        latency_ms: float,
    ) -> bytes:
        return b"".join(
            (
                PREDICTION_HEADER,
                head,
                _D.pack(predicted),
                b"\x00" if raw_output is None else b"\x02" + _D.pack(raw_output),
                middle,
                posted,
                predicted_at,
                _D.pack(latency_ms),
            )
        )


def finite_nonneg(x: float) -> bool:
    return 0.0 <= x < math.inf
