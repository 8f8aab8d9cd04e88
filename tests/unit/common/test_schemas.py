"""The schemas folder is the contract: every file parses everywhere and every change is compatible."""

from __future__ import annotations

import io
import json

import avro.io
import avro.schema
import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import to_parsing_canonical_form
from fastavro.utils import generate_many

from libs.common.serde import SchemaStore, Serde, schemas_dir

STORE = SchemaStore()
ALL = [s for versions in STORE.versions.values() for s in versions]
OLDER = [s for versions in STORE.versions.values() for s in versions[:-1]]
CONTRACT_RECORDS = {
    "pupdate_raw",
    "like_raw",
    "pupdate",
    "like",
    "feature_vector",
    "instance",
    "model_event",
    "prediction",
    "dead_letter",
}


def test_every_contract_record_has_a_schema():
    assert set(STORE.versions) == CONTRACT_RECORDS


def test_old_app_versions_are_kept():
    assert len(STORE.versions["pupdate_raw"]) >= 2
    assert len(STORE.versions["like_raw"]) >= 2


@pytest.mark.parametrize("schema", ALL, ids=repr)
def test_parses_with_apache_avro_and_fastavro(schema):
    avro.schema.parse(schema.json_text)
    parse_schema(json.loads(schema.json_text))


@pytest.mark.parametrize("schema", ALL, ids=repr)
def test_fingerprint_is_crc64_of_the_spec_canonical_form(schema):
    """Apache avro's own CRC-64-AVRO over the spec's parsing canonical form gives our fingerprint.

    avro-python 1.12's ``canonical_form`` keeps ``{"type":"long"}`` for logical types, against
    the spec's [PRIMITIVES] rule (Java's SchemaNormalization and fastavro write ``"long"``), so
    the canonical text comes from fastavro and the CRC from the official library.
    """
    from avro.schema import _crc_64_fingerprint

    canonical = to_parsing_canonical_form(json.loads(schema.json_text))
    assert '{"type":"long"}' not in canonical
    assert _crc_64_fingerprint(canonical.encode()) == schema.fingerprint


@pytest.mark.parametrize("schema", ALL, ids=repr)
def test_documented_and_namespaced(schema):
    doc = json.loads(schema.json_text)
    assert doc.get("namespace", "").startswith("dev.pooch."), "every record needs a namespace"
    assert doc.get("doc"), "every record needs a doc"
    for field in doc["fields"]:
        assert field.get("doc"), f"{schema}: field {field['name']} has no doc"
        if field["name"].endswith("_at"):
            assert field["type"] == {"type": "long", "logicalType": "timestamp-millis"}, field["name"]


@pytest.mark.parametrize("older", OLDER, ids=repr)
def test_older_versions_decode_with_the_current_reader(older):
    """Backward compatibility: whatever an old app wrote, today's reader understands."""
    current = STORE.current(older.stem)
    writer = Serde(older.stem, STORE, writer_version=older.version)
    reader = Serde(older.stem, STORE)
    old_fields = {f["name"] for f in json.loads(older.json_text)["fields"]}
    new_fields = {f["name"]: f for f in json.loads(current.json_text)["fields"]}
    for record in generate_many(older.parsed, 50):
        decoded = reader.decode(writer.encode(record))
        assert set(decoded) == set(new_fields)
        for name in old_fields:
            assert decoded[name] == record[name] or isinstance(record[name], dict)
        for name in set(new_fields) - old_fields:
            assert decoded[name] == new_fields[name]["default"]


def test_body_bytes_match_the_official_library():
    """fastavro's body is what Apache avro writes, so any Avro reader can consume our topics."""
    schema = STORE.current("pupdate")
    record = next(iter(generate_many(schema.parsed, 1)))
    ours = Serde("pupdate", STORE).encode(record)
    buf = io.BytesIO()
    # Without logical types the official writer takes int milliseconds, as our serde does.
    plain = schema.json_text.replace('"logicalType": "timestamp-millis"', '"doc": "ms"')
    avro.io.DatumWriter(avro.schema.parse(plain)).write(record, avro.io.BinaryEncoder(buf))
    assert ours == b"\xc3\x01" + schema.fingerprint + buf.getvalue()


def test_schema_folder_is_the_repository_one():
    assert (schemas_dir() / "README.md").exists()


def test_schemas_dir_can_be_pointed_at_a_newer_set(tmp_path, monkeypatch):
    """An app release's schema, handed to a running image without rebuilding it."""
    for path in schemas_dir().glob("*.avsc"):
        (tmp_path / path.name).write_text(path.read_text())
    v3 = json.loads((tmp_path / "pupdate_raw.v3.avsc").read_text())
    v3["fields"].append({"name": "sticker", "type": ["null", "string"], "default": None})
    (tmp_path / "pupdate_raw.v4.avsc").write_text(json.dumps(v3))
    monkeypatch.setenv("POOCH_SCHEMAS_DIR", str(tmp_path))
    assert schemas_dir() == tmp_path
    assert SchemaStore().current("pupdate_raw").version == 4


def test_fastavro_writer_rejects_records_missing_required_fields():
    with pytest.raises((ValueError, TypeError, KeyError)):
        schemaless_writer(io.BytesIO(), STORE.current("like").parsed, {"event_id": "x"})
