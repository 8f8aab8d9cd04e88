"""Which partitions of ``pupdates`` this worker emits outputs for, and how far each has got.

Membership of the ``featurizer`` consumer group decides ownership (Kafka rebalances it when a
worker joins or dies); the group's committed offsets record progress, written in the same
transaction as the outputs: the offset says "features emitted for every pupdate before it",
the metadata says "instances emitted for every horizon closing before this event time".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from confluent_kafka import TopicPartition

from libs.common.kafka.consumer import Consumer
from libs.common.settings import CommonSettings

log = logging.getLogger(__name__)
NEVER = -(2**62)


@dataclass
class Progress:
    features_offset: int = 0
    instances_through: int = NEVER

    def to_partition(self, topic: str, partition: int) -> TopicPartition:
        meta = json.dumps({"instances_through": self.instances_through})
        return TopicPartition(topic, partition, self.features_offset, metadata=meta)

    @classmethod
    def from_partition(cls, tp: TopicPartition) -> Progress:
        through = NEVER
        if getattr(tp, "metadata", None):
            try:
                through = int(json.loads(tp.metadata)["instances_through"])
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable progress metadata", extra={"metadata": tp.metadata})
        return cls(max(tp.offset, 0), through)


class Ownership:
    def __init__(self, settings: CommonSettings, *, topic: str, group_id: str, name: str) -> None:
        self.topic = topic
        self.owned: dict[int, Progress] = {}
        self.joined = False
        self.changed = False
        self.consumer = Consumer(
            settings,
            name=name,
            group_id=group_id,
            topics=[topic],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            **{"enable.auto.commit": False, "partition.assignment.strategy": "range"},
        )

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        raw = self.consumer.raw
        raw.assign(partitions)
        raw.pause(partitions)  # membership only: the replica reader does the reading
        committed = raw.committed(partitions, timeout=15) if partitions else []
        self.owned = {tp.partition: Progress.from_partition(tp) for tp in committed}
        self.joined = True
        self.changed = True
        log.info("owning partitions", extra={"partitions": sorted(self.owned)})

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.owned.pop(tp.partition, None)
        self.changed = True

    def heartbeat(self) -> None:
        self.consumer.check_membership()
        self.consumer.raw.poll(0)

    def committed_everywhere(self, partitions: list[int]) -> dict[int, Progress]:
        """Every partition's committed progress, whoever owns it (for pruning what others emitted)."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        return {
            tp.partition: Progress.from_partition(tp) for tp in self.consumer.raw.committed(tps, timeout=10)
        }

    @property
    def group_metadata(self):
        return self.consumer.raw.consumer_group_metadata()

    def close(self) -> None:
        self.consumer.raw.close()
