"""Bad input the real app (and the real network) produces, one kind at a time.

Each bad record is bad in exactly one way, the way its kind names, so a collector test can
expect that reason and no other, and it never touches the good stream: bad pupdates get fresh
pupdate ids nobody likes, refer only to dogs whose profile was already sent (so a rejected
record cannot be the one that would have registered a dog), and bad likes of real pupdates
are rejected, so they never count as likes.

=======================  ======================================================================
kind                     what is sent
=======================  ======================================================================
undecodable              random bytes, or a valid record cut short (HTTP: truncated JSON)
unknown_schema           valid ``C3 01`` header with an unknown fingerprint, valid body
                         (HTTP: ``schema_version`` 900 or more)
negative_followers       a pupdate with ``dog_followers`` < 0
future_timestamp         ``posted_at`` or ``liked_at`` 2 to 30 days after the virtual now
like_unknown_pupdate     a like of a pupdate id that never existed
like_before_pupdate      a like of a real pupdate, ``liked_at`` 1 s to 6 h before ``posted_at``
duplicate                exact re-send of a recent good event: same bytes, same event_id
                         (dropped by the collector, not dead-lettered; its first copy is good)
oversized_caption        a caption of 5,000 to 12,000 characters (the limit is 4,096)
unknown_dog              a 1.x pupdate (no profile) of a dog never seen with a profile
invalid_field            empty pupdate_id, a size outside TOY..GIANT, or an empty sniffer_id
missing_field            (HTTP only) a required JSON field left out
mistyped_field           (HTTP only) a JSON field of the wrong type
=======================  ======================================================================

``future_timestamp`` is future relative to the *virtual* clock: a collector judges it against
its wall clock, so runs that expect those rejections keep ``start_ms`` near now (the default).
"""

from __future__ import annotations

import json
import random
from collections import deque
from typing import Any

from libs.common.topics import LIKES_RAW, PUPDATES_RAW

from .app import Codec, like_record, pupdate_record, random_fingerprint_header
from .events import DUPLICATE, SimEvent
from .ids import Ids
from .world import World

UNDECODABLE = "undecodable"
UNKNOWN_SCHEMA = "unknown_schema"
NEGATIVE_FOLLOWERS = "negative_followers"
FUTURE_TIMESTAMP = "future_timestamp"
LIKE_UNKNOWN_PUPDATE = "like_unknown_pupdate"
LIKE_BEFORE_PUPDATE = "like_before_pupdate"
OVERSIZED_CAPTION = "oversized_caption"
UNKNOWN_DOG = "unknown_dog"
INVALID_FIELD = "invalid_field"
MISSING_FIELD = "missing_field"
MISTYPED_FIELD = "mistyped_field"

KAFKA_KINDS: tuple[str, ...] = (
    UNDECODABLE,
    UNKNOWN_SCHEMA,
    NEGATIVE_FOLLOWERS,
    FUTURE_TIMESTAMP,
    LIKE_UNKNOWN_PUPDATE,
    LIKE_BEFORE_PUPDATE,
    DUPLICATE,
    OVERSIZED_CAPTION,
    UNKNOWN_DOG,
    INVALID_FIELD,
)
HTTP_KINDS: tuple[str, ...] = (*KAFKA_KINDS, MISSING_FIELD, MISTYPED_FIELD)

MAX_CAPTION = 4_096
ALLOWED_SIZES = frozenset({"TOY", "SMALL", "MEDIUM", "LARGE", "GIANT"})
_DAY_MS = 86_400_000
_RECENT = 256
_CAPTION_FILL = "Best day at the dog park ever, then a nap, then more park. "
_BAD_SIZES = ("HUGE", "small", "XL", "", "MEDIUM-ish")

# which kinds need something to have happened first
_NEEDS_DOG = frozenset(
    {NEGATIVE_FOLLOWERS, OVERSIZED_CAPTION, INVALID_FIELD, FUTURE_TIMESTAMP, MISSING_FIELD, MISTYPED_FIELD}
)
_NEEDS_PUPDATE = frozenset({LIKE_BEFORE_PUPDATE})
_NEEDS_SENT = frozenset({DUPLICATE})


class History:
    """What bad input may refer to: dogs with a profile sent, recent pupdates and sends."""

    __slots__ = ("followers", "known", "known_dogs", "recent_pupdates", "recent_sent")

    def __init__(self, n_dogs: int, followers: list[int] | None = None) -> None:
        self.followers = followers if followers is not None else [0] * n_dogs
        self.known = bytearray(n_dogs)
        self.known_dogs: list[int] = []
        self.recent_pupdates: deque[tuple[str, int]] = deque(maxlen=_RECENT)
        self.recent_sent: deque[SimEvent] = deque(maxlen=_RECENT)

    def profile_sent(self, dog: int) -> None:
        if not self.known[dog]:
            self.known[dog] = 1
            self.known_dogs.append(dog)


