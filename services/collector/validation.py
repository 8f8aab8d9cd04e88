"""What makes a raw event impossible: pure functions, no Kafka, no state, no clock of their own.

Every rejection carries a stable reason code (the dead letter's ``reason`` and the HTTP error's
``reason``) and a detail a person can act on. A record bad in several ways gets the first reason
in the order the checks run; the simulation's bad-input kinds map one to one onto these codes.

Checks that need what the collector has seen (duplicates, unknown dogs and pupdates, a like
before its pupdate) live with the state in :mod:`services.collector.processor`; the timing
comparison itself is :func:`check_like_time` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.collector.settings import CollectorSettings

# Reason codes (dead letters and HTTP errors).
UNDECODABLE = "undecodable"
UNKNOWN_SCHEMA = "unknown_schema"
NEGATIVE_FOLLOWERS = "negative_followers"
FUTURE_TIMESTAMP = "future_timestamp"
LIKE_UNKNOWN_PUPDATE = "like_unknown_pupdate"
LIKE_BEFORE_PUPDATE = "like_before_pupdate"
OVERSIZED_CAPTION = "oversized_caption"
OVERSIZED_RECORD = "oversized_record"
TOO_MANY_HASHTAGS = "too_many_hashtags"
UNKNOWN_DOG = "unknown_dog"
INVALID_FIELD = "invalid_field"
MISSING_FIELD = "missing_field"
MISTYPED_FIELD = "mistyped_field"
PROCESSING_ERROR = "processing_error"

SIZES = frozenset({"TOY", "SMALL", "MEDIUM", "LARGE", "GIANT"})
MAX_AGE_MONTHS = 480


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Limits:
    """The validation limits, copied out of the settings so checks are plain attribute reads."""

    future_tolerance_ms: int = 300_000
    like_before_tolerance_ms: int = 0
    max_caption_chars: int = 4096
    max_hashtags: int = 30
    max_hashtag_chars: int = 100
    max_id_chars: int = 128
    max_value_bytes: int = 64 * 1024
    min_event_time_ms: int = 1_262_304_000_000

    @classmethod
    def from_settings(cls, s: CollectorSettings) -> Limits:
        return cls(
            future_tolerance_ms=int(s.future_tolerance_s * 1000),
            like_before_tolerance_ms=s.like_before_tolerance_ms,
            max_caption_chars=s.max_caption_chars,
            max_hashtags=s.max_hashtags,
            max_hashtag_chars=s.max_hashtag_chars,
            max_id_chars=s.max_id_chars,
            max_value_bytes=s.max_value_bytes,
            min_event_time_ms=s.min_event_time_ms,
        )


def _bad_id(rec: Mapping[str, Any], name: str, limits: Limits) -> Rejection | None:
    value = rec[name]
    if not value or not value.strip():
        return Rejection(INVALID_FIELD, f"{name} is empty")
    if len(value) > limits.max_id_chars:
        return Rejection(INVALID_FIELD, f"{name} has {len(value)} characters (limit {limits.max_id_chars})")
    return None


def _bad_time(name: str, value: int, now_ms: int, limits: Limits) -> Rejection | None:
    if value < limits.min_event_time_ms:
        return Rejection(INVALID_FIELD, f"{name} {value} is before {limits.min_event_time_ms}")
    ahead = value - now_ms
    if ahead > limits.future_tolerance_ms:
        return Rejection(
            FUTURE_TIMESTAMP,
            f"{name} is {ahead / 1000:.0f} s ahead of the collector's clock "
            f"(tolerance {limits.future_tolerance_ms / 1000:.0f} s)",
        )
    return None


def check_value_size(size: int, limits: Limits) -> Rejection | None:
    if size > limits.max_value_bytes:
        return Rejection(OVERSIZED_RECORD, f"{size} bytes (limit {limits.max_value_bytes})")
    return None


def check_profile(dog: Mapping[str, Any], limits: Limits) -> Rejection | None:
    breed = dog["breed"]
    if not breed or not breed.strip():
        return Rejection(INVALID_FIELD, "dog.breed is empty")
    if len(breed) > limits.max_hashtag_chars:
        return Rejection(INVALID_FIELD, f"dog.breed has {len(breed)} characters")
    if dog["size"] not in SIZES:
        return Rejection(INVALID_FIELD, f"dog.size {dog['size']!r} is not one of {', '.join(sorted(SIZES))}")
    age = dog.get("age_months")
    if age is not None and not 0 <= age <= MAX_AGE_MONTHS:
        return Rejection(INVALID_FIELD, f"dog.age_months {age} is outside 0..{MAX_AGE_MONTHS}")
    return None


def check_pupdate(rec: Mapping[str, Any], now_ms: int, limits: Limits) -> Rejection | None:
    """Stateless checks of a pupdate in the current raw shape (older versions resolved)."""
    for name in ("event_id", "pupdate_id", "dog_id"):
        bad = _bad_id(rec, name, limits)
        if bad:
            return bad
    if rec["dog_followers"] < 0:
        return Rejection(NEGATIVE_FOLLOWERS, f"dog_followers is {rec['dog_followers']}")
    bad = _bad_time("posted_at", rec["posted_at"], now_ms, limits)
    if bad:
        return bad
    caption = rec.get("caption")
    if caption is not None and len(caption) > limits.max_caption_chars:
        return Rejection(
            OVERSIZED_CAPTION, f"caption has {len(caption)} characters (limit {limits.max_caption_chars})"
        )
    hashtags = rec["hashtags"]
    if len(hashtags) > limits.max_hashtags:
        return Rejection(TOO_MANY_HASHTAGS, f"{len(hashtags)} hashtags (limit {limits.max_hashtags})")
    for tag in hashtags:
        if not tag or len(tag) > limits.max_hashtag_chars:
            return Rejection(INVALID_FIELD, f"hashtag {tag[:40]!r} is empty or too long")
    if len(rec["app_version"]) > limits.max_id_chars:
        return Rejection(INVALID_FIELD, "app_version is too long")
    country = rec.get("country")
    if country is not None and not (len(country) == 2 and country.isascii() and country.isupper()):
        return Rejection(INVALID_FIELD, f"country {country!r} is not an ISO 3166-1 alpha-2 code")
    photo_filter = rec.get("photo_filter")
    if photo_filter is not None and len(photo_filter) > limits.max_hashtag_chars:
        return Rejection(INVALID_FIELD, "photo_filter is too long")
    dog = rec.get("dog")
    if dog is not None:
        return check_profile(dog, limits)
    return None


def check_like(rec: Mapping[str, Any], now_ms: int, limits: Limits) -> Rejection | None:
    """Stateless checks of a like in the current raw shape."""
    for name in ("event_id", "pupdate_id", "sniffer_id"):
        bad = _bad_id(rec, name, limits)
        if bad:
            return bad
    bad = _bad_time("liked_at", rec["liked_at"], now_ms, limits)
    if bad:
        return bad
    if len(rec.get("app_version") or "") > limits.max_id_chars:
        return Rejection(INVALID_FIELD, "app_version is too long")
    return None


def check_like_time(liked_at: int, posted_at: int, limits: Limits) -> Rejection | None:
    """A like cannot precede its pupdate (beyond the configured clock-skew tolerance)."""
    early = posted_at - liked_at
    if early > limits.like_before_tolerance_ms:
        return Rejection(LIKE_BEFORE_PUPDATE, f"liked_at is {early} ms before the pupdate's posted_at")
    return None


def pupdate_fact(
    rec: Mapping[str, Any], profile: Mapping[str, Any], raw_schema: str, collected_at: int
) -> dict[str, Any]:
    """The ``pupdates`` fact for an accepted raw pupdate and the dog profile it is filed under."""
    return {
        "event_id": rec["event_id"],
        "pupdate_id": rec["pupdate_id"],
        "dog_id": rec["dog_id"],
        "posted_at": rec["posted_at"],
        "hashtags": rec["hashtags"],
        "caption": rec.get("caption"),
        "photo_filter": rec.get("photo_filter"),
        "dog": {
            "breed": profile["breed"],
            "size": profile["size"],
            "age_months": profile.get("age_months"),
        },
        "dog_followers": rec["dog_followers"],
        "country": rec.get("country"),
        "app_version": rec["app_version"],
        "raw_schema": raw_schema,
        "collected_at": collected_at,
    }


def like_fact(rec: Mapping[str, Any], collected_at: int) -> dict[str, Any]:
    return {
        "event_id": rec["event_id"],
        "pupdate_id": rec["pupdate_id"],
        "sniffer_id": rec["sniffer_id"],
        "liked_at": rec["liked_at"],
        "app_version": rec.get("app_version") or "unknown",
        "collected_at": collected_at,
    }


# --- JSON (HTTP) to Avro records ------------------------------------------------------------

_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def _conform(value: Any, schema: Any, path: str) -> Any:
    """``value`` checked against an Avro schema (fastavro-parsed), with defaults filled."""
    if isinstance(schema, list):  # union
        if value is None:
            if "null" in schema:
                return None
            raise _Invalid(MISTYPED_FIELD, f"{path} must not be null")
        errors = []
        for branch in schema:
            if branch == "null":
                continue
            try:
                return _conform(value, branch, path)
            except _Invalid as exc:
                errors.append(exc)
        raise errors[0] if errors else _Invalid(MISTYPED_FIELD, f"{path} has the wrong type")
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            if not isinstance(value, dict):
                raise _Invalid(MISTYPED_FIELD, f"{path or 'the event'} must be an object")
            out = {}
            for field in schema["fields"]:
                name = field["name"]
                sub = f"{path}.{name}" if path else name
                if name in value:
                    out[name] = _conform(value[name], field["type"], sub)
                elif "default" in field:
                    out[name] = field["default"]
                else:
                    raise _Invalid(MISSING_FIELD, f"{sub} is required")
            return out
        if kind == "array":
            if not isinstance(value, list):
                raise _Invalid(MISTYPED_FIELD, f"{path} must be an array")
            return [_conform(v, schema["items"], f"{path}[{i}]") for i, v in enumerate(value)]
        if kind == "map":
            if not isinstance(value, dict):
                raise _Invalid(MISTYPED_FIELD, f"{path} must be an object")
            return {str(k): _conform(v, schema["values"], f"{path}.{k}") for k, v in value.items()}
        if kind == "enum":
            if value not in schema["symbols"]:
                raise _Invalid(MISTYPED_FIELD, f"{path} must be one of {schema['symbols']}")
            return value
        return _conform(value, kind, path)
    if schema == "string":
        if not isinstance(value, str):
            raise _Invalid(MISTYPED_FIELD, f"{path} must be a string, got {type(value).__name__}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # JSON allows "\ud800"; Avro strings are UTF-8 text
            raise _Invalid(INVALID_FIELD, f"{path} is not Unicode text (a lone surrogate)") from None
        return value
    if schema in _INT_RANGE:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(MISTYPED_FIELD, f"{path} must be an integer, got {type(value).__name__}")
        lo, hi = _INT_RANGE[schema]
        if not lo <= value <= hi:
            raise _Invalid(MISTYPED_FIELD, f"{path} is out of range")
        return value
    if schema in ("double", "float"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _Invalid(MISTYPED_FIELD, f"{path} must be a number")
        return float(value)
    if schema == "boolean":
        if not isinstance(value, bool):
            raise _Invalid(MISTYPED_FIELD, f"{path} must be true or false")
        return value
    if schema == "null":
        if value is not None:
            raise _Invalid(MISTYPED_FIELD, f"{path} must be null")
        return None
    raise _Invalid(MISTYPED_FIELD, f"{path}: unsupported schema type {schema!r}")


def from_json(obj: Any, parsed_schema: Mapping[str, Any]) -> tuple[dict[str, Any] | None, Rejection | None]:
    """A JSON event checked against one writer schema: (record, None) or (None, why not)."""
    try:
        return _conform(obj, parsed_schema, ""), None
    except _Invalid as exc:
        return None, Rejection(exc.reason, exc.detail)
