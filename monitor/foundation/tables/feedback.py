"""``feedback``: thumbs, ratings, task success, reviewers' labels and comments, as stored.

Each row carries its request's time (``request_ts``), dimensions and status,
looked up at ingest, so feedback is attributed to its request's window without a
join. A ReplacingMergeTree keyed on feedback_id.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from monitor.foundation.rollups import FEEDBACK_COUNTS, NEGATIVE_FEEDBACK_WHEN, SEGMENT_DIMENSIONS, SEGMENTS_OF_ROW
from monitor.foundation.tables._raw import deduplicated, stored_ids
from monitor.foundation.tables.requests import TimeSpan

COLUMNS = ["feedback_id", "request_id", "ts", "kind", "value", "label", "source", "reviewer", "comment",
           "ingested_at", "request_ts", "service", "feature", "model", "prompt_version", "environment",
           "region", "request_status", "language", "tenant", "segment_tags"]


def insert(store, rows: Sequence[dict], token: str | None = None) -> None:
    """``token``: the batch's de-duplication token (the rows must fall in one partition, see partition_of)."""
    if rows:
        store.insert_columns("feedback", [[r[c] for r in rows] for c in COLUMNS], COLUMNS, settings=deduplicated(token))


def partition_of(row: dict) -> str:
    """The row's partition (the table's PARTITION BY), so an insert with a token covers one block:
    a retry of part of a batch then carries the same token as that part did."""
    return row["ts"].strftime("%Y%m")


def existing_ids(store, ids) -> set[str]:
    return stored_ids(store, "feedback", "feedback_id", ids)


def orphans(store, since: dt.datetime, limit: int = 10_000) -> list[dict]:
    """Stored feedback (every column, newest version) given since ``since`` that carries no request
    time or dimensions yet: its request had not arrived when it did.

    The newest version of each candidate (a row without a request time) is read by its key, as FINAL
    would keep it, without FINAL's merge of every part of the month (a version's ``ts``, the feedback's
    own time, is the same in every version)."""
    return store.query_dicts(
        f"SELECT * FROM (SELECT {', '.join(COLUMNS)} FROM feedback WHERE ts >= {{since:DateTime64(3, 'UTC')}} "
        "AND (request_id, feedback_id) IN (SELECT request_id, feedback_id FROM feedback "
        "WHERE ts >= {since:DateTime64(3, 'UTC')} AND request_ts IS NULL) "
        "ORDER BY ingested_at DESC LIMIT 1 BY request_id, feedback_id) WHERE request_ts IS NULL LIMIT {n:UInt32}",
        {"since": since, "n": limit})


def exists(store, feedback_id: str, request_id: str) -> bool:
    return bool(store.scalar("SELECT count() FROM feedback WHERE feedback_id = {f:String} AND request_id = {id:String}",
                             {"f": feedback_id, "id": request_id}))


@dataclass(frozen=True)
class FeedbackItem:
    """One piece of feedback on a request, as the request's page and API show it."""

    feedback_id: str
    ts: dt.datetime
    kind: str
    value: float | None
    label: str
    source: str
    reviewer: str
    comment: str


def for_request(store, request_id: str) -> list[FeedbackItem]:
    """The feedback on one request, oldest first."""
    return [FeedbackItem(**r) for r in store.query_dicts(
        "SELECT feedback_id, ts, kind, value, label, source, reviewer, comment "
        "FROM feedback FINAL WHERE request_id = {id:String} ORDER BY ts", {"id": request_id})]


def time_span(store) -> TimeSpan | None:
    """The oldest and newest of the feedback's own time, or None when the table is empty."""
    lo, hi, n = store.query("SELECT min(ts), max(ts), count() FROM feedback")[0]
    return TimeSpan(lo, hi) if n else None


def period_counts(store, spans: list[tuple[dt.datetime, dt.datetime]], counts: Sequence[str], unhappy: str,
                  where: str, params: dict) -> list[dict]:
    """Feedback counts per (span index ``cur``: 1 for the first span, 0 for the second, service, feature)
    for the requests whose time falls in either of two spans.

    ``counts`` names FEEDBACK_COUNTS conditions; ``unhappy`` is the SQL of the unhappy requests
    (monitor.foundation.rollups.unhappy_sql over rows; its parameters in ``params``). A row in both
    spans (an incident longer than the week to its baseline) counts in both. ``where`` holds filter
    conditions starting with AND.
    """
    cur, in_either, p = _two_spans(spans)
    return store.query_dicts(
        f"SELECT {cur} AS cur, service, feature, "
        + "".join(f"countIf({FEEDBACK_COUNTS[c]}) AS {c}, " for c in counts) +
        f"{unhappy} AS unhappy "
        f"FROM feedback WHERE service != '' AND {in_either}{where} GROUP BY cur, service, feature", {**params, **p})


