"""The counters alerts take increase() of exist at 0 from a service's start.

Prometheus's increase() counts nothing for a series whose first sample is already 1, so a
labelled counter created by its first event hides that event from its alert. Found by the
incident suite's scenario 4: a FLUSHALLed Redis (and a restarted broker) fired nothing.
Each check is a fresh interpreter: in this process other tests may have counted already.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import REPO


def _exposed(module: str) -> dict[tuple[str, tuple], float]:
    code = f"import {module}; import prometheus_client; print(prometheus_client.generate_latest().decode())"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(out)
        for s in family.samples
    }


@pytest.mark.parametrize(
    ("module", "name", "labels", "alert"),
    [
        (
            "services.featurizer.view",
            "pooch_featurizer_view_rewrites_total",
            {"reason": "wiped"},
            "PoochOnlineViewWiped",
        ),
        (
            "libs.common.kafka.clients",
            "pooch_kafka_client_errors_total",
            {"code": "_ALL_BROKERS_DOWN"},
            "PoochKafkaUnreachable",
        ),
    ],
)
def test_series_exists_at_zero_before_its_first_event(module, name, labels, alert):
    exposed = _exposed(module)
    key = (name, tuple(sorted(labels.items())))
    assert key in exposed, f"{name}{labels} is not exposed until it is first counted: {alert} misses it"
    assert exposed[key] == 0.0
