"""Scheduler wiring (composition root): which jobs exist, and APScheduler running each on its interval.

The jobs and the alert engine know nothing of each other; this module builds
both from the config and runs them side by side.

Exactly one scheduler may run per store. With the embedded store that is
``nlpmon serve`` (the only process that can open it). With a ClickHouse server
and several API replicas, set ``jobs.enabled: false`` on the replicas and run
one ``nlpmon scheduler`` process. Two schedulers would not corrupt anything
(writes are idempotent) but would do the work twice.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from alerts.engine import AlertEngine
from dashboards.digest_task import DigestTask
from jobs.cost import CostJob
from jobs.drift import DriftJob
from jobs.evaluate import EvaluateJob
from jobs.grounding import AnswerProxy, GroundingProxyJob
from jobs.hallucination import HallucinationRateJob
from jobs.incident_kpis import IncidentKpiJob
from jobs.reconcile import ReconcileJob
from jobs.releases import ReleasesJob
from jobs.segment_regression import SegmentRegressionJob
from jobs.sli import SliJob
from jobs.slo import SloJob
from monitor.ingest.otlp_join import OtlpJoin
from monitor.review.sampling import HallucinationSampleJob
from monitor.foundation.config import Config
from monitor.foundation.memory import release_free_memory
from monitor.foundation.lease import Lease
from monitor.foundation.storage import Store, StoreError
from monitor.foundation.tasks import ScheduledTask
from monitor.foundation.tables import alert_state, notification_log, notification_outbox, silences
from monitor.foundation.tables.job_runs import RunResult

log = logging.getLogger(__name__)


def build_jobs(store: Store, config: Config, clock) -> dict[str, ScheduledTask]:
    every = config.jobs.schedule
    jobs: list[ScheduledTask] = [
        SliJob(store, config, clock, every.sli), SloJob(store, config, clock, every.slo),
        CostJob(store, config, clock, every.cost),
        HallucinationSampleJob(store, config, clock, every.hallucination_sample,
                               proxy=AnswerProxy(store, config, clock) if config.grounding.enabled else None),
        HallucinationRateJob(store, config, clock, every.hallucination),
        ReconcileJob(store, config, clock, every.reconcile),
        SegmentRegressionJob(store, config, clock, every.segment_regression),
        # Parked OpenTelemetry spans, ingested with the content events that came for them.
        OtlpJoin(store, config, clock, interval=every.otlp_join)]
    if config.releases.enabled:
        jobs.append(ReleasesJob(store, config, clock, every.releases))
    if config.evaluators:
        jobs.append(EvaluateJob(store, config, clock, every.evaluate, ingestor=_LazyIngestor(store, config, clock)))
    if config.digests:
        jobs.append(DigestTask(store, config, clock, every.digests))
    if config.drift.enabled:
        jobs.append(DriftJob(store, config, clock, every.drift))
    if config.grounding.enabled:
        jobs.append(GroundingProxyJob(store, config, clock, every.grounding_proxy))
    if config.alerts.enabled:
        jobs.append(IncidentKpiJob(store, config, clock, every.incident_kpis))
        # The engine watches the others: a job without a successful run for a few intervals is an alert.
        jobs.append(AlertEngine(store, config, clock, job_intervals={j.name: j.interval for j in jobs}))
    return {job.name: job for job in jobs}


class _LazyIngestor:
    """The ingest pipeline for the evaluate job's rows, built on first use (its salt lives in the store)."""

    def __init__(self, store: Store, config: Config, clock):
        self._args, self._built = (store, config, clock), None

    def _get(self):
        if self._built is None:
            from monitor.ingest.pipeline import Ingestor, user_id_salt
            store, config, clock = self._args
            self._built = Ingestor(store, config, clock, user_id_salt(store, config, clock))
        return self._built

    @property
    def prices(self):
        return self._get().prices

    def ingest(self, kind: str, rows: list):
        return self._get().ingest(kind, rows)


ON_TIME = dt.timedelta(seconds=1)
HEAVY_MS = 2000
RELEASE_EVERY_S = 600


LEASE_NAME = "scheduler"


def scheduler_lease(store: Store, config: Config, clock, exclusive: bool | None = None) -> Lease:
    """The scheduler's lease; on the embedded store (``exclusive``, by default) taken at once at start,
    since the process that held it before can only be this store's previous, stopped process."""
    return Lease(store, LEASE_NAME, config.jobs.lease, clock, exclusive=store.embedded if exclusive is None else exclusive)


def catch_up(store: Store) -> None:
    """On becoming active on a cluster: wait until this replica has what the previous scheduler wrote
    on its own (the alert engine's state, the notification log and outbox), so nothing it sent is
    sent again and nothing it decided is lost."""
    for table in (alert_state, notification_log, notification_outbox, silences):
        table.sync_replica(store)


