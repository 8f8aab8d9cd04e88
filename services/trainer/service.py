"""The trainer process: consume ``instances`` into windows, train off the loop, publish versions.

Threads, and what each may block:

* main: the consuming loop (``instances`` and ``models``, every partition, from the beginning).
  It only ever appends to windows and hands immutable chunks to a run; it never waits for one.
* run: one training run at a time (LightGBM releases the GIL), then the publish. A slow or
  failing run delays the next *run*, never consumption; a failure is logged, counted
  (``pooch_trainer_runs_total{outcome="failed"}``) and shown in ``/readyz``.
* election: keeps this replica's membership in the leader group (see election.py).
* http: FastAPI on uvicorn (``POST /v1/train``, ``GET /v1/status``, probes, metrics).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from libs.common.artifacts import ArtifactStore, ModelArtifact, ModelCache, build_artifact
from libs.common.deadletters import DeadLetters
from libs.common.features.extractors import CATEGORICAL, EXTRACTORS
from libs.common.kafka.producer import Producer
from libs.common.kafka.replay import ReplayReader
from libs.common.lifecycle import Shutdown, close_all
from libs.common.metrics import LoopMetrics
from libs.common.serde import SerdeError, serde
from libs.common.signing import signer_from, verifier_from, warn_if_untrusted
from libs.common.topics import INSTANCES, MODELS
from services.trainer import metrics as m
from services.trainer.distributed import DaskFitter
from services.trainer.election import LeaderElection
from services.trainer.publisher import FencedError, Publisher, cache_put
from services.trainer.registry import Registry
from services.trainer.settings import TrainerSettings
from services.trainer.train import Champion, Fitter, NotEnoughData, fit, train
from services.trainer.triggers import TriggerRules, VersionState, due
from services.trainer.window import BadInstance, Chunk, Windows, build_snapshot

log = logging.getLogger(__name__)
SERVICE = "trainer"


@dataclass
class RunReport:
    extractor_version: str
    trigger: str
    outcome: str  # published, not_better, unchanged, not_leader, not_enough_data, failed
    started_at: float  # unix seconds
    seconds: float = 0.0
    reason: str = ""
    error: str | None = None
    model_version: str | None = None
    champion_version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    artifact: ModelArtifact | None = None
    model_text: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "extractor_version": self.extractor_version,
            "trigger": self.trigger,
            "outcome": self.outcome,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 3),
            "reason": self.reason,
            "error": self.error,
            "model_version": self.model_version,
            "champion_version": self.champion_version,
            "metrics": self.metrics,
        }


@dataclass
class _Job:
    extractor_version: str
    names: tuple[str, ...]
    categorical: tuple[str, ...]
    chunks: list[Chunk]
    champion: Champion | None
    trigger: str
    term: int


class Trainer:
    def __init__(self, settings: TrainerSettings, shutdown: Shutdown) -> None:
        self.s = settings
        self.shutdown = shutdown
        self.params = settings.train_params()
        self.params.lgb_params()  # a bad objective fails at start, not at the first run
        self.fitter: Fitter = fit
        self.dask: DaskFitter | None = None
        if settings.engine == "dask":
            self.dask = DaskFitter(settings.dask_options())
            self.fitter = self.dask
        self.instances_topic = settings.topic(INSTANCES)
        self.models_topic = settings.topic(MODELS)
        self.windows = Windows(
            max_count=settings.window_max_count,
            max_age_ms=settings.window_max_age_ms,
            categorical_of={v: e.categorical for v, e in EXTRACTORS.items()},
            default_categorical=CATEGORICAL,
            versions=settings.extractor_versions,
        )
        self.registry = Registry(service=SERVICE, verifier=verifier_from(settings, service=SERVICE))
        self.signer = signer_from(settings)
        warn_if_untrusted(self.signer, self.registry.verifier, SERVICE)
        self.metrics = LoopMetrics(SERVICE)
        self.instance_serde, self.model_serde = serde("instance"), serde("model_event")
        self.cache = ModelCache(
            redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2),
            settings.topic_prefix,
            service=SERVICE,
        )
        self.registry.fetch = ArtifactStore(self.cache, settings).get  # Redis, else the topic
        self.dead = DeadLetters(settings, SERVICE)
        self.dlq_producer = Producer(settings, name=f"{SERVICE}-deadletters")
        self.publisher = Publisher(settings, name=SERVICE)
        self.reader = ReplayReader(settings, [self.instances_topic, self.models_topic], name=SERVICE)
        self.election = LeaderElection(
            settings,
            topic=self.models_topic,
            group_id=settings.topic(settings.leader_group),
            member=settings.replica_id,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            on_change=self._leadership_changed,
        )
        self.started = time.monotonic()
        self.rules = TriggerRules(
            settings.retrain_every, settings.retrain_interval_s, settings.first_model_asap
        )
        self.rebuilt = False
        self.new_since_run: dict[str, int] = {}
        self.last_run_at: dict[str, float] = {}
        self.pending: dict[str, str] = {}
        self.requests: queue.Queue[list[str] | None] = queue.Queue()
        self.results: queue.Queue[RunReport] = queue.Queue()
        self.running: tuple[str, float] | None = None  # (extractor_version, monotonic start)
        self.last_runs: dict[str, RunReport] = {}
        self.failed_runs: dict[str, RunReport] = {}
        self.term_seen = 0
        self.new_term = False
        self.retry_at: dict[str, tuple[float, float]] = {}  # version -> (monotonic due, backoff s)
        self.loop_beat = time.monotonic()
        self.last_gauges = 0.0
        self.last_cache_check = 0.0
        self._rr = 0
        # Whole from the first answer: /v1/status is served before the loop's first tick.
        self.status_doc: dict[str, Any] = self._status()

    # -- consuming ----------------------------------------------------------------------------

    def ingest(self, messages: list) -> None:
        counts: dict[str, int] = {}
        for msg in messages:
            topic = msg.topic()
            if topic == self.models_topic:
                self._model_event(msg)
            else:
                self._instance(msg, counts)
            self.metrics.consumed(topic)
        for version, n in counts.items():
            m.INSTANCES.labels(version).inc(n)
            self.new_since_run[version] = self.new_since_run.get(version, 0) + n

    def _instance(self, msg: Any, counts: dict[str, int]) -> None:
        try:
            rec = self.instance_serde.decode(msg.value())
            version = self.windows.add(rec, msg.partition(), msg.offset())
        except SerdeError as exc:
            self._reject(exc.reason, str(exc), msg)
            return
        except BadInstance as exc:
            self._reject(exc.reason, exc.detail, msg)
            return
        except (KeyError, TypeError, ValueError) as exc:
            self._reject("invalid_instance", f"{type(exc).__name__}: {exc}", msg)
            return
        if version is not None:
            counts[version] = counts.get(version, 0) + 1

    def _reject(self, reason: str, detail: str, msg: Any) -> None:
        m.REJECTED.labels(reason).inc()
        # Every replica reads every instance, and replays history at each start: only the leader
        # dead-letters, and only what it reads live, so a bad record is not dead-lettered again
        # by every replica and every restart.
        if self.rebuilt and self.election.is_leader:
            self.dead.send(self.dlq_producer, reason, detail, message=msg)
            self.dlq_producer.poll(0)
        else:
            log.debug("instance rejected", extra={"reason": reason, "detail": detail[:300]})

    def _model_event(self, msg: Any) -> None:
        try:
            event = self.model_serde.decode(msg.value())
        except SerdeError as exc:
            log.error(
                "undecodable record on models ignored", extra={"offset": msg.offset(), "error": str(exc)}
            )
            return
        self.registry.apply(event)

    # -- leadership ----------------------------------------------------------------------------

    def _leadership_changed(self, leader: bool) -> None:  # election thread
        m.LEADER.set(1 if leader else 0)
        m.LEADERSHIP_CHANGES.inc()

    def _check_term(self) -> None:
        term = self.election.term
        if term != self.term_seen and self.election.is_leader:
            self.term_seen = term
            self.new_term = True
            threading.Thread(
                target=self._prepare_publisher, args=(term,), name="trainer-publisher-init", daemon=True
            ).start()
        if self.new_term and self.rebuilt:
            self.new_term = False
            # A new leader trains at once on what it has: if the last leader died with new
            # instances unlearned, the next version does not wait for the next trigger. A window
            # already learned gives the same model text, hence the same version: not republished.
            for version in self.windows.versions():
                self.pending.setdefault(version, "leadership acquired")

    def _prepare_publisher(self, term: int) -> None:
        try:
            self.publisher.prepare(term)
        except Exception:  # the first publish of the term tries again
            log.exception("publisher not initialised", extra={"term": term})

    # -- triggering ----------------------------------------------------------------------------

    def request_training(self, versions: list[str] | None = None) -> None:
        """Thread-safe: ask for a run of these versions (None: every one) as soon as possible."""
        self.requests.put(versions)

    def _drain_requests(self) -> None:
        while True:
            try:
                versions = self.requests.get_nowait()
            except queue.Empty:
                return
            for v in versions or self.windows.versions():
                if v in self.windows:
                    self.pending[v] = "requested (POST /v1/train)"

    def _due(self, version: str, now: float) -> str | None:
        retry = self.retry_at.get(version)
        state = VersionState(
            pending=self.pending.get(version),
            retry_due=retry[1] if retry is not None and now >= retry[0] else None,
            new_instances=self.new_since_run.get(version, 0),
            seconds_since_last_run=now - self.last_run_at.get(version, self.started),
            has_model=bool(self.registry.order.get(version)),
            ran_here=version in self.last_run_at,
        )
        return due(self.rules, state)

    def maybe_dispatch(self) -> None:
        self._drain_requests()
        if not self.rebuilt or self.running is not None or not self.election.is_leader:
            return
        versions = self.windows.versions()
        if not versions:
            return
        now = time.monotonic()
        for i in range(len(versions)):
            version = versions[(self._rr + i) % len(versions)]
            trigger = self._due(version, now)
            if trigger is None:
                continue
            window = self.windows[version]
            if window.size() < self.s.min_instances:
                if version in self.pending and trigger.startswith("requested"):
                    self.pending.pop(version)
                    report = RunReport(
                        version,
                        trigger,
                        "not_enough_data",
                        time.time(),
                        reason=f"{window.size()} instances, {self.s.min_instances} needed",
                    )
                    self.last_runs[version] = report
                    m.RUNS.labels(version, report.outcome).inc()
                continue
            self._rr = (self._rr + i + 1) % len(versions)
            self._dispatch(version, trigger, now)
            return

    def _dispatch(self, version: str, trigger: str, now: float) -> None:
        window = self.windows[version]
        champ = self.registry.champion_text(version)
        champion = (
            Champion(champ[0].model_version, champ[1], tuple(champ[0].feature_names)) if champ else None
        )
        job = _Job(
            version, window.names, window.categorical, window.chunks(), champion, trigger, self.election.term
        )
        self.pending.pop(version, None)
        self.new_since_run[version] = 0
        self.last_run_at[version] = now
        self.running = (version, now)
        m.RUN_IN_PROGRESS.set(1)
        log.info(
            "training run started",
            extra={
                "extractor_version": version,
                "trigger": trigger,
                "window": window.size(),
                "champion": champion.model_version if champion else None,
            },
        )
        threading.Thread(
            target=self._run_job, args=(job,), name=f"trainer-run-{version}", daemon=True
        ).start()

    # -- the run (its own thread) ----------------------------------------------------------------

    def _run_job(self, job: _Job) -> None:
        started, wall = time.perf_counter(), time.time()
        report = RunReport(job.extractor_version, job.trigger, "failed", wall)
        try:
            snap = build_snapshot(
                job.extractor_version,
                job.names,
                job.categorical,
                job.chunks,
                max_count=self.s.window_max_count,
                max_age_ms=self.s.window_max_age_ms,
            )
            cand = train(
                snap, self.params, champion=job.champion, topic=self.instances_topic, fitter=self.fitter
            )
            report.metrics = cand.metrics
            report.champion_version = cand.champion_version
            report.reason = cand.decision.reason
            for note in cand.notes:
                log.warning(note, extra={"extractor_version": job.extractor_version})
            if not cand.decision.publish:
                report.outcome = "not_better"
                return
            art = build_artifact(
                cand.model_text,
                extractor_version=job.extractor_version,
                feature_names=snap.names,
                categorical_features=snap.categorical,
                metrics=cand.metrics,
                params=cand.params
                | {
                    "trainer.replica": self.s.replica_id,
                    "trainer.trigger": job.trigger,
                    "trainer.engine": self.s.engine,
                },
                feature_importance=cand.feature_importance,
                validation_quantiles=cand.validation_quantiles,
                reason=cand.decision.reason,
                actor=f"trainer/{self.s.replica_id}",
            ).signed(self.signer)
            report.model_version = art.model_version
            if art.model_version in self.registry.published:
                report.outcome = "unchanged"
                report.reason = f"the same model as {art.model_version}, already published"
                return
            if not self.election.is_leader or self.election.term != job.term:
                report.outcome = "not_leader"
                report.reason = "leadership lost during the run: the new leader trains"
                return
            self.publisher.publish(art, term=job.term)
            cache_put(self.cache, art)
            report.outcome = "published"
            report.artifact, report.model_text = art, cand.model_text
        except NotEnoughData as exc:
            report.outcome = "not_enough_data"
            report.reason = str(exc)
        except FencedError as exc:
            report.outcome = "not_leader"
            report.reason = str(exc)
        except Exception as exc:
            report.outcome = "failed"
            report.error = f"{type(exc).__name__}: {exc}"
            log.exception(
                "training run FAILED; the service keeps consuming and will retry at the next trigger",
                extra={"extractor_version": job.extractor_version, "trigger": job.trigger},
            )
        finally:
            report.seconds = time.perf_counter() - started
            self.results.put(report)

    def collect(self) -> None:
        while True:
            try:
                report = self.results.get_nowait()
            except queue.Empty:
                return
            self.running = None
            m.RUN_IN_PROGRESS.set(0)
            v = report.extractor_version
            m.RUNS.labels(v, report.outcome).inc()
            m.RUN_SECONDS.labels(v).observe(report.seconds)
            for name, value in report.metrics.items():
                m.VALIDATION.labels(v, name).set(value)
            if report.outcome == "failed":
                self.failed_runs[v] = report
                # Retry with backoff even if no new instance arrives (Kafka was down, say).
                backoff = self.retry_at[v][1] * 2 if v in self.retry_at else self.s.retry_backoff_s
                backoff = min(backoff, self.s.retry_backoff_max_s)
                self.retry_at[v] = (time.monotonic() + backoff, backoff)
            else:
                self.failed_runs.pop(v, None)
                self.retry_at.pop(v, None)
                m.LAST_SUCCESS.labels(v).set(time.time())
            if report.outcome == "published" and report.artifact is not None:
                self.registry.add(report.artifact, source="self", text=report.model_text)
                m.PUBLISHED.labels(v).inc()
                m.LAST_PUBLISHED.labels(v).set(time.time())
            report.artifact = report.model_text = None  # the registry keeps what is needed
            self.last_runs[v] = report
            self.last_gauges = 0.0  # status and readiness detail show the outcome at once
            log.info(
                f"training run {report.outcome}",
                extra={
                    "extractor_version": v,
                    "outcome": report.outcome,
                    "model_version": report.model_version,
                    "champion": report.champion_version,
                    "reason": report.reason,
                    "seconds": round(report.seconds, 3),
                    "improvement_vs_baseline": report.metrics.get("improvement_vs_baseline"),
                    "improvement_vs_champion": report.metrics.get("improvement_vs_champion"),
                },
            )

    # -- the cache ----------------------------------------------------------------------------

    def check_cache(self, force: bool = False) -> None:
        """Write back every verified version Redis lost (FLUSHALL, eviction, a new Redis)."""
        now = time.monotonic()
        if not force and now - self.last_cache_check < self.s.cache_check_interval_s:
            return
        self.last_cache_check = now
        try:
            missing = self.cache.missing(self.registry.versions())
        except redis.RedisError as exc:
            log.warning("Redis unreachable; model cache not checked", extra={"error": str(exc)})
            return
        repaired = 0
        for version in missing:
            if version in self.registry.evicted:  # not worth keeping: not worth caching either
                continue
            art = self.registry.published[version]
            try:
                art.model_text(service=SERVICE, source="memory")  # never cache what fails its check
            except Exception:
                continue
            if cache_put(self.cache, art):
                repaired += 1
        if repaired:
            m.CACHE_REPAIRS.inc(repaired)
            log.warning(
                "model cache repaired from the models topic",
                extra={"versions": repaired, "missing": len(missing)},
            )
        if self.election.is_leader:
            self._trim_cache()

    def _trim_cache(self) -> None:
        """The bound of the Redis model cache: only the versions the ledger says are worth keeping
        (the ``cache_versions_kept`` newest non-retired per extractor, and whatever is champion,
        challenger or activated). One writer trims (the leader); a version trimmed and selected
        again later is read back from the topic (libs/common/artifacts.ArtifactStore)."""
        keep = self.registry.worth_keeping(self.s.cache_versions_kept)
        try:
            gone = [v for v in self.cache.versions() if v not in keep]
            for v in gone:
                self.cache.delete(v)
        except redis.RedisError as exc:
            log.warning("Redis unreachable; model cache not trimmed", extra={"error": str(exc)})
            return
        if gone:
            m.CACHE_TRIMMED.inc(len(gone))
            log.info("model cache trimmed to the versions worth keeping", extra={"versions": gone})

    # -- state for probes and HTTP ------------------------------------------------------------

    def ready(self) -> bool:
        return self.reader.assigned and self.rebuilt and self.election.joined

    def training_ok(self) -> bool:
        return not self.failed_runs

    def live(self) -> bool:
        if time.monotonic() - self.loop_beat > 60:
            return False
        if self.running and time.monotonic() - self.running[1] > self.s.max_run_seconds:
            return False
        return self.election.alive()

    def _status(self) -> dict[str, Any]:
        windows = {}
        for v in self.windows.versions():
            w = self.windows[v]
            windows[v] = {
                "size": w.size(),
                "stored": w.stored,
                "new_since_last_run": self.new_since_run.get(v, 0),
                "newest_posted_at": w.newest_posted_at,
                "champion": self.registry.champion_version(v),
                "published": list(self.registry.order.get(v, [])),
            }
        running = None
        if self.running:
            running = {"extractor_version": self.running[0], "seconds": time.monotonic() - self.running[1]}
        return {
            "replica": self.s.replica_id,
            "role": "leader" if self.election.is_leader else "standby",
            "term": self.election.term,
            "rebuilt": self.rebuilt,
            "windows": windows,
            "running": running,
            "last_runs": {v: r.public() for v, r in self.last_runs.items()},
            "failed_runs": {v: r.public() for v, r in self.failed_runs.items()},
            "refused_versions": sorted(self.registry.refused),
        }

    def _gauges(self) -> None:
        now = time.monotonic()
        if now - self.last_gauges < 0.5:
            return
        self.last_gauges = now
        for v in self.windows.versions():
            m.WINDOW.labels(v).set(self.windows[v].size())
            m.NEW_SINCE_RUN.labels(v).set(self.new_since_run.get(v, 0))
        for v, versions in list(self.registry.order.items()):
            m.KNOWN_VERSIONS.labels(v).set(len(versions))
        m.LEADER.set(1 if self.election.is_leader else 0)
        try:
            self.metrics.set_lag(self.reader.lag())
        except Exception:
            log.debug("lag not available", exc_info=True)
        self.status_doc = self._status()
        self.metrics.ready.set(1 if self.ready() and self.training_ok() else 0)

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        self.election.start()
        log.info(
            "trainer started: replaying instances and models",
            extra={
                "replica": self.s.replica_id,
                "rebuild_to": {f"{t}[{p}]": o for (t, p), o in self.reader.rebuild_to.items()},
            },
        )
        try:
            while not self.shutdown.is_set():
                self.loop_beat = time.monotonic()
                started = time.perf_counter()
                messages = self.reader.poll(self.s.batch_size, 0.2)
                self.ingest(messages)
                if messages:
                    self.metrics.batch_done(started)
                self.reader.discover()
                if not self.rebuilt and self.reader.rebuilt():
                    self._on_rebuilt()
                self.collect()
                self._check_term()
                self.maybe_dispatch()
                if self.rebuilt:
                    self.check_cache()
                self._gauges()
        finally:
            self.close()

    def _on_rebuilt(self) -> None:
        self.rebuilt = True
        for v in self.windows.versions():
            self.windows[v].compact()
            self.new_since_run[v] = 0
        # Before /readyz can say ready: the status document must already show the rebuilt window.
        self.status_doc = self._status()
        m.WINDOW_REBUILT.set(1)
        log.info(
            "window rebuilt from the instances topic",
            extra={
                "seconds": round(time.monotonic() - self.started, 3),
                "windows": {v: self.windows[v].size() for v in self.windows.versions()},
                "published_versions": len(self.registry.published),
            },
        )
        self.check_cache(force=True)

    def close(self) -> None:
        parts = [self.election.stop, self.reader.close, self.publisher.close, self.dlq_producer.close]
        if self.dask is not None:
            parts.append(self.dask.close)
        close_all(*parts)


def main(settings: TrainerSettings | None = None) -> None:
    from libs.common.http_limits import ApiKeys
    from libs.common.http_server import HttpServer
    from libs.common.process import start_process
    from services.trainer.http_api import create_app

    settings = settings or TrainerSettings()
    shutdown, probes = start_process(SERVICE, settings)
    trainer = Trainer(settings, shutdown)
    probes.live("loop_and_election", trainer.live)
    probes.ready("window_rebuilt_and_partitions_assigned", trainer.ready)
    probes.ready("last_training_run_ok", trainer.training_ok)
    app = create_app(trainer, probes)
    http = HttpServer(
        app,
        host=settings.host,
        port=settings.port,
        graceful_shutdown_s=2,
        keys=ApiKeys(settings.api_keys),
        keyed=[("POST", "/v1/train")],
    ).start()
    try:
        trainer.run()
    finally:
        http.stop(5)
        log.info("trainer stopped", extra={"reason": shutdown.reason})
