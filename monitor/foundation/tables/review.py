"""``review_queue`` and ``review_leases``: sampled answers waiting for a reviewer's label, and who
holds each item for now.

An item is labelled when a reviewer's ``hallucination`` feedback exists for its
request (in ``feedback``), so the statements that ask "labelled yet?" read
feedback too; they live here because they are questions about the queue.
"""
from __future__ import annotations

import datetime as dt
import threading

from monitor.foundation.filters import where_equal

QUEUE_COLUMNS = ["request_id", "request_ts", "service", "feature", "day", "reason", "sampled_at", "ungrounded_proxy"]
LEASE_COLUMNS = ["request_id", "reviewer", "leased_at", "expires_at"]
_LABELED = ("SELECT request_id FROM feedback WHERE kind = 'hallucination' AND source = 'reviewer' "
            "AND request_id IN (SELECT request_id FROM review_queue)")
# Picking an item and writing its lease must not interleave within this process
# (the store has no transactions; one process serves the embedded store).
_lease_lock = threading.Lock()


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
    with _lease_lock:
        params["now"] = now
        rows = store.query_dicts(f"""
SELECT q.request_id AS request_id, q.service AS service, q.feature AS feature, q.request_ts AS request_ts,
       q.ungrounded_proxy AS ungrounded_proxy,
       l.reviewer = {{me:String}} AND l.expires_at > {{now:DateTime64(3, 'UTC')}} AS mine
FROM review_queue AS q FINAL
LEFT JOIN (SELECT request_id, reviewer, expires_at FROM review_leases FINAL) AS l ON q.request_id = l.request_id
WHERE q.request_id NOT IN ({_LABELED}){where}
  AND (l.request_id = '' OR l.expires_at <= {{now:DateTime64(3, 'UTC')}} OR l.reviewer = {{me:String}})
ORDER BY mine DESC, {order}q.day, q.request_id
LIMIT 1""", params)
        if not rows:
            return None
        expires = now + lease
        store.insert("review_leases", [[rows[0]["request_id"], reviewer, now, expires]], LEASE_COLUMNS)
    return rows[0], expires


def release(store, request_id: str, reviewer: str, now: dt.datetime) -> None:
    """End the reviewer's lease on the item (it is labelled)."""
    store.insert("review_leases", [[request_id, reviewer, now, now]], LEASE_COLUMNS)


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
