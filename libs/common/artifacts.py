"""The model-artifact format shared by the trainer (writer) and the scorer and supervisor (readers).

An artifact is LightGBM's *text* model (never pickle: a pickle runs code when loaded), compressed
for the ``models`` topic and addressed by its content:

* ``sha256`` is the hex digest of the uncompressed model text (UTF-8); it is checked every time
  an artifact is turned back into text (:func:`unpack`), whether it came from Kafka or Redis.
* ``model_version`` is ``<extractor_version>-<first 16 hex of sha256>``: the same model text on
  the same features always gets the same version, and a version can never name two models.

The ``models`` topic is the record; Redis only caches what is on it, under ``P`` =
``POOCH_TOPIC_PREFIX``:

``P models:<model_version>``            hash: ``artifact`` (compressed bytes), ``encoding``,
                                        ``sha256``, ``meta`` (JSON: everything else of the
                                        PUBLISHED event but the artifact)
``P models:index``                      zset: every cached model_version, scored by created_at (ms)
``P models:by_extractor:<extractor>``   zset: the same, per extractor_version

Wiped or partly lost, the cache is rebuilt by :func:`rebuild_cache` (every PUBLISHED record on
``models``, each verified before it is cached). A record whose sha256 does not match is refused:
an ``error`` log line naming the version and both digests, and
``pooch_model_integrity_failures_total{service, source}`` goes up.

Redis is not trusted either: an entry whose fields or ``meta`` do not have the types the
``model_event`` schema gives them (or that names another version than its key) is a
:class:`CacheEntryError`, counted in ``pooch_model_cache_entries_rejected_total{service}``;
readers skip it and take the version from the topic.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import lzma
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastavro.validation import validate
from prometheus_client import Counter

from libs.common.models_ledger import EventKind
from libs.common.serde import serde

if TYPE_CHECKING:
    from libs.common.signing import ModelEventSigner

log = logging.getLogger(__name__)

DEFAULT_ENCODING = "zlib"
ENCODINGS = ("zlib", "lzma", "identity")
# A model text bigger than this is refused when unpacking (a decompression bomb, not a model).
MAX_MODEL_TEXT_BYTES = 512 * 1024 * 1024
VERSION_HEX = 16

INTEGRITY_FAILURES = Counter(
    "pooch_model_integrity_failures_total",
    "Model artifacts refused because they did not decompress or their sha256 did not match.",
    ["service", "source"],
)


CACHE_REJECTED = Counter(
    "pooch_model_cache_entries_rejected_total",
    "Redis model-cache entries skipped because they are malformed (wrong types, unreadable JSON).",
    ["service"],
)


class CacheEntryError(ValueError):
    """A Redis model-cache entry that is not a well-formed PUBLISHED record: never used."""

    reason = "cache_entry_malformed"


class ArtifactIntegrityError(ValueError):
    """An artifact that must not be used: undecodable, or not the model its sha256 names."""

    reason = "artifact_integrity"


# -- pure format -------------------------------------------------------------------------------


def sha256_hex(model_text: str) -> str:
    return hashlib.sha256(model_text.encode("utf-8")).hexdigest()


def model_version(model_text: str, extractor_version: str) -> str:
    """The content address of a model: ``<extractor_version>-<sha256 prefix>``."""
    return version_for_sha(sha256_hex(model_text), extractor_version)


def version_for_sha(sha256: str, extractor_version: str) -> str:
    return f"{extractor_version}-{sha256[:VERSION_HEX]}"


def pack(model_text: str, encoding: str = DEFAULT_ENCODING) -> tuple[bytes, str]:
    """Compress a LightGBM text model; returns ``(compressed bytes, sha256 hex of the text)``."""
    raw = model_text.encode("utf-8")
    if encoding == "zlib":
        data = zlib.compress(raw, 9)
    elif encoding == "lzma":
        data = lzma.compress(raw, preset=6)
    elif encoding == "identity":
        data = raw
    else:
        raise ValueError(f"unknown artifact encoding {encoding!r}; known: {', '.join(ENCODINGS)}")
    return data, hashlib.sha256(raw).hexdigest()


def unpack(
    data: bytes,
    encoding: str,
    expected_sha256: str,
    *,
    model_version: str = "",
    service: str = "unknown",
    source: str = "unknown",
) -> str:
    """The model text, only if it is exactly the one ``expected_sha256`` names.

    Raises :class:`ArtifactIntegrityError` (after logging an error line and counting
    ``pooch_model_integrity_failures_total``) when the bytes do not decompress or the digest
    differs. ``service`` and ``source`` ("topic", "redis", ...) label the metric.
    """
    try:
        raw = _decompress(data, encoding)
    except ArtifactIntegrityError as exc:
        _refuse(str(exc), model_version, service, source, expected_sha256, "")
    actual = hashlib.sha256(raw).hexdigest()
    if not expected_sha256 or actual != expected_sha256.lower():
        _refuse("sha256 mismatch", model_version, service, source, expected_sha256, actual)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # the sha matched, so the writer packed bytes that are not text
        _refuse(f"not UTF-8 text: {exc}", model_version, service, source, expected_sha256, actual)
    raise AssertionError("unreachable")


def _decompress(data: bytes, encoding: str) -> bytes:
    if data is None:
        raise ArtifactIntegrityError("no artifact bytes")
    try:
        if encoding == "zlib":
            d = zlib.decompressobj()
            raw = d.decompress(data, MAX_MODEL_TEXT_BYTES)
            if d.unconsumed_tail:
                raise ArtifactIntegrityError(f"model text over {MAX_MODEL_TEXT_BYTES} bytes")
            if not d.eof:
                raise ArtifactIntegrityError("truncated zlib stream")
            return raw
        if encoding == "lzma":
            ld = lzma.LZMADecompressor()
            raw = ld.decompress(data, MAX_MODEL_TEXT_BYTES)
            if not ld.eof:
                raise ArtifactIntegrityError("truncated or oversized lzma stream")
            return raw
        if encoding == "identity":
            return bytes(data)
    except (zlib.error, lzma.LZMAError) as exc:
        raise ArtifactIntegrityError(f"{encoding} stream does not decompress: {exc}") from exc
    raise ArtifactIntegrityError(f"unknown artifact encoding {encoding!r}")


def _refuse(why: str, version: str, service: str, source: str, expected: str, actual: str) -> None:
    INTEGRITY_FAILURES.labels(service, source).inc()
    message = (
        f"model artifact REFUSED ({why}): model_version={version or '?'} from {source}, "
        f"expected sha256={expected or '(none)'}, actual sha256={actual or '(undecodable)'}"
    )
    log.error(
        message,
        extra={
            "model_version": version,
            "source": source,
            "expected_sha256": expected,
            "actual_sha256": actual,
            "reason": "artifact_integrity",
        },
    )
    raise ArtifactIntegrityError(message)


# -- the PUBLISHED record ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelArtifact:
    """A published model version: what a PUBLISHED event on ``models`` carries."""

    model_version: str
    extractor_version: str
    feature_names: tuple[str, ...]
    categorical_features: tuple[str, ...]
    artifact: bytes
    encoding: str
    sha256: str
    created_at: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    feature_importance: Mapping[str, float] = field(default_factory=dict)
    validation_quantiles: tuple[float, ...] = ()
    reason: str = ""
    actor: str = ""
    event_id: str = ""
    signing_key_id: str = ""  # who published it (libs/common/signing.py); empty: unsigned
    signature: str = ""

    def model_text(self, *, service: str = "unknown", source: str = "unknown") -> str:
        """The verified LightGBM text (raises :class:`ArtifactIntegrityError`)."""
        if version_for_sha(self.sha256, self.extractor_version) != self.model_version:
            _refuse(
                "model_version is not the content address of sha256",
                self.model_version,
                service,
                source,
                self.sha256,
                "",
            )
        return unpack(
            self.artifact,
            self.encoding,
            self.sha256,
            model_version=self.model_version,
            service=service,
            source=source,
        )

    def to_event(self) -> dict[str, Any]:
        """The ``model_event`` record (kind PUBLISHED) for ``serde("model_event").encode``."""
        return {
            "kind": EventKind.PUBLISHED,
            "event_id": self.event_id or f"published:{self.model_version}",
            "model_version": self.model_version,
            "extractor_version": self.extractor_version,
            "feature_names": list(self.feature_names),
            "categorical_features": list(self.categorical_features),
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "params": {k: str(v) for k, v in self.params.items()},
            "feature_importance": {k: float(v) for k, v in self.feature_importance.items()},
            "validation_quantiles": [float(q) for q in self.validation_quantiles],
            "arm": None,
            "arm_weights": {},
            "reason": self.reason,
            "actor": self.actor,
            "artifact": self.artifact,
            "artifact_encoding": self.encoding,
            "artifact_sha256": self.sha256,
            "created_at": int(self.created_at),
            "signing_key_id": self.signing_key_id,
            "signature": self.signature,
        }

    def signed(self, signer: ModelEventSigner | None) -> ModelArtifact:
        """This artifact as its PUBLISHED record will carry it: signed, when there is a signer."""
        return self if signer is None else ModelArtifact.from_event(signer.sign(self.to_event()))

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> ModelArtifact:
        if event.get("kind") != EventKind.PUBLISHED:
            raise ValueError(f"not a PUBLISHED event: {event.get('kind')!r}")
        return cls(
            model_version=event["model_version"],
            extractor_version=event["extractor_version"],
            feature_names=tuple(event.get("feature_names") or ()),
            categorical_features=tuple(event.get("categorical_features") or ()),
            artifact=event.get("artifact") or b"",
            encoding=event.get("artifact_encoding") or DEFAULT_ENCODING,
            sha256=event.get("artifact_sha256") or "",
            created_at=int(event.get("created_at") or 0),
            metrics=dict(event.get("metrics") or {}),
            params=dict(event.get("params") or {}),
            feature_importance=dict(event.get("feature_importance") or {}),
            validation_quantiles=tuple(event.get("validation_quantiles") or ()),
            reason=event.get("reason") or "",
            actor=event.get("actor") or "",
            event_id=event.get("event_id") or "",
            signing_key_id=event.get("signing_key_id") or "",
            signature=event.get("signature") or "",
        )

    def meta(self) -> dict[str, Any]:
        """Everything but the artifact bytes (JSON-able): what the cache keeps beside them."""
        event = self.to_event()
        for k in ("artifact", "kind", "arm", "arm_weights"):
            event.pop(k)
        return event


def build_artifact(
    model_text: str,
    *,
    extractor_version: str,
    feature_names: Sequence[str],
    categorical_features: Sequence[str] = (),
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
    feature_importance: Mapping[str, float] | None = None,
    validation_quantiles: Sequence[float] = (),
    reason: str = "",
    actor: str = "",
    created_at: int | None = None,
    encoding: str = DEFAULT_ENCODING,
) -> ModelArtifact:
    """Pack a model text into a :class:`ModelArtifact` with its content address."""
    data, sha = pack(model_text, encoding)
    version = version_for_sha(sha, extractor_version)
    return ModelArtifact(
        model_version=version,
        extractor_version=extractor_version,
        feature_names=tuple(feature_names),
        categorical_features=tuple(categorical_features),
        artifact=data,
        encoding=encoding,
        sha256=sha,
        created_at=int(time.time() * 1000) if created_at is None else int(created_at),
        metrics=dict(metrics or {}),
        params=dict(params or {}),
        feature_importance=dict(feature_importance or {}),
        validation_quantiles=tuple(validation_quantiles),
        reason=reason,
        actor=actor,
        event_id=f"published:{version}",
    )


# -- the Redis cache ---------------------------------------------------------------------------


class ModelCache:
    """Model artifacts in Redis, a cache of the ``models`` topic (key layout in the module doc)."""

    def __init__(self, client: Any, prefix: str = "", *, service: str = "unknown") -> None:
        self.client = client  # a redis.Redis with decode_responses=False
        self.prefix = f"{prefix}models:"
        self.service = service

    def key(self, version: str) -> str:
        return f"{self.prefix}{version}"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}index"

    def extractor_key(self, extractor_version: str) -> str:
        return f"{self.prefix}by_extractor:{extractor_version}"

    def put(self, art: ModelArtifact) -> None:
        """Write (or overwrite with the same content) one artifact and index it. Idempotent."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            self.key(art.model_version),
            mapping={
                "artifact": art.artifact,
                "encoding": art.encoding,
                "sha256": art.sha256,
                "meta": json.dumps(art.meta(), sort_keys=True),
            },
        )
        pipe.zadd(self.index_key, {art.model_version: art.created_at})
        pipe.zadd(self.extractor_key(art.extractor_version), {art.model_version: art.created_at})
        pipe.execute()

    def get(self, version: str) -> ModelArtifact | None:
        """The cached artifact, unverified (call ``.model_text()``), or None when not cached.

        Raises :class:`CacheEntryError` (counted) when the entry is malformed.
        """
        raw = self.client.hgetall(self.key(version))
        if not raw:
            return None
        try:
            return _entry(version, {_s(k): v for k, v in raw.items()})
        except CacheEntryError:
            CACHE_REJECTED.labels(self.service).inc()
            raise

    def load_text(self, version: str) -> str | None:
        """The verified model text of a cached version; None when not cached.

        Raises :class:`ArtifactIntegrityError` when the cached bytes are not the model their
        sha256 names (the caller should then rebuild that entry from the topic).
        """
        art = self.get(version)
        if art is None:
            return None
        return art.model_text(service=self.service, source="redis")

    def versions(self, extractor_version: str | None = None) -> list[str]:
        """Cached versions, oldest first."""
        key = self.extractor_key(extractor_version) if extractor_version else self.index_key
        return [_s(v) for v in self.client.zrange(key, 0, -1)]

    def missing(self, versions: Sequence[str]) -> list[str]:
        """Which of ``versions`` have no artifact in the cache."""
        if not versions:
            return []
        pipe = self.client.pipeline(transaction=False)
        for v in versions:
            pipe.exists(self.key(v))
        return [v for v, present in zip(versions, pipe.execute(), strict=True) if not present]

    def delete(self, version: str, extractor_version: str | None = None) -> None:
        """Drop one entry; works on a malformed entry too (its index entries with it)."""
        if extractor_version is None:
            extractor_version = _extractor_of(self.client.hget(self.key(version), "meta"))
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.key(version))
        pipe.zrem(self.index_key, version)
        if extractor_version:
            pipe.zrem(self.extractor_key(extractor_version), version)
        else:  # a meta too broken to say: the version is in none of the others, or in one
            for key in self.client.scan_iter(match=self.extractor_key("*"), count=100):
                pipe.zrem(key, version)
        pipe.execute()


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _extractor_of(meta: Any) -> str | None:
    try:
        value = json.loads(_s(meta)).get("extractor_version") if meta is not None else None
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) and value else None


