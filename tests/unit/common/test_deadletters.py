"""The dead-letter builder: whatever hostile input holds, the letter can be encoded and written."""

from __future__ import annotations

from libs.common.deadletters import DeadLetters
from libs.common.serde import serde
from libs.common.settings import CommonSettings


def test_a_key_and_a_detail_with_lone_surrogates_still_make_an_encodable_letter():
    # Found by the fuzz test: an HTTP event whose pupdate_id is "\ud800" (valid JSON, no Unicode)
    # made the collector answer 500, because its dead letter could not be built.
    letters = DeadLetters(CommonSettings(topic_prefix="t."), "collector")
    rec = letters.record(
        "invalid_field", "dog_id '\ud800x' is odd", request_id="r1", key="p\ud800", value=b"{}"
    )
    back = serde("dead_letter").decode(letters.encode(rec))
    assert back["key"] == "p\ud800".encode("utf-8", "surrogatepass")
    assert back["detail"] == "dog_id '\\ud800x' is odd"
    assert back["reason"] == "invalid_field" and back["request_id"] == "r1"


def test_ordinary_text_is_kept_as_it_is():
    letters = DeadLetters(CommonSettings(topic_prefix="t."), "collector")
    rec = letters.record("invalid_field", "caption has 5000 characters: 🐶", key="p-1")
    assert rec["detail"] == "caption has 5000 characters: 🐶" and rec["key"] == b"p-1"
