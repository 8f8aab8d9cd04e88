"""Where simulated events go: Kafka's raw topics, the collector's HTTP API, or memory.

A sink only moves bytes; it never decides what is good or bad (the event's ``kind`` says
that), so the same event stream can be replayed into any of them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from libs.common.settings import CommonSettings
from libs.common.topics import LIKES_RAW, PUPDATES_RAW

from .events import SimEvent

HTTP_PATHS = {PUPDATES_RAW: "/v1/pupdates", LIKES_RAW: "/v1/likes"}


class SinkUnavailableError(RuntimeError):
    """The destination did not take records after every retry."""


class Sink(Protocol):
    name: str

    def send(self, event: SimEvent) -> None: ...

    def flush(self, timeout: float = 30.0) -> None: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


class NullSink:
    """Sends nothing: measures generation alone."""

    name = "null"

    def __init__(self) -> None:
        self.sent = 0

    def send(self, event: SimEvent) -> None:
        self.sent += 1

    def flush(self, timeout: float = 30.0) -> None:
        pass

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"sent": self.sent}


class ListSink(NullSink):
    """Keeps every event, for tests and small demos."""

    name = "list"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[SimEvent] = []

    def send(self, event: SimEvent) -> None:
        self.sent += 1
        self.events.append(event)


class KafkaSink:
    """Produces each event's Avro bytes to ``pupdates.raw`` / ``likes.raw``, keyed by pupdate_id.

    The producer is idempotent and its delivery failures surface at ``flush()``, so a run that
    returns normally has every record durable in Kafka.
    """

    name = "kafka"

    def __init__(
        self, settings: CommonSettings, *, producer: Any = None, client_name: str = "sniffable"
    ) -> None:
        if producer is None:
            from libs.common.kafka.producer import Producer

            producer = Producer(settings, name=client_name)
        self._producer = producer
        self._topics = {PUPDATES_RAW: settings.topic(PUPDATES_RAW), LIKES_RAW: settings.topic(LIKES_RAW)}
        self._by_topic: Counter[str] = Counter()
        self._n = 0

    def send(self, event: SimEvent) -> None:
        if not event.value:
            raise ValueError(f"{event.kind} ({event.detail}) has no Avro form: it is HTTP-only")
        self._producer.produce(self._topics[event.topic_base], event.value, event.key)
        self._by_topic[event.topic_base] += 1
        self._n += 1
        if self._n % 2_000 == 0:
            self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        self._producer.flush(timeout)

    def close(self) -> None:
        self._producer.close()

    def stats(self) -> dict[str, Any]:
        return {"produced": self._n, "by_topic": {self._topics[k]: v for k, v in self._by_topic.items()}}


# The HTTP API checks what one event shows on its own; these need what came before.
JUDGED_LATER = frozenset({"like_unknown_pupdate", "like_before_pupdate", "unknown_dog", "duplicate"})


class HttpSink:
    """Posts JSON to the collector: ``POST {url}/v1/pupdates`` and ``/v1/likes``.

    Good events may be batched (a JSON list, in send order, one topic per request); bad ones and
    duplicates always go alone, so each response belongs to exactly one of them. Connection
    errors, 429 and 5xx are retried with backoff (the collector answers 503 fast when Kafka is
    down); any other answer is final and counted. ``unexpected`` counts answers that disagree
    with the event's kind: a good event or a duplicate not answered 2xx, a bad one not 4xx.
    Kinds only the collector's memory can judge (an unknown pupdate or dog, a like before its
    pupdate, a re-send) are accepted with 202 and judged later by its stream: 2xx is expected.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        batch: int = 1,
        timeout: float = 10.0,
        retries: int = 5,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:  # a dev dependency of this distribution
            raise SinkUnavailableError("the HTTP sink needs httpx: pip install httpx") from exc
        self._httpx = httpx
        headers = {"content-type": "application/json"}
        if api_key:
            headers["X-API-Key"] = api_key
        self._client = client or httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        if client is not None:
            self._client.headers.update(headers)
        self._batch_size = max(1, batch)
        self._retries = retries
        self._sleep = sleep
        self._pending: list[SimEvent] = []
        self.status: Counter[str] = Counter()
        self.unexpected = 0
        self.unexpected_sample: list[dict[str, Any]] = []
        self.requests = 0

    def send(self, event: SimEvent) -> None:
        if not event.good:
            self._flush_batch()
            self._post([event], event.http_body)
            return
        if self._pending and self._pending[0].topic_base != event.topic_base:
            self._flush_batch()
        self._pending.append(event)
        if len(self._pending) >= self._batch_size:
            self._flush_batch()

    def flush(self, timeout: float = 30.0) -> None:
        self._flush_batch()

    def close(self) -> None:
        self._flush_batch()
        self._client.close()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "status": dict(self.status),
            "unexpected": self.unexpected,
            "unexpected_sample": self.unexpected_sample,
        }

    def _flush_batch(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._post(batch, None)

    def _post(self, events: list[SimEvent], raw: bytes | None) -> None:
        path = HTTP_PATHS[events[0].topic_base]
        if raw is not None:
            body = raw
        elif len(events) == 1 and self._batch_size == 1:
            body = json.dumps(events[0].json_payload, ensure_ascii=False).encode()
        else:
            body = json.dumps([e.json_payload for e in events], ensure_ascii=False).encode()
        code = self._post_with_retries(path, body)
        self.requests += 1
        self.status[str(code)] += len(events)
        for e in events:
            expected_2xx = e.good or not e.bad or e.kind in JUDGED_LATER
            ok = 200 <= code < 300 if expected_2xx else 400 <= code < 500
            if not ok:
                self.unexpected += 1
                if len(self.unexpected_sample) < 20:
                    self.unexpected_sample.append(
                        {"kind": e.kind, "event_id": e.event_id, "detail": e.detail, "status": code}
                    )

    def _post_with_retries(self, path: str, body: bytes) -> int:
        delay = 0.2
        for attempt in range(self._retries + 1):
            try:
                resp = self._client.post(path, content=body)
            except self._httpx.TransportError as exc:
                if attempt == self._retries:
                    raise SinkUnavailableError(f"POST {path}: {exc!r}") from exc
            else:
                if resp.status_code != 429 and resp.status_code < 500:
                    return resp.status_code
                if attempt == self._retries:
                    return resp.status_code
            self._sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")
