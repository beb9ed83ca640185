"""``job_runs``: one row per run of a job or of the alert engine: its window, duration, rows and error."""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
COLUMNS = ["job", "run_id", "started_at", "window_start", "window_end", "duration_ms", "rows", "status", "error"]


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


def record(store, result: RunResult, started: dt.datetime) -> None:
    """Keep the run; a store that is down is logged, not raised: the next run recomputes from the
    last recorded success, so nothing is lost by a missing record."""
    try:
        store.insert("job_runs", [[result.job, uuid.uuid4(), started, result.window_start, result.window_end,
                                   result.duration_ms, result.rows, result.status, result.error]], COLUMNS)
    except Exception as exc:
        log.warning("could not record run of %s: %s", result.job, exc)


def last_success_end(store, job: str) -> dt.datetime | None:
    value = store.scalar("SELECT maxOrNull(window_end) FROM job_runs WHERE job = {job:String} AND status = 'ok'",
                         {"job": job})
    return value.replace(tzinfo=dt.timezone.utc) if value is not None else None


def latest(store) -> dict[str, dict]:
    """Per job: its last run (started_at, status, duration_ms, rows, error), its failed runs (failures)
    and when it last succeeded (last_ok_ms, epoch milliseconds, None when never)."""
    rows = store.query_dicts(
        "SELECT job, max(started_at) AS last_started, argMax(status, started_at) AS last_status, "
        "argMax(duration_ms, started_at) AS last_duration_ms, argMax(rows, started_at) AS last_rows, "
        "argMax(error, started_at) AS last_error, countIf(status = 'error') AS failures, "
        "toUnixTimestamp64Milli(maxIf(started_at, status = 'ok')) AS last_ok_ms FROM job_runs GROUP BY job")
    return {r["job"]: {"started_at": r["last_started"], "status": r["last_status"], "duration_ms": r["last_duration_ms"],
                       "rows": r["last_rows"], "error": r["last_error"], "failures": r["failures"],
                       "last_ok_ms": r["last_ok_ms"]} for r in rows}