def _entry(version: str, raw: Mapping[str, Any]) -> ModelArtifact:
    """The PUBLISHED record a cache hash holds, checked against the ``model_event`` schema:
    JSON that parses but has other types (a list for a string, a string for a number) must be
    refused here, or it fails later wherever the value is first used."""
    try:
        meta = json.loads(_s(raw["meta"]))
        if not isinstance(meta, dict):
            raise CacheEntryError(f"meta is a JSON {type(meta).__name__}, not an object")
        if not isinstance(raw["artifact"], bytes | bytearray):
            raise CacheEntryError("artifact is not bytes")
        event = meta | {
            "kind": EventKind.PUBLISHED.value,
            "artifact": bytes(raw["artifact"]),
            "artifact_encoding": _s(raw["encoding"]),
            "artifact_sha256": _s(raw["sha256"]),
            "arm": None,
            "arm_weights": {},
        }
    except CacheEntryError as exc:
        raise CacheEntryError(f"model cache entry {version}: {exc}") from exc
    except (KeyError, ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise CacheEntryError(f"model cache entry {version}: {type(exc).__name__}: {exc}") from exc
    schema = serde("model_event").reader.parsed
    # bool is an int to Python and to fastavro; no field of a model event is a boolean.
    if any(isinstance(v, bool) for v in event.values()) or not validate(event, schema, raise_errors=False):
        raise CacheEntryError(f"model cache entry {version}: fields do not match the model_event schema")
    if event["model_version"] != version:
        raise CacheEntryError(f"model cache entry {version} holds {event['model_version']!r}")
    return ModelArtifact.from_event(event)


# -- reading the topic -------------------------------------------------------------------------


@dataclass
class RebuildReport:
    read: int = 0  # model events read
    published: int = 0  # PUBLISHED events among them
    cached: int = 0  # artifacts written to Redis
    refused: list[str] = field(default_factory=list)  # versions whose integrity check failed
    seconds: float = 0.0


def read_model_events(settings: Any, *, timeout: float = 60.0) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every committed event on ``models`` from the beginning to its end as of now: (offset, event).

    Undecodable records are logged and skipped (they are never a model anyone may use).
    """
    from libs.common.kafka.clients import position
    from libs.common.kafka.replay import LARGE_FETCH, read_to_end
    from libs.common.serde import SerdeError
    from libs.common.topics import MODELS

    model_serde = serde("model_event")
    for msg in read_to_end(
        settings, [settings.topic(MODELS)], name="models-reader", timeout=timeout, **LARGE_FETCH
    ):
        offset, value = position(msg)[2], msg.value() or b""
        try:
            yield offset, model_serde.decode(value)
        except SerdeError as exc:
            log.error(
                "undecodable record on models skipped", extra={"offset": msg.offset(), "error": str(exc)}
            )


def rebuild_cache(
    settings: Any,
    cache: ModelCache,
    *,
    only_missing: bool = True,
    timeout: float = 60.0,
) -> RebuildReport:
    """Put every PUBLISHED model on ``models`` into the Redis cache, each verified first.

    ``settings`` is a :class:`libs.common.settings.CommonSettings`. With ``only_missing`` the
    artifacts already cached are left alone (one EXISTS per version). A record whose sha256
    does not match is refused (logged, counted) and never cached.
    """
    started = time.monotonic()
    report = RebuildReport()
    for _offset, event in read_model_events(settings, timeout=timeout):
        report.read += 1
        if event.get("kind") != EventKind.PUBLISHED:
            continue
        report.published += 1
        art = ModelArtifact.from_event(event)
        if only_missing and not cache.missing([art.model_version]):
            continue
        try:
            art.model_text(service=cache.service, source="topic")
        except ArtifactIntegrityError:
            report.refused.append(art.model_version)
            continue
        cache.put(art)
        report.cached += 1
    report.seconds = time.monotonic() - started
    log.info(
        "model cache rebuilt from the models topic",
        extra={
            "read": report.read,
            "published": report.published,
            "cached": report.cached,
            "refused": report.refused,
            "seconds": round(report.seconds, 3),
        },
    )
    return report


class ArtifactStore:
    """Where an evicted version's artifact comes back from: the Redis model cache, else the
    ``models`` topic itself (the record, read from its start: seconds, but only when a version
    that fell out of both memory and the bounded cache is selected again). What the topic gives
    back is put into the cache again, best effort. Loading verifies it, wherever it came from."""

    def __init__(self, cache: ModelCache, settings: Any, *, timeout: float = 60.0) -> None:
        self.cache = cache
        self.settings = settings
        self.timeout = timeout

    def get(self, version: str) -> ModelArtifact | None:
        import redis

        try:
            art = self.cache.get(version)
        except (redis.RedisError, CacheEntryError) as exc:
            log.warning("model cache unusable for a fetch; reading the topic", extra={"error": str(exc)})
            art = None
        if art is not None:
            return art
        for _offset, event in read_model_events(self.settings, timeout=self.timeout):
            if event.get("kind") == EventKind.PUBLISHED and event.get("model_version") == version:
                art = ModelArtifact.from_event(event)
                with contextlib.suppress(redis.RedisError):
                    self.cache.put(art)
                log.info("evicted artifact read back from the models topic", extra={"model_version": version})
                return art
        return None
