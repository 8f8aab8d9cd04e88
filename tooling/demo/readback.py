"""The run's topics, decoded: what the report is computed from (and nothing else)."""

from __future__ import annotations

from dataclasses import dataclass

from libs.common.kafka.replay import read_topic
from libs.common.serde import SerdeError, serde
from libs.common.settings import CommonSettings
from libs.common.topics import DEADLETTERS, FEATURES, INSTANCES, LIKES, MODELS, PREDICTIONS, PUPDATES


def decoded(settings: CommonSettings, topic: str, stem: str, timeout: float = 60.0) -> list[dict]:
    out = []
    for m in read_topic(settings, settings.topic(topic), timeout=timeout):
        try:
            out.append(serde(stem).decode(m.value()))
        except SerdeError:
            continue
    return out


def count(settings: CommonSettings, topic: str) -> int:
    """Records, not offsets: transactional topics also hold commit markers."""
    return len(read_topic(settings, settings.topic(topic), timeout=60))


@dataclass(frozen=True)
class Topics:
    predictions: list[dict]
    instances: list[dict]
    models: list[dict]
    deadletters: list[dict]
    pupdates: int
    likes: int
    features: int

    @classmethod
    def read(cls, settings: CommonSettings) -> Topics:
        return cls(
            predictions=decoded(settings, PREDICTIONS, "prediction"),
            instances=decoded(settings, INSTANCES, "instance"),
            models=decoded(settings, MODELS, "model_event"),
            deadletters=decoded(settings, DEADLETTERS, "dead_letter"),
            pupdates=count(settings, PUPDATES),
            likes=count(settings, LIKES),
            features=count(settings, FEATURES),
        )
