"""``job_runs``: every run of a job or of the alert engine: its window, duration, rows and error.

A run is written twice: a ``running`` row when it starts (:func:`start`) and its final row
(``ok``, ``error``, or ``interrupted`` when the process was stopped by a signal or Ctrl-C) when it
ends (:func:`record`), both with the run's ``run_id`` and ``started_at``. A run killed outright
(SIGKILL, out of memory, power loss) keeps only its ``running`` row, so every reader takes a run's
final row when there is one, and otherwise decides whether the run is still going:

- it runs in this process (:data:`_live`): ``running``;
- a later run of the same job has started: ``interrupted``;
- the store is embedded (chDB): ``interrupted``, because only one process can hold an embedded
  data directory, so the process that started the run is gone when another one reads the store;
- it started more than :data:`STALE_AFTER` ago: ``interrupted`` (a server store, whose scheduler
  is another process; the readers do not know the jobs' intervals, so the bound is fixed and
  generous enough for a long backfill, and a restarted scheduler marks it sooner by starting a
  later run);
- otherwise: ``running``.

An interrupted run is a failed run for alerting (``nlpmon_job_last_run_failed``,
``nlpmon_job_failures_total``) and never a success: :func:`last_success_end` reads ``ok`` rows only.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
COLUMNS = ["job", "run_id", "started_at", "window_start", "window_end", "duration_ms", "rows", "status", "error"]
UTC = dt.timezone.utc
# A run with no final row that started longer ago than this is interrupted, whatever the store.
STALE_AFTER = dt.timedelta(hours=6)
FAILED = ("error", "interrupted")
# Runs started by this process and not yet recorded: these, and only these, are known to be alive.
_live: set[uuid.UUID] = set()


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
    run_id: uuid.UUID | None = None  # set by the caller of start(); record() then closes that run


def start(store, job: str, run_id: uuid.UUID, started: dt.datetime, window_start: dt.datetime,
          window_end: dt.datetime) -> None:
    """Write the run's ``running`` row, so a run killed before it ends still leaves a trace.

    A store that is down is logged, not raised: the run still tries (its own writes may work by then).
    """
    _live.add(run_id)
    try:
        store.insert("job_runs", [[job, run_id, started, window_start, window_end, 0.0, 0, "running", ""]], COLUMNS)
    except Exception as exc:
        log.warning("could not record the start of %s: %s", job, exc)


def record(store, result: RunResult, started: dt.datetime) -> None:
    """Write the run's final row (same run_id and started_at as its start); a store that is down is logged,
    not raised: the next run recomputes from the last recorded success, so nothing is lost by a missing record."""
    run_id = result.run_id or uuid.uuid4()
    _live.discard(run_id)
    try:
        store.insert("job_runs", [[result.job, run_id, started, result.window_start, result.window_end,
                                   result.duration_ms, result.rows, result.status, result.error]], COLUMNS)
    except Exception as exc:
        log.warning("could not record run of %s: %s", result.job, exc)


@contextlib.contextmanager
def recorded(store, result: RunResult, started: dt.datetime):
    """Around a run's work: its start row first, its final row whatever happens (the one recorder of
    the jobs and the alert engine). A failure is recorded and not raised, so one job's failure never
    stops the others; an interruption (Ctrl-C, a signal handler's exit) is recorded, then raised."""
    start(store, result.job, result.run_id, started, result.window_start, result.window_end)
    t0 = time.perf_counter()
    try:
        yield result
    except Exception as exc:
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}"[:2000]
        log.warning("%s failed for %s..%s: %s", result.job, result.window_start, result.window_end, result.error)
    except BaseException as exc:
        result.status, result.error = "interrupted", type(exc).__name__
        raise
    finally:
        result.duration_ms = (time.perf_counter() - t0) * 1000
        record(store, result, started)


def last_success_end(store, job: str) -> dt.datetime | None:
    value = store.scalar("SELECT maxOrNull(window_end) FROM job_runs WHERE job = {job:String} AND status = 'ok'",
                         {"job": job})
    return value


def last_successes(store) -> dict[str, dt.datetime]:
    """Per job that ever succeeded: when its last successful run started (the alert engine's JobStalled
    reads it every evaluation, so one light query rather than :func:`latest`)."""
    return {job: ts for job, ts in store.query(
        "SELECT job, max(started_at) FROM job_runs WHERE status = 'ok' GROUP BY job")}


# One row per run: its final row's values when it has one (finished = 1), else its running row's.
_RUNS = (
    "SELECT job, run_id, min(started_at) AS started, countIf(status != 'running') > 0 AS finished, "
    "if(finished, anyIf(status, status != 'running'), 'running') AS final_status, "
    "anyIf(duration_ms, status != 'running') AS final_duration_ms, anyIf(rows, status != 'running') AS final_rows, "
    "anyIf(error, status != 'running') AS final_error, any(window_start) AS run_window_start, "
    "any(window_end) AS run_window_end FROM job_runs {where} GROUP BY job, run_id")


def _state(store, run_id, finished: bool, status: str, started: dt.datetime, later_started: bool,
           now: dt.datetime) -> str:
    """ok, error, interrupted or running: the rules in the module docstring."""
    if finished:
        return status
    if run_id in _live:
        return "running"
    if later_started or getattr(store, "embedded", False) or started < now - STALE_AFTER:
        return "interrupted"
    return "running"


@dataclass(frozen=True)
class JobRun:
    """One run of a job as recorded: ``finished_at`` and ``duration_ms`` None while it has no final row."""

    run_id: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    status: str                       # ok, error, running or interrupted
    window_start: dt.datetime
    window_end: dt.datetime
    rows: int
    duration_ms: float | None
    error: str


