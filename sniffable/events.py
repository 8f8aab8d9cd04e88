"""What the simulator emits: one :class:`SimEvent` per record sent, good, bad or re-sent.

A tuple, not a dataclass: a run makes millions of them and a ``NamedTuple`` is the cheapest
immutable record Python has.
"""

from __future__ import annotations

from typing import Any, NamedTuple

PUPDATE = "pupdate"
LIKE = "like"
DUPLICATE = "duplicate"
GOOD_KINDS = frozenset({PUPDATE, LIKE})


class SimEvent(NamedTuple):
    """One record, in send order.

    ``value`` is what a Kafka sink produces (single-object Avro); ``json_payload`` (Avro field
    names plus ``schema_version``) is what an HTTP sink posts, unless ``http_body`` holds raw
    bytes because the body itself is the bad part. ``kind`` is ``pupdate`` or ``like`` for good
    events, ``duplicate`` for an exact re-send (its first copy was good; the collector drops
    it), and otherwise the bad-input kind, which is the reason it is expected to be rejected.
    """

    topic_base: str
    key: str
    value: bytes
    kind: str
    event_id: str | None
    event_time_ms: int
    json_payload: dict[str, Any] | None
    schema_version: int
    send_ms: int
    detail: str = ""
    http_body: bytes | None = None
    truth: float | None = None

    @property
    def good(self) -> bool:
        return self.kind in GOOD_KINDS

    @property
    def bad(self) -> bool:
        """Expected in dead letters (a duplicate is neither good nor bad: it is dropped)."""
        return self.kind not in GOOD_KINDS and self.kind != DUPLICATE
