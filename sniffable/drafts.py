"""Candidate drafts: what an owner could post about a dog before choosing one.

An owner about to post has several drafts for the same dog, drawn by the world exactly as a
single post is (hashtags in the owner's own spelling habits, a caption or not, a filter on apps
that have filters): the system under test never shapes the options, it only helps pick one.
How much each draft would really be worth is the hidden truth's business
(:func:`sniffable.truth.post_effect`), attached to the draft here only so the simulator can
draw the realised likes of the one that is posted; it never leaves the simulator.

The hour is not a draft dimension in live runs: the demo's virtual clock runs at wall speed
(the collector rejects events from the future), so a draft "for tonight" could not be posted
within the run. Every draft is posted now; the hour effect is the same for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .world import Dog


@dataclass(frozen=True)
class DraftOption:
    """One candidate pupdate; ``mu`` is its hidden expected likes within the horizon."""

    hashtags: list[str]
    caption: str | None
    photo_filter: str | None
    mu: float


def what_if_request(
    dog: Dog, option: DraftOption, *, schema: int, posted_at: int, followers: int
) -> dict[str, Any]:
    """The draft as the app sends it to ``POST /v1/predict``: only what the app itself knows.

    The profile is what the owner typed (``breed_entered``, the age only when given), the
    country only from apps that send it (3.x), as in the pupdate the app would then post.
    """
    profile: dict[str, Any] = {"breed": dog.breed_entered, "size": dog.size}
    if schema >= 3 and dog.age_given:
        profile["age_months"] = dog.age_months
    draft: dict[str, Any] = {
        "dog_id": dog.dog_id,
        "posted_at": posted_at,
        "hashtags": option.hashtags,
        "dog": profile,
        "dog_followers": followers,
    }
    if option.caption is not None:
        draft["caption"] = option.caption
    if option.photo_filter is not None:
        draft["photo_filter"] = option.photo_filter
    if schema >= 3:
        draft["country"] = dog.country
    return draft