@dataclass(frozen=True)
class JobState(JobRun):
    """A job's last run, with what its other runs add (see :func:`latest`)."""

    failures: int = 0                           # error and interrupted runs within retention
    outcome: str | None = None                  # the status of the last run that has ended
    last_duration_ms: float | None = None       # the last finished run's
    last_ok_at: dt.datetime | None = None       # when the last successful run started
    last_ok_ms: int | None = None               # the same in epoch milliseconds
    last_ok_window_end: dt.datetime | None = None


def _run(store, r: dict, now: dt.datetime, later_started: bool) -> JobRun:
    started = r["started"]
    status = _state(store, r["run_id"], bool(r["finished"]), r["final_status"], started, later_started, now)
    done = bool(r["finished"])
    return JobRun(str(r["run_id"]), started,
                  started + dt.timedelta(milliseconds=r["final_duration_ms"]) if done else None, status,
                  r["run_window_start"], r["run_window_end"], r["final_rows"] if done else 0,
                  r["final_duration_ms"] if done else None, r["final_error"] if done else "")


def latest(store, now: dt.datetime | None = None) -> dict[str, JobState]:
    """Per job: its last run, with ``failures`` (error and interrupted runs within retention), ``outcome``
    (the status of the last run that has ended: the last run's, or while it runs the one before it's;
    None when none has ended), ``last_duration_ms`` (the last finished run's, None when none has
    finished), and its last success: ``last_ok_at`` (when it started), ``last_ok_ms`` (the same in epoch
    milliseconds) and ``last_ok_window_end`` (None when never).

    Read on every scrape, so it reads the last run's rows by the sort key and everything else in one
    pass per job, never grouping all runs: runs killed outright (a running row and no final one) are
    counted as the running rows less the final rows of runs that wrote one (since the job's first
    running row; older runs wrote only a final row).
    """
    now = now or dt.datetime.now(UTC)
    last_rows = store.query_dicts(_RUNS.format(
        where="WHERE (job, started_at) IN (SELECT job, max(started_at) FROM job_runs GROUP BY job)"))
    last = {}
    for r in sorted(last_rows, key=lambda r: r["finished"]):  # two runs started the same millisecond: a finished one
        last[r["job"]] = r
    totals = store.query_dicts(
        "SELECT r.job AS job, countIf(r.status IN ('error', 'interrupted')) AS failed, "
        "countIf(r.status = 'running') AS started_runs, "
        "countIf(r.status != 'running' AND r.started_at >= f.first_running) AS ended_runs, "
        "countIf(r.status != 'running') AS ended_rows, "
        "argMaxIf(r.duration_ms, r.started_at, r.status != 'running') AS last_duration_ms, "
        "countIf(r.status = 'ok') AS ok_runs, maxIf(r.started_at, r.status = 'ok') AS last_ok_at, "
        "argMaxIf(r.window_end, r.started_at, r.status = 'ok') AS last_ok_window_end, "
        # The run before the last: when it started, and when the last run before the last that ended did.
        "countIf(r.started_at < f.last_started) AS earlier_rows, "
        "maxIf(r.started_at, r.started_at < f.last_started) AS previous_started, "
        "maxIf(r.started_at, r.started_at < f.last_started AND r.status != 'running') AS previous_ended, "
        "argMaxIf(r.status, r.started_at, r.started_at < f.last_started AND r.status != 'running') AS previous_status "
        "FROM job_runs AS r INNER JOIN (SELECT job, minIf(started_at, status = 'running') AS first_running, "
        "max(started_at) AS last_started FROM job_runs GROUP BY job) AS f ON r.job = f.job GROUP BY r.job")
    out = {}
    for t in totals:
        if t["job"] not in last:
            continue  # a run written between the two reads: shown on the next one
        run = _run(store, last[t["job"]], now, later_started=False)
        unfinished = run.finished_at is None
        # Runs that never wrote a final row, the last one aside (its own state is decided above).
        killed = max(0, t["started_runs"] - t["ended_runs"] - unfinished)
        ok_at = t["last_ok_at"] if t["ok_runs"] else None
        # What the last run that has ended came to: while the last one runs, the one before it.
        outcome = run.status if run.status != "running" else None
        if outcome is None and t["earlier_rows"]:  # the run before it ended when it has a final row
            outcome = t["previous_status"] if t["previous_ended"] == t["previous_started"] else "interrupted"
        out[t["job"]] = JobState(
            **vars(run), failures=t["failed"] + killed + (unfinished and run.status == "interrupted"), outcome=outcome,
            last_duration_ms=t["last_duration_ms"] if t["ended_rows"] else None,
            last_ok_at=ok_at, last_ok_ms=int(ok_at.timestamp() * 1000) if ok_at else None,
            last_ok_window_end=t["last_ok_window_end"] if t["ok_runs"] else None)
    return dict(sorted(out.items()))


def history(store, job: str, limit: int = 20, now: dt.datetime | None = None) -> list[JobRun]:
    """The job's last ``limit`` runs, newest first, each as in :func:`latest` (without the job totals)."""
    now = now or dt.datetime.now(UTC)
    recent = ("WHERE job = {job:String} AND started_at IN (SELECT started_at FROM job_runs WHERE job = {job:String} "
              "ORDER BY started_at DESC LIMIT {rows:UInt32})")  # two rows a run
    rows = store.query_dicts(
        f"SELECT *, (SELECT max(started_at) FROM job_runs WHERE job = {{job:String}}) AS job_last "
        f"FROM ({_RUNS.format(where=recent)}) ORDER BY started DESC LIMIT {{limit:UInt32}}",
        {"job": job, "limit": limit, "rows": 2 * limit})
    return [_run(store, r, now, later_started=r["started"] < r["job_last"]) for r in rows]
