"""``notification_log``: per (group, receiver), what was last notified and when (Alertmanager's nflog)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


COLUMNS = ["group_key", "receiver", "firing", "resolved", "notified_at", "active", "updated_at"]


@dataclass(frozen=True)
class LogEntry:
    """What a group last told a receiver: the fingerprints firing and resolved in it, when; ``active``
    until the group has closed (everything in it resolved or gone)."""

    group_key: str
    receiver: str
    firing: tuple[str, ...]
    resolved: tuple[str, ...]
    notified_at: dt.datetime
    active: bool


def entries(store) -> dict[tuple[str, str], LogEntry]:
    """(group_key, receiver) -> its latest entry."""
    out = {}
    for key, receiver, firing, resolved, at, active, _ in store.query(
            f"SELECT {', '.join(COLUMNS)} FROM notification_log FINAL"):
        out[(key, receiver)] = LogEntry(key, receiver, tuple(firing), tuple(resolved), at, bool(active))
    return out


def write_many(store, entries: list[LogEntry]) -> None:
    """New entries in one insert."""
    if entries:
        store.insert("notification_log", [[e.group_key, e.receiver, list(e.firing), list(e.resolved), e.notified_at,
                                           e.active, e.notified_at] for e in entries], COLUMNS)


def sync_replica(store) -> None:
    """On a cluster, wait until this replica has every part of the table (a new active scheduler)."""
    store.sync_replica("notification_log")
