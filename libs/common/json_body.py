"""Reading a JSON request body that may be hostile: one rule for every service's HTTP API.

Python's ``json`` accepts what is not JSON, or not text, and fails on some of what it accepts:
``NaN`` and ``Infinity`` literals (later unencodable in a JSON answer), lone surrogates such as
``"\\ud800"`` (later unencodable in UTF-8 and Avro), integers over 4300 digits (a ValueError),
nesting deeper than the interpreter's stack (a RecursionError, not a ValueError). Each of these
gave a 500 somewhere (found by ``tests/integration/fuzz``). :func:`parse_json_body` turns them
all into :class:`BadJsonBody`, which the API answers with a 400.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["BadJsonBody", "parse_json_body"]


class BadJsonBody(ValueError):
    """The body is not JSON text this service can work with; ``str(exc)`` says why."""


def _no_constants(name: str) -> Any:
    raise BadJsonBody(f"{name} is not JSON")


def parse_json_body(raw: bytes, *, empty: Any = None) -> Any:
    """The JSON value of ``raw`` (``empty`` for a body of whitespace only), or BadJsonBody."""
    if not raw.strip():
        return empty
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except RecursionError:
        raise BadJsonBody("the body is nested too deep") from None
    except BadJsonBody:
        raise
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, digits limit, bad UTF-8
        raise BadJsonBody(f"the body is not JSON: {exc}") from None
    _check_text(obj)
    return obj


def _check_text(obj: Any) -> None:
    """Every string (keys too) must be Unicode text: no lone surrogates. Iterative: the value
    may be as deep as the parser allowed."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _text(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                _text(key)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _text(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadJsonBody(f"a string holds a lone surrogate ({exc.object[exc.start : exc.end]!r})") from None
