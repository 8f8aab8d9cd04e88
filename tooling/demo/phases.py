"""The demo's phases against running services: warm start, live experiment, drain.

Every wait has a timeout and says what it waited for; the demo's own actions (activations, the
rogue release, the chaos kill) are written to the run log as they happen.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from libs.common.settings import CommonSettings
from libs.common.topics import FEATURES, INSTANCES, PREDICTIONS, PUPDATES
from sniffable import KafkaSink, SimConfig, Simulation, WhatIfAdvisor, run
from sniffable.clock import DAY_MS
from sniffable.world import POSTS_PER_DOG_PER_DAY
from tooling.demo import rogue
from tooling.demo.plan import DemoPlan
from tooling.demo.progress import LiveView
from tooling.demo.readback import count, decoded
from tooling.demo.services import DemoServices
from tooling.demo.timeline import RunLog, now_ms
from tooling.stack.errors import StackError


class DemoError(RuntimeError):
    """The run could not go on (no model after the warm start, a service that never came up...)."""


class CountingSink:
    """Counts what goes through, for the live view, and what the hidden truth says each world got.

    The simulator knows each posted pupdate's true expected likes (``event.truth``); nothing in
    the system sees it. Tallied here per world (the dog's arm by the scorer's own routing), it is
    the noise-free answer the experiment estimates, reported beside it as the simulator's oracle.
    """

    def __init__(self, inner: KafkaSink, weights: dict[str, float], salt: str = "pooch-arms-v1") -> None:
        from services.scorer.routing import Router, Weights

        self.inner = inner
        self.name = inner.name
        self.sent = 0
        self.pupdates = 0
        self._router = Router(salt)
        self._weights = Weights.of(weights)
        self.truth: dict[str, list[float]] = {"historical": [0, 0.0], "machine-learned": [0, 0.0]}

    def send(self, event) -> None:
        self.inner.send(event)
        self.sent += 1
        if event.kind == "pupdate":
            self.pupdates += 1
            arm = self._router.arm(event.json_payload["dog_id"], self._weights)
            tally = self.truth["historical" if arm == "baseline" else "machine-learned"]
            tally[0] += 1
            tally[1] += event.truth or 0.0

    def truth_report(self) -> dict[str, Any]:
        out = {
            w: {"pupdates": n, "expected_likes_per_pupdate": s / n if n else None}
            for w, (n, s) in self.truth.items()
        }
        h, m = (out[w]["expected_likes_per_pupdate"] for w in ("historical", "machine-learned"))
        out["relative_lift"] = (m / h - 1) if h and m else None
        return out

    def flush(self, timeout: float = 30.0) -> None:
        self.inner.flush(timeout)

    def close(self) -> None:
        self.inner.close()

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()


class PastOnly:
    """History must stay in the past: a good event past ``cutoff_ms`` is not sent, but counted."""

    def __init__(self, inner: KafkaSink, cutoff_ms: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.cutoff_ms = cutoff_ms
        self.skipped = 0

    def send(self, event) -> None:
        if event.good and event.event_time_ms > self.cutoff_ms:
            self.skipped += 1
            return
        self.inner.send(event)

    def flush(self, timeout: float = 30.0) -> None:
        self.inner.flush(timeout)

    def close(self) -> None:
        self.inner.close()

    def stats(self) -> dict[str, Any]:
        return self.inner.stats() | {"skipped_future": self.skipped}


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def _versions(svc: DemoServices) -> list[dict]:
    body = svc.get("supervisor", "/v1/models") or {}
    return [v for v in body.get("versions", []) if v.get("extractor_version") == "v1"]


def history_config(plan: DemoPlan) -> SimConfig:
    """Virtual hours of the same world, in the past, sent as fast as the stack takes them."""
    probe = Simulation(SimConfig(seed=plan.seed, n_dogs=plan.n_dogs, horizon_s=plan.horizon_s, max_events=0))
    per_pupdate = (1 + probe.mean_likes) / (1 - plan.bad_share)
    span_ms = int(plan.history_pupdates / (plan.n_dogs * POSTS_PER_DOG_PER_DAY) * DAY_MS)
    # Posting follows the time of day (0.55x to 1.45x the mean rate), so the history may take up
    # to ~1.8x the mean span: starting two spans back ends it before now (PastOnly guards the rest).
    start = now_ms() - 2 * span_ms - int(4 * plan.horizon_s * 1000) - 120_000
    return SimConfig(
        seed=plan.seed,
        start_ms=start,
        rate=0.0,
        horizon_s=plan.horizon_s,
        max_events=int(plan.history_pupdates * per_pupdate),
        bad_share=plan.bad_share,
        n_dogs=plan.n_dogs,
    )


def warm_start(plan: DemoPlan, svc: DemoServices, settings: CommonSettings, log: RunLog, say) -> str:
    """History in, featurized, a first model trained and published; returns its version."""
    config = history_config(plan)
    log.mark("warm_start")
    since = time.strftime("%H:%M", time.gmtime(config.start_ms / 1000))
    say(
        f"warm start: {plan.history_pupdates:,} pupdates of simulated history "
        f"({config.max_events:,} records, event times from {since} UTC on), sent as fast as the stack takes"
    )
    sink = PastOnly(KafkaSink(settings, client_name="sniffable-history"), now_ms() - 30_000)
    try:
        sent = run(config, sink)
    finally:
        sink.close()
    log.fact(
        "history",
        {
            "events": sent.sink.get("produced"),
            "skipped_future": sink.skipped,
            "virtual_start_ms": config.start_ms,
            "wall_seconds": round(sent.wall_seconds, 2),
        },
    )
    log.mark("history_sent")
    say(f"history sent in {sent.wall_seconds:.1f} s; waiting for the featurizer and the first model")
    try:
        version = wait_for(
            "a first published v1 model",
            lambda: next((v["model_version"] for v in _versions(svc) if v["status"] == "active"), None),
            plan.warm_timeout_s,
            every=2.0,
        )
    except DemoError as exc:
        raise DemoError(f"{exc} ({_trainer_progress(svc)})") from None
    log.mark("first_model")
    say(f"first model {version}; waiting for the scorer to catch up with the history")
    wait_for(
        "the scorer to score every history feature vector",
        lambda: count(settings, PREDICTIONS) >= count(settings, FEATURES) > 0,
        plan.warm_timeout_s,
        every=2.0,
    )
    log.mark("warm_done")
    return version


def _trainer_progress(svc: DemoServices) -> str:
    """What the trainer had when a wait for its model ran out: the window and its last run."""
    status = svc.get("trainer", "/v1/status", timeout=5) or {}
    window = (status.get("windows") or {}).get("v1") or {}
    run = (status.get("last_runs") or {}).get("v1") or {}
    return (
        f"trainer window v1: {window.get('size', 0)} instances; "
        f"last run: {run.get('outcome', 'none')} {run.get('reason', '')}".strip()
    )


def start_experiment(plan: DemoPlan, svc: DemoServices, champion: str, log: RunLog, say) -> int:
    written = svc.activate(
        champion,
        "champion",
        plan.weights,
        reason="demo: the warm-started model becomes the machine-learned world's champion; the "
        "historical world keeps the baseline",
    )
    records = written.get("written") or []
    at = next((r.get("created_at") for r in records if isinstance(r, dict) and r.get("created_at")), None)
    at = log.mark("experiment_start", at)
    say(f"experiment started: weights {plan.weights}")
    return at


@dataclasses.dataclass
class LiveState:
    advisor: WhatIfAdvisor
    sink: CountingSink
    started: float
    notes: list[str] = dataclasses.field(default_factory=list)
    rogue_version: str | None = None
    rogue_artifact: concurrent.futures.Future | None = None
    challengers: set[str] = dataclasses.field(default_factory=set)


def live(
    plan: DemoPlan, svc: DemoServices, settings: CommonSettings, log: RunLog, view: LiveView, say
) -> dict:
    # Owners post for live_seconds of wall time (sim.close_posting), then the likes still due
    # keep coming in real time until the last pupdates' horizons have passed: a live stream cut
    # at the end would undercount their labels.
    config = SimConfig(
        seed=plan.seed,
        stream_seed=plan.seed + 1_000,
        rate=plan.rate,
        time_scale=1.0,
        horizon_s=plan.horizon_s,
        bad_share=plan.bad_share,
        n_dogs=plan.n_dogs,
        drafts=plan.drafts,
    )
    advisor = WhatIfAdvisor(svc.url("scorer"), timeout_s=plan.whatif_timeout_s)
    sim = Simulation(config, advisor=advisor)
    sink = CountingSink(KafkaSink(settings, client_name="sniffable-live"), plan.weights)
    state = LiveState(advisor, sink, time.monotonic())
    stop = threading.Event()
    result: list = []
    errors: list[BaseException] = []

    def traffic() -> None:
        try:
            result.append(run(config, sink, simulation=sim, stop=stop))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    log.mark("live_start")
    say(f"live: {plan.live_seconds:.0f} s at {plan.rate:,.0f} records/s, {plan.drafts} drafts per post")
    worker = threading.Thread(target=traffic, name="sniffable-live", daemon=True)
    worker.start()
    helpers: list[threading.Thread] = []
    rogue_due = plan.rogue and plan.live_seconds * plan.rogue_at
    if plan.rogue:
        # trained now, on the warm start's instances, so its release midway is not late by the
        # seconds a training takes on a busy machine
        state.rogue_artifact = concurrent.futures.Future()
        _spawn(lambda: _train_rogue(plan, settings, state.rogue_artifact))
    chaos_due = plan.chaos and plan.live_seconds * plan.chaos_at
    last_poll = 0.0
    versions: list[dict] = []
    try:
        while worker.is_alive():
            elapsed = time.monotonic() - state.started
            if rogue_due is not False and elapsed >= rogue_due:
                rogue_due = False
                helpers.append(_spawn(lambda: release_rogue(plan, svc, settings, log, state)))
            if chaos_due is not False and elapsed >= chaos_due:
                chaos_due = False
                helpers.append(_spawn(lambda: chaos(plan, svc, log, state)))
            if elapsed >= plan.live_seconds and not sim.posting_closed:
                sim.close_posting()
                log.mark("posting_closed")
                state.notes.append("owners stopped posting; the last likes are coming in")
            if time.monotonic() - last_poll >= 2.0:
                last_poll = time.monotonic()
                versions = _versions(svc) or versions
                _activate_challengers(plan, svc, versions, log, state)
            view.update(snapshot("live", plan, state, versions, svc, elapsed))
            worker.join(0.5)
    except KeyboardInterrupt:
        stop.set()
        worker.join(10)
        raise
    for h in helpers:
        h.join(120)
    sink.close()
    if errors:
        raise DemoError(f"the simulated app failed: {errors[0]!r}") from errors[0]
    log.mark("live_end")
    report = result[0] if result else None
    log.fact(
        "live",
        {
            "events": sink.sent,
            "pupdates": sink.pupdates,
            "wall_seconds": report.wall_seconds if report else None,
            "max_lag_s": report.sink.get("max_lag_s") if report else None,
        },
    )
    log.fact("advisor", advisor.stats())
    log.fact("truth", sink.truth_report())
    log.fact("notes", state.notes)
    return advisor.stats()


def _spawn(fn: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def snapshot(
    phase: str, plan: DemoPlan, state: LiveState, versions: list[dict], svc: DemoServices, elapsed: float
) -> dict:
    stats = state.advisor.stats()
    champion = next((v["model_version"] for v in versions if "champion" in v.get("roles", [])), None)
    challenger = next((v["model_version"] for v in versions if "challenger" in v.get("roles", [])), None)
    decisions = sum(len(v.get("decisions", [])) for v in versions)
    exp = (svc.get("supervisor", "/v1/experiments", timeout=1.0) or {}).get("experiments") or [{}]
    return {
        "phase": phase,
        "elapsed": elapsed,
        "left": max(plan.live_seconds - elapsed, 0.0),
        "events": state.sink.sent,
        "rate": state.sink.sent / elapsed if elapsed > 0 else 0.0,
        "posts": stats["posts"],
        "advised": stats["advised"],
        "by_arm": ", ".join(f"{a} {n}" for a, n in sorted(stats["advised_by_arm"].items())),
        "first_draft": stats["first_draft_posted"],
        "champion": champion,
        "challenger": challenger,
        "versions": len(versions),
        "decisions": decisions,
        "paused": [v["model_version"] for v in versions if v.get("status") == "paused"],
        "arms": exp[0].get("arms", {}),
        "notes": state.notes,
    }


def _activate_challengers(
    plan: DemoPlan, svc: DemoServices, versions: list[dict], log: RunLog, state: LiveState
) -> None:
    """A newer version the trainer published (it beat the champion on its slice) becomes the challenger."""
    if not plan.weights.get("challenger") or (
        state.rogue_version and not _paused(versions, state.rogue_version)
    ):
        return
    champion = next((v for v in versions if "champion" in v.get("roles", [])), None)
    if champion is None:
        return
    for v in versions:
        name = v["model_version"]
        if (
            v["status"] == "active"
            and v["published_at"] > champion["published_at"]
            and not v.get("roles")
            and name != state.rogue_version
            and name not in state.challengers
        ):
            state.challengers.add(name)
            try:
                svc.activate(
                    name, "challenger", None, reason="demo: the trainer's newer version is the challenger"
                )
            except StackError as exc:
                state.notes.append(f"could not activate {name}: {exc}")
                return
            log.event("challenger", f"{name} activated as the challenger", model_version=name)
            state.notes.append(f"{name} is the challenger")
            return


def _paused(versions: list[dict], name: str) -> bool:
    return any(v["model_version"] == name and v["status"] == "paused" for v in versions)


def _train_rogue(plan: DemoPlan, settings: CommonSettings, result: concurrent.futures.Future) -> None:
    try:
        instances = decoded(settings, INSTANCES, "instance")
        result.set_result(rogue.train_rogue(instances, plan.rogue_country, seed=plan.seed))
    except BaseException as exc:  # reported when the release needs it
        result.set_exception(exc)


def release_rogue(
    plan: DemoPlan, svc: DemoServices, settings: CommonSettings, log: RunLog, state: LiveState
) -> None:
    try:
        art = state.rogue_artifact.result(timeout=120)  # trained when the live phase began
        rogue.publish(settings, art, svc.keys.signer("release"))
        state.rogue_version = art.model_version
        log.fact("rogue_version", art.model_version)
        log.fact("rogue_country", plan.rogue_country)
        log.event("rogue", f"rogue {art.model_version} published (nonsense for {plan.rogue_country})")
        wait_for(
            "the supervisor to know the rogue version",
            lambda: any(v["model_version"] == art.model_version for v in _versions(svc)),
            20,
            every=0.3,
        )
        svc.activate(
            art.model_version,
            "champion",
            None,
            reason=f"demo: a careless release puts a version nonsense for {plan.rogue_country} in front",
        )
        log.mark("rogue_activated")
        state.notes.append(f"rogue {art.model_version} released as champion")
        wait_for(
            "the supervisor to pause the rogue version",
            lambda: _paused(_versions(svc), art.model_version),
            60,
            every=0.3,
        )
        log.mark("rogue_paused")
        state.notes.append(f"rogue {art.model_version} paused by the supervisor")
    except (DemoError, StackError, ValueError, concurrent.futures.TimeoutError) as exc:
        log.event("rogue_failed", str(exc))
        state.notes.append(f"rogue: {exc}")


def chaos(plan: DemoPlan, svc: DemoServices, log: RunLog, state: LiveState) -> None:
    name = plan.chaos_service
    try:
        old = svc.supervision.kill(name)
        log.mark("chaos_kill")
        log.event("chaos", f"SIGKILL {name} (pid {old})", service=name, pid=old)
        state.notes.append(f"SIGKILL {name} (pid {old})")
        new = svc.supervision.wait_restarted(name, old, timeout=60)
        log.mark("chaos_restarted")
        wait_for(f"{name} to be ready again", lambda: svc.ready(name), 90, every=0.3)
        log.mark("chaos_ready")
        log.fact("chaos", {"service": name, "old_pid": old, "new_pid": new})
        state.notes.append(f"{name} restarted by supervisord as pid {new}, ready")
    except (DemoError, StackError) as exc:
        log.event("chaos_failed", str(exc))
        log.fact("chaos", {"service": name, "error": str(exc)})
        state.notes.append(f"chaos: {exc}")


def drain(plan: DemoPlan, settings: CommonSettings, log: RunLog, say) -> None:
    """Until every live pupdate has its prediction and its label (horizons close), or the timeout."""
    say(f"draining: waiting up to {plan.drain_s:.0f} s for the last predictions and labels")
    start = log.marks.get("experiment_start", 0)

    def done() -> bool:
        facts = count(settings, PUPDATES)
        preds = [p for p in decoded(settings, PREDICTIONS, "prediction") if p["predicted_at"] >= start]
        labelled = {i["pupdate_id"] for i in decoded(settings, INSTANCES, "instance")}
        closed = [p for p in preds if p["posted_at"] < log.marks["live_end"] - plan.horizon_s * 1000]
        have = sum(p["pupdate_id"] in labelled for p in preds)
        return count(settings, FEATURES) >= facts and len(closed) <= have and have >= 0.98 * len(preds)

    try:
        wait_for("the last labels", done, plan.drain_s, every=3.0)
    except DemoError as exc:
        log.event("drain_timeout", str(exc))
        say(f"drain: {exc} (the report counts what arrived)")
    log.mark("drained")