class BadInput:
    """Makes one bad record of a random allowed kind, at the virtual time ``now``."""

    def __init__(
        self,
        kinds: tuple[str, ...],
        rng: random.Random,
        ids: Ids,
        world: World,
        codec: Codec,
        history: History,
        transport: str,
    ) -> None:
        self.kinds = kinds
        self._rng = rng
        self._ids = ids
        self._world = world
        self._codec = codec
        self._h = history
        self._http = transport == "http"
        self._fingerprints = set(codec.pupdate[1].store.by_fingerprint)

    def available(self) -> list[str]:
        h = self._h
        return [
            k
            for k in self.kinds
            if not (k in _NEEDS_DOG and not h.known_dogs)
            and not (k in _NEEDS_PUPDATE and not h.recent_pupdates)
            and not (k in _NEEDS_SENT and not h.recent_sent)
        ]

    def make(self, now: int) -> SimEvent | None:
        """A bad record, or ``None`` when no requested kind is possible yet."""
        kinds = self.available()
        if not kinds:
            return None
        kind = kinds[int(self._rng.random() * len(kinds))]
        return getattr(self, "_" + kind)(now)

    # -- builders -------------------------------------------------------------------------

    def _pick(self, seq):
        return seq[int(self._rng.random() * len(seq))]

    def _pupdate(self, now: int, *, schema: int | None = None, **over: Any) -> dict[str, Any]:
        dog = self._world.dogs[self._pick(self._h.known_dogs)]
        schema = schema or (3 if self._rng.random() < 0.6 else 2)
        rec = pupdate_record(
            schema,
            event_id=self._ids.event(),
            pupdate_id=self._ids.pupdate(),
            dog=dog,
            posted_at=now,
            hashtags=self._world.pick_hashtags(self._rng, self._world.owners[dog.owner], 2),
            followers=self._h.followers[dog.index],
            app_version="3.2.0" if schema == 3 else "2.8.1",
            caption="Bad input, good dog",
            photo_filter=None,
        )
        rec.update(over)
        return rec

    def _like(self, now: int, pupdate_id: str, liked_at: int, **over: Any) -> dict[str, Any]:
        world = self._world
        sniffer = int(self._rng.random() * len(world.sniffer_ids))
        schema = 2 if self._rng.random() < 0.6 else 1
        rec = like_record(
            schema,
            event_id=self._ids.event(),
            pupdate_id=pupdate_id,
            sniffer_id=world.sniffer_ids[sniffer],
            liked_at=liked_at,
            app_version="3.2.0",
        )
        rec.update(over)
        return rec

    def _event(
        self,
        kind: str,
        rec: dict[str, Any],
        now: int,
        *,
        detail: str = "",
        value: bytes | None = None,
        event_time: int | None = None,
    ) -> SimEvent:
        is_pupdate = "posted_at" in rec or "dog_id" in rec
        topic = PUPDATES_RAW if is_pupdate else LIKES_RAW
        if value is None:
            value = self._codec.encode_pupdate(rec) if is_pupdate else self._codec.encode_like(rec)
        if event_time is None:
            t = rec.get("posted_at", rec.get("liked_at"))
            event_time = t if isinstance(t, int) else now
        return SimEvent(
            topic,
            rec.get("pupdate_id", ""),
            value,
            kind,
            rec.get("event_id"),
            event_time,
            rec,
            rec.get("schema_version", 0),
            now,
            detail,
        )

    def _recent_pupdate(self) -> tuple[str, int]:
        return self._pick(self._h.recent_pupdates)

    def _negative_followers(self, now: int) -> SimEvent:
        rec = self._pupdate(now, dog_followers=-(1 + int(self._rng.random() * 5000)))
        return self._event(NEGATIVE_FOLLOWERS, rec, now)

    def _oversized_caption(self, now: int) -> SimEvent:
        n = 5_000 + int(self._rng.random() * 7_000)
        caption = (_CAPTION_FILL * (n // len(_CAPTION_FILL) + 1))[:n]
        return self._event(
            OVERSIZED_CAPTION, self._pupdate(now, caption=caption), now, detail=f"{n} characters"
        )

    def _future_timestamp(self, now: int) -> SimEvent:
        ahead = int((2 + self._rng.random() * 28) * _DAY_MS)
        if self._h.recent_pupdates and self._rng.random() < 0.5:
            pid, _ = self._recent_pupdate()
            rec = self._like(now, pid, now + ahead)
            return self._event(FUTURE_TIMESTAMP, rec, now, detail="liked_at")
        rec = self._pupdate(now, posted_at=now + ahead)
        return self._event(FUTURE_TIMESTAMP, rec, now, detail="posted_at")

    def _like_unknown_pupdate(self, now: int) -> SimEvent:
        return self._event(LIKE_UNKNOWN_PUPDATE, self._like(now, self._ids.pupdate(), now), now)

    def _like_before_pupdate(self, now: int) -> SimEvent:
        pid, posted_at = self._recent_pupdate()
        before = 1_000 + int(self._rng.random() * 6 * 3_600_000)
        rec = self._like(now, pid, posted_at - before)
        return self._event(LIKE_BEFORE_PUPDATE, rec, now, detail=f"{before} ms before")

    def _unknown_dog(self, now: int) -> SimEvent:
        ghost = self._ids.dog()
        while ghost in self._world.by_id:
            ghost = self._ids.dog()
        world = self._world
        rec = {
            "event_id": self._ids.event(),
            "pupdate_id": self._ids.pupdate(),
            "dog_id": ghost,
            "posted_at": now,
            "hashtags": world.pick_hashtags(self._rng, world.owners[0], 2),
            "dog_followers": 1 + int(self._rng.random() * 300),
            "app_version": "1.4.2" if self._rng.random() < 0.5 else "1.9.7",
            "schema_version": 1,
        }
        return self._event(UNKNOWN_DOG, rec, now)

    def _invalid_field(self, now: int) -> SimEvent:
        r = self._rng.random()
        if r < 0.34 and self._h.recent_pupdates:
            pid, posted_at = self._recent_pupdate()
            rec = self._like(now, pid, max(now, posted_at), sniffer_id="")
            return self._event(INVALID_FIELD, rec, now, detail="empty sniffer_id")
        if r < 0.67:
            rec = self._pupdate(now, pupdate_id="")
            return self._event(INVALID_FIELD, rec, now, detail="empty pupdate_id")
        rec = self._pupdate(now)
        rec["dog"] = dict(rec["dog"], size=self._pick(_BAD_SIZES))
        return self._event(INVALID_FIELD, rec, now, detail=f"size {rec['dog']['size']!r}")

    def _duplicate(self, now: int) -> SimEvent:
        first = self._pick(self._h.recent_sent)
        return first._replace(kind=DUPLICATE, send_ms=now, detail=f"re-send of a {first.kind}", truth=None)

    def _any_record(self, now: int) -> dict[str, Any]:
        """A record valid in every way, for kinds whose fault is in the encoding."""
        if self._h.recent_pupdates and self._rng.random() < 0.5:
            pid, posted_at = self._recent_pupdate()
            return self._like(now, pid, max(now, posted_at))
        if not self._h.known_dogs:
            return self._like(now, self._ids.pupdate(), now)
        return self._pupdate(now)

    def _unknown_schema(self, now: int) -> SimEvent:
        rec = self._any_record(now)
        valid = self._codec.encode_pupdate(rec) if "dog_id" in rec else self._codec.encode_like(rec)
        header = random_fingerprint_header(self._rng, self._fingerprints)
        rec["schema_version"] = 900 + int(self._rng.random() * 99)
        return self._event(UNKNOWN_SCHEMA, rec, now, value=header + valid[10:])

    def _undecodable(self, now: int) -> SimEvent:
        rec = self._any_record(now)
        ev = self._event(UNDECODABLE, rec, now)
        rng = self._rng
        if rng.random() < 0.5:
            n = int(rng.random() * 64)
            # '{' so it is not Avro's C3 01; 0xFF so it is not UTF-8, hence not JSON either
            junk = bytes([0x7B, *(int(rng.random() * 256) for _ in range(n)), 0xFF])
            return ev._replace(
                value=junk, event_id=None, json_payload=None, http_body=junk, detail="random bytes"
            )
        cut = 10 + int(rng.random() * (len(ev.value) - 10))
        text = json.dumps(rec).encode()
        body = text[: 1 + int(rng.random() * (len(text) - 2))]
        return ev._replace(
            value=ev.value[:cut],
            event_id=None,
            json_payload=None,
            http_body=body,
            detail=f"truncated to {cut} of {len(ev.value)} bytes",
        )

    def _missing_field(self, now: int) -> SimEvent:
        ev = self._event(MISSING_FIELD, self._any_record(now), now, value=b"")
        rec = dict(ev.json_payload or {})
        required = (
            ("event_id", "pupdate_id", "dog_id", "posted_at", "hashtags", "dog_followers")
            if ev.topic_base == PUPDATES_RAW
            else ("event_id", "pupdate_id", "sniffer_id", "liked_at")
        )
        field = self._pick(required)
        del rec[field]
        return ev._replace(json_payload=rec, event_id=rec.get("event_id"), detail=f"no {field}")

    def _mistyped_field(self, now: int) -> SimEvent:
        ev = self._event(MISTYPED_FIELD, self._any_record(now), now, value=b"")
        rec = dict(ev.json_payload or {})
        if ev.topic_base == PUPDATES_RAW:
            field, wrong = self._pick(
                (("dog_followers", "1.2k"), ("posted_at", "yesterday"), ("hashtags", "#adorable #puppy"))
            )
        else:
            field, wrong = self._pick((("liked_at", "just now"), ("sniffer_id", 12345)))
        rec[field] = wrong
        return ev._replace(json_payload=rec, detail=f"{field} = {wrong!r}")
