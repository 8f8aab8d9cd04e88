"""People in control: pause, resume and activate by HTTP and by the CLI; nothing changes without
the operator token (401) or with a wrong one (403); reading needs none; probes and metrics."""

from __future__ import annotations

import json
import time

import redis
from typer.testing import CliRunner

from services.supervisor import policies
from services.supervisor.settings import DEFAULT_POLICIES
from tests.support.supervisor import (
    TOKEN,
    SupervisorProcess,
    Writer,
    decisions,
    fake_artifact,
    now_ms,
    prediction,
    publish,
    wait_for,
)
from tooling.cli.models import experiments, models_app


def _cli(args: list[str], url: str, token: str | None = None):
    env = {"POOCH_SUPERVISOR_URL": url, "COLUMNS": "250"}
    if token is not None:
        env["POOCH_SUPERVISOR_OPERATOR_TOKEN"] = token
    return CliRunner().invoke(models_app, args, env=env)


def test_pause_resume_activate_by_http_and_cli_with_the_operator_token(topics, tmp_path):
    grace_ms = policies.load(DEFAULT_POLICIES).windows.attribution_grace_ms
    a = fake_artifact("a", [2.0, 3.0, 4.0, 5.0] * 50, created_at=now_ms() - 20_000)
    b = fake_artifact("b", [2.0, 3.0, 4.0, 5.0] * 50, created_at=now_ms() - 10_000)
    publish(topics, a.to_event(), b.to_event())
    sup = SupervisorProcess(topics, tmp_path).wait_ready()
    Writer(topics).predictions(
        prediction(f"p{i}", version=b.model_version, raw=3.0, country=("US", "GB")[i % 2]) for i in range(100)
    )
    try:
        # Reading needs no token.
        listing = sup.http.get("/v1/models")
        assert listing.status_code == 200
        by_name = {v["model_version"]: v for v in listing.json()["versions"]}
        assert by_name[b.model_version]["status"] == "active" and by_name[b.model_version]["roles"] == [
            "champion"
        ]
        assert sup.http.get("/v1/experiments").status_code == 200

        # Changing needs the token: 401 without, 403 with a wrong one; nothing is written.
        url = f"/v1/models/{b.model_version}/pause"
        r = sup.http.post(url)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = sup.http.post(url, headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert r.status_code == 401
        r = sup.http.post(url, headers={"Authorization": "Bearer not-the-token"})
        assert r.status_code == 403
        for action in ("resume", "activate"):
            assert sup.http.post(f"/v1/models/{a.model_version}/{action}").status_code == 401
            assert (
                sup.http.post(
                    f"/v1/models/{a.model_version}/{action}", headers={"Authorization": "Bearer nope"}
                ).status_code
                == 403
            )
        assert decisions(topics) == []

        # HTTP pause with the token: durable on models when it answers, and never twice.
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = sup.http.post(url, headers=auth, json={"reason": "looks odd", "actor": "ana"})
        assert r.status_code == 200, r.text
        assert r.json()["now"]["status"] == "paused"
        [paused] = decisions(topics)
        assert (paused["kind"], paused["model_version"], paused["actor"]) == (
            "PAUSED",
            b.model_version,
            "operator:ana",
        )
        assert paused["reason"] == "looks odd"
        again = sup.http.post(url, headers=auth)
        assert again.status_code == 409 and "paused already" in again.json()["detail"]
        assert sup.http.post("/v1/models/v1-nope/pause", headers=auth).status_code == 404
        v = sup.version(b.model_version)
        assert v["status"] == "paused" and v["why"].startswith("PAUSED by operator:ana: looks odd")
        assert sup.version(a.model_version)["roles"] == ["champion"]  # the last good one serves

        # The CLI: without a token it refuses, with a wrong one the API says 403.
        no_token = _cli(["resume", b.model_version], sup.url)
        assert no_token.exit_code == 1 and "operator token" in no_token.output
        wrong = _cli(["resume", b.model_version], sup.url, token="wrong")
        assert wrong.exit_code == 1 and "403" in wrong.output
        ok = _cli(["resume", b.model_version, "--reason", "fixed upstream"], sup.url, token=TOKEN)
        assert ok.exit_code == 0, ok.output
        assert "RESUMED" in ok.output
        ok = _cli(
            ["activate", a.model_version, "--arm", "challenger", "--weights", "champion=0.8,challenger=0.2"],
            sup.url,
            token=TOKEN,
        )
        assert ok.exit_code == 0, ok.output
        ok = _cli(["pause", a.model_version], sup.url, token=TOKEN)
        assert ok.exit_code == 0, ok.output
        ok = _cli(["resume", a.model_version], sup.url, token=TOKEN)
        assert ok.exit_code == 0, ok.output
        conflict = _cli(["resume", a.model_version], sup.url, token=TOKEN)
        assert conflict.exit_code == 1 and "409" in conflict.output

        # HTTP activate: the challenger promoted to champion.
        r = sup.http.post(f"/v1/models/{a.model_version}/activate", headers=auth, json={"arm": "champion"})
        assert r.status_code == 200, r.text
        assert r.json()["now"]["roles"] == ["champion"]

        written = [(e["kind"], e["model_version"], e["actor"]) for e in decisions(topics)]
        assert written == [
            ("PAUSED", b.model_version, "operator:ana"),
            ("RESUMED", b.model_version, "operator"),
            ("ACTIVATED", a.model_version, "operator"),
            ("PAUSED", a.model_version, "operator"),
            ("RESUMED", a.model_version, "operator"),
            ("ACTIVATED", a.model_version, "operator"),
        ]
        activated = decisions(topics, "ACTIVATED")[0]
        assert activated["arm"] == "challenger" and activated["arm_weights"] == {
            "champion": 0.8,
            "challenger": 0.2,
        }
        assert len({e["event_id"] for e in decisions(topics)}) == 6

        # The CLI reads without a token.
        listed = _cli(["list"], sup.url)
        assert listed.exit_code == 0 and a.model_version in listed.output and b.model_version in listed.output
        listed_json = _cli(["list", "--json"], sup.url)
        assert json.loads(listed_json.output)["versions"]
        exp = CliRunner().invoke(
            _experiments_app(), [], env={"POOCH_SUPERVISOR_URL": sup.url, "COLUMNS": "250"}
        )
        assert exp.exit_code == 0, exp.output
        assert "champion" in exp.output

        # The status view in Redis follows the topic.
        client = redis.Redis.from_url(topics.redis_url)
        status = wait_for(
            lambda: client.hgetall(f"{topics.topic_prefix}models:status"), timeout=10, what="status in Redis"
        )
        assert json.loads(status[a.model_version.encode()])["status"] == "active"
        assert json.loads(status[b.model_version.encode()])["kind"] == "RESUMED"

        # Probes and metrics: health figures per version, decisions by kind.
        assert sup.http.get("/healthz").status_code == 200
        ready = sup.http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {
            "models_read": True,
            "windows_rebuilt": True,
        }
        # (an operator's resume or activation starts a version's evidence afresh: b's 100 are gone)
        assert sup.window(b.model_version) == {}
        # A fallback prediction made within the attribution grace of a swap is, by design, blamed
        # on no version. These are made clear of the operator's last swap before them and of the
        # supervisor's own pause after them (however the supervisor's polls split them), so all
        # 100 count for a.
        at = decisions(topics)[-1]["created_at"] + grace_ms + 200
        time.sleep(max(0.0, (at + grace_ms + 200 - now_ms()) / 1000))
        Writer(topics).predictions(
            prediction(f"q{i}", version=a.model_version, raw=3.0 if i % 10 else -1.0, at=at)
            for i in range(100)
        )
        wait_for(
            lambda: sup.metric("pooch_supervisor_window_predictions", model_version=a.model_version) == 100,
            timeout=10,
            what="per-version health metrics",
        )
        assert sup.metric("pooch_supervisor_invalid_output_ratio", model_version=a.model_version) == 0.1
        assert sup.metric("pooch_supervisor_decisions_total", kind="PAUSED", actor="operator") == 2
        assert sup.metric("pooch_supervisor_decisions_total", kind="ACTIVATED", actor="operator") == 2
        # 10% invalid outputs: the supervisor itself pauses a (the operator resumed it, on new evidence)
        [auto] = wait_for(
            lambda: [e for e in decisions(topics, "PAUSED") if e["actor"] == "supervisor"],
            timeout=10,
            what="auto",
        )
        assert auto["model_version"] == a.model_version and auto["params"]["policy"] == "invalid_outputs"
        assert wait_for(
            lambda: sup.metric("pooch_supervisor_decisions_total", kind="PAUSED", actor="supervisor") == 1,
            timeout=5,
            what="the decision counted",
        )
        assert (
            sup.metric("pooch_supervisor_operator_requests_total", action="pause", outcome="unauthorized")
            == 2
        )
        assert (
            sup.metric("pooch_supervisor_operator_requests_total", action="pause", outcome="forbidden") == 1
        )
        assert wait_for(
            lambda: (
                sup.metric("pooch_supervisor_model_status", model_version=a.model_version, status="paused")
                == 1
            ),
            timeout=5,
            what="the status gauge",
        )
        assert sup.metric("pooch_supervisor_rebuilt") == 1
    finally:
        sup.stop()


def _experiments_app():
    import typer

    app = typer.Typer()
    app.command()(experiments)
    return app


def test_no_token_configured_means_nobody_may_change_anything(topics, tmp_path):
    a = fake_artifact("a", [1.0, 2.0, 3.0] * 10)
    publish(topics, a.to_event())
    sup = SupervisorProcess(topics, tmp_path, token=None).wait_ready()
    try:
        r = sup.http.post(f"/v1/models/{a.model_version}/pause", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403 and "no operator token is configured" in r.json()["detail"]
        assert sup.http.post(f"/v1/models/{a.model_version}/pause").status_code == 401
    finally:
        sup.stop()
    assert decisions(topics) == []
