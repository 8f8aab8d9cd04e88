"""Sniffable app versions: which raw schema each writes, and how an event becomes bytes.

Several app versions are in use at once, as in any mobile app nobody can force to upgrade:

==========  ===================  ==============  ===========================================
app         pupdate_raw writer   like_raw writer what it knows
==========  ===================  ==============  ===========================================
1.x         v1                   v1              no dog profile, no caption, filter, country
2.x         v2                   v1              + caption, photo filter, dog breed and size
3.x, web    v3                   v2              + country, dog age; likes carry app_version
==========  ===================  ==============  ===========================================

The JSON form (for the collector's HTTP API) uses the Avro field names plus ``schema_version``,
the writer version the app follows. Avro ignores that extra key, so one dict serves both.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from libs.common.serde import Serde

from .world import Dog


@dataclass(frozen=True)
class AppVersion:
    version: str
    pupdate_schema: int
    like_schema: int
    weight: float


APP_VERSIONS: tuple[AppVersion, ...] = (
    AppVersion("1.4.2", 1, 1, 8.0),
    AppVersion("1.9.7", 1, 1, 7.0),
    AppVersion("2.3.0", 2, 1, 12.0),
    AppVersion("2.8.1", 2, 1, 13.0),
    AppVersion("3.0.2", 3, 2, 25.0),
    AppVersion("3.2.0", 3, 2, 35.0),
)
# A dog is registered, with its profile, from the web app before an owner on 1.x can post it
# (1.x sends no profile, and the collector only knows dogs it has seen a profile of).
WEB = AppVersion("web-3.2.0", 3, 2, 0.0)
ALL_APPS: tuple[AppVersion, ...] = (*APP_VERSIONS, WEB)
WEB_INDEX = len(APP_VERSIONS)
APP_WEIGHTS = [a.weight for a in APP_VERSIONS]


def pupdate_record(
    schema: int,
    *,
    event_id: str,
    pupdate_id: str,
    dog: Dog,
    posted_at: int,
    hashtags: list[str],
    followers: int,
    app_version: str,
    caption: str | None,
    photo_filter: str | None,
    size: str | None = None,
) -> dict[str, Any]:
    """A pupdate as an app writing ``pupdate_raw`` v``schema`` sends it."""
    rec: dict[str, Any] = {
        "event_id": event_id,
        "pupdate_id": pupdate_id,
        "dog_id": dog.dog_id,
        "posted_at": posted_at,
        "hashtags": hashtags,
        "dog_followers": followers,
        "app_version": app_version,
    }
    if schema >= 2:
        profile: dict[str, Any] = {"breed": dog.breed_entered, "size": size or dog.size}
        if schema >= 3:
            profile["age_months"] = dog.age_months if dog.age_given else None
        rec["caption"] = caption
        rec["photo_filter"] = photo_filter
        rec["dog"] = profile
    if schema >= 3:
        rec["country"] = dog.country
    rec["schema_version"] = schema
    return rec


def like_record(
    schema: int,
    *,
    event_id: str,
    pupdate_id: str,
    sniffer_id: str,
    liked_at: int,
    app_version: str,
) -> dict[str, Any]:
    """A like as an app writing ``like_raw`` v``schema`` sends it."""
    rec: dict[str, Any] = {
        "event_id": event_id,
        "pupdate_id": pupdate_id,
        "sniffer_id": sniffer_id,
        "liked_at": liked_at,
    }
    if schema >= 2:
        rec["app_version"] = app_version
    rec["schema_version"] = schema
    return rec


_STRING_CACHE = 500_000


def _long(n: int) -> bytes:
    """Avro ``long``: zig-zag then base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _str(s: str) -> bytes:
    b = s.encode()
    n = len(b)
    return (bytes((n << 1,)) if n < 64 else _long(n)) + b


class Codec:
    """Single-object Avro for every raw writer version the apps use.

    Likes are most of the traffic, so they are written by a small hand-rolled encoder (four or
    five strings and a long: a few lines of the Avro spec) that the tests check byte for byte
    against fastavro; everything else goes through :class:`libs.common.serde.Serde`.
    """

    def __init__(self) -> None:
        self.pupdate = {v: Serde("pupdate_raw", writer_version=v) for v in (1, 2, 3)}
        self.like = {v: Serde("like_raw", writer_version=v) for v in (1, 2)}
        self._like_header = {v: s.writer.header for v, s in self.like.items()}
        self.headers = {("pupdate_raw", v): s.writer.header for v, s in self.pupdate.items()}
        self.headers |= {("like_raw", v): s.writer.header for v, s in self.like.items()}
        self._strings: dict[str, bytes] = {}

    def encode_pupdate(self, rec: dict[str, Any]) -> bytes:
        return self.pupdate[rec["schema_version"]].encode(rec)

    def encode_like(self, rec: dict[str, Any]) -> bytes:
        v = rec["schema_version"]
        cache = self._strings
        sniffer = cache.get(rec["sniffer_id"]) or self._cached(rec["sniffer_id"])
        body = (
            self._like_header[v]
            + _str(rec["event_id"])
            + _str(rec["pupdate_id"])
            + sniffer
            + _long(rec["liked_at"])
        )
        if v >= 2:
            body += cache.get(rec["app_version"]) or self._cached(rec["app_version"])
        return body

    def _cached(self, s: str) -> bytes:
        """Encoded form of a string that recurs (sniffer ids, app versions); bounded."""
        b = _str(s)
        if len(self._strings) < _STRING_CACHE:
            self._strings[s] = b
        return b


def random_fingerprint_header(rng, known: set[bytes]) -> bytes:
    """A single-object header whose fingerprint no schema in ``schemas/`` has."""
    while True:
        fp = struct.pack("<Q", rng.getrandbits(64))
        if fp not in known:
            return b"\xc3\x01" + fp
