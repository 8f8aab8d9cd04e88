from __future__ import annotations

import pytest

from libs.common.serde import (
    CorruptBodyError,
    EncodeError,
    NotSingleObjectError,
    Serde,
    UnknownSchemaError,
    serde,
)

LIKE = {
    "event_id": "e1",
    "pupdate_id": "p1",
    "sniffer_id": "s1",
    "liked_at": 1_795_000_000_000,
    "app_version": "3.1.0",
    "collected_at": 1_795_000_000_123,
}


def test_single_object_layout():
    data = serde("like").encode(LIKE)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == serde("like").reader.fingerprint
    assert serde("like").decode(data) == LIKE


def test_crc64_avro_fingerprint_matches_the_spec_vector():
    # The Avro spec's reference implementation gives 0x63dd24e7cc258f8a for "null";
    # single-object encoding writes it little-endian.
    from fastavro.schema import fingerprint

    assert bytes.fromhex(fingerprint('"null"', "CRC-64-AVRO")) == (0x63DD24E7CC258F8A).to_bytes(8, "little")


def test_timestamps_stay_integer_milliseconds():
    decoded = serde("like").decode(serde("like").encode(LIKE))
    assert isinstance(decoded["liked_at"], int)


def test_old_writer_resolves_to_current_reader_with_defaults():
    v1 = Serde("like_raw", writer_version=1)
    raw = {"event_id": "e", "pupdate_id": "p", "sniffer_id": "s", "liked_at": 5}
    decoded, writer = serde("like_raw").decode_with_writer(v1.encode(raw))
    assert writer.version == 1
    assert decoded == raw | {"app_version": "unknown"}


@pytest.mark.parametrize("garbage", [b"", b"\xc3", b"hello world", b"\x00" * 20, b'{"json": true}'])
def test_garbage_is_not_single_object(garbage):
    with pytest.raises(NotSingleObjectError) as err:
        serde("like").decode(garbage)
    assert err.value.reason == "undecodable"


def test_unknown_fingerprint():
    data = b"\xc3\x01" + b"\xde\xad\xbe\xef" * 2 + b"\x02"
    with pytest.raises(UnknownSchemaError, match="deadbeefdeadbeef") as err:
        serde("like").decode(data)
    assert err.value.reason == "unknown_schema"


def test_a_known_schema_of_another_record_is_refused():
    with pytest.raises(UnknownSchemaError, match="not a version of"):
        serde("pupdate").decode(serde("like").encode(LIKE))


def test_truncated_body():
    data = serde("like").encode(LIKE)
    with pytest.raises(CorruptBodyError):
        serde("like").decode(data[:-5])


def test_trailing_bytes_are_corruption():
    data = serde("like").encode(LIKE)
    with pytest.raises(CorruptBodyError, match="trailing"):
        serde("like").decode(data + b"\x00\x01")


def test_encode_error_names_the_schema():
    with pytest.raises(EncodeError, match=r"like\.v1"):
        serde("like").encode({"event_id": 3})
