"""``alert_history``: every transition of every alert instance (silenced ones included), append-only.

An incident is one instance firing until it resolves: its start is a transition
into firing, its end the next transition out of it.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple


COLUMNS = ["ts", "fingerprint", "rule", "labels", "from_state", "to_state", "value", "reason", "silenced"]
_LIST = ", ".join(COLUMNS)


@dataclass(frozen=True)
class AlertTransition:
    """One change of an alert instance's state (or of its health, from and to the same state)."""

    ts: dt.datetime
    fingerprint: str
    rule: str
    labels: dict[str, str]
    from_state: str
    to_state: str
    value: float | None
    reason: str
    silenced: bool


@dataclass(frozen=True)
class IncidentSpan:
    """One alert instance firing, from its transition into firing to the first one out of it."""

    fingerprint: str
    rule: str
    labels: dict[str, str]
    severity: str
    start: dt.datetime
    end: dt.datetime | None   # None while it still fires
    value: float | None


class Resolve(NamedTuple):
    fingerprint: str
    ts: dt.datetime


def _transitions(rows: list[tuple]) -> list[AlertTransition]:
    return [AlertTransition(ts, fp, rule, dict(labels), f, t, v, reason, bool(silenced))
            for ts, fp, rule, labels, f, t, v, reason, silenced in rows]


def append(store, rows: list[list]) -> None:
    if rows:
        store.insert("alert_history", rows, COLUMNS)


def remove_between(store, lo: dt.datetime, hi: dt.datetime) -> None:
    """Delete the transitions in [lo, hi] (a replay rebuilding that stretch)."""
    store.command("DELETE FROM alert_history WHERE ts >= {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')}",
                  {"lo": lo, "hi": hi})


def between(store, lo: dt.datetime, hi: dt.datetime, fingerprint: str | None = None,
            limit: int = 5000) -> list[AlertTransition]:
    """Transitions in [lo, hi) (of one instance when given), oldest first."""
    params = {"lo": lo, "hi": hi, "limit": limit}
    extra = ""
    if fingerprint:
        extra = "AND fingerprint = {fp:String} "
        params["fp"] = fingerprint
    return _transitions(store.query(
        f"SELECT {_LIST} FROM alert_history WHERE ts >= {{lo:DateTime64(3, 'UTC')}} AND ts < {{hi:DateTime64(3, 'UTC')}} "
        f"{extra}ORDER BY ts, fingerprint LIMIT {{limit:UInt32}}", params))


def newest_since(store, lo: dt.datetime, limit: int = 300) -> list[AlertTransition]:
    """The newest transitions since ``lo``, newest first."""
    return _transitions(store.query(f"SELECT {_LIST} FROM alert_history WHERE ts >= {{lo:DateTime64(3, 'UTC')}} "
                                    "ORDER BY ts DESC LIMIT {limit:UInt32}", {"lo": lo, "limit": limit}))


def labels_of(store, fingerprint: str) -> dict[str, str] | None:
    """The labels of an instance, from any of its transitions; None when it has none."""
    rows = store.query("SELECT labels FROM alert_history WHERE fingerprint = {fp:String} LIMIT 1", {"fp": fingerprint})
    return dict(rows[0][0]) if rows else None


def fired(store, lo: dt.datetime, hi: dt.datetime, limit: int | None = None) -> list[AlertTransition]:
    """Transitions into firing in [lo, hi), oldest first."""
    return _transitions(store.query(
        f"SELECT {_LIST} FROM alert_history WHERE to_state = 'firing' "
        "AND from_state != 'firing' AND ts >= {lo:DateTime64(3, 'UTC')} AND ts < {hi:DateTime64(3, 'UTC')} "
        "AND labels['severity'] != 'none' "  # the Watchdog (severity none) fires for ever: not an incident
        "ORDER BY ts" + (f" LIMIT {int(limit)}" if limit else ""), {"lo": lo, "hi": hi}))


def resolved(store, lo: dt.datetime, hi: dt.datetime) -> list[Resolve]:
    """Resolves (firing to inactive) in [lo, hi), oldest first."""
    return [Resolve(*r) for r in store.query(
        "SELECT fingerprint, ts FROM alert_history WHERE from_state = 'firing' AND to_state = 'inactive' "
        "AND ts >= {lo:DateTime64(3, 'UTC')} AND ts < {hi:DateTime64(3, 'UTC')} ORDER BY ts", {"lo": lo, "hi": hi})]


def _left_firing(store, fingerprints: list[str], since: dt.datetime) -> list[Resolve]:
    """These instances' transitions out of firing since ``since``, oldest first."""
    return [Resolve(*r) for r in store.query(
        "SELECT fingerprint, ts FROM alert_history WHERE from_state = 'firing' AND to_state != 'firing' "
        "AND fingerprint IN {fps:Array(String)} AND ts >= {lo:DateTime64(3, 'UTC')} ORDER BY ts",
        {"fps": fingerprints, "lo": since})]


def incident_spans(store, lo: dt.datetime, hi: dt.datetime) -> list[IncidentSpan]:
    """Each time an alert instance started firing in [lo, hi), oldest first."""
    rows = fired(store, lo, hi)
    if not rows:
        return []
    ends = _left_firing(store, sorted({r.fingerprint for r in rows}), lo)
    return [IncidentSpan(r.fingerprint, r.rule, r.labels, r.labels.get("severity", ""), r.ts,
                         next((e.ts for e in ends if e.fingerprint == r.fingerprint and e.ts >= r.ts), None), r.value)
            for r in rows]
