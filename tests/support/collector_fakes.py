"""Test doubles for the collector's unit tests: raw records without a broker."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from libs.common.serde import Serde, serde
from libs.common.settings import CommonSettings
from services.collector.processor import Processor
from services.collector.settings import CollectorSettings

NOW_MS = int(time.time() * 1000)


@dataclass
class FakeMessage:
    """What the processor reads of a ``confluent_kafka.Message``."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _headers: list[tuple[str, bytes]] | None = None
    _timestamp: int = NOW_MS

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self):
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)


@dataclass
class Sink:
    """Collects what the processor writes."""

    records: list[tuple[str, bytes, Any, list]] = field(default_factory=list)

    def __call__(self, topic, value, key, headers) -> None:
        self.records.append((topic, value, key, headers))

    def on(self, topic: str) -> list[dict]:
        stem = {"pupdates": "pupdate", "likes": "like", "deadletters": "dead_letter"}[topic]
        return [serde(stem).decode(v) for t, v, _k, _h in self.records if t == topic]

    def as_messages(self) -> list[FakeMessage]:
        """The outputs as they would be read back from the topics."""
        return [
            FakeMessage(t, 0, i, v, k.encode() if isinstance(k, str) else k, h)
            for i, (t, v, k, h) in enumerate(self.records)
        ]


def pupdate(version: int = 3, **over) -> dict:
    rec = {
        "event_id": "e-p1",
        "pupdate_id": "p1",
        "dog_id": "d1",
        "posted_at": NOW_MS - 60_000,
        "hashtags": ["#adorable", "#puppy"],
        "dog_followers": 120,
        "app_version": {1: "1.4.2", 2: "2.8.1", 3: "3.2.0"}[version],
    }
    if version >= 2:
        rec |= {"caption": "Sunday vibes", "photo_filter": "juno", "dog": {"breed": "Pug", "size": "SMALL"}}
    if version >= 3:
        rec["dog"] = {"breed": "Pug", "size": "SMALL", "age_months": 30}
        rec["country"] = "BR"
    return rec | over


def like(version: int = 2, **over) -> dict:
    rec = {"event_id": "e-l1", "pupdate_id": "p1", "sniffer_id": "s1", "liked_at": NOW_MS - 30_000}
    if version >= 2:
        rec["app_version"] = "3.2.0"
    return rec | over


def encode(stem: str, rec: dict, version: int) -> bytes:
    return Serde(stem, writer_version=version).encode(rec)


class Feed:
    """Numbers raw records per topic and partition like a broker would."""

    def __init__(self, common: CommonSettings) -> None:
        self.common = common
        self.next: dict[tuple[str, int], int] = {}

    def msg(self, base: str, value: bytes | None, partition: int = 0, key: str = "k") -> FakeMessage:
        topic = self.common.topic(base)
        offset = self.next.get((topic, partition), 0)
        self.next[(topic, partition)] = offset + 1
        return FakeMessage(topic, partition, offset, value, key.encode())

    def pupdate(self, rec: dict, version: int = 3, partition: int = 0) -> FakeMessage:
        return self.msg("pupdates.raw", encode("pupdate_raw", rec, version), partition, rec["pupdate_id"])

    def like(self, rec: dict, version: int = 2, partition: int = 0) -> FakeMessage:
        return self.msg("likes.raw", encode("like_raw", rec, version), partition, rec["pupdate_id"])


def make_processor(**settings) -> tuple[Processor, Sink, Feed]:
    common = CommonSettings(topic_prefix="")
    sink = Sink()
    proc = Processor(common, CollectorSettings(instance_id="test", **settings), sink)
    return proc, sink, Feed(common)
