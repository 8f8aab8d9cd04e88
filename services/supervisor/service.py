"""The supervisor process: reads ``models``, ``predictions`` and ``instances``; writes decisions.

Start-up, every time (there is no local state to lose):

1. the policy file is loaded (an invalid one stops the process with the reason);
2. the decision producer initialises its transactions (``transactional.id`` =
   ``<prefix>supervisor``): a previous instance that is still alive is fenced from then on;
3. ``models`` is read from the beginning to its end: every version, status and decision, so
   what was decided before is known before anything is judged;
4. ``predictions`` and ``instances`` are read from the earliest of (the current experiments'
   starts, now - live window - label window - label horizon), never further back than
   ``rebuild_max_lookback_s``, up to the end offsets they had at start: the windows, joins and
   experiments are rebuilt, and only then are policies evaluated (``/readyz`` turns 200);
5. from then on it follows all three topics; policies are evaluated every
   ``evaluate_interval_s`` and decisions written at once.

Nothing is committed: the topics are the state. One thread consumes and judges; the HTTP API
(uvicorn thread) reads and decides under the same lock.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import confluent_kafka
import redis

from libs.common.artifacts import read_model_events
from libs.common.deadletters import DeadLetters
from libs.common.kafka.errors import DeliveryError, KafkaUnavailableError
from libs.common.kafka.producer import Producer
from libs.common.kafka.replay import LARGE_FETCH, ReplayReader, Start
from libs.common.kafka.transactional import Fenced, TransactionalProducer
from libs.common.lifecycle import Shutdown, close_all
from libs.common.metrics import LoopMetrics
from libs.common.retry import kafka_call, transient
from libs.common.serde import SerdeError, serde
from libs.common.signing import signer_from, verifier_from, warn_if_untrusted
from libs.common.topics import INSTANCES, MODEL_MAX_BYTES, MODELS, PREDICTIONS
from services.supervisor import decisions as dec
from services.supervisor import metrics as m
from services.supervisor.policies import Breach, PolicySet
from services.supervisor.settings import SupervisorSettings
from services.supervisor.supervision import Supervision

log = logging.getLogger(__name__)
SERVICE = "supervisor"


class Supervisor:
    def __init__(self, settings: SupervisorSettings, policies: PolicySet) -> None:
        self.s = settings
        self.policies = policies
        self.sup = Supervision(
            policies,
            max_pending_labels=settings.max_pending_labels,
            verifier=verifier_from(settings, service=SERVICE),
        )
        self.signer = signer_from(settings)
        warn_if_untrusted(self.signer, self.sup.catalog.verifier, SERVICE)
        self.lock = threading.RLock()
        self.topics = {
            "models": settings.topic(MODELS),
            "predictions": settings.topic(PREDICTIONS),
            "instances": settings.topic(INSTANCES),
        }
        self.loop_metrics = LoopMetrics(SERVICE)
        self.exporter = m.Exporter()
        self._serdes = {
            self.topics["models"]: serde("model_event"),
            self.topics["predictions"]: serde("prediction"),
            self.topics["instances"]: serde("instance"),
        }
        self.producer: TransactionalProducer | None = None
        self.dead_producer: Producer | None = None
        self.dead = DeadLetters(settings, SERVICE)
        self.reader: ReplayReader | None = None
        self.redis_status: dec.RedisStatus | None = None
        self.models_read = threading.Event()
        self.rebuilt = threading.Event()
        self.rebuild_seconds: float | None = None
        self.last_loop = time.monotonic()
        self._rebuild_started = time.monotonic()
        self.error: BaseException | None = None
        self._last_eval = 0.0
        self._last_export = 0.0
        self._status_dirty: set[str] = set()

    # -- start -------------------------------------------------------------------------------

    def open(self) -> None:
        s = self.s
        self.producer = TransactionalProducer(
            s,
            name=f"{SERVICE}-decisions",
            transactional_id=s.topic(SERVICE),
            timeout_s=s.decision_timeout_s,
            **{"message.max.bytes": int(MODEL_MAX_BYTES), "linger.ms": 0},
        )
        self.dead_producer = Producer(s, name=f"{SERVICE}-deadletters")
        if s.redis_status:
            client = redis.Redis.from_url(
                s.redis_url, socket_timeout=s.redis_timeout_s, socket_connect_timeout=s.redis_timeout_s
            )
            self.redis_status = dec.RedisStatus(client, s.topic_prefix)

    def read_models(self) -> int:
        """Every model event to the end of the topic; returns the offset to follow from."""
        started = time.monotonic()
        next_offset = 0
        count = 0
        for offset, event in read_model_events(self.s, timeout=self.s.rebuild_timeout_s):
            with self.lock:
                self.sup.model_event(event)
            next_offset = offset + 1
            count += 1
        self.models_read.set()
        log.info(
            "models read to their end",
            extra={
                "events": count,
                "versions": len(self.sup.catalog.versions),
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        if self.redis_status is not None:
            self.redis_status.write(self.sup.catalog)
        return next_offset

    def rebuild_from_ms(self, now_ms: int) -> int:
        w = self.policies.windows
        span_ms = int((w.window_seconds + w.error_window_seconds + self.s.label_horizon_s) * 1000) + 60_000
        starts = [now_ms - span_ms]
        cat = self.sup.catalog
        starts += [cat.experiment_start(ev) for ev in cat.order]
        floor = now_ms - int(self.s.rebuild_max_lookback_s * 1000)
        return max(min(starts), floor, 0)

    def assign(self, models_offset: int) -> None:
        now_ms = int(time.time() * 1000)
        start_ms = self.rebuild_from_ms(now_ms)
        since = Start(timestamp_ms=start_ms)
        self.reader = ReplayReader(
            self.s,
            [self.topics["models"], self.topics["predictions"], self.topics["instances"]],
            name=SERVICE,
            start={
                self.topics["models"]: Start(offsets={0: models_offset}),
                self.topics["predictions"]: since,
                self.topics["instances"]: since,
            },
            **(LARGE_FETCH | {"fetch.wait.max.ms": 50}),
        )
        positions = self.reader.positions()
        behind = sum(max(end - positions.get(key, 0), 0) for key, end in self.reader.rebuild_to.items())
        log.info("rebuilding windows from the topics", extra={"from_ms": start_ms, "records_behind": behind})
        self._rebuild_started = time.monotonic()
        if self.reader.rebuilt():
            self._mark_rebuilt()

    def _mark_rebuilt(self) -> None:
        with self.lock:
            self.sup.tick(time.monotonic())
        # Judge the rebuilt windows once before saying ready: what /v1/models shows is complete.
        self.evaluate_and_act()
        self.export()
        self.rebuild_seconds = time.monotonic() - self._rebuild_started
        self.rebuilt.set()
        m.REBUILT.set(1)
        self.loop_metrics.ready.set(1)
        log.info(
            "windows rebuilt from the topics",
            extra={
                "seconds": round(self.rebuild_seconds, 3),
                "predictions": self.sup.predictions_read,
                "instances": self.sup.instances_read,
            },
        )

    # -- the loop ----------------------------------------------------------------------------

    def start(self, shutdown: Shutdown) -> bool:
        """Transactions initialised, models read, inputs assigned; retried while Kafka or the
        topics are not there yet (a supervisor started before the stack must not die)."""
        producer = self.producer
        assert producer is not None

        def attempt() -> None:
            if not producer.initialised:
                producer.init(deadline_s=self.s.decision_timeout_s * 3)
            models_offset = self.read_models()  # applying an event twice is a no-op
            self.assign(models_offset)

        def not_ready_yet(exc: BaseException) -> bool:  # a missing topic raises RuntimeError
            return transient(exc) or (isinstance(exc, RuntimeError) and not isinstance(exc, Fenced))

        try:
            kafka_call(
                attempt, what="start (Kafka and the topics)", shutdown=shutdown, retry_if=not_ready_yet
            )
        except Exception:
            if shutdown.is_set():
                return False
            raise
        return not shutdown.is_set()

    def run(self, shutdown: Shutdown) -> None:
        try:
            self.open()
            if not self.start(shutdown):
                return
            last_lag = 0.0
            while not shutdown.is_set():
                self.last_loop = time.monotonic()
                self.step()
                if time.monotonic() - last_lag > 2.0:
                    last_lag = time.monotonic()
                    self._report_lag()
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.close()

    def step(self) -> int:
        assert self.reader is not None
        messages = self.reader.poll(self.s.batch_size, self.s.poll_timeout_s)
        started = time.perf_counter()
        now = time.monotonic()
        n = 0
        with self.lock:
            for msg in messages:
                n += 1
                self._handle(msg, now)
            self.sup.tick(now)
        if n:
            by_topic: dict[str, int] = {}
            for msg in messages:
                by_topic[msg.topic()] = by_topic.get(msg.topic(), 0) + 1
            for topic, k in by_topic.items():
                self.loop_metrics.consumed(topic, k)
            self.loop_metrics.batch_done(started)
        if not self.rebuilt.is_set():
            if self.reader.rebuilt():
                self._mark_rebuilt()
            elif time.monotonic() - self._rebuild_started > self.s.rebuild_timeout_s:
                log.error("rebuild is taking longer than rebuild_timeout_s; still not ready")
                self._rebuild_started = time.monotonic()
            return n
        if now - self._last_eval >= self.s.evaluate_interval_s:
            self._last_eval = now
            self.evaluate_and_act()
        if now - self._last_export >= 1.0:
            self._last_export = now
            self.export()
        return n

    def _handle(self, msg: confluent_kafka.Message, now: float) -> None:
        topic = msg.topic()
        try:
            record = self._serdes[topic].decode(msg.value())
        except SerdeError as exc:
            self._dead_letter(exc, msg)
            return
        try:
            if topic == self.topics["predictions"]:
                self.sup.prediction(record, now)
            elif topic == self.topics["instances"]:
                self.sup.instance(record)
            elif self.sup.model_event(record):
                self._status_dirty.add(record.get("model_version") or "")
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            # ArithmeticError: a prediction with latency_ms inf raised OverflowError in the
            # windows and killed the supervisor (found by the fuzz test).
            self._dead_letter(exc, msg, reason="unusable_record")

    def _dead_letter(self, exc: Exception, msg: confluent_kafka.Message, reason: str | None = None) -> None:
        assert self.dead_producer is not None
        try:
            self.dead.send(
                self.dead_producer,
                reason or getattr(exc, "reason", "undecodable"),
                f"{type(exc).__name__}: {exc}",
                message=msg,
            )
            self.dead_producer.flush(10)
        except Exception:
            log.exception("dead letter not written")

    def _report_lag(self) -> None:
        assert self.reader is not None
        try:
            self.loop_metrics.set_lag(self.reader.lag())
        except confluent_kafka.KafkaException:
            return

    # -- judging and deciding ----------------------------------------------------------------

    def evaluate_and_act(self) -> None:
        with self.lock:
            evaluation = self.sup.evaluate()
            for breaches in evaluation.decisive():
                self._guarded(self._decide, breaches)
            for promotion in self.sup.experiments.promotions():
                self._guarded(self._promote, promotion)
            started = self.exporter.alerts(evaluation.firing())
        m.LAST_EVALUATION.set_to_current_time()
        for policy, subject, action in started:
            log.warning("policy breached", extra={"policy": policy, "subject": subject, "action": action})

    def _guarded(self, act, arg) -> None:
        """A decision that cannot be written now is retried at the next evaluation (nothing was
        applied); only being fenced by a newer supervisor (:class:`Fenced`) ends the process."""
        try:
            act(arg)
        except (confluent_kafka.KafkaException, KafkaUnavailableError, DeliveryError) as exc:
            log.error("decision not written; retried at the next evaluation", extra={"error": str(exc)})

    def _decide(self, breaches: list[Breach]) -> None:
        breach = breaches[0]
        try:
            events = dec.breach_events(self.sup.catalog, breach, breaches, self.s.actor)
        except dec.DecisionError as exc:
            log.info("no decision", extra={"subject": breach.subject, "why": str(exc)})
            return
        if events:
            self.write(events)

    def _promote(self, promotion) -> None:
        try:
            events = dec.activate_events(
                self.sup.catalog,
                promotion.challenger,
                reason=f"promoted by the supervisor: {promotion.reason}",
                actor=self.s.actor,
                arm="champion",
                arm_weights=self.policies.experiments.promote_weights or None,
                metrics=promotion.figures,
                params={
                    "experiment_started_at": str(promotion.started_at),
                    "previous_champion": promotion.champion or "",
                    "rule": "challenger_beats_champion",
                },
            )
        except dec.DecisionError as exc:
            log.info("no promotion", extra={"version": promotion.challenger, "why": str(exc)})
            return
        self.write(events)

    def write(self, events: list[dict[str, Any]]) -> None:
        """Write decisions in one transaction, then apply them here at once (caller may hold the lock)."""
        assert self.producer is not None
        codec = serde("model_event")
        if self.signer is not None:
            events = [self.signer.sign(e) for e in events]
        with self.lock:
            started = time.perf_counter()
            try:
                with self.producer.transaction() as out:
                    for e in events:
                        out.produce(self.topics["models"], codec.encode(e), key=e["model_version"])
            except Exception:
                m.DECISION_FAILURES.inc()
                raise
            for e in events:
                self.sup.model_event(e)
                actor = "operator" if e["actor"].startswith("operator") else "supervisor"
                m.DECISIONS.labels(e["kind"], actor).inc()
                self._status_dirty.add(e["model_version"])
                log.warning(
                    "decision written",
                    extra={
                        "kind": e["kind"],
                        "model_version": e["model_version"],
                        "event_id": e["event_id"],
                        "reason": e["reason"],
                        "metrics": e["metrics"],
                        "params": e["params"],
                        "seconds": round(time.perf_counter() - started, 4),
                    },
                )
            self._flush_status()

    def _flush_status(self) -> None:
        if self.redis_status is not None and self._status_dirty:
            self.redis_status.write(self.sup.catalog, sorted(self._status_dirty))
        self._status_dirty.clear()

    def export(self) -> None:
        with self.lock:
            self.exporter.versions_health(self.sup.version_health())
            self.exporter.extractor_fallbacks(self.sup.extractor_health())
            self.exporter.status({n: v.status for n, v in self.sup.catalog.versions.items() if v.published})
            self.exporter.experiments(self.sup.experiments.report())
            m.UNATTRIBUTED.set(self.sup.windows.unattributed)
            m.PENDING_LABELS.set(len(self.sup.join.predictions))
            self._flush_status()

    # -- operators (HTTP thread) -------------------------------------------------------------

    def operate(self, action: str, version: str, *, actor: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Pause, resume or activate on an operator's behalf; raises DecisionError when refused."""
        reason = str(body.get("reason") or f"{action} by {actor}")
        with self.lock:
            cat = self.sup.catalog
            if action == "pause":
                events = dec.pause_events(
                    cat, version, reason=reason, actor=actor, fallback=bool(body.get("fallback"))
                )
            elif action == "resume":
                events = dec.resume_events(cat, version, reason=reason, actor=actor)
            elif action == "activate":
                weights = body.get("arm_weights") or None
                if weights is not None and not isinstance(weights, dict):
                    raise dec.DecisionError("arm_weights must be an object of arm -> weight")
                try:
                    weights = {str(k): float(v) for k, v in weights.items()} if weights else None
                except (TypeError, ValueError) as exc:
                    raise dec.DecisionError(f"arm_weights: {exc}") from exc
                events = dec.activate_events(
                    cat,
                    version,
                    reason=reason,
                    actor=actor,
                    arm=str(body.get("arm") or "champion"),
                    arm_weights=weights,
                )
            else:
                raise dec.DecisionError(f"unknown action {action!r}")
            self.write(events)
            return events

    def close(self) -> None:
        close_all(
            self.reader.close if self.reader else None,
            self.producer.close if self.producer else None,
            self.dead_producer.close if self.dead_producer else None,
        )


def main(settings: SupervisorSettings | None = None) -> None:
    from libs.common.http_server import HttpServer
    from libs.common.process import start_process
    from services.supervisor import policies as pol
    from services.supervisor.http_api import create_app

    settings = settings or SupervisorSettings()
    shutdown, probes = start_process(SERVICE, settings)
    try:
        policy_set = pol.load(settings.policies_file)
    except pol.PolicyError as exc:
        log.error("invalid policy file: the supervisor does not start", extra={"error": str(exc)})
        raise SystemExit(2) from exc
    sup = Supervisor(settings, policy_set)
    probes.live("loop", lambda: sup.error is None and time.monotonic() - sup.last_loop < 60)
    probes.ready("models_read", sup.models_read.is_set)
    probes.ready("windows_rebuilt", sup.rebuilt.is_set)
    server = HttpServer(create_app(sup, probes, settings), host=settings.host, port=settings.port).start()
    log.info(
        "supervisor started",
        extra={
            "port": settings.port,
            "policies": policy_set.source,
            "operator_token": settings.operator_token is not None,
        },
    )
    try:
        sup.run(shutdown)
    finally:
        server.stop()
        log.info("supervisor stopped", extra={"reason": shutdown.reason})
