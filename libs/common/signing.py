"""Who may change what serves: every event on ``models`` is signed, and readers refuse the rest.

The artifact's sha256 proves a model is intact, not who published it, and a PAUSED or RESUMED
record carries no artifact at all. So each model event carries an Ed25519 signature over its
canonical form, made with a private key only its writer holds (the trainer's for PUBLISHED,
the supervisor's for its decisions, a release key for a person's; each a Kubernetes Secret,
``POOCH_MODELS_SIGNING_KEY``). The scorer, the trainer and the supervisor verify every event
against the public keys they trust (``POOCH_MODELS_TRUSTED_KEYS``) before it touches their
ledger, and a cached artifact before it is served; what fails is refused, logged at error level
and counted in ``pooch_model_events_refused_total{service, reason}`` (reasons: ``unsigned``,
``unknown_key``, ``bad_signature``).

* **Canonical form**: the fields of ``model_event`` v2 below (all of them but the artifact
  bytes, which ``artifact_sha256`` binds, and the signature itself), as the *decoded* record has
  them, in sorted-key compact JSON. The signer signs after an Avro round trip, so defaults the
  encoder fills in are signed as every reader sees them. A later schema version that adds a
  field does not change this list: adding a field to the signature is a new ``SIGNED_FIELDS``.
* **Keys**: ``signing_key_id`` names the public key (the first 16 hex of its sha256), so a
  rotation trusts the new key beside the old one, switches the writer, and drops the old key
  once nothing signed with it needs reading.
* **Asymmetric, not a shared HMAC key**: the scorer faces the app's traffic; holding only public
  keys, a compromised scorer still cannot publish or resume a model.
* **Nothing trusted** (a laptop, a test): events are accepted unsigned and each service says so
  once at start (``pooch_model_events_signature_enforced`` is 0). The chart always sets keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from prometheus_client import Counter, Gauge

from libs.common.serde import serde

log = logging.getLogger(__name__)

SIGNED_FIELDS: tuple[str, ...] = (
    "kind",
    "event_id",
    "model_version",
    "extractor_version",
    "feature_names",
    "categorical_features",
    "metrics",
    "params",
    "feature_importance",
    "validation_quantiles",
    "arm",
    "arm_weights",
    "reason",
    "actor",
    "artifact_encoding",
    "artifact_sha256",
    "created_at",
)

REFUSED = Counter(
    "pooch_model_events_refused_total",
    "Model events (or cached artifacts) refused because their signature is missing or wrong.",
    ["service", "reason"],
)
ENFORCED = Gauge(
    "pooch_model_events_signature_enforced",
    "1 when this process refuses unsigned model events (a signing key is configured), else 0.",
    ["service"],
)


class SignatureError(ValueError):
    """A model event that must not be applied: unsigned, signed with an unknown key, or forged."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class KeyFormatError(ValueError):
    """A configured key that is not a base64 Ed25519 key."""


