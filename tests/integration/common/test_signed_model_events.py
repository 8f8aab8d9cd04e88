"""Only the trainer and the supervisor can change what serves (issue 11, item 3).

A writer to ``models`` without a trusted private key publishes a newer model, resumes a paused
one with its own key, and forges a trusted key's id on a RESUMED record. The scorer, the trainer
and the supervisor, started with the public keys they trust, apply none of it: each counts the
refusals by reason and says so in its log. Before signatures, the forged version served at once
and the forged RESUMED brought the paused version back.
"""

from __future__ import annotations

import json

from libs.common.signing import ModelEventSigner, new_keypair
from services.scorer.fixtures import make_artifact, model_event, publish_events, train_model_text
from services.trainer.synthetic import SyntheticWorld
from tests.support.kafkautil import wait_for
from tests.support.scorer import ScorerProcess
from tests.support.supervisor import SupervisorProcess
from tests.support.trainer import TrainerProc, feed

REFUSED = "pooch_model_events_refused_total"


def test_unsigned_and_forged_model_events_are_refused_by_every_reader(topics, tmp_path):
    trainer_key, trainer_pub = new_keypair()
    supervisor_key, supervisor_pub = new_keypair()
    intruder_key, _ = new_keypair()
    trainer_signer, supervisor_signer = ModelEventSigner(trainer_key), ModelEventSigner(supervisor_key)
    intruder = ModelEventSigner(intruder_key)
    trusted = {"POOCH_MODELS_TRUSTED_KEYS": json.dumps([trainer_pub, supervisor_pub])}

    good = make_artifact(train_model_text(rounds=20, seed=1), created_at=1)
    forged = make_artifact(train_model_text(rounds=20, seed=2), created_at=2)
    a, b = good.model_version, forged.model_version
    publish_events(topics, [trainer_signer.sign(good.to_event())])

    scorer = ScorerProcess(topics, tmp_path, extra_env=trusted)
    supervisor = SupervisorProcess(topics, tmp_path, extra_env=trusted)
    trainer = TrainerProc(topics, tmp_path, **trusted)
    procs = (scorer, supervisor)
    try:
        for proc in (scorer, supervisor, trainer):
            proc.wait_ready()
        feed(topics, SyntheticWorld(seed=5).instances(50))  # the trainer's v1 window, to see its champion

        def serving() -> str | None:
            return (scorer.http.get("/v1/models").json()["serving"].get("v1") or {}).get("champion")

        wait_for(lambda: serving() == a, timeout=30, what="the signed model serving")

        # 1. an unsigned PUBLISHED of a newer model: before signatures, it served at once
        publish_events(topics, [forged.to_event()])
        # 2. a real pause of the good version, signed by the supervisor's key
        publish_events(topics, [supervisor_signer.sign(model_event("PAUSED", a))])
        # 3. the intruder resumes it with a key of its own
        publish_events(topics, [intruder.sign(model_event("RESUMED", a))])
        # 4. ... and with the supervisor's key id on a signature it cannot make
        resumed = supervisor_signer.sign(model_event("RESUMED", a))
        publish_events(topics, [resumed | {"reason": "forged: signed for another text"}])

        counters = {
            "scorer": lambda **lbl: scorer.metric_sum(REFUSED, service="scorer", **lbl),
            "supervisor": lambda **lbl: supervisor.metric_sum(REFUSED, service="supervisor", **lbl),
            "trainer": lambda **lbl: trainer.metric(REFUSED, service="trainer", **lbl) or 0,
        }
        for service, count in counters.items():
            wait_for(
                lambda count=count: (
                    [count(reason=r) for r in ("unsigned", "unknown_key", "bad_signature")] == [1, 1, 1]
                ),
                timeout=30,
                what=f"{service} refusing the three bad events",
            )

        # The pause holds (nothing serves v1: the baseline, reason paused); the forged model never served.
        snapshot = scorer.http.get("/v1/models").json()
        assert snapshot["serving"].get("v1") is None, snapshot
        assert snapshot["reasons"].get("v1") == "paused", snapshot
        assert b not in snapshot["statuses"], snapshot
        versions = {v["model_version"]: v for v in supervisor.models()["versions"]}
        assert b not in versions and versions[a]["status"] == "paused", versions
        window = trainer.status()["windows"]["v1"]
        assert window["published"] == [a] and window["champion"] is None, window
        logs = {
            "scorer": scorer.log_tail(10**7),
            "supervisor": supervisor.log_tail(10**7),
            "trainer": "\n".join(str(line.get("msg")) for line in trainer.logs()),
        }
        for service, text in logs.items():
            for reason in ("unsigned", "unknown_key", "bad_signature"):
                assert f"model event REFUSED ({reason})" in text, service
    finally:
        for proc in procs:
            proc.stop()
        trainer.stop()
