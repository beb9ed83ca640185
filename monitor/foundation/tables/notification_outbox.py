"""``notification_outbox``: notifications decided and not yet (or already) delivered.

A ReplacingMergeTree by ``updated_at``: every attempt writes a new version of
its row, strictly later than the one it replaces. The id is deterministic per
decision, so deciding again after a crash finds the row instead of adding one.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import astuple, dataclass, fields


@dataclass(frozen=True)
class OutboxRow:
    """One notification decided, in one version: each attempt writes the next (``updated_at`` later)."""

    id: str                        # derived from the decision: deciding again finds it
    group_key: str
    receiver: str
    kind: str                      # the receiver kind its payload was built for
    status: str                    # pending, sent, failed or superseded
    alert_status: str              # firing or resolved
    payload: str                   # JSON, as the kind stores it (no secrets)
    created_at: dt.datetime
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str
    sent_at: dt.datetime | None
    updated_at: dt.datetime


COLUMNS = tuple(f.name for f in fields(OutboxRow))


def write(store, row: OutboxRow) -> None:
    """A new version of the row."""
    write_many(store, [row])


def write_many(store, rows: list[OutboxRow]) -> None:
    """New versions of rows, in one insert."""
    if rows:
        store.insert("notification_outbox", [list(astuple(row)) for row in rows], COLUMNS)


def existing(store, ids: list[str]) -> set[str]:
    """Those of ``ids`` that have a row."""
    if not ids:
        return set()
    return {r[0] for r in store.query("SELECT DISTINCT id FROM notification_outbox WHERE id IN {ids:Array(String)}",
                                      {"ids": list(ids)})}


def rows(store, status: str | None = None) -> list[OutboxRow]:
    """Current version of every row (oldest first), optionally of one status."""
    where = "WHERE status = {status:String}" if status else ""
    return [OutboxRow(**r) for r in store.query_dicts(
        f"SELECT * FROM notification_outbox FINAL {where} ORDER BY created_at, id", {"status": status} if status else None)]


def get(store, id: str) -> OutboxRow | None:
    found = store.query_dicts("SELECT * FROM notification_outbox FINAL WHERE id = {id:String}", {"id": id})
    return OutboxRow(**found[0]) if found else None


def due(store, now: dt.datetime) -> list[OutboxRow]:
    """Pending rows whose next attempt is due, oldest first."""
    return [OutboxRow(**r) for r in store.query_dicts(
        "SELECT * FROM notification_outbox FINAL WHERE status = 'pending' "
        "AND next_attempt_at <= {now:DateTime64(3, 'UTC')} ORDER BY created_at, id", {"now": now})]


def newest_created(store, group_keys: list[str]) -> dict[tuple[str, str], dt.datetime]:
    """(group_key, receiver) -> when its newest notification was decided."""
    return {(g, r): t for g, r, t in store.query(
        "SELECT group_key, receiver, max(created_at) FROM notification_outbox "
        "WHERE group_key IN {keys:Array(String)} GROUP BY group_key, receiver", {"keys": group_keys})}


def pending_count(store) -> int:
    return int(store.scalar("SELECT count() FROM notification_outbox FINAL WHERE status = 'pending'") or 0)


# Deliveries to machines, not people: the Watchdog's heartbeats (its route is named "watchdog") and the
# re-sends an Alertmanager needs every minute while an alert fires (it pages people by its own rules).
_TO_MACHINES = "(kind = 'alertmanager' OR startsWith(group_key, 'watchdog:'))"


def sent_between(store, lo: dt.datetime, hi: dt.datetime) -> list[dt.datetime]:
    """When each notification to people delivered in [lo, hi) was sent (see _TO_MACHINES)."""
    return [r[0] for r in store.query(
        f"SELECT sent_at FROM notification_outbox FINAL WHERE status = 'sent' AND NOT {_TO_MACHINES} "
        "AND sent_at >= {lo:DateTime64(3, 'UTC')} AND sent_at < {hi:DateTime64(3, 'UTC')}", {"lo": lo, "hi": hi})]


def undeliverable(store, since: dt.datetime, attempts: int) -> dict[str, int]:
    """receiver -> notifications that failed for good since ``since``, or are still pending after
    ``attempts`` attempts (what cannot be delivered right now)."""
    return dict(store.query(
        "SELECT receiver, count() FROM notification_outbox FINAL WHERE (status = 'failed' "
        "AND updated_at >= {since:DateTime64(3, 'UTC')}) OR (status = 'pending' AND attempts >= {n:UInt32}) "
        "GROUP BY receiver", {"since": since, "n": attempts}))


def sync_replica(store) -> None:
    """On a cluster, wait until this replica has every part of the table (a new active scheduler)."""
    store.sync_replica("notification_outbox")
