"""The training window: a pure function of the set of instances read, bounded by count and age."""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.trainer.synthetic import NAMES, SyntheticWorld
from services.trainer.window import BadInstance, Window, Windows, key_of

CATS = ("breed", "photo_filter", "country")


def records(n: int, seed: int = 0) -> list[dict]:
    return SyntheticWorld(seed=seed, dogs=50).instances(n)


def windows(max_count: int = 10_000, max_age_ms: int = 10**12) -> Windows:
    return Windows(max_count=max_count, max_age_ms=max_age_ms, categorical_of={"v1": CATS})


def fill(ws: Windows, recs: list[dict]) -> None:
    for i, r in enumerate(recs):
        ws.add(r, i % 3, i)


def test_snapshot_is_sorted_by_time_and_keeps_values_exactly():
    recs = records(50)
    ws = windows()
    fill(ws, list(reversed(recs)))
    snap = ws["v1"].snapshot()
    assert len(snap) == 50
    assert np.all(np.diff(snap.rows.posted_at) >= 0)
    first = min(recs, key=lambda r: r["posted_at"])
    assert snap.rows.X[0].tolist() == first["values"]
    assert snap.rows.likes[0] == first["likes"]
    assert snap.rows.baseline[0] == first["baseline"]
    assert snap.names == NAMES
    assert snap.categorical == CATS
    assert snap.categorical_indices == [NAMES.index(c) for c in CATS]


def test_the_window_does_not_depend_on_arrival_order_or_duplicates():
    recs = records(9000)
    a, b = windows(max_count=5000), windows(max_count=5000)
    fill(a, recs)
    shuffled = recs + random.Random(1).sample(recs, 2000)  # at-least-once: re-sent instances
    random.Random(2).shuffle(shuffled)
    fill(b, shuffled)
    sa, sb = a["v1"].snapshot(), b["v1"].snapshot()
    assert len(sa) == len(sb) == 5000
    for col in ("X", "likes", "baseline", "posted_at", "key"):
        assert np.array_equal(getattr(sa.rows, col), getattr(sb.rows, col)), col


def test_count_limit_keeps_the_newest():
    recs = records(10_000)
    ws = windows(max_count=1000)
    fill(ws, recs)
    snap = ws["v1"].snapshot()
    assert len(snap) == 1000
    newest = sorted(r["posted_at"] for r in recs)[-1000:]
    assert snap.rows.posted_at.tolist() == newest
    assert ws["v1"].compactions >= 1, "storage stays bounded while reading"
    assert ws["v1"].stored < 1000 * 3 // 2 + 2 * 4096


def test_age_limit_is_event_time_back_from_the_newest():
    recs = records(200)  # 30 s apart
    ws = windows(max_age_ms=30_000 * 49)
    fill(ws, recs)
    snap = ws["v1"].snapshot()
    assert len(snap) == 50
    assert snap.rows.posted_at.min() == recs[-1]["posted_at"] - 30_000 * 49


def test_snapshot_survives_later_appends():
    recs = records(300)
    ws = windows()
    fill(ws, recs[:200])
    snap = ws["v1"].snapshot()
    before = snap.rows.X.copy()
    fill(ws, recs[200:])
    assert np.array_equal(snap.rows.X, before)
    assert not snap.rows.X.flags.writeable
    assert len(ws["v1"].snapshot()) == 300


def test_data_range_names_offsets_and_times():
    recs = records(30)
    ws = windows()
    fill(ws, recs)
    rng = ws["v1"].snapshot().data_range("p.instances")
    assert rng["data.topic"] == "p.instances"
    assert rng["data.rows"] == "30"
    assert rng["data.offsets"] == '{"0": [0, 27], "1": [1, 28], "2": [2, 29]}'
    assert rng["data.posted_at_min"] == str(recs[0]["posted_at"])
    assert rng["data.closed_at_max"] == str(recs[-1]["closed_at"])


def test_versions_get_their_own_windows_and_filters():
    rec = records(1)[0]
    ws = Windows(max_count=100, max_age_ms=10**12, categorical_of={"v1": CATS}, versions=["v1", "v2"])
    ws.add(rec, 0, 0)
    ws.add(rec | {"extractor_version": "v2"}, 0, 1)
    assert ws.add(rec | {"extractor_version": "v9"}, 0, 2) is None
    assert ws.versions() == ["v1", "v2"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"likes": -1}, "negative_label"),
        ({"baseline": float("nan")}, "invalid_baseline"),
        ({"values": [float("inf")] * len(NAMES)}, "non_finite_feature"),
        ({"values": [1.0]}, "length_mismatch"),
    ],
)
def test_bad_instances_are_refused_with_a_reason(change, reason):
    ws = windows()
    with pytest.raises(BadInstance) as err:
        ws.add(records(1)[0] | change, 0, 0)
    assert err.value.reason == reason


def test_other_feature_names_under_the_same_version_are_refused():
    ws = windows()
    rec = records(1)[0]
    ws.add(rec, 0, 0)
    renamed = rec | {"names": ["x", *rec["names"][1:]], "pupdate_id": "other"}
    with pytest.raises(BadInstance) as err:
        ws.add(renamed, 0, 1)
    assert err.value.reason == "feature_names_mismatch"


def test_keys_are_stable():
    assert key_of("p1") == key_of("p1") != key_of("p2")
    assert 0 <= key_of("p1") < 2**64


def test_window_size_is_bounded_by_max_count():
    w = Window("v1", NAMES, CATS, max_count=100, max_age_ms=10**12)
    for i, r in enumerate(records(150)):
        w.add(
            r["values"],
            baseline=r["baseline"],
            likes=r["likes"],
            posted_at=r["posted_at"],
            closed_at=r["closed_at"],
            key=key_of(r["pupdate_id"]),
            partition=0,
            offset=i,
        )
    assert w.size() == 100