def _two_spans(spans: list[tuple[dt.datetime, dt.datetime]]) -> tuple[str, str, dict]:
    """(the SQL of ``cur``: 1 for a row whose request falls in the first span, 0 in the second, a row of
    both counted in both; the condition "in either"; their parameters)."""
    (lo, hi), (plo, phi) = spans
    in_cur = "(request_ts >= {lo:DateTime64(3, 'UTC')} AND request_ts < {hi:DateTime64(3, 'UTC')})"
    in_prev = "(request_ts >= {plo:DateTime64(3, 'UTC')} AND request_ts < {phi:DateTime64(3, 'UTC')})"
    cur = (f"arrayJoin(multiIf({in_cur} AND {in_prev}, [1, 0], {in_cur}, [1], [0]))"
           if phi > lo and hi > plo else in_cur)
    return cur, f"({in_cur} OR {in_prev})", {"lo": lo, "hi": hi, "plo": plo, "phi": phi}


SEGMENT_COLUMNS = (*SEGMENT_DIMENSIONS, "segment_tags")  # what SEGMENTS_OF_ROW reads


def segment_counts(store, spans: list[tuple[dt.datetime, dt.datetime]], counts: Sequence[str],
                   dims: Sequence[str], where: str, params: dict) -> list[dict]:
    """Feedback counts (``counts`` names FEEDBACK_COUNTS conditions) per (``cur`` as in period_counts,
    dimension, value) of the segment ``dims``, for the requests in either span; and ``hallucinated`` and
    ``grounded``, the requests whose reviewers' majority said so. Read from the feedback rows, which carry
    their request's segments (the feedback rollups have none: feedback is a small share of the rows)."""
    cur, in_either, p = _two_spans(spans)
    segments = f"arrayFilter(s -> s.1 IN {{dims:Array(String)}}, {SEGMENTS_OF_ROW})"
    args = {**params, **p, "dims": list(dims)}
    # The segment's columns are named seg_*: feedback has a column ``value`` (a thumb's or a rating's).
    # Counted per combination of the segment columns first (few), then each combination once per segment
    # it is in: copying every row once per segment cost more than the counting.
    rows = {(r["cur"], r["seg_dimension"], r["seg_value"]): r for r in store.query_dicts(
        f"SELECT cur, segment.1 AS seg_dimension, segment.2 AS seg_value, "
        + ", ".join(f"sum({c}) AS {c}" for c in counts) +
        f" FROM (SELECT {cur} AS cur, {', '.join(SEGMENT_COLUMNS)}, "
        + ", ".join(f"countIf({FEEDBACK_COUNTS[c]}) AS {c}" for c in counts) +
        f" FROM feedback WHERE service != '' AND {in_either}{where} GROUP BY cur, {', '.join(SEGMENT_COLUMNS)}) "
        f"ARRAY JOIN {segments} AS segment GROUP BY cur, seg_dimension, seg_value", args)}
    for r in store.query_dicts(
            "SELECT cur, segment.1 AS seg_dimension, segment.2 AS seg_value, countIf(h > g) AS hallucinated, "
            f"countIf(g > h) AS grounded FROM {_verdicts(spans, where, f'any({segments}) AS segs')} "
            "ARRAY JOIN segs AS segment GROUP BY cur, seg_dimension, seg_value", args):
        rows.setdefault((r["cur"], r["seg_dimension"], r["seg_value"]), {c: 0 for c in counts}).update(r)
    for r in rows.values():
        r["dimension"], r["value"] = r.pop("seg_dimension"), r.pop("seg_value")
    return list(rows.values())


def hallucination_verdicts(store, spans: list[tuple[dt.datetime, dt.datetime]], where: str,
                           params: dict) -> list[dict]:
    """Per (``cur`` as in period_counts, service, feature): ``hallucinated`` and ``grounded``, the reviewed
    requests in either span whose reviewers' majority said so, of the feedback rows ``where`` selects."""
    return store.query_dicts(
        "SELECT cur, req_service AS service, req_feature AS feature, countIf(h > g) AS hallucinated, "
        f"countIf(g > h) AS grounded FROM {_verdicts(spans, where, 'any(service) AS req_service, any(feature) AS req_feature')} "
        "GROUP BY cur, service, feature", {**params, **_two_spans(spans)[2]})


