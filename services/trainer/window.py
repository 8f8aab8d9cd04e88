"""The training window: the newest instances of one extractor_version, by count and by age.

Rebuildable by construction: its content is a pure function of the *set* of instances read from
``instances`` (see :func:`build_snapshot`), so replaying the topic from the beginning after a
restart, or on the standby replica, gives the same window, whatever order the partitions
interleave in. Age is measured in event time (``posted_at``) back from the newest instance seen,
never against the wall clock, for the same reason.

Storage is columnar and append-only: rows gather in small Python lists, are sealed into
immutable numpy chunks, and are compacted (de-duplicated, trimmed) when they outgrow the limit.
A snapshot only takes references to immutable chunks, so the training thread reads it while the
consuming loop keeps appending.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK_ROWS = 4096


class BadInstance(ValueError):
    """An instance the trainer cannot learn from; ``reason`` is a stable dead-letter code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def key_of(pupdate_id: str) -> int:
    """A stable 64-bit key per pupdate (de-duplication and a total order among equal times)."""
    return int.from_bytes(hashlib.blake2b(pupdate_id.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class Chunk:
    """Immutable columns of some rows (arrival order)."""

    X: np.ndarray  # (n, F) float64, values exactly as the extractor wrote them
    likes: np.ndarray  # (n,) float64
    baseline: np.ndarray  # (n,) float64
    posted_at: np.ndarray  # (n,) int64 ms
    closed_at: np.ndarray  # (n,) int64 ms
    key: np.ndarray  # (n,) uint64, key_of(pupdate_id)
    partition: np.ndarray  # (n,) int32
    offset: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.likes)

    @staticmethod
    def concat(chunks: Sequence[Chunk], n_features: int) -> Chunk:
        if not chunks:
            return Chunk(
                np.empty((0, n_features)),
                *(np.empty(0) for _ in range(2)),
                *(np.empty(0, np.int64) for _ in range(2)),
                np.empty(0, np.uint64),
                np.empty(0, np.int32),
                np.empty(0, np.int64),
            )
        if len(chunks) == 1:
            return chunks[0]
        return Chunk(*(np.concatenate([getattr(c, f) for c in chunks]) for f in _FIELDS))

    def take(self, idx: np.ndarray) -> Chunk:
        return Chunk(*(_frozen(getattr(self, f)[idx]) for f in _FIELDS))


_FIELDS = ("X", "likes", "baseline", "posted_at", "closed_at", "key", "partition", "offset")


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class Snapshot:
    """What one training run learns from: de-duplicated, trimmed, sorted by (posted_at, key)."""

    extractor_version: str
    names: tuple[str, ...]
    categorical: tuple[str, ...]
    rows: Chunk

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, n in enumerate(self.names) if n in self.categorical]

    def data_range(self, topic: str) -> dict[str, str]:
        """Which instances these are: topic offsets per partition and event times (for params)."""
        r = self.rows
        offsets: dict[str, list[int]] = {}
        for p in np.unique(r.partition):
            sel = r.offset[r.partition == p]
            offsets[str(int(p))] = [int(sel.min()), int(sel.max())]
        empty = len(r) == 0
        return {
            "data.topic": topic,
            "data.offsets": json.dumps(offsets, sort_keys=True),
            "data.rows": str(len(r)),
            "data.posted_at_min": "" if empty else str(int(r.posted_at.min())),
            "data.posted_at_max": "" if empty else str(int(r.posted_at.max())),
            "data.closed_at_max": "" if empty else str(int(r.closed_at.max())),
        }


def build_snapshot(
    extractor_version: str,
    names: Sequence[str],
    categorical: Sequence[str],
    chunks: Sequence[Chunk],
    *,
    max_count: int,
    max_age_ms: int,
) -> Snapshot:
    """The window as a pure function of the rows: one row per pupdate (the last read wins),
    posted no more than ``max_age_ms`` before the newest, the newest ``max_count`` of those,
    in (posted_at, key) order."""
    allrows = Chunk.concat(chunks, len(names))
    n = len(allrows)
    if n == 0:
        return Snapshot(extractor_version, tuple(names), tuple(categorical), allrows)
    # Last occurrence of every key: unique over the reversed keys gives first-in-reverse.
    _, rev_first = np.unique(allrows.key[::-1], return_index=True)
    keep = (n - 1) - rev_first
    posted = allrows.posted_at[keep]
    cutoff = int(posted.max()) - int(max_age_ms)
    keep = keep[posted >= cutoff]
    order = np.lexsort((allrows.key[keep], allrows.posted_at[keep]))
    keep = keep[order][-max_count:]
    return Snapshot(extractor_version, tuple(names), tuple(categorical), allrows.take(keep))


