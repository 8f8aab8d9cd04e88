"""Errors the Kafka helpers raise, so callers can tell "retry" from "give up"."""

from __future__ import annotations


class KafkaUnavailableError(RuntimeError):
    """The cluster did not answer in time; callers answer 503 or retry later."""


class DeliveryError(RuntimeError):
    """At least one produced message was not durably written."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        more = f" (+{len(failures) - 3} more)" if len(failures) > 3 else ""
        super().__init__(f"{len(failures)} message(s) not delivered: {'; '.join(failures[:3])}{more}")
