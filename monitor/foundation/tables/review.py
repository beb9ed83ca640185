"""``review_queue`` and ``review_leases``: sampled answers waiting for a reviewer's label, and who
holds each item for now.

Leasing an item is a claim that only one reviewer can win, across app instances: the lease row
is inserted with the de-duplication token ``review:<item>:<the lease it replaces>``, so of two
instances that picked the same free item at the same moment ClickHouse keeps one row; each reads
the item's lease back, and the one that lost picks another item.

An item is labelled when a reviewer's ``hallucination`` feedback exists for its
request (in ``feedback``), so the statements that ask "labelled yet?" read
feedback too; they live here because they are questions about the queue.
"""
from __future__ import annotations

import datetime as dt
import threading

from monitor.foundation.clock import to_millis
from monitor.foundation.filters import where_equal

QUEUE_COLUMNS = ["request_id", "request_ts", "service", "feature", "day", "reason", "sampled_at", "ungrounded_proxy"]
LEASE_COLUMNS = ["request_id", "reviewer", "leased_at", "expires_at"]
_LABELED = ("SELECT request_id FROM feedback WHERE kind = 'hallucination' AND source = 'reviewer' "
            "AND request_id IN (SELECT request_id FROM review_queue)")
# Within a process, picking and claiming are serialized anyway (fewer lost claims to retry).
_lease_lock = threading.Lock()
_CLAIM_ATTEMPTS = 8


def enqueue(store, rows: list[list]) -> None:
    """Rows of QUEUE_COLUMNS; sampling a request again replaces its row."""
    if rows:
        store.insert("review_queue", rows, QUEUE_COLUMNS)


def queued(store, lo: dt.datetime, hi: dt.datetime) -> list[tuple]:
    """(request_id, request_ts, service, feature) of the items sampled from requests in [lo, hi)."""
    return store.query("SELECT request_id, request_ts, service, feature FROM review_queue FINAL "
                       "WHERE request_ts >= {lo:DateTime64(3)} AND request_ts < {hi:DateTime64(3)} "
                       "ORDER BY request_ts, request_id", {"lo": lo, "hi": hi})


def is_queued(store, request_id: str) -> bool:
    return bool(store.scalar("SELECT count() FROM review_queue WHERE request_id = {id:String}", {"id": request_id}))


def lease_next(store, reviewer: str, now: dt.datetime, lease: dt.timedelta, service: str | None = None,
               feature: str | None = None, by_proxy: bool = False) -> tuple[dict, dt.datetime] | None:
    """Lease the next unlabelled item to ``reviewer`` (their own unexpired lease first, then the oldest,
    or the highest grounding proxy first with ``by_proxy``): (item, lease expiry), or None when none is left.

    The item has request_id, service, feature, request_ts and ungrounded_proxy.
    """
    where, params = where_equal({"service": service, "feature": feature}, ("service", "feature"), alias="q")
    params["me"] = reviewer
    # The grounding proxy orders, it never labels.
    order = "q.ungrounded_proxy IS NULL, q.ungrounded_proxy DESC, " if by_proxy else ""
    lost: list[str] = []
    # Lease times are stored in milliseconds: a claim is recognised by reading its expiry back, so it is
    # made at that precision (with a real clock's microseconds every claim would read as lost).
    now, lease_end = to_millis(now), to_millis(now + lease)
    with _lease_lock:
        for _ in range(_CLAIM_ATTEMPTS):
            params["now"], params["lost"] = now, lost
            rows = store.query_dicts(f"""
SELECT q.request_id AS request_id, q.service AS service, q.feature AS feature, q.request_ts AS request_ts,
       q.ungrounded_proxy AS ungrounded_proxy, l.expires_at AS held_until, l.reviewer AS held_by,
       l.leased_at AS held_at,
       l.reviewer = {{me:String}} AND l.expires_at > {{now:DateTime64(3, 'UTC')}} AS mine
FROM review_queue AS q FINAL
LEFT JOIN (SELECT request_id, reviewer, leased_at, expires_at FROM review_leases FINAL) AS l ON q.request_id = l.request_id
WHERE q.request_id NOT IN ({_LABELED}){where} AND q.request_id NOT IN {{lost:Array(String)}}
  AND (l.request_id = '' OR l.expires_at <= {{now:DateTime64(3, 'UTC')}} OR l.reviewer = {{me:String}})
ORDER BY mine DESC, {order}q.day, q.request_id
LIMIT 1""", params, agree=True)
            if not rows:
                return None
            item = rows[0]
            expires = lease_end
            # A lease row's version is its leased_at (ReplacingMergeTree(leased_at)), made to grow even
            # when this process's clock is behind the last holder's, so a row that lands always replaces
            # the one it claims over. The token names that version: of all claims on it exactly one lands.
            leased_at, previous = _next_version(now, item["held_at"] if item["held_by"] else None)
            store.insert("review_leases", [[item["request_id"], reviewer, leased_at, expires]], LEASE_COLUMNS,
                         agree=True, settings={"insert_deduplication_token": f"review:{item['request_id']}:{previous}"})
            if _holder(store, item["request_id"]) == (reviewer, expires.replace(tzinfo=None)):
                for k in ("held_until", "held_by", "held_at"):
                    item.pop(k)
                return item, expires
            lost.append(item["request_id"])
    return None


