"""``alert_history``: every transition of every alert instance (silenced ones included), append-only.

An incident is one instance firing until it resolves: its start is a transition
into firing, its end the next transition out of it.
"""
from __future__ import annotations

import datetime as dt


COLUMNS = ["ts", "fingerprint", "rule", "labels", "from_state", "to_state", "value", "reason", "silenced"]
_LIST = "ts, fingerprint, rule, labels, from_state, to_state, value, reason, silenced"


def append(store, rows: list[list]) -> None:
    if rows:
        store.insert("alert_history", rows, COLUMNS)


def remove_between(store, lo: dt.datetime, hi: dt.datetime) -> None:
    """Delete the transitions in [lo, hi] (a replay rebuilding that stretch)."""
    store.command("DELETE FROM alert_history WHERE ts >= {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')}",
                  {"lo": lo, "hi": hi})


def between(store, lo: dt.datetime, hi: dt.datetime, fingerprint: str | None = None,
            limit: int = 5000) -> list[dict]:
    """Transitions in [lo, hi) (of one instance when given), oldest first."""
    params = {"lo": lo, "hi": hi, "limit": limit}
    extra = ""
    if fingerprint:
        extra = "AND fingerprint = {fp:String} "
        params["fp"] = fingerprint
    return store.query_dicts(
        f"SELECT {_LIST} FROM alert_history WHERE ts >= {{lo:DateTime64(3, 'UTC')}} AND ts < {{hi:DateTime64(3, 'UTC')}} "
        f"{extra}ORDER BY ts, fingerprint LIMIT {{limit:UInt32}}", params)


def newest_since(store, lo: dt.datetime, limit: int = 300) -> list[dict]:
    """The newest transitions since ``lo``, newest first."""
    return store.query_dicts(f"SELECT {_LIST} FROM alert_history WHERE ts >= {{lo:DateTime64(3, 'UTC')}} "
                             "ORDER BY ts DESC LIMIT {limit:UInt32}", {"lo": lo, "limit": limit})


def labels_of(store, fingerprint: str) -> dict[str, str] | None:
    """The labels of an instance, from any of its transitions; None when it has none."""
    rows = store.query("SELECT labels FROM alert_history WHERE fingerprint = {fp:String} LIMIT 1", {"fp": fingerprint})
    return dict(rows[0][0]) if rows else None


def fired(store, lo: dt.datetime, hi: dt.datetime, limit: int | None = None) -> list[dict]:
    """Transitions into firing in [lo, hi), oldest first: fingerprint, rule, labels, ts, value."""
    return store.query_dicts(
        "SELECT fingerprint, rule, labels, ts, value FROM alert_history WHERE to_state = 'firing' "
        "AND from_state != 'firing' AND ts >= {lo:DateTime64(3, 'UTC')} AND ts < {hi:DateTime64(3, 'UTC')} "
        "AND labels['severity'] != 'none' "  # the Watchdog (severity none) fires for ever: not an incident
        "ORDER BY ts" + (f" LIMIT {int(limit)}" if limit else ""), {"lo": lo, "hi": hi})


def resolved(store, lo: dt.datetime, hi: dt.datetime) -> list[tuple]:
    """(fingerprint, ts) of resolves (firing to inactive) in [lo, hi), oldest first."""
    return store.query(
        "SELECT fingerprint, ts FROM alert_history WHERE from_state = 'firing' AND to_state = 'inactive' "
        "AND ts >= {lo:DateTime64(3, 'UTC')} AND ts < {hi:DateTime64(3, 'UTC')} ORDER BY ts", {"lo": lo, "hi": hi})


def _left_firing(store, fingerprints: list[str], since: dt.datetime) -> list[tuple]:
    """(fingerprint, ts) of these instances' transitions out of firing since ``since``, oldest first."""
    return store.query(
        "SELECT fingerprint, ts FROM alert_history WHERE from_state = 'firing' AND to_state != 'firing' "
        "AND fingerprint IN {fps:Array(String)} AND ts >= {lo:DateTime64(3, 'UTC')} ORDER BY ts",
        {"fps": fingerprints, "lo": since})


def incident_spans(store, lo: dt.datetime, hi: dt.datetime) -> list[dict]:
    """Each time an alert instance started firing in [lo, hi): its rule, labels, start and end
    (the first resolve after it, or None while it still fires), oldest first."""
    rows = fired(store, lo, hi)
    if not rows:
        return []
    ends = _left_firing(store, sorted({r["fingerprint"] for r in rows}), lo)
    out = []
    for r in rows:
        began = r["ts"]
        end = next((ts for fp, ts in ends if fp == r["fingerprint"] and ts >= began), None)
        out.append({"fingerprint": r["fingerprint"], "rule": r["rule"], "labels": dict(r["labels"]),
                    "severity": r["labels"].get("severity", ""), "start": began, "end": end, "value": r["value"]})
    return out
