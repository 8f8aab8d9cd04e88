"""The three keyed stages of the Flink featurizer, each a Flink ``KeyedProcessFunction``.

The engine of ``services/featurizer/engine.py`` keeps every statistic in one process; here each
lives with what it is about, so Flink can spread them over machines:

``Labels`` (keyed by pupdate_id)
    Keeps the pupdate and counts its likes in ``[posted_at, posted_at + horizon)``, once per
    ``event_id``. Passes the first copy of a pupdate on as a POST; when the watermark passes the
    horizon (an event-time timer) it emits a CLOSE carrying the label, at event time ``close_at``.

``Subjects`` (keyed by what a statistic is about: one dog, one (version, hashtag), or everything)
    Folds CLOSEs into the subject's stats and answers each POST with a snapshot of the stats as
    of posting. Events are applied in event-time order on timers, with the engine's tie rule
    (closures before postings at one millisecond, then pupdate_id), so a pupdate sees exactly the
    horizons that closed at or before its posting.

``Assemble`` (keyed by pupdate_id)
    Waits for the snapshots of its dog, its hashtags and the global stats, calls the extractors of
    ``libs/common/features`` (the one definition of every feature) and emits the features; when
    the CLOSE arrives it emits the instance with the same values.

Records between stages are tuples (pickled by PyFlink); their timestamps are event times, and
Flink carries the watermark through every shuffle, which is what makes the timers exact.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from libs.common.features.extractors import extractor
from libs.common.features.state import DogState, StateView, Stats
from services.featurizer.engine import FeaturesOut, InstanceOut
from services.featurizer.outputs import encode_features, encode_instance

log = logging.getLogger(__name__)

# Record kinds between the stages.
POST, CLOSE, SNAP = "post", "close", "snap"
# Subjects of a statistic; a key is "<kind>\x00<what>".
DOG, TAG, ALL = "d", "t", "o"
FEATURES_KIND, INSTANCE_KIND = "features", "instance"


def _pickled(name: str) -> ValueStateDescriptor:
    return ValueStateDescriptor(name, Types.PICKLED_BYTE_ARRAY())


def subject_keys(pupdate: dict[str, Any], versions: list[str]) -> list[str]:
    """Every statistic a pupdate reads at posting and feeds at its close."""
    keys = [f"{DOG}\x00{pupdate['dog_id']}", ALL]
    for version in versions:
        keys += [f"{TAG}\x00{version}\x00{t}" for t in extractor(version).tags(pupdate)]
    return keys


class Labels(KeyedProcessFunction):
    """Keyed by pupdate_id; input ``("pupdate", rec)`` or ``("like", rec)``."""

    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        # pupdate, likes counted, like event_ids seen, closed; or likes waiting for their pupdate
        self.state = runtime_context.get_state(_pickled("labels"))

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        kind, rec = value
        st = self.state.value() or {"pupdate": None, "likes": 0, "ids": set(), "early": [], "closed": False}
        if kind == "pupdate":
            if st["pupdate"] is not None:
                return  # a duplicate fact: the first copy is the pupdate
            st["pupdate"] = rec
            posted_at = int(rec["posted_at"])
            early, st["early"] = st["early"], []
            st["likes"] = sum(1 for at in early if posted_at <= at < posted_at + self.horizon_ms)
            ctx.timer_service().register_event_time_timer(posted_at + self.horizon_ms)
            self.state.update(st)
            yield POST, rec
            return
        if st["closed"]:
            return  # a closed label never changes (the engine counts it as late)
        event_id = rec.get("event_id")
        if event_id:
            if event_id in st["ids"]:
                return
            st["ids"].add(event_id)
        liked_at = int(rec["liked_at"])
        pupdate = st["pupdate"]
        if pupdate is None:
            # Its pupdate is on another topic and not here yet; a like is never earlier than its
            # pupdate, so once the watermark is a horizon past it, the pupdate is not coming.
            st["early"].append(liked_at)
            ctx.timer_service().register_event_time_timer(liked_at + self.horizon_ms)
        elif int(pupdate["posted_at"]) <= liked_at < int(pupdate["posted_at"]) + self.horizon_ms:
            st["likes"] += 1
        self.state.update(st)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        st = self.state.value()
        if st is None:
            return
        pupdate = st["pupdate"]
        if pupdate is None:
            if all(at + self.horizon_ms <= timestamp for at in st["early"]):
                self.state.clear()  # orphans: their pupdate never came
            return
        close_at = int(pupdate["posted_at"]) + self.horizon_ms
        if timestamp == close_at and not st["closed"]:
            yield CLOSE, pupdate, st["likes"], close_at
            # Kept one more horizon, so a late duplicate of the pupdate is still recognised.
            self.state.update({**st, "ids": set(), "early": [], "closed": True})
            ctx.timer_service().register_event_time_timer(close_at + self.horizon_ms)
        elif timestamp >= close_at + self.horizon_ms:
            self.state.clear()


class ViewSink:
    """Writes each subject's state to the online view in Redis (libs/common/features/online_view.py
    keys and JSON), batched: a pipeline per ``batch`` changes or ``every_s`` seconds. The view is
    a cache rebuildable from the facts; a replay after a restore rewrites the same values."""

    def __init__(self, redis_url: str, prefix: str, ttl_s: int, batch: int = 2000, every_s: float = 0.5):
        self.redis_url, self.prefix, self.ttl_s = redis_url, prefix, ttl_s
        self.batch, self.every_s = batch, every_s
        self.pending: dict[str, str] = {}
        self.last = 0.0

    def open(self) -> None:
        import redis

        from libs.common.features.online_view import OnlineView

        self.view = OnlineView(redis.Redis.from_url(self.redis_url, socket_timeout=5), self.prefix)

    def key(self, subject: str) -> str:
        kind, _, what = subject.partition("\x00")
        if kind == DOG:
            return self.view.dog_key(what)
        if kind == TAG:
            version, _, tag = what.partition("\x00")
            return self.view.tag_key(version, tag)
        return self.view.overall_key

    def changed(self, subject: str, state: DogState | Stats, watermark: int | None) -> bool:
        """Noted; True when it was written now."""
        self.pending[self.key(subject)] = json.dumps(state.to_dict())
        if subject == ALL and watermark is not None:
            self.pending[f"{self.view.prefix}watermark"] = str(watermark)
        if len(self.pending) >= self.batch or time.monotonic() - self.last >= self.every_s:
            return self.flush()
        return False

    def flush(self) -> bool:
        self.last = time.monotonic()
        if not self.pending:
            return True
        pipe = self.view.client.pipeline(transaction=False)
        for key, value in self.pending.items():
            pipe.set(key, value, ex=self.ttl_s if self.ttl_s > 0 else None)
        try:
            pipe.execute()
        except Exception as exc:  # Redis away: the view lags, the features do not stop
            log.warning("online view not written", extra={"error": str(exc)})
            return False
        self.pending = {}
        return True


class Subjects(KeyedProcessFunction):
    """Keyed by subject; input ``(POST, key, pupdate)`` or ``(CLOSE, key, pupdate, likes)``."""

    def __init__(self, view: ViewSink | None = None) -> None:
        self.view = view

    def open(self, runtime_context: RuntimeContext) -> None:
        if self.view is not None:
            self.view.open()
        self.stats = runtime_context.get_state(_pickled("stats"))  # DogState or Stats
        # event time -> events waiting for the watermark
        self.pending = runtime_context.get_map_state(
            MapStateDescriptor("pending", Types.LONG(), Types.PICKLED_BYTE_ARRAY())
        )

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        at = ctx.timestamp()
        waiting = self.pending.get(at) if self.pending.contains(at) else []
        waiting.append(value)
        self.pending.put(at, waiting)
        ctx.timer_service().register_event_time_timer(at)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            if self.view is not None:
                # The subject's state is noted again from Flink state, not only flushed from
                # memory: this timer is checkpointed, so after a crash that lost the in-memory
                # batch, the restored job still writes every subject whose write was pending.
                state = self.stats.value()
                if state is not None:
                    self.view.changed(ctx.get_current_key(), state, None)
                if not self.view.flush():
                    now = ctx.timer_service().current_processing_time()
                    ctx.timer_service().register_processing_time_timer((now // 1000 + 1) * 1000)
            return
        events = self.pending.get(timestamp)
        self.pending.remove(timestamp)
        key = ctx.get_current_key()
        is_dog = key.startswith(DOG + "\x00")
        state = self.stats.value() or (DogState() if is_dog else Stats())
        # The engine's tie rule: closures before postings, then by pupdate_id.
        for event in sorted(events, key=lambda e: (e[0] != CLOSE, e[2]["pupdate_id"])):
            pupdate = event[2]
            if event[0] == CLOSE:
                (state.matured if is_dog else state).add(event[3])
                continue
            if is_dog:
                snap: Any = DogState(
                    state.posts, state.last_posted_at, Stats(state.matured.n, state.matured.likes)
                )
                state.posted(int(pupdate["posted_at"]))
            else:
                snap = Stats(state.n, state.likes)
            yield SNAP, pupdate["pupdate_id"], key, snap
        self.stats.update(state)
        watermark = ctx.timer_service().current_watermark()
        if self.view is not None and not self.view.changed(key, state, watermark):
            # Not written yet: a flush within a second even if nothing else comes (timers of one
            # key on one second are one timer).
            now = ctx.timer_service().current_processing_time()
            ctx.timer_service().register_processing_time_timer((now // 1000 + 1) * 1000)

    def close(self) -> None:
        if self.view is not None:
            self.view.flush()


class Assemble(KeyedProcessFunction):
    """Keyed by pupdate_id; input POSTs and CLOSEs from ``Labels``, SNAPs from ``Subjects``.
    Output ``(kind, key bytes, value bytes)`` for the features and instances sinks."""

    def __init__(self, versions: list[str], horizon_ms: int) -> None:
        self.versions = versions
        self.horizon_ms = horizon_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(_pickled("assembly"))
        self.extractors = [extractor(v) for v in self.versions]

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        st = self.state.value() or {"pupdate": None, "snaps": {}, "done": None, "close": None}
        if value[0] == POST:
            st["pupdate"] = value[1]
        elif value[0] == CLOSE:
            st["close"] = (value[2], value[3])
        else:
            st["snaps"][value[2]] = value[3]
        out = []
        pupdate = st["pupdate"]
        if st["done"] is None and pupdate is not None:
            keys = subject_keys(pupdate, self.versions)
            if all(k in st["snaps"] for k in keys):
                st["done"] = self._features(pupdate, st["snaps"])
                st["snaps"] = {}
                for f in st["done"]:
                    out.append((FEATURES_KIND, pupdate["pupdate_id"], encode_features(f, self._names(f))))
        if st["done"] is not None and st["close"] is not None:
            likes, close_at = st["close"]
            for f in st["done"]:
                inst = InstanceOut(f.pupdate, f.version, f.values, f.baseline, None, likes, close_at)
                value_bytes = encode_instance(inst, self._names(f), self.horizon_ms)
                out.append((INSTANCE_KIND, pupdate["pupdate_id"], value_bytes))
            self.state.clear()
        else:
            self.state.update(st)
        yield from out

    def _names(self, f: FeaturesOut) -> tuple[str, ...]:
        return extractor(f.version).names

    def _features(self, pupdate: dict[str, Any], snaps: dict[str, Any]) -> list[FeaturesOut]:
        dog, overall = snaps[f"{DOG}\x00{pupdate['dog_id']}"], snaps[ALL]
        out = []
        for ex in self.extractors:
            tags = {}
            for t in ex.tags(pupdate):
                stats = snaps[f"{TAG}\x00{ex.version}\x00{t}"]
                if stats.n:  # the engine's view holds only hashtags with a matured pupdate
                    tags[t] = stats
            view = StateView(dog, tags, overall)
            out.append(FeaturesOut(pupdate, ex.version, ex.extract(pupdate, view), ex.baseline(view), None))
        return out
