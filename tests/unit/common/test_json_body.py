"""Hostile JSON bodies: every one is a BadJsonBody (a 400), never an exception that is a 500."""

from __future__ import annotations

import pytest

from libs.common.json_body import BadJsonBody, parse_json_body


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError in json.loads (the supervisor's 500)
        b'{"reason": NaN}',  # not JSON; unrenderable in an answer that echoes it (the trainer's 500)
        b'{"arm_weights": {"champion": Infinity}}',
        b'{"extractor_version": "\\ud800"}',  # a lone surrogate: not UTF-8, not Avro
        b'{"\\udfff": 1}',
        b"9" * 5000,  # over Python's int digits limit: a ValueError
        b"\xff\xfe{}",
        b"{",
    ],
)
def test_hostile_bodies_are_refused_with_one_error(raw):
    with pytest.raises(BadJsonBody):
        parse_json_body(raw)


def test_good_bodies_and_empty_ones():
    assert parse_json_body(' {"a": [1, "é", {"b": null}]} '.encode()) == {"a": [1, "é", {"b": None}]}
    assert parse_json_body(b"  \n", empty={}) == {}
    assert parse_json_body(b"[" * 500 + b"]" * 500) is not None  # deep but within the limit
