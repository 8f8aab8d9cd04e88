"""The one error type the stack raises for expected failures.

The CLI prints these as a message (plus a hint and a log tail) and exits non-zero; only bugs
surface as Python tracebacks.
"""

from __future__ import annotations

from pathlib import Path


class StackError(RuntimeError):
    """An expected failure of the local stack, with what to do about it."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        log: Path | None = None,
        log_tail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.log = log
        self.log_tail = log_tail

    def __str__(self) -> str:
        parts = [self.message]
        if self.hint:
            parts.append(f"hint: {self.hint}")
        if self.log_tail:
            parts.append(f"last lines of {self.log}:\n{self.log_tail}")
        return "\n".join(parts)
