"""The contract's topics: names, partitioning and retention, in one place.

Facts (raw and accepted events, models) are kept forever: they are the record the whole
system can be rebuilt from. Derived streams keep a week by default; they can be replayed
from the facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FOREVER = "-1"
WEEK_MS = str(7 * 24 * 3600 * 1000)
MODEL_MAX_BYTES = str(64 * 1024 * 1024)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    doc: str = ""


def _fact(name: str, partitions: int, doc: str) -> TopicSpec:
    return TopicSpec(name, partitions, {"retention.ms": FOREVER, "retention.bytes": "-1"}, doc)


def _derived(name: str, partitions: int, doc: str) -> TopicSpec:
    return TopicSpec(name, partitions, {"retention.ms": WEEK_MS}, doc)


PUPDATES_RAW = "pupdates.raw"
LIKES_RAW = "likes.raw"
PUPDATES = "pupdates"
LIKES = "likes"
FEATURES = "features"
INSTANCES = "instances"
MODELS = "models"
PREDICTIONS = "predictions"
DEADLETTERS = "deadletters"

CONTRACT: tuple[TopicSpec, ...] = (
    _fact(PUPDATES_RAW, 6, "What the app sends, as it sends it."),
    _fact(LIKES_RAW, 6, "Likes as the app sends them."),
    _fact(PUPDATES, 6, "Accepted pupdates, current schema: immutable facts."),
    _fact(LIKES, 6, "Accepted likes: immutable facts."),
    _derived(FEATURES, 6, "One feature vector per pupdate and extractor version."),
    _fact(INSTANCES, 6, "Training instances: features as of posting plus the label."),
    TopicSpec(
        MODELS,
        1,
        {
            "retention.ms": FOREVER,
            "retention.bytes": "-1",
            "max.message.bytes": MODEL_MAX_BYTES,
        },
        "Model versions and every decision about them; one partition keeps them in order.",
    ),
    _derived(PREDICTIONS, 6, "One prediction per feature vector."),
    _fact(DEADLETTERS, 1, "Everything a service rejected, with the reason and raw bytes."),
)

BY_NAME = {t.name: t for t in CONTRACT}