class Window:
    """The growing window of one extractor_version (owned by the consuming thread)."""

    def __init__(
        self,
        extractor_version: str,
        names: Sequence[str],
        categorical: Sequence[str],
        *,
        max_count: int,
        max_age_ms: int,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        self.extractor_version = extractor_version
        self.names = tuple(names)
        self.categorical = tuple(c for c in categorical if c in self.names)
        self.max_count = max_count
        self.max_age_ms = max_age_ms
        self.chunk_rows = chunk_rows
        self._chunks: list[Chunk] = []
        self._stored = 0
        self._pending: list[tuple] = []
        self.newest_posted_at: int | None = None
        self.compactions = 0

    def add(
        self,
        values: Sequence[float],
        *,
        baseline: float,
        likes: float,
        posted_at: int,
        closed_at: int,
        key: int,
        partition: int,
        offset: int,
    ) -> None:
        self._pending.append((values, likes, baseline, posted_at, closed_at, key, partition, offset))
        if self.newest_posted_at is None or posted_at > self.newest_posted_at:
            self.newest_posted_at = posted_at
        if len(self._pending) >= self.chunk_rows:
            self._seal()
            if self._stored > self.max_count * 3 // 2 + self.chunk_rows:
                self.compact()

    def _seal(self) -> None:
        if not self._pending:
            return
        cols = list(zip(*self._pending, strict=True))
        chunk = Chunk(
            _frozen(np.asarray(cols[0], dtype=np.float64).reshape(len(self._pending), len(self.names))),
            _frozen(np.asarray(cols[1], dtype=np.float64)),
            _frozen(np.asarray(cols[2], dtype=np.float64)),
            _frozen(np.asarray(cols[3], dtype=np.int64)),
            _frozen(np.asarray(cols[4], dtype=np.int64)),
            _frozen(np.asarray(cols[5], dtype=np.uint64)),
            _frozen(np.asarray(cols[6], dtype=np.int32)),
            _frozen(np.asarray(cols[7], dtype=np.int64)),
        )
        self._chunks.append(chunk)
        self._stored += len(chunk)
        self._pending = []

    def compact(self) -> None:
        """Drop duplicates and rows outside the limits (keeps memory bounded)."""
        snap = self.snapshot()
        self._chunks = [snap.rows] if len(snap.rows) else []
        self._stored = len(snap.rows)
        self.compactions += 1

    def chunks(self) -> list[Chunk]:
        """Immutable chunks holding every row read so far (cheap: references only)."""
        self._seal()
        return list(self._chunks)

    def snapshot(self) -> Snapshot:
        return build_snapshot(
            self.extractor_version,
            self.names,
            self.categorical,
            self.chunks(),
            max_count=self.max_count,
            max_age_ms=self.max_age_ms,
        )

    @property
    def stored(self) -> int:
        """Rows held, before de-duplication and trimming."""
        return self._stored + len(self._pending)

    def size(self) -> int:
        """Rows the next snapshot will hold at most (exact after a compaction)."""
        return min(self.stored, self.max_count)


class Windows:
    """One window per extractor_version, fed decoded ``instance`` records."""

    def __init__(
        self,
        *,
        max_count: int,
        max_age_ms: int,
        categorical_of: Mapping[str, Sequence[str]],
        default_categorical: Sequence[str] = (),
        versions: Sequence[str] = (),
    ) -> None:
        self.max_count = max_count
        self.max_age_ms = max_age_ms
        self.categorical_of = categorical_of
        self.default_categorical = tuple(default_categorical)
        self.only = set(versions)
        self.by_version: dict[str, Window] = {}

    def add(self, rec: Mapping[str, Any], partition: int, offset: int) -> str | None:
        """Add one instance; returns its extractor_version, None when that version is not trained
        here. Raises :class:`BadInstance` for a record no model may learn from."""
        version = rec["extractor_version"]
        if self.only and version not in self.only:
            return None
        names, values = rec["names"], rec["values"]
        if len(names) != len(values):
            raise BadInstance("length_mismatch", f"{len(names)} names but {len(values)} values")
        likes, baseline = rec["likes"], rec["baseline"]
        if likes < 0:
            raise BadInstance("negative_label", f"likes={likes}")
        if not math.isfinite(baseline) or baseline < 0:
            raise BadInstance("invalid_baseline", f"baseline={baseline}")
        if not all(math.isfinite(v) for v in values):
            raise BadInstance("non_finite_feature", "a feature value is NaN or infinite")
        window = self.by_version.get(version)
        if window is None:
            window = self.by_version[version] = Window(
                version,
                names,
                self.categorical_of.get(version, self.default_categorical),
                max_count=self.max_count,
                max_age_ms=self.max_age_ms,
            )
        elif tuple(names) != window.names:
            raise BadInstance(
                "feature_names_mismatch",
                f"extractor_version {version} had names {list(window.names)}, this instance {list(names)}",
            )
        window.add(
            values,
            baseline=float(baseline),
            likes=float(likes),
            posted_at=int(rec["posted_at"]),
            closed_at=int(rec["closed_at"]),
            key=key_of(rec["pupdate_id"]),
            partition=partition,
            offset=offset,
        )
        return version

    def __getitem__(self, version: str) -> Window:
        return self.by_version[version]

    def __contains__(self, version: str) -> bool:
        return version in self.by_version

    def versions(self) -> list[str]:
        return sorted(self.by_version)