def _next_version(now: dt.datetime, held_at: dt.datetime | None) -> tuple[dt.datetime, str]:
    """(leased_at of a new lease row, the version it replaces as its claim token names it)."""
    if held_at is None:
        return now, "free"
    held_at = held_at.replace(tzinfo=dt.timezone.utc) if held_at.tzinfo is None else held_at
    return max(now, held_at + dt.timedelta(milliseconds=1)), held_at.isoformat()


def _holder(store, request_id: str) -> tuple[str, dt.datetime] | None:
    """The item's lease as stored now: (reviewer, expiry). A claim won is this lease with the claimed
    expiry, not an older lease of the same reviewer."""
    rows = store.query("SELECT reviewer, expires_at FROM review_leases FINAL WHERE request_id = {id:String}",
                       {"id": request_id}, agree=True)
    return tuple(rows[0]) if rows else None


def release(store, request_id: str, reviewer: str, now: dt.datetime) -> None:
    """End the reviewer's lease on the item (it is labelled)."""
    held = store.scalar("SELECT maxOrNull(leased_at) FROM review_leases WHERE request_id = {id:String}",
                        {"id": request_id}, agree=True)
    now = to_millis(now)
    store.insert("review_leases", [[request_id, reviewer, _next_version(now, held)[0], now]], LEASE_COLUMNS, agree=True)


def progress(store, day: dt.date, service: str | None = None, feature: str | None = None) -> dict:
    """Items queued for ``day`` and how many of them have a reviewer's label."""
    where, params = where_equal({"service": service, "feature": feature}, ("service", "feature"))
    sampled, labeled = store.query(
        f"SELECT count(), countIf(request_id IN ({_LABELED})) FROM review_queue FINAL WHERE day = {{day:Date}}{where}",
        {**params, "day": day})[0]
    return {"sampled": sampled, "labeled": labeled}


def counts(store, lo: dt.datetime, hi: dt.datetime) -> list[tuple]:
    """(service, feature, hour as epoch seconds, sampled, reviewed, hallucinated, grounded) of the queue
    items whose requests fall in [lo, hi); an item's verdict is the majority of its reviewers' votes."""
    return store.query("""
SELECT q.service, q.feature, toUnixTimestamp(toStartOfHour(q.request_ts)) AS h, count() AS sampled,
       countIf(l.votes > 0) AS reviewed,
       countIf(l.hallucinated > l.grounded) AS hallucinated,
       countIf(l.grounded > l.hallucinated) AS grounded
FROM (SELECT * FROM review_queue FINAL
      WHERE request_ts >= toDateTime({lo:UInt32}, 'UTC') AND request_ts < toDateTime({hi:UInt32}, 'UTC')) AS q
LEFT JOIN (
    SELECT request_id, count() AS votes, countIf(label = 'hallucinated') AS hallucinated,
           countIf(label = 'grounded') AS grounded
    FROM feedback FINAL
    WHERE kind = 'hallucination' AND source = 'reviewer'
      AND request_id IN (SELECT request_id FROM review_queue WHERE request_ts >= toDateTime({lo:UInt32}, 'UTC'))
    GROUP BY request_id) AS l ON q.request_id = l.request_id
GROUP BY q.service, q.feature, h ORDER BY h""", {"lo": int(lo.timestamp()), "hi": int(hi.timestamp())})
