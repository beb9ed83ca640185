"""What every windowed job shares, whichever capability it belongs to (the metric jobs, the review
queue's sampling): closed windows, catch-up, idempotent writes, run records.

A job computes windows that have closed (plus ``jobs.grace`` for ingest lag).
Each run starts where the last successful run ended, minus a recompute horizon
so late rows are counted, and never further back than ``jobs.catchup_max``.
Rows go to ``metric_points`` keyed by (metric, window, labels, ts): a rerun
replaces what an earlier or interrupted run wrote, never doubles it.
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Callable, Iterable

from monitor.foundation.config import Config
from monitor.foundation.metrics import Point, floor_to
from monitor.foundation.storage import Store
from monitor.foundation.tables import job_runs, metric_points
from monitor.foundation.tables.job_runs import RunResult


class Job:
    """A named computation over [range_start, range_end) that writes points."""

    name: str = ""
    description: str = ""
    show_progress = False  # progress bars for long work when a person is watching (CLI)
    start_offset = dt.timedelta(0)

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
        return job_runs.last_success_end(self.store, self.name)

    def run(self, now: dt.datetime | None = None, since: dt.datetime | None = None) -> RunResult:
        """Compute the due windows as of ``now``; record the run whatever happens."""
        now = now or self.clock.now()
        started = self.clock.now()
        start, end = self.due_range(now, since)
        result = RunResult(self.name, start, end, run_id=uuid.uuid4())
        # Recorded before any work, so a run killed midway shows as interrupted rather than not at all.
        with job_runs.recorded(self.store, result, started):
            if end > start:
                result.rows = self._write(self.compute(start, end))
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
        metric_points.insert(self.store, chunk)
        if self.after_chunk is not None:
            self.after_chunk(len(chunk))
        return len(chunk)
