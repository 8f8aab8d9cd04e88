"""Backfill: replay the fact topics from the beginning through one extractor version and write
the instances it would have produced, so the trainer can compare versions on the same history.

The same engine as the live featurizer, fed the same facts, so the values are the ones a live
run of that version would have written; re-running writes identical records (idempotent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from libs.common.features.extractors import extractor
from libs.common.kafka.producer import Producer
from libs.common.kafka.replay import ReplayReader
from libs.common.serde import SerdeError, serde
from libs.common.settings import CommonSettings
from libs.common.topics import INSTANCES, LIKES, PUPDATES
from services.featurizer.engine import FeatureEngine
from services.featurizer.outputs import encode_instance

log = logging.getLogger(__name__)


@dataclass
class BackfillReport:
    version: str
    facts: int
    pupdates: int
    instances: int
    skipped: int
    seconds: float


def backfill(
    settings: CommonSettings,
    version: str,
    *,
    horizon_ms: int,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 3600.0,
) -> BackfillReport:
    ex = extractor(version)
    engine = FeatureEngine([ex], horizon_ms=horizon_ms)
    pupdates_topic, likes_topic = settings.topic(PUPDATES), settings.topic(LIKES)
    reader = ReplayReader(settings, [pupdates_topic, likes_topic], name=f"backfill-{version}")
    producer = Producer(settings, name=f"backfill-{version}")
    pupdate_serde, like_serde = serde("pupdate"), serde("like")
    started = time.monotonic()
    facts = skipped = instances = 0
    newest = -(2**62)
    try:
        while True:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"backfill not finished after {timeout_s:.0f}s")
            batch = reader.poll(5000, 0.5)
            for msg in batch:
                try:
                    if msg.topic() == pupdates_topic:
                        rec = pupdate_serde.decode(msg.value())
                        engine.add_pupdate(rec, (msg.partition(), msg.offset()))
                        newest = max(newest, rec["posted_at"])
                    else:
                        rec = like_serde.decode(msg.value())
                        engine.add_like(rec)
                        newest = max(newest, rec["liked_at"])
                except (SerdeError, KeyError, TypeError, ValueError):
                    skipped += 1  # the live featurizer dead-letters these; a backfill only skips
            facts += len(batch)
            if progress:
                progress(facts, engine.counters.pupdates)
            if not batch and not any(reader.lag().values()):
                break
        # Everything is in: release it all; horizons that closed by the newest fact mature.
        _features, released = engine.advance(newest + 1)
        topic = settings.topic(INSTANCES)
        for inst in released:
            producer.produce(
                topic, encode_instance(inst, ex.names, horizon_ms), key=inst.pupdate["pupdate_id"]
            )
            instances += 1
        producer.flush(60)
    finally:
        reader.close()
        producer.close()
    return BackfillReport(
        version, facts, engine.counters.pupdates, instances, skipped, time.monotonic() - started
    )
