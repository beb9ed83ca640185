"""``rejected_events``: rows that failed validation, with their reasons and the raw text (redacted)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

COLUMNS = ["rejected_id", "received_at", "kind", "batch_id", "row_index", "field", "reason", "raw", "api_key_id"]


def insert(store, rows: list[list]) -> None:
    if rows:
        store.insert("rejected_events", rows, COLUMNS)


@dataclass(frozen=True)
class RejectedRow:
    """A row refused at ingest, kept as it was sent (redacted), with every reason."""

    received_at: dt.datetime
    kind: str          # requests or feedback
    batch_id: str
    row_index: int     # its place in its batch
    field: str         # the first field named
    reason: str        # every field and reason
    raw: str


def recent(store, kind: str | None, limit: int) -> list[RejectedRow]:
    """The newest rejected rows (of one kind when given)."""
    where = "WHERE kind = {kind:String}" if kind else ""
    return [RejectedRow(**r) for r in store.query_dicts(
        f"SELECT received_at, kind, batch_id, row_index, field, reason, raw FROM rejected_events {where} "
        "ORDER BY received_at DESC LIMIT {limit:UInt32}", {"kind": kind or "", "limit": limit})]


def count_between(store, lo, hi) -> int:
    """Rows rejected in [lo, hi)."""
    return int(store.scalar("SELECT count() FROM rejected_events WHERE received_at >= {lo:DateTime64(3, 'UTC')} "
                            "AND received_at < {hi:DateTime64(3, 'UTC')}", {"lo": lo, "hi": hi}) or 0)