def _verdicts(spans, where: str, carried: str) -> str:
    """A subquery of one row per (cur, reviewed request): its reviewers' votes ``h`` (hallucinated) and ``g``
    (grounded), and ``carried`` (aggregates of its rows); a verdict is the majority, as the review queue's."""
    cur, in_either, _ = _two_spans(spans)
    # The newest version of each label among the rows selected, as FINAL would keep (a label's kind, source
    # and request do not change between versions), without FINAL's merge of the whole table.
    return (f"(SELECT {cur} AS cur, request_id, {carried}, countIf(label = 'hallucinated') AS h, "
            "countIf(label = 'grounded') AS g FROM (SELECT * FROM feedback WHERE kind = 'hallucination' "
            f"AND source = 'reviewer' AND service != '' AND {in_either}{where} "
            "ORDER BY ingested_at DESC LIMIT 1 BY request_id, feedback_id) GROUP BY cur, request_id)")


@dataclass(frozen=True)
class NegativeFeedback:
    """A thumbs down, a failed task or a hallucination label, with its request's service and feature."""

    request_id: str
    ts: dt.datetime
    kind: str
    value: float | None
    label: str
    comment: str   # a snippet
    service: str
    feature: str


def negative(store, lo: dt.datetime, hi: dt.datetime, where: str, params: dict, limit: int,
             snip: int) -> list[NegativeFeedback]:
    """The newest negative feedback (thumbs down, task failed, hallucinated) on requests in [lo, hi)."""
    return [NegativeFeedback(**r) for r in store.query_dicts(
        "SELECT request_id, ts, kind, value, label, substring(comment, 1, {snip:UInt32}) AS comment, service, feature "
        "FROM feedback WHERE request_ts >= {lo:DateTime64(3, 'UTC')} AND request_ts < {hi:DateTime64(3, 'UTC')}"
        + where + " AND (" + " OR ".join(f"({w})" for w in NEGATIVE_FEEDBACK_WHEN.values()) + ") "
        "ORDER BY ts DESC LIMIT {limit:UInt32}", {**params, "lo": lo, "hi": hi, "limit": limit, "snip": snip})]


class JudgedCount(NamedTuple):
    judge: str      # the evaluator: an automated label's reviewer (its name; an OTLP evaluation's name)
    service: str
    feature: str
    label: str      # the judge's latest label of the request
    human: str      # the reviewers' majority: hallucinated, grounded, or "" (not reviewed, or a tie)
    requests: int


def judged_counts(store, lo: dt.datetime, hi: dt.datetime) -> list[JudgedCount]:
    """Requests in [lo, hi) (by the request's time) an automated evaluator labelled (hallucination feedback,
    source ``auto``), per judge, feature, the judge's label and the reviewers' verdict on the same request."""
    return [JudgedCount(*r) for r in store.query("""
SELECT j.judge, j.svc, j.feat, j.judged,
       multiIf(r.h > r.g, 'hallucinated', r.g > r.h, 'grounded', '') AS human, count() AS requests
FROM (SELECT reviewer AS judge, request_id, any(service) AS svc, any(feature) AS feat,
             argMax(label, ts) AS judged
      FROM feedback FINAL
      WHERE kind = 'hallucination' AND source = 'auto' AND service != ''
        AND request_ts >= {lo:DateTime64(3, 'UTC')} AND request_ts < {hi:DateTime64(3, 'UTC')}
      GROUP BY judge, request_id) AS j
LEFT JOIN (SELECT request_id, countIf(label = 'hallucinated') AS h, countIf(label = 'grounded') AS g
           FROM feedback FINAL
           WHERE kind = 'hallucination' AND source = 'reviewer'
             AND request_ts >= {lo:DateTime64(3, 'UTC')} AND request_ts < {hi:DateTime64(3, 'UTC')}
           GROUP BY request_id) AS r ON r.request_id = j.request_id
GROUP BY j.judge, j.svc, j.feat, j.judged, human
ORDER BY j.judge, j.svc, j.feat, j.judged, human""", {"lo": lo, "hi": hi})]
