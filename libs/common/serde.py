"""Avro single-object encoding (``C3 01`` + CRC-64-AVRO fingerprint + body) over fastavro.

Readers find the writer schema by its fingerprint among every version kept in ``schemas/`` and
resolve it to the reader schema (by default the current version of the same record), so old
apps' events come out in today's shape with defaults filled in.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8
_FILE_RE = re.compile(r"^(?P<stem>[a-z_]+)\.v(?P<version>\d+)\.avsc$")


class SerdeError(ValueError):
    """A value could not be encoded or decoded. ``reason`` is a stable code for dead letters."""

    reason = "serde_error"


class NotSingleObjectError(SerdeError):
    reason = "undecodable"


class UnknownSchemaError(SerdeError):
    reason = "unknown_schema"


class CorruptBodyError(SerdeError):
    reason = "undecodable"


class EncodeError(SerdeError):
    reason = "unencodable"


@dataclass(frozen=True)
class Schema:
    """One version of one record schema, as kept in ``schemas/``."""

    stem: str
    version: int
    json_text: str

    @cached_property
    def parsed(self) -> dict[str, Any]:
        # Logical types are documentation for other readers; in this process timestamps stay
        # plain int milliseconds (the contract's unit) instead of datetime objects, which is
        # also faster. Canonical form ignores logicalType, so fingerprints are unchanged.
        parsed = parse_schema(_without_logical_types(json.loads(self.json_text)), _write_hint=False)
        return cast(dict[str, Any], parsed)

    @cached_property
    def fullname(self) -> str:
        return self.parsed["name"]

    @cached_property
    def fingerprint(self) -> bytes:
        canonical = to_parsing_canonical_form(json.loads(self.json_text))
        # fastavro renders the CRC-64-AVRO value as its little-endian bytes, which is the
        # order single-object encoding puts on the wire.
        return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))

    @cached_property
    def header(self) -> bytes:
        return MAGIC + self.fingerprint

    def __repr__(self) -> str:
        return f"Schema({self.stem}.v{self.version} {self.fingerprint.hex()})"


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def schemas_dir() -> Path:
    """The ``schemas/`` folder: ``POOCH_SCHEMAS_DIR`` when set, else the repository's in a
    checkout, else the packaged copy.

    The override lets a deployment hand a running image the schema of an app release that came
    out after the image was built (a new ``pupdate_raw`` version): the collector restarted with
    it understands the new writer instead of dead-lettering every event it sends.
    """
    override = os.environ.get("POOCH_SCHEMAS_DIR")
    if override:
        return Path(override)
    repo = Path(__file__).resolve().parents[2] / "schemas"
    if repo.is_dir():
        return repo
    return Path(str(resources.files("libs.common") / "_schemas"))


class SchemaStore:
    """Every schema version, by fingerprint and by record."""

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or schemas_dir()
        self.by_fingerprint: dict[bytes, Schema] = {}
        self.versions: dict[str, list[Schema]] = {}
        for path in sorted(folder.glob("*.avsc")):
            m = _FILE_RE.match(path.name)
            if not m:
                raise ValueError(f"schema file {path.name} is not named <record>.v<N>.avsc")
            schema = Schema(m["stem"], int(m["version"]), path.read_text())
            if schema.fingerprint in self.by_fingerprint:
                raise ValueError(f"{path.name} repeats {self.by_fingerprint[schema.fingerprint]}")
            self.by_fingerprint[schema.fingerprint] = schema
            self.versions.setdefault(schema.stem, []).append(schema)
        for stem, versions in self.versions.items():
            versions.sort(key=lambda s: s.version)
            if [s.version for s in versions] != list(range(1, len(versions) + 1)):
                raise ValueError(f"versions of {stem} are not 1..N")

    def current(self, stem: str) -> Schema:
        try:
            return self.versions[stem][-1]
        except KeyError:
            raise KeyError(f"no schema named {stem!r}; known: {sorted(self.versions)}") from None

    def version(self, stem: str, version: int) -> Schema:
        return self.versions[stem][version - 1]


@lru_cache(maxsize=1)
def default_store() -> SchemaStore:
    return SchemaStore()


class Serde:
    """Encode and decode one record type; decode resolves any known writer version to ``reader``."""

    def __init__(self, stem: str, store: SchemaStore | None = None, *, writer_version: int = 0):
        self.store = store or default_store()
        self.reader = self.store.current(stem)
        self.writer = self.store.version(stem, writer_version) if writer_version else self.reader
        self._writer_parsed = self.writer.parsed
        self._header = self.writer.header
        self._reader_parsed = self.reader.parsed
        self._reader_fp = self.reader.fingerprint

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        try:
            schemaless_writer(buf, self._writer_parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EncodeError(f"{self.writer}: {exc}") from exc
        return buf.getvalue()

    def writer_of(self, data: bytes) -> Schema:
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise NotSingleObjectError(
                f"not Avro single-object encoding (expected C3 01 header, got {data[:2].hex() or 'nothing'})"
            )
        fp = bytes(data[2:HEADER_LEN])
        try:
            return self.store.by_fingerprint[fp]
        except KeyError:
            raise UnknownSchemaError(f"unknown writer schema fingerprint {fp.hex()}") from None

    def decode(self, data: bytes) -> dict[str, Any]:
        return self.decode_with_writer(data)[0]

    def decode_with_writer(self, data: bytes) -> tuple[dict[str, Any], Schema]:
        writer = self.writer_of(data)
        if writer.stem != self.reader.stem:
            raise UnknownSchemaError(
                f"writer {writer.fullname} v{writer.version} is not a version of {self.reader.fullname}"
            )
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            if writer.fingerprint == self._reader_fp:
                record = schemaless_reader(buf, self._reader_parsed, None)
            else:
                record = schemaless_reader(buf, writer.parsed, self._reader_parsed)
        except Exception as exc:  # fastavro raises many types on truncated or corrupt bodies
            raise CorruptBodyError(f"corrupt {writer.fullname} v{writer.version} body: {exc!r}") from exc
        if buf.tell() != len(data):
            raise CorruptBodyError(
                f"{len(data) - buf.tell()} trailing bytes after a {writer.fullname} v{writer.version} body"
            )
        return cast(dict[str, Any], record), writer


@cache
def serde(stem: str) -> Serde:
    """The shared serde for a record; cheap to call on a hot path."""
    return Serde(stem)
