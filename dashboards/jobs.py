"""The jobs' runs over HTTP, scope ``read``: GET /v1/jobs (each job's last run and last success) and
GET /v1/jobs/<name> (its recent runs).

A run that never finished shows as ``running`` or ``interrupted``; how the two are told apart is
``monitor.foundation.tables.job_runs``'s to decide. Jobs are listed from what they recorded: a job
that has never run has no row (``nlpmon jobs list`` shows the configured ones).
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from monitor.foundation.auth import require
from monitor.foundation.clock import iso_utc
from monitor.foundation.http import ApiError
from monitor.foundation.tables import job_runs
from monitor.foundation.tables.job_runs import JobRun

bp = Blueprint("jobs", __name__)
MAX_LIMIT = 1000


def _services():
    return current_app.extensions["nlpmon"]


def _time(value):
    return iso_utc(value) if value is not None else None


def _run(run: JobRun) -> dict:
    return {"run_id": run.run_id, "status": run.status, "started_at": _time(run.started_at),
            "finished": run.finished_at is not None, "finished_at": _time(run.finished_at),
            "window": {"from": _time(run.window_start), "to": _time(run.window_end)},
            "rows": run.rows, "duration_ms": run.duration_ms,
            "error": run.error.splitlines()[0][:500] if run.error else ""}


@bp.get("/v1/jobs")
@require("read")
def list_jobs():
    svc = _services()
    jobs = []
    for name, run in job_runs.latest(svc.store, svc.clock.now()).items():
        success = None
        if run.last_ok_at is not None:
            success = {"started_at": _time(run.last_ok_at), "window_end": _time(run.last_ok_window_end)}
        jobs.append({"job": name, "last_run": _run(run), "last_success": success, "failures": run.failures})
    return jsonify({"jobs": jobs})


@bp.get("/v1/jobs/<name>")
@require("read")
def job_runs_of(name: str):
    svc = _services()
    try:
        limit = min(max(int(request.args.get("limit", 20)), 1), MAX_LIMIT)
    except ValueError:
        raise ApiError(400, "bad_request", "limit: must be an integer") from None
    runs = job_runs.history(svc.store, name, limit, svc.clock.now())
    if not runs:
        raise ApiError(404, "not_found", f"no recorded run of a job named {name!r}")
    return jsonify({"job": name, "runs": [_run(r) for r in runs]})
