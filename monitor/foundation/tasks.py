"""What the scheduler runs: a scheduled task, whether a job, the alert engine or the OTLP join.

The scheduler knows tasks only through this interface, so a new kind of task is a
class with these members, not a new branch in the scheduler.
"""
from __future__ import annotations

import datetime as dt
from typing import Protocol, runtime_checkable

from monitor.foundation.clock import Clock
from monitor.foundation.tables.job_runs import RunResult


@runtime_checkable
class ScheduledTask(Protocol):
    name: str
    description: str
    interval: dt.timedelta       # from jobs.schedule
    start_offset: dt.timedelta   # after the scheduler starts, when its first run is (ticks follow every interval)
    show_progress: bool          # progress bars, when a person runs it from the CLI
    clock: Clock

    def run(self, now: dt.datetime | None = None, since: dt.datetime | None = None) -> RunResult:
        """One run as of ``now`` (its scheduled tick), recorded in job_runs whatever happens; ``since``
        recomputes from then (the CLI's --from)."""
