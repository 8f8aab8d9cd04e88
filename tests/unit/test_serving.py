from libs.common.serving import challenger, champion

PUBLISHED = ["a", "b", "c"]  # oldest first


def test_the_newest_usable_published_version_is_champion_without_activation():
    assert champion(PUBLISHED, None, lambda v: True) == "c"
    assert champion(PUBLISHED, None, lambda v: v != "c") == "b"  # c paused: the last good one
    assert champion(PUBLISHED, None, lambda v: False) is None


def test_an_activated_champion_wins_while_usable():
    assert champion(PUBLISHED, "a", lambda v: True) == "a"
    assert champion(PUBLISHED, "a", lambda v: v != "a") == "c"


def test_a_challenger_is_served_only_when_usable_and_not_the_champion():
    assert challenger("b", "c", lambda v: True) == "b"
    assert challenger("c", "c", lambda v: True) is None
    assert challenger("b", "c", lambda v: v != "b") is None
    assert challenger(None, "c", lambda v: True) is None
