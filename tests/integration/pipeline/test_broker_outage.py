"""The broker away for 20 s under load: every service rides it out, then catches up exactly.

A private broker (so stopping it disturbs nobody) and the pipeline as real processes: the app
writes raw pupdates before, during and after the outage; collector -> featurizer -> scorer turn
each into exactly one fact, one feature vector and one prediction (read_committed, counted by
id); the trainer and the supervisor read along. Afterwards every process is still alive.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

from libs.common.kafka.producer import Producer
from libs.common.serde import Serde, serde
from libs.common.settings import CommonSettings
from libs.common.topics import FEATURES, INSTANCES, PREDICTIONS, PUPDATES, PUPDATES_RAW
from tests.support.kafkautil import read_all, wait_for
from tests.support.procs import ServiceProcess

OUTAGE_S = 20
HORIZON_MS = 2_000
RAW = Serde("pupdate_raw")


class RawFeeder(threading.Thread):
    """The app: raw pupdates at a steady rate, whether or not Kafka answers (the producer
    buffers while the broker is away; delivery may take minutes, so nothing expires)."""

    def __init__(self, settings: CommonSettings, *, rate: float) -> None:
        super().__init__(name="raw-feeder", daemon=True)
        self.settings = settings
        self.rate = rate
        self.sent: list[str] = []
        self.delivered: list[str] = []
        self.failed: list[str] = []
        self._halt = threading.Event()
        self._producer = Producer(settings, name="app", **{"linger.ms": 5, "delivery.timeout.ms": 300_000})

    def _on_delivery(self, err, msg) -> None:
        (self.failed if err is not None else self.delivered).append(msg.key().decode())

    def run(self) -> None:
        i = 0
        while not self._halt.wait(1 / self.rate):
            pid = f"p{i}"
            rec = {
                "event_id": f"e{i}",
                "pupdate_id": pid,
                "dog_id": f"d{i % 17}",
                "posted_at": int(time.time() * 1000),
                "hashtags": ["#dog", f"#t{i % 5}"],
                "dog_followers": i % 50,
                "app_version": "3.2.0",
                "dog": {"breed": "Pug", "size": "SMALL", "age_months": None},
                "caption": None,
                "photo_filter": None,
                "country": "BR",
            }
            self._producer.produce(
                self.settings.topic(PUPDATES_RAW), RAW.encode(rec), pid, on_delivery=self._on_delivery
            )
            self._producer.poll(0)
            self.sent.append(pid)
            i += 1

    def stop(self) -> list[str]:
        self._halt.set()
        self.join(10)
        self._producer.flush(300)
        assert not self.failed, f"{len(self.failed)} raw records failed delivery"
        return self.sent


def _ids(settings: CommonSettings, base: str, decoder: Serde) -> collections.Counter:
    return collections.Counter(
        decoder.decode(m.value())["pupdate_id"] for m in read_all(settings, settings.topic(base), timeout=60)
    )


def _assert_alive(procs: dict[str, ServiceProcess]) -> None:
    dead = {name: p.proc.returncode for name, p in procs.items() if p.proc.poll() is not None}
    assert not dead, "exited: " + "; ".join(
        f"{name} with {rc}:\n{procs[name].log_tail(2500)}" for name, rc in dead.items()
    )


@pytest.mark.serial  # a broker of its own and five services: the heaviest test, with throughput floors
def test_every_service_rides_out_a_20_s_broker_outage_with_exact_outputs(private_stack, redis_url, tmp_path):
    private_stack.up(components=["kafka"], partitions=3, topic_prefix="out.")
    # Redis stays the shared one: only the broker goes away.
    settings = CommonSettings(
        kafka_bootstrap=private_stack.kafka_bootstrap, redis_url=redis_url, topic_prefix="out."
    )
    procs = {
        "collector": ServiceProcess("collector", settings, tmp_path, "c0", waiting_timeout_s=2),
        "featurizer": ServiceProcess(
            "featurizer",
            settings,
            tmp_path,
            "f0",
            horizon_ms=HORIZON_MS,
            lateness_ms=500,
            idle_flush_ms=1000,
            versions='["v1"]',
            redis_view="false",
        ),
        "scorer": ServiceProcess("scorer", settings, tmp_path, "s0", registry_sync_timeout_s=5),
        "trainer": ServiceProcess(
            "trainer", settings, tmp_path, "t0", replica_id="t0", min_instances=100_000
        ),
        "supervisor": ServiceProcess(
            "supervisor",
            settings,
            tmp_path,
            "v0",
            extra_env={"POOCH_SUPERVISOR_OPERATOR_TOKEN": "t", "POOCH_SUPERVISOR_LABEL_HORIZON_S": "5"},
        ),
    }
    feeder = RawFeeder(settings, rate=40)
    try:
        for p in procs.values():
            p.wait_ready(120)
        feeder.start()
        time.sleep(8)
        private_stack.stop_kafka()
        try:
            time.sleep(OUTAGE_S)
            _assert_alive(procs)
        finally:
            private_stack.start_kafka()
        time.sleep(8)
        sent = feeder.stop()

        def caught_up() -> bool:
            _assert_alive(procs)
            return set(_ids(settings, PREDICTIONS, serde("prediction"))) >= set(sent)

        try:
            wait_for(caught_up, timeout=180, interval=2, what="a prediction for every raw pupdate")
        except TimeoutError as exc:
            stages = {
                base: len(set(sent) - set(_ids(settings, base, serde(stem))))
                for base, stem in (
                    (PUPDATES, "pupdate"),
                    (FEATURES, "feature_vector"),
                    (PREDICTIONS, "prediction"),
                )
            }
            raise AssertionError(f"{exc}; missing per stage: {stages} of {len(sent)}") from None
        time.sleep(3)  # anything written twice would show up by now
        _assert_alive(procs)

        facts = _ids(settings, PUPDATES, serde("pupdate"))
        features = _ids(settings, FEATURES, serde("feature_vector"))
        predictions = _ids(settings, PREDICTIONS, serde("prediction"))
        instances = _ids(settings, INSTANCES, serde("instance"))
        assert len(sent) > 40 * (16 + OUTAGE_S) * 0.8
        for name, got in (("facts", facts), ("features", features), ("predictions", predictions)):
            missing, extra = set(sent) - set(got), set(got) - set(sent)
            assert not missing and not extra, f"{name}: {len(missing)} missing, extra {sorted(extra)[:5]}"
            assert max(got.values()) == 1, f"{name}: {sum(c > 1 for c in got.values())} ids written twice"
        # Instances close a horizon after posting; the last seconds' may still be open.
        assert set(instances) <= set(sent) and max(instances.values()) == 1
        assert len(instances) > 0.8 * len(sent)
        for name, p in procs.items():
            assert p.http.get("/healthz").status_code == 200, name
    finally:
        if feeder.is_alive():
            feeder._halt.set()
        codes = {name: p.stop() for name, p in procs.items()}
    assert all(rc == 0 for rc in codes.values()), codes
