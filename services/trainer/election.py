"""Which replica trains: the member of a Kafka consumer group that owns the one partition of
``models``. No hand-made consensus: the group coordinator decides, and fences.

* Every replica joins the group ``<prefix>trainer-leader`` subscribed to ``models`` (one
  partition). The member assigned that partition is the leader; the others stand by (they keep
  consuming ``instances`` so their windows are warm). The partition is paused: membership only,
  the group never reads or commits anything.
* ``cooperative-sticky`` assignment: a standby joining never takes leadership from a live
  leader.
* A leader that dies (SIGKILL, a lost machine) stops heartbeating; after
  ``session.timeout.ms`` the coordinator removes it and the next rebalance gives the partition
  to a standby (within about one ``heartbeat.interval.ms``). A leader that stops cleanly
  (SIGTERM) leaves the group at once and the standby takes over within a second.
* A leader cut off from the coordinator loses its membership locally when its session times
  out (``on_lost``) and stops publishing. Publishing itself is fenced too: the publisher uses a
  transactional producer whose ``transactional.id`` every replica shares, so the new leader's
  ``init_transactions`` aborts and fences anything a stale leader still has in flight.

Failover bound after the leader dies: ``session_timeout_ms + heartbeat_interval_ms`` (+ the
poll period, 0.2 s) until the standby leads; the next version follows after one training run
and a publish (see docs/trainer.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import TopicPartition

from libs.common.kafka.clients import new_consumer
from libs.common.settings import CommonSettings

log = logging.getLogger(__name__)


class LeaderElection:
    def __init__(
        self,
        settings: CommonSettings,
        *,
        topic: str,
        group_id: str,
        member: str,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 500,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.topic = topic
        self.group_id = group_id
        self.member = member
        self._on_change = on_change
        self._leader = threading.Event()
        self.term = 0  # bumped whenever this replica becomes leader
        self.joined = False
        self.changes = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._last_poll = time.monotonic()
        self._consumer = new_consumer(
            settings,
            name=f"trainer-election-{member}",
            group_id=group_id,
            **{
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "latest",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": heartbeat_interval_ms,
                "max.poll.interval.ms": 60000,
            },
        )
        self._thread = threading.Thread(target=self._run, name="trainer-election", daemon=True)

    @property
    def is_leader(self) -> bool:
        return self._leader.is_set()

    def start(self) -> LeaderElection:
        self._consumer.subscribe(
            [self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )
        self._thread.start()
        return self

    def alive(self) -> bool:
        """The election thread is turning (it also keeps the group membership alive)."""
        return self._thread.is_alive() and time.monotonic() - self._last_poll < 30

    def _set(self, leader: bool, why: str) -> None:
        if leader == self._leader.is_set():
            return
        if leader:
            self.term += 1
            self._leader.set()
        else:
            self._leader.clear()
        self.changes += 1
        log.warning(
            "leadership " + ("ACQUIRED: this replica trains" if leader else "LOST: this replica stands by"),
            extra={"member": self.member, "why": why, "term": self.term, "group": self.group_id},
        )
        if self._on_change:
            try:
                self._on_change(leader)
            except Exception:
                log.exception("leadership change callback failed")

    def _assigned(self, consumer, partitions: list[TopicPartition]) -> None:
        self.joined = True
        mine = [tp for tp in partitions if tp.topic == self.topic]
        if mine:
            consumer.incremental_assign(mine)
            consumer.pause(mine)  # membership only: never read through the election group
            self._set(True, "the models partition was assigned to this member")
        elif not self._leader.is_set():
            log.info("standing by", extra={"member": self.member, "group": self.group_id})

    def _revoked(self, consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.topic == self.topic for tp in partitions):
            self._set(False, "the models partition was revoked")
        consumer.incremental_unassign(partitions)

    def _lost(self, consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.topic == self.topic for tp in partitions):
            self._set(False, "group membership lost (session timed out)")
        consumer.incremental_unassign(partitions)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._consumer.poll(0.2)
                self._last_poll = time.monotonic()
                if msg is not None and msg.error() is not None:
                    err = msg.error()
                    if err.fatal():
                        self.error = err.str()
                        log.error("election consumer failed", extra={"error": err.str()})
                        self._set(False, "fatal consumer error")
                        return
                    log.warning("election consumer error", extra={"error": err.str()})
            except Exception as exc:  # keep trying: leadership must never be silently wrong
                self.error = str(exc)
                log.exception("election poll failed")
                time.sleep(0.5)
        self._set(False, "stopping")
        try:
            self._consumer.close()  # leaves the group now: the standby takes over at once
        except Exception:
            log.exception("election consumer close failed")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
