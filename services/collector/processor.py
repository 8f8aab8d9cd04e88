"""The collector's decisions on one raw record at a time: no Kafka client in here.

:class:`Processor` turns each raw record into a fact, a dead letter, a dropped re-send, or a
wait (see :mod:`services.collector.waiting`), and files what it accepts into the state. It writes
through an ``out`` callable ``(topic, value, key, headers)``; the stream passes its transactional
producer, tests pass a list. Facts read back from the topics (the rebuild on start, and other
instances' facts while running) go through :meth:`Processor.apply_fact`.

Every output carries the headers ``collector`` (instance id) and ``source``
(``<raw topic>/<partition>/<offset>``): the rebuild uses them to recognise what this service
already wrote for a raw position, and the tail to skip this process's own records.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

from libs.common.deadletters import DeadLetters
from libs.common.serde import SerdeError, serde
from libs.common.settings import CommonSettings
from libs.common.topics import DEADLETTERS, LIKES, LIKES_RAW, PUPDATES, PUPDATES_RAW
from services.collector import validation as v
from services.collector.settings import CollectorSettings
from services.collector.state import CollectorState
from services.collector.waiting import Waiting, WaitingRoom

log = logging.getLogger(__name__)

SERVICE = "collector"
Out = Callable[[str, bytes, str | bytes | None, list[tuple[str, bytes]]], None]


class Tallies:
    """Counts since the last flush; the stream publishes them when its transaction commits."""

    __slots__ = ("accepted", "duplicates", "rejected", "replayed", "waits")

    def __init__(self) -> None:
        self.accepted: Tally[tuple[str, int]] = Tally()
        self.rejected: Tally[str] = Tally()
        self.duplicates = 0
        self.replayed = 0
        self.waits: list[tuple[str, float]] = []  # (outcome, seconds)

    def merge(self, other: Tallies) -> None:
        """Add the counts of ``other`` (its wait durations went to the histogram: not kept)."""
        self.accepted.update(other.accepted)
        self.rejected.update(other.rejected)
        self.duplicates += other.duplicates
        self.replayed += other.replayed


class _LogLimiter:
    """At most ``per_second`` dead-letter log lines; the rest are counted into the next one."""

    def __init__(self, per_second: int = 20) -> None:
        self.per_second = per_second
        self.window = 0
        self.used = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = int(time.monotonic())
        if now != self.window:
            self.window, self.used = now, 0
        if self.used < self.per_second:
            self.used += 1
            return True
        self.suppressed += 1
        return False


class Processor:
    def __init__(self, common: CommonSettings, settings: CollectorSettings, out: Out) -> None:
        self.settings = settings
        self.out = out
        self.limits = v.Limits.from_settings(settings)
        self.raw_pupdates = common.topic(PUPDATES_RAW)
        self.raw_likes = common.topic(LIKES_RAW)
        self.pupdates_topic = common.topic(PUPDATES)
        self.likes_topic = common.topic(LIKES)
        self.dead_topic = common.topic(DEADLETTERS)
        self.instance = settings.instance_id.encode()
        self._pupdate_raw = serde("pupdate_raw")
        self._like_raw = serde("like_raw")
        self._pupdate_fact = serde("pupdate")
        self._like_fact = serde("like")
        self._letters = DeadLetters(common, SERVICE)
        self.state = self.new_state()
        self.waiting = WaitingRoom(settings.waiting_timeout_s, settings.waiting_max)
        # Waiting events released by facts read from the topics, processed in the next batch.
        self.ready: list[Waiting] = []
        self.tally = Tallies()
        self._log_limit = _LogLimiter()

    def new_state(self) -> CollectorState:
        s = self.settings
        return CollectorState(
            window_ms=int(s.state_window_s * 1000),
            max_seen=s.max_seen,
            max_pupdates=s.max_pupdates,
            max_dogs=s.max_dogs,
            max_dead_positions=s.max_dead_positions,
        )

    def reset(self) -> None:
        """Forget everything (after an aborted transaction): the caller rebuilds from the topics."""
        self.state = self.new_state()
        self.waiting.clear()
        self.ready.clear()
        self.tally = Tallies()

    def take_tally(self) -> Tallies:
        tally, self.tally = self.tally, Tallies()
        return tally

    # --- raw records ----------------------------------------------------------------------------

    def process(self, msg: Any, now_ms: int, now: float) -> None:
        """Decide one raw record. ``now_ms`` is wall time, ``now`` monotonic (for deadlines)."""
        topic = msg.topic()
        if (topic, msg.partition(), msg.offset()) in self.state.dead:
            self.tally.replayed += 1
            return
        try:
            self._process(msg, topic, now_ms, now)
        except Exception as exc:  # a bug must cost one record, never the stream
            log.exception("processing failed", extra={"source": _source(msg).decode()})
            self._dead(msg, v.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}", now_ms)

    def _process(self, msg: Any, topic: str, now_ms: int, now: float) -> None:
        value = msg.value()
        if not value:
            self._dead(msg, v.UNDECODABLE, "empty value", now_ms)
            return
        if len(value) > self.limits.max_value_bytes:
            bad = v.check_value_size(len(value), self.limits)
            self._dead(msg, bad.reason, bad.detail, now_ms)
            return
        is_pupdate = topic == self.raw_pupdates
        try:
            rec, writer = (self._pupdate_raw if is_pupdate else self._like_raw).decode_with_writer(value)
        except SerdeError as exc:
            self._dead(msg, exc.reason, str(exc), now_ms)
            return
        bad = (v.check_pupdate if is_pupdate else v.check_like)(rec, now_ms, self.limits)
        if bad is not None:
            self._dead(msg, bad.reason, bad.detail, now_ms)
            return
        self._decide(msg, rec, writer, is_pupdate, now_ms, now, inline=True)

    def _decide(
        self, msg: Any, rec: dict, writer: Any, is_pupdate: bool, now_ms: int, now: float, inline: bool
    ) -> None:
        """The stateful part: duplicate, wait, reject or accept."""
        state = self.state
        event_id = rec["event_id"]
        if event_id in state.seen:
            mark = state.replay_marks.get((msg.topic(), msg.partition()), -1)
            if msg.offset() <= mark:
                self.tally.replayed += 1
            else:
                self.tally.duplicates += 1
            return
        pupdate_id = rec["pupdate_id"]
        if is_pupdate:
            dog_id = rec["dog_id"]
            profile = rec["dog"]
            if profile is None:
                profile = state.profile(dog_id)
                if profile is None:
                    self._wait(msg, rec, writer, True, ("dog", dog_id), now_ms, now)
                    return
            fact = v.pupdate_fact(rec, profile, writer.fingerprint.hex(), now_ms)
            self._emit(self.pupdates_topic, self._pupdate_fact.encode(fact), pupdate_id, event_id, msg)
            state.file_pupdate(event_id, pupdate_id, dog_id, rec["posted_at"], fact["dog"], now_ms)
            self.tally.accepted[("pupdate", writer.version)] += 1
            self._release(("pupdate", pupdate_id), now_ms, now, inline)
            if rec["dog"] is not None:
                self._release(("dog", dog_id), now_ms, now, inline)
        else:
            posted_at = state.pupdates.get(pupdate_id)
            if posted_at is None:
                self._wait(msg, rec, writer, False, ("pupdate", pupdate_id), now_ms, now)
                return
            bad = v.check_like_time(rec["liked_at"], posted_at, self.limits)
            if bad is not None:
                self._dead(msg, bad.reason, bad.detail, now_ms)
                return
            fact = v.like_fact(rec, now_ms)
            self._emit(self.likes_topic, self._like_fact.encode(fact), pupdate_id, event_id, msg)
            state.file_like(event_id, now_ms)
            self.tally.accepted[("like", writer.version)] += 1

    def _emit(self, topic: str, value: bytes, key: str, event_id: str, msg: Any) -> None:
        source = _source(msg)
        self.out(
            topic,
            value,
            key,
            [("event_id", event_id.encode()), ("collector", self.instance), ("source", source)],
        )

    # --- waiting ---------------------------------------------------------------------------------

    def _wait(
        self, msg: Any, rec: dict, writer: Any, is_pupdate: bool, need, now_ms: int, now: float
    ) -> None:
        pushed_out = self.waiting.add(msg, rec, writer, is_pupdate, need, now)
        if pushed_out is not None:
            self._reject_waiting(pushed_out, now_ms, now, "the waiting room is full")

    def _release(self, need, now_ms: int, now: float, inline: bool) -> None:
        if not self.waiting.waiting_for(need):
            return
        entries = self.waiting.release(need)
        for entry in entries:
            self.tally.waits.append(("resolved", now - entry.since))
        if not inline:
            self.ready.extend(entries)
            return
        for entry in entries:
            self._decide(entry.msg, entry.rec, entry.writer, entry.is_pupdate, now_ms, now, inline=True)

    def run_ready(self, now_ms: int, now: float) -> int:
        """Decide the waiting events that facts from the topics released since the last batch."""
        if not self.ready:
            return 0
        ready, self.ready = self.ready, []
        for entry in ready:
            self._decide(entry.msg, entry.rec, entry.writer, entry.is_pupdate, now_ms, now, inline=True)
        return len(ready)

    def expire(self, now_ms: int, now: float) -> int:
        expired = self.waiting.expired(now)
        for entry in expired:
            self._reject_waiting(entry, now_ms, now, f"not seen within {self.waiting.timeout_s:g} s")
        return len(expired)

    def _reject_waiting(self, entry: Waiting, now_ms: int, now: float, why: str) -> None:
        self.tally.waits.append(("rejected", now - entry.since))
        kind, ident = entry.need
        if kind == "dog":
            self._dead(
                entry.msg, v.UNKNOWN_DOG, f"no profile of dog {ident} ({why}); app 1.x sends none", now_ms
            )
        else:
            self._dead(entry.msg, v.LIKE_UNKNOWN_PUPDATE, f"pupdate {ident} unknown ({why})", now_ms)

    def drop_partitions(self, tps: set[tuple[str, int]]) -> None:
        self.waiting.drop_partitions(tps)
        self.ready = [e for e in self.ready if e.tp not in tps]

    # --- dead letters -------------------------------------------------------------------------------

    def _dead(self, msg: Any, reason: str, detail: str, now_ms: int) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        rec = self._letters.record(reason, detail, message=msg, failed_at=now_ms)
        source = _source(msg)
        self.out(
            self.dead_topic,
            self._letters.encode(rec),
            rec["key"],
            [("collector", self.instance), ("source", source)],
        )
        self.state.file_dead(topic, partition, offset, now_ms)
        self.tally.rejected[reason] += 1
        if self._log_limit.allow():
            suppressed, self._log_limit.suppressed = self._log_limit.suppressed, 0
            log.warning(
                "dead letter",
                extra={
                    "reason": reason,
                    "detail": detail[:300],
                    "source": source.decode(),
                    "suppressed": suppressed,
                },
            )

    # --- facts read back from the topics ------------------------------------------------------------

    def apply_fact(self, msg: Any, skip_own: bool, now_ms: int, now: float) -> None:
        """File a record of ``pupdates``, ``likes`` or ``deadletters`` into the state."""
        headers = msg.headers() or ()
        collector = event_id = source = None
        for name, value in headers:
            if name == "collector":
                collector = value
            elif name == "source":
                source = value
            elif name == "event_id":
                event_id = value
        if skip_own and collector == self.instance:
            return
        topic = msg.topic()
        ts = msg.timestamp()[1]
        state = self.state
        if topic == self.dead_topic:
            if collector is None or source is None:
                return  # another service's dead letter
            src_topic, partition, offset = _parse_source(source)
            state.file_dead(src_topic, partition, offset, ts)
            state.mark_source(src_topic, partition, offset)
            return
        if source is not None:
            src_topic, partition, offset = _parse_source(source)
            state.mark_source(src_topic, partition, offset)
        try:
            if topic == self.likes_topic:
                if event_id is None:
                    event_id = self._like_fact.decode(msg.value())["event_id"]
                    state.file_like(event_id, ts)
                else:
                    state.file_like(event_id.decode(), ts)
                return
            fact = self._pupdate_fact.decode(msg.value())
        except SerdeError:
            log.exception("unreadable fact", extra={"topic": topic, "offset": msg.offset()})
            return
        pupdate_id, dog_id = fact["pupdate_id"], fact["dog_id"]
        state.file_pupdate(fact["event_id"], pupdate_id, dog_id, fact["posted_at"], fact["dog"], ts)
        self._release(("pupdate", pupdate_id), now_ms, now, inline=False)
        self._release(("dog", dog_id), now_ms, now, inline=False)


def _source(msg: Any) -> bytes:
    return f"{msg.topic()}/{msg.partition()}/{msg.offset()}".encode()


def _parse_source(source: bytes) -> tuple[str, int, int]:
    topic, partition, offset = source.decode().rsplit("/", 2)
    return topic, int(partition), int(offset)
