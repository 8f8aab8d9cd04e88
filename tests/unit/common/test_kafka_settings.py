"""Kafka security settings: SASL is both a username and a password, or neither."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from libs.common.settings import CommonSettings


def test_a_sasl_username_without_a_password_is_a_settings_error(monkeypatch):
    monkeypatch.delenv("POOCH_KAFKA_SASL_PASSWORD", raising=False)
    monkeypatch.setenv("POOCH_KAFKA_SASL_USERNAME", "pooch")
    with pytest.raises(ValidationError, match="POOCH_KAFKA_SASL_PASSWORD is not"):
        CommonSettings()


def test_an_empty_password_counts_as_none_and_a_password_alone_is_an_error_too(monkeypatch):
    monkeypatch.setenv("POOCH_KAFKA_SASL_USERNAME", "pooch")
    monkeypatch.setenv("POOCH_KAFKA_SASL_PASSWORD", "")
    with pytest.raises(ValidationError, match="SASL needs both"):
        CommonSettings()
    monkeypatch.delenv("POOCH_KAFKA_SASL_USERNAME")
    monkeypatch.setenv("POOCH_KAFKA_SASL_PASSWORD", "secret")
    with pytest.raises(ValidationError, match="POOCH_KAFKA_SASL_USERNAME is not"):
        CommonSettings()


def test_both_give_sasl_ssl_and_neither_gives_plaintext(monkeypatch):
    for name in ("POOCH_KAFKA_SASL_USERNAME", "POOCH_KAFKA_SASL_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert "security.protocol" not in CommonSettings().kafka_config()
    conf = CommonSettings(kafka_sasl_username="pooch", kafka_sasl_password="secret").kafka_config()
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.password"] == "secret"
    assert "secret" not in repr(CommonSettings(kafka_sasl_username="pooch", kafka_sasl_password="secret"))
