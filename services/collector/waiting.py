"""The waiting room: events that arrived before what they refer to.

A like can be read before its pupdate (another topic), and a 1.x pupdate (no dog profile)
before the pupdate that registered its dog (another partition). Such an event waits here,
keyed by what it needs (``("pupdate", id)`` or ``("dog", id)``), until that fact is filed,
or until its deadline (processing time), when it is rejected. The room is bounded: past
``max_size`` the oldest entry is rejected early.

The stream never commits a partition's offset past its oldest waiting event, so a crash loses
nothing that waits here: the event is read again after the restart.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

Need = tuple[str, str]


class Waiting:
    __slots__ = ("deadline", "done", "is_pupdate", "msg", "need", "rec", "since", "writer")

    def __init__(
        self, msg: Any, rec: dict, writer: Any, is_pupdate: bool, need: Need, since: float, deadline: float
    ) -> None:
        self.msg = msg
        self.rec = rec
        self.writer = writer
        self.is_pupdate = is_pupdate
        self.need = need
        self.since = since
        self.deadline = deadline
        self.done = False

    @property
    def tp(self) -> tuple[str, int]:
        return (self.msg.topic(), self.msg.partition())


class WaitingRoom:
    def __init__(self, timeout_s: float, max_size: int) -> None:
        self.timeout_s = timeout_s
        self.max_size = max_size
        self._by_need: dict[Need, list[Waiting]] = {}
        self._by_tp: dict[tuple[str, int], OrderedDict[int, Waiting]] = {}
        self._order: deque[Waiting] = deque()  # arrival order = deadline order
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(
        self, msg: Any, rec: dict, writer: Any, is_pupdate: bool, need: Need, now: float
    ) -> Waiting | None:
        """Park an event; returns the entry pushed out to make room (reject it), if any."""
        entry = Waiting(msg, rec, writer, is_pupdate, need, now, now + self.timeout_s)
        self._by_need.setdefault(need, []).append(entry)
        tp = (msg.topic(), msg.partition())
        by_offset = self._by_tp.get(tp)
        if by_offset is None:
            by_offset = self._by_tp[tp] = OrderedDict()
        by_offset[msg.offset()] = entry
        self._order.append(entry)
        self._size += 1
        if self._size > self.max_size:
            return self._pop_oldest()
        return None

    def _forget(self, entry: Waiting, *, from_need: bool = True) -> None:
        entry.done = True
        self._size -= 1
        if from_need:
            waiters = self._by_need.get(entry.need)
            if waiters is not None:
                waiters.remove(entry)
                if not waiters:
                    del self._by_need[entry.need]
        tp = entry.tp
        by_offset = self._by_tp.get(tp)
        if by_offset is not None:
            by_offset.pop(entry.msg.offset(), None)
            if not by_offset:
                del self._by_tp[tp]

    def _pop_oldest(self) -> Waiting | None:
        while self._order:
            entry = self._order.popleft()
            if not entry.done:
                self._forget(entry)
                return entry
        return None

    def waiting_for(self, need: Need) -> bool:
        return need in self._by_need

    def release(self, need: Need) -> list[Waiting]:
        """Everything that waited for ``need``, in arrival order, now out of the room."""
        waiters = self._by_need.pop(need, None)
        if not waiters:
            return []
        for entry in waiters:
            self._forget(entry, from_need=False)
        return waiters

    def expired(self, now: float) -> list[Waiting]:
        out = []
        order = self._order
        while order and (order[0].done or order[0].deadline <= now):
            entry = order.popleft()
            if not entry.done:
                self._forget(entry)
                out.append(entry)
        return out

    def next_deadline(self) -> float | None:
        for entry in self._order:
            if not entry.done:
                return entry.deadline
        return None

    def oldest_offset(self, tp: tuple[str, int]) -> int | None:
        by_offset = self._by_tp.get(tp)
        if not by_offset:
            return None
        return next(iter(by_offset))

    def drop_partitions(self, tps: set[tuple[str, int]]) -> int:
        """Forget entries of partitions this instance no longer owns (their new owner re-reads them)."""
        n = 0
        for tp in tps:
            by_offset = self._by_tp.get(tp)
            if not by_offset:
                continue
            for entry in list(by_offset.values()):
                self._forget(entry)
                n += 1
        return n

    def clear(self) -> None:
        self._by_need.clear()
        self._by_tp.clear()
        self._order.clear()
        self._size = 0
