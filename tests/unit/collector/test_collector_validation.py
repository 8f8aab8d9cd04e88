"""The collector's stateless rules: each reason code from a record bad in exactly that way."""

from __future__ import annotations

import pytest

from libs.common.serde import default_store
from services.collector import validation as v
from services.collector.settings import CollectorSettings
from tests.support.collector_fakes import NOW_MS, like, pupdate

LIMITS = v.Limits()


def _pupdate_v3(**over):
    rec = pupdate(3) | over
    return rec


@pytest.mark.parametrize("version", [1, 2, 3])
def test_good_pupdates_of_every_version_pass(version):
    rec = pupdate(version)
    rec.setdefault("dog", None)
    assert v.check_pupdate(rec, NOW_MS, LIMITS) is None


@pytest.mark.parametrize(
    ("over", "reason", "detail"),
    [
        ({"event_id": ""}, v.INVALID_FIELD, "event_id is empty"),
        ({"pupdate_id": ""}, v.INVALID_FIELD, "pupdate_id is empty"),
        ({"dog_id": "   "}, v.INVALID_FIELD, "dog_id is empty"),
        ({"pupdate_id": "p" * 129}, v.INVALID_FIELD, "129 characters"),
        ({"dog_followers": -3}, v.NEGATIVE_FOLLOWERS, "-3"),
        ({"posted_at": NOW_MS + 2 * 86_400_000}, v.FUTURE_TIMESTAMP, "ahead"),
        ({"posted_at": 1000}, v.INVALID_FIELD, "before"),
        ({"caption": "x" * 4097}, v.OVERSIZED_CAPTION, "4097 characters"),
        ({"hashtags": ["#dog"] * 31}, v.TOO_MANY_HASHTAGS, "31 hashtags"),
        ({"hashtags": ["#dog", ""]}, v.INVALID_FIELD, "hashtag"),
        ({"country": "brazil"}, v.INVALID_FIELD, "country"),
        ({"dog": {"breed": "Pug", "size": "HUGE", "age_months": None}}, v.INVALID_FIELD, "HUGE"),
        ({"dog": {"breed": "Pug", "size": "small", "age_months": None}}, v.INVALID_FIELD, "small"),
        ({"dog": {"breed": "", "size": "SMALL", "age_months": None}}, v.INVALID_FIELD, "breed"),
        ({"dog": {"breed": "Pug", "size": "SMALL", "age_months": -1}}, v.INVALID_FIELD, "age_months"),
    ],
)
def test_each_bad_pupdate_gets_its_reason(over, reason, detail):
    bad = v.check_pupdate(_pupdate_v3(**over), NOW_MS, LIMITS)
    assert bad is not None
    assert bad.reason == reason
    assert detail in bad.detail


def test_the_future_tolerance_is_a_tolerance():
    almost = NOW_MS + LIMITS.future_tolerance_ms
    assert v.check_pupdate(_pupdate_v3(posted_at=almost), NOW_MS, LIMITS) is None
    assert v.check_pupdate(_pupdate_v3(posted_at=almost + 1), NOW_MS, LIMITS).reason == v.FUTURE_TIMESTAMP


def test_a_caption_at_the_limit_is_fine():
    assert v.check_pupdate(_pupdate_v3(caption="é" * 4096), NOW_MS, LIMITS) is None


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"sniffer_id": ""}, v.INVALID_FIELD),
        ({"event_id": ""}, v.INVALID_FIELD),
        ({"pupdate_id": ""}, v.INVALID_FIELD),
        ({"liked_at": NOW_MS + 3 * 86_400_000}, v.FUTURE_TIMESTAMP),
    ],
)
def test_each_bad_like_gets_its_reason(over, reason):
    assert v.check_like(like() | over, NOW_MS, LIMITS).reason == reason


def test_good_likes_pass():
    assert v.check_like(like(), NOW_MS, LIMITS) is None
    assert v.check_like(like(1), NOW_MS, LIMITS) is None


