"""``drift_reports``: one row per drift comparison (stratum, window, end): the decision, its
explanation and the Evidently snapshot. The id is stable per comparison, so a rerun replaces its row."""
from __future__ import annotations

import datetime as dt

from monitor.foundation.filters import where_equal

COLUMNS = ["report_id", "ts", "window", "service", "feature", "status", "drift_detected", "reference_from",
           "reference_to", "summary", "explanation", "snapshot", "created_at"]
LIST_COLUMNS = "report_id, ts, window, service, feature, status, drift_detected, reference_from, reference_to, summary"


def insert(store, row: dict) -> None:
    store.insert("drift_reports", [[row[c] for c in COLUMNS]], COLUMNS)


def search(store, equal: dict[str, str], detected: bool | None, lo: dt.datetime | None, hi: dt.datetime | None,
           limit: int) -> list[dict]:
    """Reports (LIST_COLUMNS), newest first, with these column values, decision and ``ts`` in [lo, hi)."""
    conditions, params = where_equal(equal, ("service", "feature", "window", "status"))
    where, params["limit"] = ["1" + conditions], limit
    if detected is not None:
        where.append("drift_detected = {detected:Bool}")
        params["detected"] = detected
    for name, op, ts in (("from", ">=", lo), ("to", "<", hi)):
        if ts is not None:
            where.append(f"ts {op} toDateTime64({{{name}:Float64}}, 3, 'UTC')")
            params[name] = ts.timestamp()
    return store.query_dicts(
        f"SELECT {LIST_COLUMNS} FROM drift_reports FINAL WHERE {' AND '.join(where)} "
        "ORDER BY ts DESC, service, feature, window LIMIT {limit:UInt32}", params)


def get(store, report_id: str, columns: str = LIST_COLUMNS) -> dict | None:
    rows = store.query_dicts(
        f"SELECT {columns} FROM drift_reports FINAL WHERE report_id = {{id:String}} LIMIT 1", {"id": report_id})
    return rows[0] if rows else None


def runs(store, lo: dt.datetime, hi: dt.datetime, equal: dict[str, str], limit: int = 200) -> list[dict]:
    """Reports ending in (lo, hi] with these column values, newest first, with their summary and
    explanation and whether a snapshot exists (not the snapshot itself)."""
    where, params = where_equal(equal, ("service", "feature"))
    params.update(lo=lo, hi=hi)
    return store.query_dicts(
        "SELECT report_id, ts, window, service, feature, status, drift_detected, summary, explanation, "
        "snapshot != '' AS has_snapshot FROM drift_reports FINAL "
        "WHERE ts > {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')}" + where +
        f" ORDER BY ts DESC, service, feature, window LIMIT {int(limit)}", params)


def latest_per_stratum(store, lo: dt.datetime, hi: dt.datetime) -> list[dict]:
    """The newest report per (service, feature) ending in (lo, hi], preferring full-day windows."""
    return store.query_dicts(
        "SELECT service, feature, argMax(report_id, (window = '1d', ts)) AS report_id, "
        "argMax(status, (window = '1d', ts)) AS status, argMax(drift_detected, (window = '1d', ts)) AS detected, "
        "argMax(ts, (window = '1d', ts)) AS last_ts, argMax(window, (window = '1d', ts)) AS last_window "
        "FROM drift_reports FINAL WHERE ts > {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')} "
        "GROUP BY service, feature", {"lo": lo, "hi": hi})


def ending_between(store, lo: dt.datetime, hi: dt.datetime, where: str, params: dict) -> list[dict]:
    """Reports ending in (lo, hi], oldest first; ``where`` filters (conditions starting with AND)."""
    return store.query_dicts(
        "SELECT report_id, ts, window, service, feature, status, drift_detected, summary != '' AS has_summary "
        "FROM drift_reports FINAL WHERE ts > {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')}"
        + where + " ORDER BY ts", {**params, "lo": lo, "hi": hi})
