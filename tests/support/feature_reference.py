"""An offline reference for the featurizer: a plain batch computation over the fact topics.

It shares only the pure extractors with the service. Instead of the engine's watermark and
event queue it sorts all pupdates once and walks them with a pointer marking which horizons
have closed (close = posted_at + horizon, so the matured pupdates are always a prefix of the
sorted list), straight from the definitions in docs/features.md.
"""

from __future__ import annotations

from collections import defaultdict

from libs.common.features.extractors import extractor
from libs.common.features.state import DogState, StateView, Stats


def reference(pupdates: list[dict], likes: list[dict], version: str, horizon_ms: int) -> dict[str, dict]:
    """Per pupdate_id: values and baseline as of posting; label when its horizon closed by the
    newest fact (``None`` otherwise)."""
    ex = extractor(version)
    ordered = sorted(pupdates, key=lambda p: (p["posted_at"], p["pupdate_id"]))
    posted = {p["pupdate_id"]: p["posted_at"] for p in ordered}
    label: dict[str, int] = defaultdict(int)
    for like in likes:
        at = posted.get(like["pupdate_id"])
        if at is not None and at <= like["liked_at"] < at + horizon_ms:
            label[like["pupdate_id"]] += 1
    newest = max([p["posted_at"] for p in pupdates] + [lk["liked_at"] for lk in likes])

    dogs: dict[str, DogState] = defaultdict(DogState)
    tags: dict[str, Stats] = defaultdict(Stats)
    overall = Stats()
    matured = 0
    out = {}
    for p in ordered:
        while matured < len(ordered) and ordered[matured]["posted_at"] + horizon_ms <= p["posted_at"]:
            q = ordered[matured]
            n = label[q["pupdate_id"]]
            dogs[q["dog_id"]].matured.add(n)
            for t in ex.tags(q):
                tags[t].add(n)
            overall.add(n)
            matured += 1
        dog = dogs[p["dog_id"]]
        view = StateView(
            DogState(dog.posts, dog.last_posted_at, Stats(dog.matured.n, dog.matured.likes)),
            {t: Stats(tags[t].n, tags[t].likes) for t in ex.tags(p) if t in tags},
            Stats(overall.n, overall.likes),
        )
        closed = p["posted_at"] + horizon_ms <= newest
        out[p["pupdate_id"]] = {
            "values": ex.extract(p, view),
            "baseline": ex.baseline(view),
            "label": label[p["pupdate_id"]] if closed else None,
        }
        dog.posted(p["posted_at"])
    return out
