"""``review_queue`` and ``review_leases``: sampled answers waiting for a reviewer's label, and who
holds each item for now (the claim protocol over these statements: monitor/review/leases.py).

An item is labelled when a reviewer's ``hallucination`` feedback exists for its
request (in ``feedback``), so the statements that ask "labelled yet?" read
feedback too; they live here because they are questions about the queue.
"""
from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from monitor.foundation.filters import where_equal

QUEUE_COLUMNS = ["request_id", "request_ts", "service", "feature", "day", "reason", "sampled_at", "ungrounded_proxy"]
LEASE_COLUMNS = ["request_id", "reviewer", "leased_at", "expires_at"]
_LABELED = ("SELECT request_id FROM feedback WHERE kind = 'hallucination' AND source = 'reviewer' "
            "AND request_id IN (SELECT request_id FROM review_queue)")


class QueuedItem(NamedTuple):
    request_id: str
    request_ts: dt.datetime
    service: str
    feature: str


class Lease(NamedTuple):
    reviewer: str
    expires_at: dt.datetime


class ReviewProgress(NamedTuple):
    sampled: int   # items queued for the day
    labeled: int   # of them with a reviewer's label


class HourCounts(NamedTuple):
    """Queue items of one (service, feature) whose requests fall in one hour; an item's verdict is the
    majority of its reviewers' votes."""

    service: str
    feature: str
    hour: int          # epoch seconds
    sampled: int
    reviewed: int
    hallucinated: int
    grounded: int


def enqueue(store, rows: list[list]) -> None:
    """Rows of QUEUE_COLUMNS; sampling a request again replaces its row."""
    if rows:
        store.insert("review_queue", rows, QUEUE_COLUMNS)


def queued(store, lo: dt.datetime, hi: dt.datetime) -> list[QueuedItem]:
    """The items sampled from requests in [lo, hi)."""
    return [QueuedItem(*r) for r in store.query("SELECT request_id, request_ts, service, feature FROM review_queue FINAL "
                       "WHERE request_ts >= {lo:DateTime64(3)} AND request_ts < {hi:DateTime64(3)} "
                       "ORDER BY request_ts, request_id", {"lo": lo, "hi": hi})]


def is_queued(store, request_id: str) -> bool:
    return bool(store.scalar("SELECT count() FROM review_queue WHERE request_id = {id:String}", {"id": request_id}))


def next_candidate(store, reviewer: str, now: dt.datetime, service: str | None, feature: str | None,
                   by_proxy: bool, lost: list[str]) -> dict | None:
    """The item ``reviewer`` should get now, with its lease as stored (``held_by``, ``held_at``,
    ``held_until``; empty when free): their own unexpired lease first, then a free or expired item,
    the oldest (or the highest grounding proxy with ``by_proxy``), not among ``lost``."""
    where, params = where_equal({"service": service, "feature": feature}, ("service", "feature"), alias="q")
    # The grounding proxy orders, it never labels.
    order = "q.ungrounded_proxy IS NULL, q.ungrounded_proxy DESC, " if by_proxy else ""
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
LIMIT 1""", {**params, "me": reviewer, "now": now, "lost": lost}, agree=True)
    return rows[0] if rows else None


def write_lease(store, request_id: str, reviewer: str, leased_at: dt.datetime, expires_at: dt.datetime,
                token: str | None = None) -> None:
    """A lease row (``leased_at`` is its version); ``token`` makes it one claim among all on that version."""
    store.insert("review_leases", [[request_id, reviewer, leased_at, expires_at]], LEASE_COLUMNS, agree=True,
                 settings={"insert_deduplication_token": token} if token else None)


def holder(store, request_id: str) -> Lease | None:
    """The item's lease as stored now."""
    rows = store.query("SELECT reviewer, expires_at FROM review_leases FINAL WHERE request_id = {id:String}",
                       {"id": request_id}, agree=True)
    return Lease(*rows[0]) if rows else None


def newest_lease_version(store, request_id: str) -> dt.datetime | None:
    return store.scalar("SELECT maxOrNull(leased_at) FROM review_leases WHERE request_id = {id:String}",
                        {"id": request_id}, agree=True)


def progress(store, day: dt.date, service: str | None = None, feature: str | None = None) -> ReviewProgress:
    """Items queued for ``day`` and how many of them have a reviewer's label."""
    where, params = where_equal({"service": service, "feature": feature}, ("service", "feature"))
    sampled, labeled = store.query(
        f"SELECT count(), countIf(request_id IN ({_LABELED})) FROM review_queue FINAL WHERE day = {{day:Date}}{where}",
        {**params, "day": day})[0]
    return ReviewProgress(sampled, labeled)


def counts(store, lo: dt.datetime, hi: dt.datetime) -> list[HourCounts]:
    """Per (service, feature) and hour, the queue items whose requests fall in [lo, hi)."""
    return [HourCounts(*r) for r in store.query("""
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
GROUP BY q.service, q.feature, h ORDER BY h""", {"lo": int(lo.timestamp()), "hi": int(hi.timestamp())})]
