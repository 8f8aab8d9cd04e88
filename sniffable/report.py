"""What a simulation sent, exactly enough for a collector test to check every record.

The report lists the event_ids of good pupdates and good likes (each must appear exactly once
among the facts), the re-sent duplicates (each dropped), and every bad record with the reason
kind it must be dead-lettered with and the sha256 of its raw bytes (dead letters carry the raw
bytes, and an undecodable record has no readable event_id).

Id lists are kept in memory only up to ``id_cap`` each (``ids_complete`` says whether they
are whole); with an events log every record is also streamed to a JSON-lines file as it is
sent, so a run of any length can be checked without holding it in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.table import Table

from .events import DUPLICATE, LIKE, PUPDATE, SimEvent

DEFAULT_ID_CAP = 250_000  # per list: ~25 MB of ids; the events log has them all
_STEM = {"pupdates.raw": "pupdate_raw", "likes.raw": "like_raw"}


@dataclass(frozen=True)
class BadRecord:
    kind: str
    topic: str
    key: str
    event_id: str | None
    detail: str
    sha256: str
    send_ms: int


@dataclass
class SimulationReport:
    seed: int
    config: dict[str, Any]
    start_ms: int
    sent: int = 0
    sent_by_topic: dict[str, int] = field(default_factory=dict)
    sent_by_kind: dict[str, int] = field(default_factory=dict)
    sent_by_schema: dict[str, int] = field(default_factory=dict)
    bad_by_kind: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    good_pupdates: int = 0
    good_likes: int = 0
    good_pupdate_ids: list[str] = field(default_factory=list)
    good_like_ids: list[str] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)
    ids_complete: bool = True
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    last_send_ms: int | None = None
    wall_seconds: float = 0.0
    stopped_by: str = ""
    sink: dict[str, Any] = field(default_factory=dict)
    events_log: str | None = None

    @property
    def bad_total(self) -> int:
        return sum(self.bad_by_kind.values())

    @property
    def virtual_span_s(self) -> float:
        if self.first_event_ms is None or self.last_event_ms is None:
            return 0.0
        return (self.last_event_ms - self.first_event_ms) / 1000

    @property
    def events_per_second(self) -> float:
        return self.sent / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def good_ids(self, kind: str) -> set[str]:
        return set(self.good_pupdate_ids if kind == PUPDATE else self.good_like_ids)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bad_total"] = self.bad_total
        d["virtual_span_s"] = self.virtual_span_s
        d["events_per_second"] = round(self.events_per_second, 1)
        return d

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> SimulationReport:
        d = json.loads(Path(path).read_text())
        for k in ("bad_total", "virtual_span_s", "events_per_second"):
            d.pop(k, None)
        d["bad"] = [BadRecord(**b) for b in d["bad"]]
        return cls(**d)

    def table(self) -> Table:
        t = Table(title=f"Sniffable simulation (seed {self.seed})", show_header=True)
        t.add_column("what")
        t.add_column("count", justify="right")
        t.add_row("records sent", f"{self.sent:,}")
        for k, v in sorted(self.sent_by_topic.items()):
            t.add_row(f"  to {k}", f"{v:,}")
        t.add_row("good pupdates", f"{self.good_pupdates:,}")
        t.add_row("good likes", f"{self.good_likes:,}")
        for k, v in sorted(self.sent_by_schema.items()):
            t.add_row(f"  good as {k}", f"{v:,}")
        t.add_row("duplicates (re-sends)", f"{self.duplicates:,}")
        t.add_row("bad records", f"{self.bad_total:,}")
        for k, v in sorted(self.bad_by_kind.items()):
            t.add_row(f"  {k}", f"{v:,}")
        t.add_row("virtual time span", f"{self.virtual_span_s / 3600:,.2f} h")
        t.add_row("wall time", f"{self.wall_seconds:,.2f} s")
        t.add_row("events / wall s", f"{self.events_per_second:,.0f}")
        t.add_row("stopped by", self.stopped_by)
        if self.events_log:
            t.add_row("events log", self.events_log)
        return t


class ReportBuilder:
    """Accumulates a :class:`SimulationReport` one sent event at a time, cheaply."""

    def __init__(
        self, report: SimulationReport, *, id_cap: int = DEFAULT_ID_CAP, events_log: IO[str] | None = None
    ) -> None:
        self.report = report
        self._cap = id_cap
        self._log = events_log
        self._topic: Counter[str] = Counter()
        self._kind: Counter[str] = Counter()
        self._schema: Counter[tuple[str, int]] = Counter()
        self._first: int | None = None
        self._last: int | None = None

    def add(self, ev: SimEvent) -> None:
        r = self.report
        r.sent += 1
        self._topic[ev.topic_base] += 1
        kind = ev.kind
        self._kind[kind] += 1
        sha = None
        if kind in (LIKE, PUPDATE):
            self._schema[(ev.topic_base, ev.schema_version)] += 1
            t = ev.event_time_ms
            if self._first is None or t < self._first:
                self._first = t
            if self._last is None or t > self._last:
                self._last = t
            ids = r.good_like_ids if kind == LIKE else r.good_pupdate_ids
            if len(ids) < self._cap:
                ids.append(ev.event_id)  # type: ignore[arg-type]
            else:
                r.ids_complete = False
        elif kind == DUPLICATE:
            if len(r.duplicate_ids) < self._cap:
                r.duplicate_ids.append(ev.event_id)  # type: ignore[arg-type]
            else:
                r.ids_complete = False
        else:
            sha = hashlib.sha256(
                ev.value
                if ev.value
                else (ev.http_body or json.dumps(ev.json_payload, ensure_ascii=False).encode())
            ).hexdigest()
            if len(r.bad) < self._cap:
                r.bad.append(BadRecord(kind, ev.topic_base, ev.key, ev.event_id, ev.detail, sha, ev.send_ms))
            else:
                r.ids_complete = False
        r.last_send_ms = ev.send_ms
        if self._log is not None:
            line: dict[str, Any] = {
                "kind": kind,
                "topic": ev.topic_base,
                "key": ev.key,
                "event_id": ev.event_id,
                "event_time_ms": ev.event_time_ms,
                "send_ms": ev.send_ms,
            }
            if sha is not None:
                line["sha256"] = sha
                line["detail"] = ev.detail
            if ev.truth is not None and ev.json_payload is not None:
                line["dog_id"] = ev.json_payload.get("dog_id")
                line["expected_likes"] = round(ev.truth, 4)
            self._log.write(json.dumps(line, ensure_ascii=False) + "\n")

    def finish(self, *, wall_seconds: float, stopped_by: str, sink: dict[str, Any]) -> SimulationReport:
        r = self.report
        r.sent_by_topic = dict(self._topic)
        r.sent_by_kind = dict(self._kind)
        r.sent_by_schema = {f"{_STEM[t]}.v{v}": n for (t, v), n in sorted(self._schema.items())}
        r.good_pupdates = self._kind.get(PUPDATE, 0)
        r.good_likes = self._kind.get(LIKE, 0)
        r.duplicates = self._kind.get(DUPLICATE, 0)
        r.bad_by_kind = {k: n for k, n in self._kind.items() if k not in (PUPDATE, LIKE, DUPLICATE)}
        r.first_event_ms = self._first
        r.last_event_ms = self._last
        r.wall_seconds = wall_seconds
        r.stopped_by = stopped_by
        r.sink = sink
        return r
