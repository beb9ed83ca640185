"""What every scheduled job shares: closed windows, catch-up, idempotent writes, run records.

A job computes windows that have closed (plus ``jobs.grace`` for ingest lag).
Each run starts where the last successful run ended, minus a recompute horizon
so late rows are counted, and never further back than ``jobs.catchup_max``.
Rows go to ``metric_points`` keyed by (metric, window, labels, ts): a rerun
replaces what an earlier or interrupted run wrote, never doubles it.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable

from monitor.config import Config
from monitor.storage import Store

log = logging.getLogger(__name__)

WINDOWS = {"1m": 60, "5m": 300, "30m": 1800, "1h": 3600, "2h": 7200, "6h": 21600, "1d": 86400, "3d": 259200,
           "7d": 604800, "30d": 2592000}
POINT_COLUMNS = ["ts", "window", "metric", "labels", "value", "computed_at"]
UTC = dt.timezone.utc


def floor_to(ts: dt.datetime, seconds: int) -> dt.datetime:
    epoch = int(ts.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def window_name(seconds: int) -> str:
    for name, s in WINDOWS.items():
        if s == seconds:
            return name
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


@dataclass
class Point:
    ts: dt.datetime  # end of the window: the value covers [ts - window, ts)
    window: str
    metric: str
    labels: dict[str, str]
    value: float


@dataclass
class RunResult:
    job: str
    window_start: dt.datetime
    window_end: dt.datetime
    rows: int = 0
    status: str = "ok"
    error: str = ""
    duration_ms: float = 0.0
    details: dict = field(default_factory=dict)


class Job:
    """A named computation over [range_start, range_end) that writes points."""

    name: str = ""
    description: str = ""
    show_progress = False  # progress bars for long work when a person is watching (CLI)
    embedder = None  # monitor.embeddings.Embedder, made on first use by jobs that embed text

    def __init__(self, store: Store, config: Config, clock, interval: dt.timedelta):
        self.store = store
        self.config = config
        self.clock = clock
        self.interval = interval
        self.recompute = self.recompute_horizon()
        self.chunk_size = 50_000
        # Called after each chunk of points is written (tests use it to interrupt a run midway).
        self.after_chunk: Callable[[int], None] | None = None

    # -- to implement -----------------------------------------------------------
    def minimum_recompute(self) -> dt.timedelta:
        """How far back every run must recompute, whatever jobs.recompute says (data that trails)."""
        return dt.timedelta(0)

    def recompute_horizon(self) -> dt.timedelta:
        return max(self.config.jobs.recompute, self.minimum_recompute())

    def catchup_limit(self) -> dt.timedelta:
        """How far back a run may reach after the job was stopped."""
        return self.config.jobs.catchup_max

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        raise NotImplementedError

    def embeddings(self):
        if self.embedder is None:
            from monitor.embeddings import Embedder
            self.embedder = Embedder(self.store, self.config, self.clock)
        return self.embedder

    # -- running ----------------------------------------------------------------
    def due_range(self, now: dt.datetime, since: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
        end = floor_to(now - self.config.jobs.grace, 60)
        oldest = end - self.catchup_limit()
        if since is not None:
            return floor_to(since, 60), end
        last = self.last_success_end()
        start = oldest if last is None else max(oldest, min(last, end) - self.recompute)
        return floor_to(start, 60), end

    def last_success_end(self) -> dt.datetime | None:
        value = self.store.scalar("SELECT maxOrNull(window_end) FROM job_runs WHERE job = {job:String} "
                                  "AND status = 'ok'", {"job": self.name})
        return value.replace(tzinfo=UTC) if value is not None else None

    def run(self, now: dt.datetime | None = None, since: dt.datetime | None = None) -> RunResult:
        """Compute the due windows as of ``now``; record the run whatever happens."""
        now = now or self.clock.now()
        started = self.clock.now()
        t0 = time.perf_counter()
        start, end = self.due_range(now, since)
        result = RunResult(self.name, start, end)
        try:
            if end > start:
                result.rows = self._write(self.compute(start, end))
        except Exception as exc:  # recorded, and one job's failure never stops the others
            result.status, result.error = "error", f"{type(exc).__name__}: {exc}"[:2000]
            log.warning("job %s failed for %s..%s: %s", self.name, start, end, result.error)
        result.duration_ms = (time.perf_counter() - t0) * 1000
        self._record(result, started)
        return result

    def _write(self, points: Iterable[Point]) -> int:
        computed_at = self.clock.now()
        total, chunk = 0, []
        for p in points:
            chunk.append([p.ts, p.window, p.metric, p.labels, float(p.value), computed_at])
            if len(chunk) >= self.chunk_size:
                total += self._flush(chunk)
                chunk = []
        if chunk:
            total += self._flush(chunk)
        return total

    def _flush(self, chunk: list) -> int:
        self.store.insert("metric_points", chunk, POINT_COLUMNS)
        if self.after_chunk is not None:
            self.after_chunk(len(chunk))
        return len(chunk)

    def _record(self, r: RunResult, started: dt.datetime) -> None:
        try:
            self.store.insert("job_runs", [[self.name, uuid.uuid4(), started, r.window_start, r.window_end,
                                            r.duration_ms, r.rows, r.status, r.error]],
                              ["job", "run_id", "started_at", "window_start", "window_end", "duration_ms", "rows",
                               "status", "error"])
        except Exception as exc:  # the store is down: the next run recomputes from the last recorded success
            log.warning("could not record run of %s: %s", self.name, exc)


def window_ends(start: dt.datetime, end: dt.datetime, seconds: int) -> tuple[dt.datetime, dt.datetime] | None:
    """First and last end of the ``seconds``-long aligned windows ending in (start, end]."""
    last = floor_to(end, seconds)
    first = floor_to(start, seconds) + dt.timedelta(seconds=seconds)
    return (first, last) if first <= last else None


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None
