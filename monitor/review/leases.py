"""Leases on review items: an item is one reviewer's at a time, across API instances.

Leasing an item is a claim only one reviewer can win. The lease row is inserted with the
de-duplication token ``review:<item>:<the lease version it replaces>``, so of two instances
that picked the same free item at the same moment ClickHouse keeps one row; each reads the
item's lease back, and the one that lost picks another item.

Lease times are stored in milliseconds and a claim is recognised by reading its expiry back,
so every time here is taken at that precision first (with a real clock's microseconds every
claim read as lost, and reviewers were told nothing was left).
"""
from __future__ import annotations

import datetime as dt
import threading

from monitor.foundation.clock import to_millis
from monitor.foundation.tables import review

# Within a process, picking and claiming are serialized anyway (fewer lost claims to retry).
_lease_lock = threading.Lock()
_CLAIM_ATTEMPTS = 8


def lease_next(store, reviewer: str, now: dt.datetime, lease: dt.timedelta, service: str | None = None,
               feature: str | None = None, by_proxy: bool = False) -> tuple[dict, dt.datetime] | None:
    """Lease the next unlabelled item to ``reviewer`` (their own unexpired lease first, then the oldest,
    or the highest grounding proxy first with ``by_proxy``): (item, lease expiry), or None when none is left.

    The item has request_id, service, feature, request_ts and ungrounded_proxy.
    """
    lost: list[str] = []
    now, lease_end = to_millis(now), to_millis(now + lease)
    with _lease_lock:
        for _ in range(_CLAIM_ATTEMPTS):
            item = review.next_candidate(store, reviewer, now, service, feature, by_proxy, lost)
            if item is None:
                return None
            # A lease row's version is its leased_at (ReplacingMergeTree(leased_at)), made to grow even
            # when this process's clock is behind the last holder's, so a row that lands always replaces
            # the one it claims over. The token names that version: of all claims on it exactly one lands.
            leased_at, previous = _next_version(now, item["held_at"] if item["held_by"] else None)
            review.write_lease(store, item["request_id"], reviewer, leased_at, lease_end,
                               token=f"review:{item['request_id']}:{previous}")
            if _same_lease(review.holder(store, item["request_id"]), reviewer, lease_end):
                for k in ("held_until", "held_by", "held_at", "mine"):
                    item.pop(k, None)
                return item, lease_end
            lost.append(item["request_id"])
    return None


def _same_lease(held: tuple[str, dt.datetime] | None, reviewer: str, expires: dt.datetime) -> bool:
    """A claim won is this lease with the claimed expiry, not an older lease of the same reviewer."""
    return held is not None and held[0] == reviewer and held[1] == expires


def release(store, request_id: str, reviewer: str, now: dt.datetime) -> None:
    """End the reviewer's lease on the item (it is labelled)."""
    now = to_millis(now)
    review.write_lease(store, request_id, reviewer, _next_version(now, review.newest_lease_version(store, request_id))[0],
                       now)


def _next_version(now: dt.datetime, held_at: dt.datetime | None) -> tuple[dt.datetime, str]:
    """(leased_at of a new lease row, the version it replaces as its claim token names it)."""
    if held_at is None:
        return now, "free"
    return max(now, held_at + dt.timedelta(milliseconds=1)), held_at.isoformat()