def test_a_like_before_its_pupdate_is_rejected_beyond_the_tolerance():
    assert v.check_like_time(1000, 1000, LIMITS) is None
    assert v.check_like_time(1001, 1000, LIMITS) is None
    assert v.check_like_time(999, 1000, LIMITS).reason == v.LIKE_BEFORE_PUPDATE
    skew = v.Limits(like_before_tolerance_ms=500)
    assert v.check_like_time(600, 1000, skew) is None
    assert v.check_like_time(400, 1000, skew).reason == v.LIKE_BEFORE_PUPDATE


def test_oversized_records():
    assert v.check_value_size(64 * 1024, LIMITS) is None
    assert v.check_value_size(64 * 1024 + 1, LIMITS).reason == v.OVERSIZED_RECORD


def test_limits_come_from_settings():
    limits = v.Limits.from_settings(CollectorSettings(future_tolerance_s=1.5, max_caption_chars=10))
    assert limits.future_tolerance_ms == 1500
    assert limits.max_caption_chars == 10


def test_facts_fill_in_what_old_versions_lack():
    rec = pupdate(1) | {"dog": None, "caption": None, "photo_filter": None, "country": None}
    fact = v.pupdate_fact(rec, {"breed": "Pug", "size": "SMALL"}, "abcd", NOW_MS)
    assert fact["dog"] == {"breed": "Pug", "size": "SMALL", "age_months": None}
    assert fact["raw_schema"] == "abcd"
    assert fact["collected_at"] == NOW_MS
    assert v.like_fact(like(1), NOW_MS)["app_version"] == "unknown"


# --- JSON ---------------------------------------------------------------------------------


def _schema(stem: str, version: int):
    return default_store().version(stem, version).parsed


def test_json_of_each_version_conforms_and_gets_defaults():
    for version in (1, 2, 3):
        rec, bad = v.from_json(pupdate(version), _schema("pupdate_raw", version))
        assert bad is None
        if version == 2:
            assert rec["dog"] == {"breed": "Pug", "size": "SMALL"}
    rec, bad = v.from_json(pupdate(3) | {"country": None, "extra": 1}, _schema("pupdate_raw", 3))
    assert bad is None
    assert rec["country"] is None and "extra" not in rec
    minimal = {k: pupdate(3)[k] for k in pupdate(1)}
    rec, bad = v.from_json(minimal, _schema("pupdate_raw", 3))
    assert bad is None
    assert rec["dog"] is None and rec["caption"] is None


@pytest.mark.parametrize(
    ("obj", "reason", "where"),
    [
        ({k: x for k, x in pupdate(3).items() if k != "posted_at"}, v.MISSING_FIELD, "posted_at"),
        (pupdate(3) | {"dog_followers": "1.2k"}, v.MISTYPED_FIELD, "dog_followers"),
        (pupdate(3) | {"posted_at": True}, v.MISTYPED_FIELD, "posted_at"),
        (pupdate(3) | {"hashtags": "#adorable #puppy"}, v.MISTYPED_FIELD, "hashtags"),
        (pupdate(3) | {"hashtags": ["#a", 3]}, v.MISTYPED_FIELD, "hashtags[1]"),
        (pupdate(3) | {"dog": {"breed": "Pug"}}, v.MISSING_FIELD, "dog.size"),
        (pupdate(3) | {"dog": "Pug"}, v.MISTYPED_FIELD, "dog"),
        (pupdate(3) | {"dog_followers": 2**64}, v.MISTYPED_FIELD, "dog_followers"),
        (pupdate(3) | {"event_id": None}, v.MISTYPED_FIELD, "event_id"),
        ([1, 2], v.MISTYPED_FIELD, "object"),
    ],
)
def test_json_errors_name_the_field(obj, reason, where):
    rec, bad = v.from_json(obj, _schema("pupdate_raw", 3))
    assert rec is None
    assert bad.reason == reason
    assert where in bad.detail


def test_json_likes():
    rec, bad = v.from_json(like(2) | {"liked_at": "just now"}, _schema("like_raw", 2))
    assert bad.reason == v.MISTYPED_FIELD
    rec, bad = v.from_json(like(2) | {"sniffer_id": 12345}, _schema("like_raw", 2))
    assert bad.reason == v.MISTYPED_FIELD
    rec, bad = v.from_json(like(1), _schema("like_raw", 2))
    assert bad is None and rec["app_version"] == "unknown"
