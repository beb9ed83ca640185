"""``alert_state``: every alert instance's current state, health and times (a ReplacingMergeTree by
``updated_at``: writing an instance again replaces it)."""
from __future__ import annotations

import datetime as dt

from monitor.foundation.clock import utc

COLUMNS = ["fingerprint", "rule", "labels", "annotations", "state", "health", "value", "active_at", "fired_at",
           "resolved_at", "last_true_at", "updated_at"]
_TIMES = ("active_at", "fired_at", "resolved_at", "last_true_at", "updated_at")


def _utc(rows: list[dict]) -> list[dict]:
    for r in rows:
        for k in _TIMES:
            if r.get(k) is not None:
                r[k] = utc(r[k])
    return rows


def all_instances(store) -> list[dict]:
    """Every instance, with every column (times in UTC)."""
    return _utc(store.query_dicts(f"SELECT {', '.join(COLUMNS)} FROM alert_state FINAL"))


def write(store, rows: list[list]) -> None:
    """Rows of COLUMNS, each replacing its instance's previous row."""
    if rows:
        store.insert("alert_state", rows, COLUMNS)


def remove_updated_until(store, until: dt.datetime) -> None:
    """Delete the instances last written at or before ``until`` (a replay rebuilding the state up to then)."""
    store.command("DELETE FROM alert_state WHERE updated_at <= {t:DateTime64(3, 'UTC')}", {"t": until})


def active(store) -> list[dict]:
    """Pending and firing instances, firing first, each by when it fired (then became active)."""
    return _utc(store.query_dicts(
        "SELECT fingerprint, rule, labels, annotations, state, health, value, active_at, fired_at FROM alert_state "
        "FINAL WHERE state IN ('firing', 'pending') ORDER BY state = 'pending', fired_at, active_at"))


def firing_or_resolved_since(store, since: dt.datetime) -> list[dict]:
    """Firing instances and those resolved after ``since``, that fired at some point: what the
    notification dispatcher groups."""
    rows = _utc(store.query_dicts(
        "SELECT fingerprint, rule, labels, annotations, state, value, fired_at, resolved_at FROM alert_state FINAL "
        "WHERE state = 'firing' OR (state = 'inactive' AND resolved_at IS NOT NULL "
        "AND resolved_at > {lo:DateTime64(3, 'UTC')})", {"lo": since}))
    return [r for r in rows if r["fired_at"] is not None]


def sync_replica(store) -> None:
    """On a cluster, wait until this replica has every part of the table (a new active scheduler)."""
    store.sync_replica("alert_state")