def canonical(event: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: the signed fields of a decoded event, as compact sorted JSON."""
    body = {name: _plain(event.get(name)) for name in SIGNED_FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, str):  # an EventKind or Arm is a str subclass: its value is signed
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _raw32(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError(f"{what} is not base64: {exc}") from None
    if len(raw) != 32:
        raise KeyFormatError(f"{what} must be 32 bytes (base64 of a raw Ed25519 key), got {len(raw)}")
    return raw


def public_key_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def new_keypair() -> tuple[str, str]:
    """(private, public), each base64 of the raw 32 bytes: what the settings take."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    return base64.b64encode(seed).decode(), public_key_text(private.public_key())


def parse_public_keys(texts: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key, for base64 raw Ed25519 public keys (raises KeyFormatError)."""
    keys = {}
    for i, text in enumerate(texts):
        public = Ed25519PublicKey.from_public_bytes(_raw32(text, f"POOCH_MODELS_TRUSTED_KEYS[{i}]"))
        keys[key_id(public)] = public
    return keys


class ModelEventSigner:
    """Signs model events for the ``models`` topic with one writer's private key."""

    def __init__(self, private_key: str) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(_raw32(private_key, "POOCH_MODELS_SIGNING_KEY"))
        self.public_key = public_key_text(self._key.public_key())
        self.key_id = key_id(self._key.public_key())

    def sign(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The event as readers will decode it, with its signature: encode this one."""
        codec = serde("model_event")
        decoded = codec.decode(codec.encode(dict(event) | {"signature": "", "signing_key_id": ""}))
        decoded["signing_key_id"] = self.key_id
        decoded["signature"] = base64.b64encode(self._key.sign(canonical(decoded))).decode()
        return decoded


@dataclass(frozen=True)
class ModelEventVerifier:
    """Checks a decoded model event's signature; trusting no key, it lets everything through."""

    keys: Mapping[str, Ed25519PublicKey]  # key id -> public key
    service: str = "unknown"

    @classmethod
    def of(cls, public_keys: Iterable[str], *, service: str) -> ModelEventVerifier:
        keys = parse_public_keys(public_keys)
        verifier = cls(keys, service=service)
        ENFORCED.labels(service).set(1 if verifier.enforced else 0)
        if not verifier.enforced:
            log.warning(
                "model events are not authenticated: no POOCH_MODELS_TRUSTED_KEYS, so anyone who can "
                "write to the models topic can publish, activate or resume a model",
                extra={"service": service},
            )
        return verifier

    @property
    def enforced(self) -> bool:
        return bool(self.keys)

    def check(self, event: Mapping[str, Any]) -> None:
        """Raises :class:`SignatureError` (after logging and counting it) when the event is refused."""
        if not self.enforced:
            return
        signature = event.get("signature") or ""
        kid = event.get("signing_key_id") or ""
        if not signature:
            self._refuse(event, "unsigned", "the event carries no signature")
        key = self.keys.get(kid)
        if key is None:
            self._refuse(
                event, "unknown_key", f"signed with key {kid or '(none)'}, which is not trusted here"
            )
            return
        try:
            key.verify(base64.b64decode(str(signature), validate=True), canonical(event))
        except (InvalidSignature, binascii.Error, ValueError):
            self._refuse(event, "bad_signature", f"the signature does not match the event (key {kid})")

    def accepts(self, event: Mapping[str, Any]) -> bool:
        try:
            self.check(event)
        except SignatureError:
            return False
        return True

    def _refuse(self, event: Mapping[str, Any], reason: str, why: str) -> None:
        REFUSED.labels(self.service, reason).inc()
        message = f"model event REFUSED ({reason}): {why}"
        log.error(
            message,
            extra={
                "reason": reason,
                "kind": str(event.get("kind") or ""),
                "model_version": event.get("model_version"),
                "event_id": event.get("event_id"),
                "actor": event.get("actor"),
                "signing_key_id": event.get("signing_key_id"),
            },
        )
        raise SignatureError(reason, message)


def signer_from(settings: Any) -> ModelEventSigner | None:
    """The process's signer, when its settings hold a private key."""
    key = getattr(settings, "models_signing_key", None)
    return ModelEventSigner(key.get_secret_value()) if key is not None else None


def verifier_from(settings: Any, *, service: str) -> ModelEventVerifier:
    """The process's verifier over the public keys its settings trust."""
    return ModelEventVerifier.of(settings.models_trusted_keys, service=service)


def warn_if_untrusted(
    signer: ModelEventSigner | None, verifier: ModelEventVerifier | None, service: str
) -> None:
    """Say at start when what this writer signs would be refused by readers trusting the same keys."""
    if verifier is None or not verifier.enforced:
        return
    if signer is None:
        log.error(
            "model events are verified here but this writer has no POOCH_MODELS_SIGNING_KEY: "
            "every event it writes will be refused",
            extra={"service": service},
        )
    elif signer.key_id not in verifier.keys:
        log.error(
            "this writer's signing key is not among POOCH_MODELS_TRUSTED_KEYS: the events it writes "
            "will be refused",
            extra={"service": service, "signing_key_id": signer.key_id, "public_key": signer.public_key},
        )
