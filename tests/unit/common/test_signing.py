"""Signed model events: what a reader that trusts keys applies, and what it refuses."""

from __future__ import annotations

import pytest

from libs.common.models_ledger import ModelsLedger
from libs.common.serde import Serde, serde
from libs.common.signing import (
    KeyFormatError,
    ModelEventSigner,
    ModelEventVerifier,
    SignatureError,
    new_keypair,
)
from services.scorer.fixtures import make_artifact, model_event, train_model_text

CODEC = serde("model_event")


@pytest.fixture(scope="module")
def keys():
    private, public = new_keypair()
    return ModelEventSigner(private), ModelEventVerifier.of([public], service="test")


def over_the_wire(event: dict) -> dict:
    return CODEC.decode(CODEC.encode(event))


def test_a_signed_event_verifies_after_the_avro_round_trip(keys):
    signer, verifier = keys
    art = make_artifact(train_model_text(rounds=3, seed=1), created_at=5)
    for event in (art.to_event(), model_event("PAUSED", art.model_version), model_event("ACTIVATED", "v1-x")):
        verifier.check(over_the_wire(signer.sign(event)))


def test_a_signed_artifact_keeps_its_signature_through_the_cache_meta(keys):
    signer, verifier = keys
    art = make_artifact(train_model_text(rounds=3, seed=1), created_at=5).signed(signer)
    assert art.signing_key_id == signer.key_id and art.signature
    verifier.check(
        type(art).from_event(art.meta() | {"kind": "PUBLISHED", "artifact": art.artifact}).to_event()
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "RESUMED"),
        ("model_version", "v1-0000000000000000"),
        ("arm", "champion"),
        ("arm_weights", {"champion": 1.0}),
        ("artifact_sha256", "0" * 64),
        ("reason", "someone else's words"),
        ("created_at", 6),
    ],
)
def test_changing_any_signed_field_breaks_the_signature(keys, field, value):
    signer, verifier = keys
    signed = signer.sign(model_event("PAUSED", "v1-abc"))
    with pytest.raises(SignatureError) as err:
        verifier.check(over_the_wire(signed | {field: value}))
    assert err.value.reason == "bad_signature"


def test_unsigned_and_unknown_key_events_are_refused_with_their_reason(keys):
    _, verifier = keys
    intruder = ModelEventSigner(new_keypair()[0])
    with pytest.raises(SignatureError) as err:
        verifier.check(over_the_wire(model_event("RESUMED", "v1-abc")))
    assert err.value.reason == "unsigned"
    with pytest.raises(SignatureError) as err:
        verifier.check(over_the_wire(intruder.sign(model_event("RESUMED", "v1-abc"))))
    assert err.value.reason == "unknown_key"


def test_a_v1_record_decodes_unsigned_and_is_accepted_only_without_trusted_keys(keys):
    _, verifier = keys
    v1 = Serde("model_event", writer_version=1)
    event = CODEC.decode(v1.encode(model_event("PAUSED", "v1-abc")))
    assert event["signature"] == "" and event["signing_key_id"] == ""
    assert not verifier.accepts(event)
    assert ModelEventVerifier.of([], service="test").accepts(event)


def test_the_ledger_applies_only_verified_events_and_a_forgery_cannot_take_a_real_events_id(keys):
    signer, verifier = keys
    ledger = ModelsLedger(verifier=verifier)
    art = make_artifact(train_model_text(rounds=3, seed=1), created_at=5)
    assert ledger.apply(over_the_wire(signer.sign(art.to_event()))) is True
    forged = model_event("PAUSED", art.model_version)
    assert ledger.apply(over_the_wire(forged)) is None
    assert ledger.champion("v1") == art.model_version
    real = signer.sign(forged)  # the same event_id, now signed by the real writer
    assert ledger.apply(over_the_wire(real)) is True
    assert ledger.champion("v1") is None


def test_keys_that_are_not_ed25519_give_a_clear_error_without_the_secret():
    with pytest.raises(KeyFormatError, match="must be 32 bytes") as err:
        ModelEventSigner("c2VjcmV0")  # base64 of "secret"
    assert "c2VjcmV0" not in str(err.value)
    with pytest.raises(KeyFormatError, match=r"TRUSTED_KEYS\[0\] is not base64"):
        ModelEventVerifier.of(["not base64!"], service="test")
