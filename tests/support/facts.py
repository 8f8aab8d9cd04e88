"""Facts as the collector writes them to ``pupdates``, for the featurizer's tests."""

from __future__ import annotations


def pupdate_fact(
    pid: str, posted_at: int, *, dog: str = "d1", tags: list[str] | None = None, event_id: str | None = None
) -> dict:
    """A minimal valid ``pupdate`` fact: a small pug in Japan, collected when it was posted."""
    return {
        "event_id": event_id or f"e-{pid}",
        "pupdate_id": pid,
        "dog_id": dog,
        "posted_at": posted_at,
        "hashtags": ["#pug"] if tags is None else tags,
        "caption": None,
        "photo_filter": None,
        "dog": {"breed": "Pug", "size": "SMALL", "age_months": None},
        "dog_followers": 3,
        "country": "JP",
        "app_version": "3.0.0",
        "raw_schema": "",
        "collected_at": posted_at,
    }
