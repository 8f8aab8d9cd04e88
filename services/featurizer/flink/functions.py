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

from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from libs.common.features.extractors import extractor
from libs.common.features.state import DogState, StateView, Stats
from services.featurizer.engine import FeaturesOut, InstanceOut
from services.featurizer.outputs import encode_features, encode_instance

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


class Subjects(KeyedProcessFunction):
    """Keyed by subject; input ``(POST, key, pupdate)`` or ``(CLOSE, key, pupdate, likes)``."""

    def open(self, runtime_context: RuntimeContext) -> None:
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
