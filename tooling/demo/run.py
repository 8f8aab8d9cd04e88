"""One demo run, start to report: the order of the phases and what is always cleaned up."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from libs.common.admin import ensure_topics
from libs.common.settings import CommonSettings
from services.supervisor.policies import load as load_policies
from services.supervisor.settings import DEFAULT_POLICIES
from tooling.demo import figures, phases, plots, report
from tooling.demo.plan import DemoPlan
from tooling.demo.progress import LiveView
from tooling.demo.readback import Topics
from tooling.demo.services import DemoServices
from tooling.demo.timeline import RunLog
from tooling.stack import kafka, redis
from tooling.stack.manager import INFRA, LocalStack

LAST_DEMO = "last-demo.json"


@dataclass(frozen=True)
class DemoResult:
    folder: Path
    prefix: str
    report: dict[str, Any]

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.report["invariants"] if not c["ok"]]


def new_prefix() -> str:
    # a random tail: two demos started in the same second (CI and a developer) never share topics
    return f"demo{time.strftime('%Y%m%d%H%M%S')}{secrets.token_hex(2)}."


def infrastructure(stack: LocalStack, say) -> str:
    """Kafka and Redis: used as they are when they already answer, started otherwise."""
    if kafka.answers(stack.settings) and redis.answers(stack.settings):
        say(f"using the Kafka on {stack.kafka_bootstrap} and the Redis on {stack.redis_url} already running")
        return "already running"
    stack.up(components=INFRA, create_topics=False)
    return "started"


def remember(stack: LocalStack, prefix: str, folder: Path, state: str) -> None:
    """What `pooch stack status` shows afterwards: the topic prefix and report of the last demo."""
    path = stack.state_dir / LAST_DEMO
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"prefix": prefix, "report": str(folder), "state": state, "at": int(time.time())})
    )


def last_demo(stack: LocalStack) -> dict[str, Any] | None:
    try:
        return json.loads((stack.state_dir / LAST_DEMO).read_text())
    except (OSError, ValueError):
        return None


def run_demo(
    plan: DemoPlan,
    *,
    out: Path | None,
    console: Console,
    say,
    keep: bool = False,
    backend: tuple[str, str] | None = None,
    partitions: int | None = None,
) -> DemoResult:
    """``backend`` (Kafka bootstrap, Redis URL): use these instead of the local stack's."""
    prefix = new_prefix()
    folder = (out or Path.cwd() / "demo-reports") / prefix.rstrip(".")
    folder.mkdir(parents=True, exist_ok=True)
    log = RunLog()
    stack = LocalStack(report=say)
    if backend is None:
        infra = infrastructure(stack, say)
        kafka_bootstrap, redis_url = stack.kafka_bootstrap, stack.redis_url
    else:
        infra = "given"
        kafka_bootstrap, redis_url = backend
    settings = CommonSettings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_prefix=prefix)
    ensure_topics(settings, partitions=partitions)
    remember(stack, prefix, folder, "running")
    rule = load_policies(DEFAULT_POLICIES).experiments
    svc = DemoServices(plan, prefix, folder, kafka_bootstrap, redis_url)
    snapshots: dict[str, Any] = {}
    aborted: str | None = None
    try:
        svc.start(say)
        champion = phases.warm_start(plan, svc, settings, log, say)
        phases.start_experiment(plan, svc, champion, log, say)
        time.sleep(rule.settle_ms / 1000)  # predictions of the first settle_ms are not counted
        with LiveView(console) as view:
            phases.live(plan, svc, settings, log, view, say)
        phases.drain(plan, settings, log, say)
        for name, path in (("experiments", "/v1/experiments"), ("models", "/v1/models")):
            snapshots[name] = svc.get("supervisor", path, timeout=10)
        snapshots["trainer"] = svc.get("trainer", "/v1/status", timeout=10)
    except phases.DemoError as exc:
        aborted = str(exc)
        say(f"the run was cut short: {exc}")
    finally:
        if not keep:
            svc.stop()
    say("reading the topics back for the report")
    topics = Topics.read(settings)
    run_info = log.as_dict() | {
        "prefix": prefix,
        "plan": plan.to_dict(),
        "infrastructure": infra,
        "aborted": aborted,
        "service_logs": str(svc.supervision.logs),
        "topics": {
            "pupdates": topics.pupdates,
            "likes": topics.likes,
            "features": topics.features,
            "deadletters": len(topics.deadletters),
        },
    }
    result = figures.compute(topics.predictions, topics.instances, topics.models, rule, run_info)
    result["supervisor_snapshot"] = snapshots
    result["invariants"] = report.invariants(result, plan.to_dict())
    if aborted:
        result["invariants"].append({"name": "the run completed", "ok": False, "detail": aborted})
    result["plots"] = plots.write_all(result, folder)
    report.write_json(result, folder / "report.json")
    (folder / "report.md").write_text(report.markdown(result))
    remember(stack, prefix, folder, "finished")
    return DemoResult(folder, prefix, result)
