"""The models catalog (the scorer's selection rule, mirrored) and decisions: never twice, with
unique event ids, the last good version back in the champion slot, evidence afresh on resume."""

from __future__ import annotations

import pytest

from services.supervisor import decisions as dec
from services.supervisor import policies as pol
from services.supervisor.catalog import Catalog

T0 = 1_800_000_000_000


def _pub(version: str, at: int) -> dict:
    return {
        "kind": "PUBLISHED",
        "event_id": f"published:{version}",
        "model_version": version,
        "extractor_version": "v1",
        "created_at": at,
        "validation_quantiles": [0.0, 1.0, 2.0],
    }


def _apply_all(cat: Catalog, events: list[dict]) -> None:
    for e in events:
        assert cat.apply(e)


@pytest.fixture
def cat() -> Catalog:
    c = Catalog()
    for i, v in enumerate(("v1-a", "v1-b", "v1-c")):
        c.apply(_pub(v, T0 + i * 10_000))
    return c


def test_selection_mirrors_the_scorer(cat):
    assert cat.champion("v1") == "v1-c"  # the newest published
    _apply_all(cat, dec.pause_events(cat, "v1-c", reason="r", actor="operator"))
    assert cat.champion("v1") == "v1-b"  # paused: the last good one
    _apply_all(cat, dec.activate_events(cat, "v1-a", reason="r", actor="operator", arm="champion"))
    assert cat.champion("v1") == "v1-a"  # activated wins over newer published
    _apply_all(cat, dec.activate_events(cat, "v1-b", reason="r", actor="operator", arm="challenger"))
    assert cat.challenger("v1") == "v1-b" and cat.serving("v1", "challenger") == "v1-b"
    assert cat.serving("v1", "baseline") is None
    _apply_all(cat, dec.pause_events(cat, "v1-b", reason="r", actor="operator"))
    assert cat.challenger("v1") is None and cat.serving("v1", "challenger") == "v1-a"


def test_events_apply_once_and_replay_gives_the_same_state(cat):
    events = dec.pause_events(cat, "v1-c", reason="r", actor="supervisor")
    assert cat.apply(events[0]) and not cat.apply(events[0])
    replay = Catalog()
    for i, v in enumerate(("v1-a", "v1-b", "v1-c")):
        replay.apply(_pub(v, T0 + i * 10_000))
    replay.apply(events[0])
    replay.apply(events[0])
    assert replay.versions["v1-c"].status == cat.versions["v1-c"].status == "paused"
    assert len(replay.versions["v1-c"].history) == 1


def test_a_decision_is_never_taken_twice_and_each_has_its_own_event_id(cat):
    first = dec.pause_events(cat, "v1-c", reason="r", actor="supervisor")
    _apply_all(cat, first)
    with pytest.raises(dec.Conflict):
        dec.pause_events(cat, "v1-c", reason="again", actor="supervisor")
    resumed = dec.resume_events(cat, "v1-c", reason="ok", actor="operator:ana")
    _apply_all(cat, resumed)
    second = dec.pause_events(cat, "v1-c", reason="r", actor="supervisor")
    ids = [first[0]["event_id"], resumed[0]["event_id"], second[0]["event_id"]]
    assert ids == ["supervisor:PAUSED:v1-c:0", "operator:RESUMED:v1-c:1", "supervisor:PAUSED:v1-c:2"]
    with pytest.raises(dec.UnknownVersion):
        dec.pause_events(cat, "v1-zzz", reason="r", actor="supervisor")
    with pytest.raises(dec.Conflict):
        dec.resume_events(cat, "v1-a", reason="r", actor="operator")


def test_breach_events_pause_once_and_fall_back_to_the_last_good_champion(cat):
    _apply_all(cat, dec.activate_events(cat, "v1-b", reason="r", actor="operator", arm="champion"))
    _apply_all(cat, dec.activate_events(cat, "v1-c", reason="r", actor="supervisor", arm="champion"))
    policy = pol.Policy(
        name="invalid_outputs", metric="invalid_rate", threshold=0.02, action="pause_and_fallback"
    )
    breach = pol.Breach(policy, "v1-c", "country=DE", 1.0, 40, 40)
    events = dec.breach_events(cat, breach, [breach], "supervisor")
    assert [(e["kind"], e["model_version"], e["arm"]) for e in events] == [
        ("PAUSED", "v1-c", None),
        ("ACTIVATED", "v1-b", "champion"),
    ]
    assert events[0]["params"]["country"] == "DE" and events[0]["metrics"]["invalid_rate"] == 1.0
    assert "country=DE" in events[0]["reason"]
    _apply_all(cat, events)
    assert cat.champion("v1") == "v1-b"
    assert dec.breach_events(cat, breach, [breach], "supervisor") == []  # done already


def test_operator_resume_starts_the_evidence_afresh(cat):
    _apply_all(cat, dec.pause_events(cat, "v1-c", reason="r", actor="supervisor"))
    [e] = dec.resume_events(cat, "v1-c", reason="r", actor="operator")
    cat.apply(e)
    assert cat.versions["v1-c"].evidence_since == e["created_at"]


def test_serving_at_is_unsure_near_a_swap(cat):
    assert cat.serving_at("v1", "champion", T0 + 25_000, 2000) == ("v1-c", True)
    assert cat.serving_at("v1", "champion", T0 + 15_000, 2000) == ("v1-b", True)
    assert cat.serving_at("v1", "champion", T0 + 20_500, 2000) == ("v1-c", False)
    assert cat.serving_at("v1", "champion", T0 - 5000, 2000) == (None, False)
    assert cat.serving_at("v1", "baseline", T0 + 25_000, 2000) == (None, True)
