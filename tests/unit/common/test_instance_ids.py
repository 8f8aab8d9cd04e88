"""Transactional ids of the featurizer and the scorer: distinct per host by default, stable
across restarts of the same replica (the restarted one fences its predecessor)."""

from __future__ import annotations

import socket

from services.featurizer.settings import FeaturizerSettings
from services.scorer.settings import ScorerSettings


def test_the_default_instance_id_is_the_hostname_not_a_shared_constant(monkeypatch):
    for name in ("POOCH_FEATURIZER_INSTANCE_ID", "POOCH_SCORER_INSTANCE_ID"):
        monkeypatch.delenv(name, raising=False)
    host = socket.gethostname()
    assert FeaturizerSettings(topic_prefix="x.").transactional_id == f"x.featurizer-{host}"
    assert ScorerSettings(topic_prefix="x.").transactional_id == f"x.scorer-{host}"
    # Same replica, same id: a restart (or a second incarnation in the process) fences the first.
    assert FeaturizerSettings().transactional_id == FeaturizerSettings().transactional_id


def test_an_explicit_instance_id_names_the_transactional_id(monkeypatch):
    monkeypatch.setenv("POOCH_FEATURIZER_INSTANCE_ID", "featurizer-1")
    monkeypatch.setenv("POOCH_SCORER_INSTANCE_ID", "scorer-0")
    assert FeaturizerSettings().transactional_id == "featurizer-featurizer-1"
    assert ScorerSettings().transactional_id == "scorer-scorer-0"
