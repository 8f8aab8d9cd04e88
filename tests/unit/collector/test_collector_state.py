"""Bounded memory of the collector: eviction by count and by age, and the filing rules."""

from __future__ import annotations

from services.collector.state import BoundedMap, BoundedSet, CollectorState
from services.collector.waiting import WaitingRoom
from tests.support.collector_fakes import FakeMessage


def test_bounded_set_forgets_the_oldest_past_its_size():
    s = BoundedSet(3)
    for i in range(5):
        assert s.add(f"e{i}", i)
    assert not s.add("e4", 9)
    assert len(s) == 3
    assert "e1" not in s and "e2" in s and "e4" in s
    assert s.evicted == 2


def test_bounded_set_forgets_by_age():
    s = BoundedSet(100)
    for i in range(10):
        s.add(i, 1000 + i)
    assert s.evict_older_than(1005) == 5
    assert 4 not in s and 5 in s and len(s) == 5
    s.discard(7)
    assert 7 not in s
    assert s.evict_older_than(1008) == 2  # 5 and 6; 7 was already gone
    assert len(s) == 2


def test_bounded_map_is_least_recently_written_first():
    m = BoundedMap(2)
    m.put("a", 1, 10)
    m.put("b", 2, 11)
    m.put("a", 3, 12)  # rewritten: now the newest
    m.put("c", 4, 13)
    assert m.get("a") == 3 and m.get("b") is None and m.get("c") == 4
    assert m.evict_older_than(13) == 1
    assert m.get("a") is None and len(m) == 1


def _state(**kw) -> CollectorState:
    return CollectorState(
        window_ms=kw.get("window_ms", 1000),
        max_seen=100,
        max_pupdates=100,
        max_dogs=100,
        max_dead_positions=100,
    )


def test_the_latest_post_decides_a_dogs_profile_whatever_the_arrival_order():
    st = _state()
    st.file_pupdate("e2", "p2", "d", 2000, {"size": "LARGE"}, 10)
    st.file_pupdate("e1", "p1", "d", 1000, {"size": "SMALL"}, 11)
    assert st.profile("d") == {"size": "LARGE"}
    st.file_pupdate("e3", "p3", "d", 3000, {"size": "GIANT"}, 12)
    assert st.profile("d") == {"size": "GIANT"}
    assert st.pupdates.get("p1") == 1000
    assert "e1" in st.seen


def test_the_window_applies_to_every_structure():
    st = _state(window_ms=100)
    st.file_pupdate("e1", "p1", "d1", 5, {"size": "SMALL"}, 0)
    st.file_like("e2", 0)
    st.file_dead("t", 0, 7, 0)
    st.file_like("e3", 150)
    assert st.evict(now_ms=160) == 5
    assert st.sizes() == {"seen": 1, "pupdates": 0, "dogs": 0, "dead_positions": 0}


def _msg(partition: int, offset: int) -> FakeMessage:
    return FakeMessage("likes.raw", partition, offset, b"x")


def test_waiting_room_release_expiry_and_offsets():
    room = WaitingRoom(timeout_s=10, max_size=100)
    room.add(_msg(0, 5), {}, None, False, ("pupdate", "p1"), now=0)
    room.add(_msg(0, 7), {}, None, False, ("pupdate", "p2"), now=1)
    room.add(_msg(1, 3), {}, None, False, ("pupdate", "p1"), now=2)
    assert len(room) == 3
    assert room.oldest_offset(("likes.raw", 0)) == 5
    released = room.release(("pupdate", "p1"))
    assert [e.msg.offset() for e in released] == [5, 3]
    assert room.oldest_offset(("likes.raw", 0)) == 7
    assert room.oldest_offset(("likes.raw", 1)) is None
    assert room.next_deadline() == 11
    assert room.expired(10.5) == []
    assert [e.need for e in room.expired(11)] == [("pupdate", "p2")]
    assert len(room) == 0 and not room.waiting_for(("pupdate", "p2"))


def test_a_full_waiting_room_pushes_out_its_oldest():
    room = WaitingRoom(timeout_s=10, max_size=2)
    assert room.add(_msg(0, 1), {}, None, False, ("pupdate", "a"), 0) is None
    assert room.add(_msg(0, 2), {}, None, False, ("pupdate", "b"), 0) is None
    out = room.add(_msg(0, 3), {}, None, False, ("pupdate", "c"), 0)
    assert out.msg.offset() == 1
    assert len(room) == 2 and room.oldest_offset(("likes.raw", 0)) == 2


def test_revoked_partitions_leave_the_waiting_room():
    room = WaitingRoom(timeout_s=10, max_size=10)
    room.add(_msg(0, 1), {}, None, False, ("pupdate", "a"), 0)
    room.add(_msg(1, 1), {}, None, False, ("pupdate", "a"), 0)
    assert room.drop_partitions({("likes.raw", 0)}) == 1
    assert [e.msg.partition() for e in room.release(("pupdate", "a"))] == [1]
    assert room.expired(100) == []
