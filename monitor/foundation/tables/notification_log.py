"""``notification_log``: per (group, receiver), what was last notified and when (Alertmanager's nflog)."""
from __future__ import annotations

from monitor.foundation.clock import utc

COLUMNS = ["group_key", "receiver", "firing", "resolved", "notified_at", "active", "updated_at"]


def entries(store) -> dict[tuple[str, str], dict]:
    """(group_key, receiver) -> its latest entry."""
    out = {}
    for r in store.query_dicts(f"SELECT {', '.join(COLUMNS)} FROM notification_log FINAL"):
        r["notified_at"] = utc(r["notified_at"])
        out[(r["group_key"], r["receiver"])] = r
    return out


def write_many(store, entries: list[tuple]) -> None:
    """New entries, (group_key, receiver, firing, resolved, notified_at, active) each, in one insert."""
    if entries:
        store.insert("notification_log", [[*e, e[4]] for e in entries], COLUMNS)


def sync_replica(store) -> None:
    """On a cluster, wait until this replica has every part of the table (a new active scheduler)."""
    store.sync_replica("notification_log")
