"""The one fold of the ``models`` topic: the champion and challenger rule, each event once."""

from libs.common.models_ledger import ARMS, EventKind, ModelsLedger, normalise_weights

PUBLISHED = ["a", "b", "c"]  # oldest first


def _event(kind: str, version: str, n: int, **more) -> dict:
    return {"kind": kind, "model_version": version, "event_id": f"{version}-{kind}-{n}", **more}


def _ledger(*, activated_champion: str | None = None, activated_challenger: str | None = None):
    ledger = ModelsLedger()
    for i, v in enumerate(PUBLISHED):
        ledger.apply(_event("PUBLISHED", v, i, extractor_version="v1"))
    if activated_champion:
        ledger.apply(_event("ACTIVATED", activated_champion, 10, arm="champion"))
    if activated_challenger:
        ledger.apply(_event("ACTIVATED", activated_challenger, 11, arm="challenger"))
    return ledger


def _pause(ledger: ModelsLedger, *versions: str) -> ModelsLedger:
    for i, v in enumerate(versions):
        ledger.apply(_event("PAUSED", v, 20 + i))
    return ledger


def test_the_newest_usable_published_version_is_champion_without_activation():
    assert _ledger().champion("v1") == "c"
    assert _pause(_ledger(), "c").champion("v1") == "b"  # c paused: the last good one
    assert _pause(_ledger(), "a", "b", "c").champion("v1") is None


def test_an_activated_champion_wins_while_usable():
    assert _ledger(activated_champion="a").champion("v1") == "a"
    assert _pause(_ledger(activated_champion="a"), "a").champion("v1") == "c"


def test_a_challenger_is_served_only_when_usable_and_not_the_champion():
    assert _ledger(activated_challenger="b").challenger("v1") == "b"
    assert _ledger(activated_challenger="c").challenger("v1") is None
    assert _pause(_ledger(activated_challenger="b"), "b").challenger("v1") is None
    assert _ledger().challenger("v1") is None


def test_a_promoted_challenger_leaves_the_challenger_arm():
    ledger = _ledger(activated_champion="a", activated_challenger="b")
    ledger.apply(_event("ACTIVATED", "b", 30, arm="champion"))
    assert ledger.champion("v1") == "b" and ledger.challenger("v1") is None


def test_each_event_is_applied_once_by_event_id():
    ledger = _ledger()
    pause = _event("PAUSED", "c", 1)
    resume = _event("RESUMED", "c", 2)
    assert ledger.apply(pause) is True
    assert ledger.apply(resume) is True
    assert ledger.apply(pause) is None, "a re-delivered PAUSED must not pause again"
    assert ledger.champion("v1") == "c"


def test_unknown_kinds_and_versionless_events_are_ignored():
    ledger = _ledger()
    assert ledger.apply({"kind": "EXPLODED", "model_version": "c", "event_id": "x"}) is None
    assert ledger.apply({"kind": "PAUSED", "model_version": "", "event_id": "y"}) is None
    assert ledger.champion("v1") == "c" and not ledger.paused


def test_refused_and_retired_versions_never_serve():
    ledger = _ledger()
    ledger.refuse("c", "sha256 mismatch")
    ledger.apply(_event("RETIRED", "b", 1))
    assert ledger.champion("v1") == "a"
    assert ledger.status("c") == "refused" and ledger.status("b") == "retired"


def test_weights_are_normalised_and_invalid_ones_ignored():
    ledger = _ledger()
    ledger.apply(_event("ACTIVATED", "c", 1, arm="champion", arm_weights={"champion": 3, "baseline": 1}))
    assert ledger.weights == {"champion": 0.75, "challenger": 0.0, "baseline": 0.25}
    ledger.apply(_event("ACTIVATED", "c", 2, arm="champion", arm_weights={"champion": -1}))
    assert ledger.weights == {"champion": 0.75, "challenger": 0.0, "baseline": 0.25}
    assert normalise_weights({"champion": float("nan")}) is None
    assert [str(a) for a in ARMS] == ["champion", "challenger", "baseline"]
    assert EventKind("PAUSED") == "PAUSED"


def test_applied_event_ids_are_bounded_and_a_recent_repeat_is_still_dropped():
    ledger = ModelsLedger(applied_ids_kept=4)
    for i, v in enumerate(PUBLISHED):
        ledger.apply(_event("PUBLISHED", v, i, extractor_version="v1"))
    paused = _event("PAUSED", "c", 1)
    ledger.apply(paused)
    ledger.apply(_event("RESUMED", "c", 2))
    assert ledger.apply(paused) is None  # a retry right after: dropped, c stays resumed
    assert ledger.champion("v1") == "c"
    for n in range(1000):  # a long run of decisions
        ledger.apply(_event("PAUSED" if n % 2 == 0 else "RESUMED", "a", 100 + n))
    assert len(ledger.applied) == len(ledger.applied_order) == 4
    newest = range(996, 1000)
    assert ledger.applied == {f"a-{'PAUSED' if n % 2 == 0 else 'RESUMED'}-{100 + n}" for n in newest}