class Scheduler:
    def __init__(self, jobs: dict[str, ScheduledTask], lease: Lease | None = None, store: Store | None = None):
        self.jobs = jobs
        self.lease = lease
        self.store = store
        self._released = time.monotonic()
        self.active = lease is None
        self.started_once = False  # a scheduler stopped before it started (a demo still loading) sends nothing
        self.last: dict[str, RunResult] = {}
        self._first: dict[str, dt.datetime] = {}  # each started job's first tick: its grid of ticks
        self._lock = threading.Lock()
        self._running: set[str] = set()  # the runs in flight, for a bounded stop
        self._idle = threading.Condition(self._lock)
        self._aps = BackgroundScheduler(timezone=dt.timezone.utc, job_defaults={
            # A run that overlaps the next tick is not started twice; missed ticks collapse into one run,
            # and the job itself catches up the windows it missed.
            "coalesce": True, "max_instances": 1, "misfire_grace_time": None})

    @property
    def started(self) -> bool:
        return self._aps.running

    def keep_lease(self) -> bool:
        """Renew the lease, or take it when free: active after this call? (every third of a lease)."""
        was = self.active
        try:
            self.active = self.lease.acquire()
            if self.active and not was and self.store is not None:
                catch_up(self.store)
        except StoreError as exc:
            log.warning("scheduler lease: %s", exc)
            self.active = False
        if self.active != was:
            log.warning("scheduler %s: %s (term %s)", self.lease.holder,
                        "active" if self.active else "standby", self.lease.term)
        return self.active

    def _fenced(self) -> bool:
        """Whether a job may run now: no lease to respect, or this process still holds it (a fresh read)."""
        if self.lease is None:
            return True
        try:
            held = self.lease.held()
        except StoreError:
            held = False
        if not held and self.active:
            log.warning("scheduler %s lost the lease; running nothing until it holds it again", self.lease.holder)
            self.active = False
        return held

    def start(self) -> None:
        self.started_once = True
        now = dt.datetime.now(dt.timezone.utc)
        if self.lease is not None:
            self.keep_lease()
            every = self.lease.period.total_seconds() / 3
            self._aps.add_job(self.keep_lease, IntervalTrigger(seconds=every), id="_lease", name="lease")
        for name, job in self.jobs.items():
            first = now + job.start_offset
            self._first[name] = job.clock.now() + job.start_offset  # the grid in the job's own time
            self._aps.add_job(self.run_job, IntervalTrigger(seconds=job.interval.total_seconds(), start_date=first),
                              args=[name], id=name, name=name, next_run_time=first)
        self._aps.start()
        log.info("scheduler started: %s", ", ".join(f"{n} every {j.interval}" for n, j in self.jobs.items()))

    def run_job(self, name: str) -> RunResult | None:
        if not self._fenced():
            return None
        with self._lock:
            self._running.add(name)
        try:
            result = self.jobs[name].run(now=self.scheduled_time(name))
        except Exception:  # a failure to even record the run must not kill the scheduler thread
            log.exception("job %s could not run", name)
            return None
        finally:
            with self._lock:
                self._running.discard(name)
                self._idle.notify_all()
        with self._lock:
            self.last[name] = result
        if result.duration_ms > HEAVY_MS or time.monotonic() - self._released > RELEASE_EVERY_S:
            # A drift or grounding run leaves hundreds of MB of freed heap behind; ingest and the pages' reads
            # leave freed pages in the engine's allocator, a little at a time.
            self._released = time.monotonic()
            release_free_memory(self.store)
        return result

    def scheduled_time(self, name: str, now: dt.datetime | None = None) -> dt.datetime | None:
        """The tick this run was scheduled for, when it woke within ON_TIME of it; else None (the job
        reads its clock). As Prometheus evaluates at the scheduled time: the wake-up wanders a few
        milliseconds either way, and a `for: 1m` counted from a run that woke 2 ms late to one that
        woke on time would otherwise be 59.998 s and wait one more tick."""
        first = self._first.get(name)
        if first is None:
            return None
        now = now or self.jobs[name].clock.now()
        interval = self.jobs[name].interval
        tick = first + round((now - first) / interval) * interval
        return tick if abs(now - tick) <= ON_TIME else None

    def shutdown(self, grace: dt.timedelta = dt.timedelta(seconds=10)) -> list[str]:
        """Stop for a SIGTERM or the end of ``serve``: start no new run, let the runs in flight finish for at
        most ``grace``, deliver the outbox once (pages decided just before the stop go out now, not after
        a restart), and give the lease up so a standby or the next start need not wait for its expiry.
        Returns the jobs still running at the deadline (their runs will show as interrupted)."""
        if self._aps.running:
            self._aps.shutdown(wait=False)
        deadline = time.monotonic() + grace.total_seconds()
        with self._lock:
            while self._running and self._idle.wait(max(0.0, deadline - time.monotonic())):
                pass
            still = sorted(self._running)
        if still:
            log.warning("stopping with %s still running; its run will show as interrupted", ", ".join(still))
        self._drain_outbox(busy=bool(still))
        if self.lease is not None and self.active:
            try:
                self.lease.release()  # the standby need not wait for the expiry
            except StoreError:
                pass
        return still

    def _drain_outbox(self, busy: bool) -> None:
        engine = next((j for j in self.jobs.values() if isinstance(j, AlertEngine)), None)
        if engine is None or busy or not self.started_once or not self._fenced():
            return  # a run still going is delivering anyway; a standby owns no outbox
        try:
            sent = engine.outbox.deliver_due()
            if sent:
                log.info("delivered %d notification(s) from the outbox before stopping", len(sent))
        except StoreError as exc:
            log.warning("could not deliver the outbox before stopping: %s", exc)
