"""Which model version serves an arm: one rule, used by the scorer (to serve), the trainer (to
know the champion it must beat) and the supervisor (to know what it is judging), so the three
can never disagree about it.

Champion: the version ACTIVATED as champion if it is still usable, else the newest usable
PUBLISHED version. Challenger: the version ACTIVATED as challenger if usable and not the
champion, else none (its traffic goes to the champion). Usable means published and neither
paused nor retired; callers add their own reasons (the scorer's refused artifacts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

CHAMPION, CHALLENGER, BASELINE = "champion", "challenger", "baseline"


def champion(
    published_oldest_first: Sequence[str], activated: str | None, usable: Callable[[str], bool]
) -> str | None:
    if activated and usable(activated):
        return activated
    for version in reversed(published_oldest_first):
        if usable(version):
            return version
    return None


def challenger(
    activated: str | None, current_champion: str | None, usable: Callable[[str], bool]
) -> str | None:
    if activated and usable(activated) and activated != current_champion:
        return activated
    return None
