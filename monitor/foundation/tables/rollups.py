"""The rollup tables (requests_1m/1h/1d, requests_feature_1h/1d, segments_1m/1h/1d, feedback_1m/1h/1d): every query on
them, and their rebuild from the raw tables.

What their columns mean and the SQL that fills them is in :mod:`monitor.foundation.rollups`.
"""
from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from monitor.foundation.filters import where_equal
from monitor.foundation.metrics import GROUPING_DIMS, grouping_sets, window_ends
from monitor.foundation.rollups import (FEATURE_DIMENSIONS, FEATURE_ROLLUPS, FEEDBACK_ROLLUPS, FEEDBACK_SELECT, LINEAGE,
                                        RAW_TIME, REQUEST_ROLLUPS, REQUEST_SELECT, REQUEST_SUMS, SEGMENT_KEY,
                                        SEGMENT_ROLLUPS, STATUS_COLUMNS, covering_source, feedback_rollup_select,
                                        rebuild_select, requests_rollup_select, rollup_for, segmented, slo_good_sql,
                                        LATENCY_BUCKETS_MS, LATENCY_QUANTILES, quantiles_sql)
from monitor.foundation.tables import feedback, requests


def _bucketed_query(table: str, select: str, where: str = "") -> str:
    dims = ", ".join(GROUPING_DIMS)
    return f"""
SELECT toStartOfInterval(minute, toIntervalSecond({{w:UInt32}})) + toIntervalSecond({{w:UInt32}}) AS w_end,
       grouping({dims}) AS g, {dims},
       {select}
FROM {table}
WHERE minute >= toDateTime({{lo:UInt32}}, 'UTC') AND minute < toDateTime({{hi:UInt32}}, 'UTC') {where}
GROUP BY GROUPING SETS ({grouping_sets()})
"""


def _windows(start: dt.datetime, end: dt.datetime, windows: dict[str, int], family: str):
    """(window name, seconds, rollup table, query parameters w/lo/hi) for each window with ends in (start, end]:
    the windows of a job's run, each read from the coarsest rollup of ``family`` that tiles it."""
    for name, seconds in windows.items():
        span = window_ends(start, end, seconds)
        if span is None:
            continue
        first_end, last_end = span
        lo = first_end - dt.timedelta(seconds=seconds)
        yield name, rollup_for(seconds, family), {"w": seconds, "lo": int(lo.timestamp()),
                                                  "hi": int(last_end.timestamp())}


def by_window(store, family: str, select: str, start: dt.datetime, end: dt.datetime, windows: dict[str, int],
              where: str = "", params: dict | None = None):
    """Rows of ``select`` per (window, window end, label level) for the windows ending in (start, end].

    ``family`` "requests" or "feedback": each window reads the coarsest of its rollups that tiles it.
    """
    for name, source, bounds in _windows(start, end, windows, family):
        for row in store.query_dicts(_bucketed_query(source, select, where), {**bounds, **(params or {})}):
            yield name, row


def by_segment_window(store, select: str, start: dt.datetime, end: dt.datetime, windows: dict[str, int],
                      dimensions: tuple[str, ...], filters: dict[str, str | None] | None = None):
    """Rows of ``select`` per (window, window end ``w_end``, service, feature, dimension, value) of the segment
    rollups, for the windows ending in (start, end] and the segment ``dimensions`` given, of the traffic
    ``filters`` (service, feature) select."""
    where, params = where_equal(filters or {}, ("service", "feature"))
    for name, source, bounds in _windows(start, end, windows, "segments"):
        for row in store.query_dicts(
                "SELECT toStartOfInterval(minute, toIntervalSecond({w:UInt32})) + toIntervalSecond({w:UInt32}) AS w_end, "
                f"service, feature, dimension, value, {select} FROM {source} "
                "WHERE minute >= toDateTime({lo:UInt32}, 'UTC') AND minute < toDateTime({hi:UInt32}, 'UTC') "
                f"AND dimension IN {{dims:Array(String)}}{where} GROUP BY w_end, service, feature, dimension, value",
                {**bounds, **params, "dims": list(dimensions)}):
            yield name, row


def good_and_total(store, table: str, good: str, service: str, feature: str | None, lo: int,
                   hi: int) -> list[tuple]:
    """(bucket start epoch seconds, good, total) per bucket of ``table`` in [lo, hi), for one service
    (and feature); ``good`` is the SQL counting good requests (an SLO's definition)."""
    where, params = where_equal({"service": service, "feature": feature}, ("service", "feature"))
    return store.query(
        f"SELECT toUnixTimestamp(minute) AS m, {good} AS good, sum(requests) AS total "
        f"FROM {table} WHERE minute >= toDateTime({{lo:UInt32}}, 'UTC') "
        f"AND minute < toDateTime({{hi:UInt32}}, 'UTC'){where} GROUP BY m ORDER BY m",
        {**params, "lo": max(lo, 0), "hi": hi})


# -- rebuild -------------------------------------------------------------------------------

def rebuild_plan(store, start, end) -> list:
    """The (day start, day end) ranges a rebuild of [start, end) will process.

    Only where raw rows exist: a range past the data would delete rollups with
    nothing to rebuild them from (raw rows expire before nothing else does).
    """
    spans = [s for s in (requests.time_span(store), feedback.time_span(store)) if s is not None]
    if not spans:
        return []
    lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
    lo = lo.replace(hour=0, minute=0, second=0, microsecond=0)
    hi = hi + dt.timedelta(minutes=1)
    day = dt.timedelta(days=1)
    whole = lambda ts: ts.replace(hour=0, minute=0, second=0, microsecond=0)  # noqa: E731
    # Whole UTC days only: the day rollup cannot be rebuilt for part of a day.
    start, end = whole(start), whole(end) + (day if end != whole(end) else dt.timedelta(0))
    t, stop, out = max(start, lo), min(end, whole(hi) + day), []
    while t < stop:
        nxt = min(t + dt.timedelta(days=1), stop)
        out.append((t, nxt))
        t = nxt
    return out


def rebuild(store, start, end, on_day=None) -> int:
    """Recompute the request and feedback rollups for the UTC days of [start, end), a day at a time.

    For after a schema change or a repair: each day's rollup rows are deleted
    and re-aggregated from the de-duplicated raw rows (FINAL). Returns the days done.
    """
    plan = rebuild_plan(store, start, end)
    for t, hi in plan:
        params = {"lo": int(t.timestamp()), "hi": int(hi.timestamp())}
        rng = "{col} >= toDateTime({{lo:UInt32}}, 'UTC') AND {col} < toDateTime({{hi:UInt32}}, 'UTC')"
        for table, _, _ in REQUEST_ROLLUPS + FEATURE_ROLLUPS[1:] + SEGMENT_ROLLUPS + FEEDBACK_ROLLUPS:
            store.command(f"ALTER TABLE {table} DELETE WHERE {rng.format(col='minute')} "
                          "SETTINGS mutations_sync = 2", params)
        for table, bucket, _ in REQUEST_ROLLUPS:
            store.command(f"INSERT INTO {table} " + requests_rollup_select(
                f"(SELECT * FROM requests FINAL WHERE {rng.format(col='ts')}) AS requests", bucket), params)
        for table, bucket, _ in FEATURE_ROLLUPS[1:]:
            store.command(f"INSERT INTO {table} " + requests_rollup_select(
                f"(SELECT * FROM requests FINAL WHERE {rng.format(col='ts')}) AS requests", bucket,
                FEATURE_DIMENSIONS), params)
        for table, bucket, _ in SEGMENT_ROLLUPS:
            store.command(f"INSERT INTO {table} " + requests_rollup_select(
                segmented(f"(SELECT * FROM requests FINAL WHERE {rng.format(col='ts')})"), bucket, SEGMENT_KEY), params)
        for table, bucket, _ in FEEDBACK_ROLLUPS:
            store.command(f"INSERT INTO {table} " + feedback_rollup_select(
                f"(SELECT * FROM feedback FINAL WHERE {rng.format(col='ifNull(request_ts, ts)')}) AS feedback",
                bucket), params)
        if on_day:
            on_day(t)
    return len(plan)


def segment_failures(store, spans: list[tuple[dt.datetime, dt.datetime]], dims: tuple[str, ...],
                     filters: dict[str, str]) -> list[tuple]:
    """(span index, service, feature, dimension, value, failures, requests) per segment of ``dims`` in each
    span, from the segment rollups; failures are errors and timeouts (the error rate's numerator)."""
    where, params = where_equal(filters, ("service", "feature"))
    src, p = covering_source(spans, where + " AND dimension IN {dims:Array(String)}",
                             "service, feature, dimension, value, status_error, status_timeout, requests",
                             family="segments")
    return store.query(f"SELECT span, service, feature, dimension, value, sum(status_error) + sum(status_timeout), "
                       f"sum(requests) FROM {src} GROUP BY span, service, feature, dimension, value",
                       {**params, **p, "dims": list(dims)})


def segment_figures(store, spans: list[tuple[dt.datetime, dt.datetime]], dims: tuple[str, ...],
                    filters: dict[str, str], top: int, latency: bool = True) -> list[dict]:
    """Per (span, dimension, value) of the segments of the traffic ``filters`` (service, feature) select, for
    the ``top`` values of each dimension with the most requests over the spans: requests, failures (errors
    and timeouts), cost_usd, the latency p95 (merged t-digest: the costly part, hence the top values only)
    and ``first_day``, the start of its first day with requests over all the day rollup holds (for the
    honest-comparison rule). ``latency`` False leaves the percentile out (NULL): its states are most of the read."""
    where, params = where_equal(filters, ("service", "feature"))
    where += " AND dimension IN {dims:Array(String)}"
    src, p = covering_source(spans, where, "dimension, value, requests, status_error, status_timeout, cost_usd"
                             + (", latency_q" if latency else ""), family="segments")
    p95 = (f"quantilesTDigestMerge({quantiles_sql(LATENCY_QUANTILES)})(latency_q)[{LATENCY_QUANTILES.index(0.95) + 1}]"
           if latency else "CAST(NULL, 'Nullable(Float64)')")
    return store.query_dicts(
        f"SELECT q.*, f.first_day FROM (SELECT span, dimension, value, sum(requests) AS requests, "
        f"sum(status_error) + sum(status_timeout) AS failures, sum(cost_usd) AS cost_usd, {p95} "
        # The values with most requests, ranked on the day rollup over the days the spans touch: a few rows
        # a value, where the spans' own tiles (hours and minutes at the edges) would be read twice.
        f"AS latency_p95_ms FROM {src} WHERE (dimension, value) IN (SELECT dimension, value FROM segments_1d "
        f"WHERE minute >= toStartOfDay({{rank_lo:DateTime('UTC')}}) AND minute < {{rank_hi:DateTime('UTC')}}{where} "
        "GROUP BY dimension, value ORDER BY sum(requests) DESC, value LIMIT {top:UInt32} BY dimension) "
        "GROUP BY span, dimension, value) AS q "
        f"LEFT JOIN (SELECT dimension, value, min(minute) AS first_day FROM segments_1d WHERE 1{where} "
        "GROUP BY dimension, value) AS f "
        "ON q.dimension = f.dimension AND q.value = f.value SETTINGS join_use_nulls = 1",
        {**params, **p, "dims": list(dims), "top": top, "rank_lo": min(lo for lo, _ in spans),
         "rank_hi": max(hi for _, hi in spans)})


def feedback_counts(store, spans: list[tuple[dt.datetime, dt.datetime]], counts: tuple[str, ...], where: str,
                    params: dict) -> list[dict]:
    """Per (``cur``: 1 for the first span, service, feature) the feedback ``counts`` (FEEDBACK_COUNTS names) on
    the requests of each (minute-aligned) span, from the feedback rollups, which count feedback at its
    request's time; orphans (no request yet) are in no service. A row in both spans counts in both."""
    src, p = covering_source(spans, where + " AND service != ''", ", ".join(("service", "feature", *counts)),
                             family="feedback")
    return store.query_dicts(f"SELECT span = 0 AS cur, service, feature, {', '.join(f'sum({c}) AS {c}' for c in counts)} "
                             f"FROM {src} GROUP BY cur, service, feature", {**params, **p})


def failures_by_value(store, lo: dt.datetime, hi: dt.datetime, dimension: str, filters: dict[str, str],
                      limit: int) -> list[tuple[str, int]]:
    """(value, failed requests: status other than ok) of a segment ``dimension`` (an outcome split such as
    error_type counts every request) in [lo, hi) (minute-aligned), most first, of the traffic ``filters``
    (service, feature) select, from the segment rollups."""
    where, params = where_equal(filters, ("service", "feature"))
    src, p = covering_source([(lo, hi)], where + " AND dimension = {dim:String}", "value, requests, status_ok",
                             family="segments")
    return store.query(f"SELECT toString(value) AS v, sum(requests) - sum(status_ok) AS k FROM {src} GROUP BY v "
                       f"HAVING k > 0 ORDER BY k DESC, v LIMIT {int(limit)}", {**params, **p, "dim": dimension})


def latency_floor(store, lo: dt.datetime, hi: dt.datetime, where: str, params: dict, family: str,
                  n: int) -> float | None:
    """The largest latency histogram boundary that at least ``n`` requests of [lo, hi) (minute-aligned) are
    slower than, per the rollups of ``family`` read with ``where``: the n slowest are all above it."""
    src, p = covering_source([(lo, hi)], where, "requests, latency_le", family=family)
    total, le = store.query(f"SELECT sum(requests), sumForEachMerge(latency_le) FROM {src}", {**params, **p})[0]
    above = [b for b, at_most in zip(LATENCY_BUCKETS_MS, le or []) if total - at_most >= n]
    return float(above[-1]) if above else None


def segment_value_counts(store, lo: dt.datetime, hi: dt.datetime, filters: dict[str, str],
                         dims: tuple[str, ...]) -> dict[str, int]:
    """dimension -> how many values of it had requests in [lo, hi) in the traffic ``filters`` (service,
    feature) select (day-aligned reads: a count to say how many a table leaves out, not a figure)."""
    where, params = where_equal(filters, ("service", "feature"))
    return dict(store.query(
        f"SELECT dimension, uniqExact(value) FROM segments_1d WHERE dimension IN {{dims:Array(String)}}{where} "
        "AND minute >= toStartOfDay({lo:DateTime('UTC')}) AND minute < {hi:DateTime('UTC')} GROUP BY dimension",
        {**params, "dims": list(dims), "lo": lo, "hi": hi}))


def segment_values(store, dims: tuple[str, ...], lo: dt.datetime, hi: dt.datetime,
                   filters: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Up to 200 values of each segment dimension seen in the days of [lo, hi) in the traffic ``filters``
    (service, feature) select, sorted (the filter menus)."""
    where, params = where_equal(filters or {}, ("service", "feature"))
    found = dict(store.query(
        "SELECT dimension, groupUniqArray(200)(value) FROM segments_1d WHERE dimension IN {dims:Array(String)} "
        f"AND minute >= toStartOfDay({{lo:DateTime64(3, 'UTC')}}) AND minute < {{hi:DateTime64(3, 'UTC')}}{where} "
        "GROUP BY dimension", {**params, "dims": list(dims), "lo": lo, "hi": hi}))
    return {d: sorted(found.get(d, [])) for d in dims}


def feature_failures(store, spans: list[tuple[dt.datetime, dt.datetime]], filters: dict[str, str]) -> list[tuple]:
    """(span index, service, feature, failures, requests) per feature in each span."""
    where, params = where_equal(filters, ("service", "feature"))
    src, p = covering_source(spans, where, "service, feature, status_error, status_timeout, requests",
                             family="requests_by_feature")
    return store.query(f"SELECT span, service, feature, sum(status_error) + sum(status_timeout), sum(requests) "
                       f"FROM {src} GROUP BY span, service, feature", {**params, **p})


# -- the pages' reads -----------------------------------------------------------------------
def per_feature(store, spans: list[tuple[dt.datetime, dt.datetime]], family: str, columns: str, select: str,
                where: str, params: dict) -> list[dict]:
    """``select`` per (span, service, feature) and per span for all traffic (``g`` set), with ``cur``
    true for the first span, over the rollups of ``family`` tiling each span.

    ``columns`` are the rollup columns ``select`` needs; ``where`` filter conditions starting with AND.
    """
    src, p = covering_source(spans, where, columns, family=family)
    return store.query_dicts(
        f"SELECT span = 0 AS cur, grouping(service, feature) AS g, service, feature, {select} FROM {src} "
        "GROUP BY GROUPING SETS ((cur, service, feature), (cur))", {**params, **p})


def trend(store, table: str, select: str, lo: dt.datetime, hi: dt.datetime, bucket: int, where: str,
          params: dict) -> list[dict]:
    """Rows of ``select`` per ``bucket``-second bucket (``t``, epoch seconds), per (service, feature) and for all
    (``g`` set), from ``table``; from the first whole bucket at or after ``lo``, so a partial one does not
    show a dip that is only the period's edge. ``where`` filter conditions starting with AND."""
    return store.query_dicts(
        f"SELECT toUnixTimestamp(toStartOfInterval(minute, toIntervalSecond({{b:UInt32}}))) AS t, "
        f"grouping(service, feature) AS g, service, feature, {select} FROM {table} "
        f"WHERE minute >= toDateTime({{lo:UInt32}}, 'UTC') AND minute < toDateTime({{hi:UInt32}}, 'UTC'){where} "
        f"GROUP BY GROUPING SETS ((t, service, feature), (t))",
        {**params, "b": bucket, "lo": -(-int(lo.timestamp()) // bucket) * bucket, "hi": int(hi.timestamp())})


def first_hours(store, family: str, where: str, params: dict) -> dict[tuple[str, str], dt.datetime]:
    """(service, feature) -> the start of the first hour with requests, over all the rollups hold,
    for the requests matching ``where`` (filter conditions starting with AND).

    ``family`` "requests" (any dimension may be filtered) or "requests_by_feature" (service and
    feature only). The day rollup finds each pair's first day in a few rows; the hour rollup
    pins the hour within that day (the day's start stands in where its hour rows are gone).
    """
    day, hour = rollup_for(86400, family), rollup_for(3600, family)
    rows = store.query(
        f"SELECT d.service, d.feature, d.first_day, h.first_hour FROM "
        f"(SELECT service, feature, min(minute) AS first_day FROM {day} WHERE 1{where} GROUP BY service, feature) AS d "
        f"LEFT JOIN (SELECT service, feature, min(minute) AS first_hour FROM {hour} "
        f"WHERE (service, feature, toStartOfDay(minute)) IN (SELECT service, feature, min(minute) FROM {day} "
        f"WHERE 1{where} GROUP BY service, feature){where} GROUP BY service, feature) AS h "
        "ON d.service = h.service AND d.feature = h.feature SETTINGS join_use_nulls = 1", params)
    return {(svc, feat): first_hour or first_day for svc, feat, first_day, first_hour in rows}


def dimension_values(store, names: tuple[str, ...], lo: dt.datetime, hi: dt.datetime) -> dict[str, list[str]]:
    """Up to 200 values of each dimension seen in the days of [lo, hi), sorted, without the empty one."""
    row = store.query(f"SELECT {', '.join(f'groupUniqArray(200)({n})' for n in names)} FROM requests_1d "
                      "WHERE minute >= toStartOfDay({lo:DateTime64(3, 'UTC')}) AND minute < {hi:DateTime64(3, 'UTC')}",
                      {"lo": lo, "hi": hi})
    return {name: sorted(v for v in values if v)
            for name, values in zip(names, row[0] if row else [[]] * len(names))}


def failures_by_model_and_prompt(store, lo: dt.datetime, hi: dt.datetime, where: str, params: dict) -> list[dict]:
    """Requests, failed requests (status other than ok) and each failing status's count, per model
    (``g`` 1), per prompt_version (``g`` 2) and in all (``g`` 3), in [lo, hi); ``where`` filter conditions
    starting with AND."""
    src, p = covering_source([(lo, hi)], where, "model, prompt_version, requests, " + ", ".join(STATUS_COLUMNS.values()))
    return store.query_dicts(
        "SELECT grouping(model, prompt_version) AS g, model, prompt_version, sum(requests) AS requests, "
        "requests - sum(status_ok) AS failed, "
        + ", ".join(f"sum({c}) AS {c}" for s, c in STATUS_COLUMNS.items() if s != "ok") +
        f" FROM {src} GROUP BY GROUPING SETS ((model), (prompt_version), ())", {**params, **p})


def failed_per_hour(store, lo: dt.datetime, hi: dt.datetime, where: str, params: dict,
                    family: str = "requests") -> list[tuple]:
    """(hour, failed requests (error, timeout)) of the hours with failures from lo's hour to hi, newest
    first, from the hour rollup of ``family``; ``where`` filter conditions starting with AND."""
    return store.query(
        f"SELECT minute, sum(status_error) + sum(status_timeout) AS n FROM {rollup_for(3600, family)} "
        "WHERE minute >= toStartOfHour({lo:DateTime64(3, 'UTC')}) AND minute < {hi:DateTime64(3, 'UTC')}"
        + where + " GROUP BY minute HAVING n > 0 ORDER BY minute DESC", {**params, "lo": lo, "hi": hi})


class PromptChange(NamedTuple):
    service: str
    feature: str
    prompt_version: str
    first_seen: dt.datetime   # its first minute with requests


def prompt_versions_first_seen(store, lo: dt.datetime, hi: dt.datetime, service: str = "",
                               feature: str = "") -> list[PromptChange]:
    """The prompt versions first served in [lo, hi).

    "First" is over all the rollups hold (retention). The hour rollup finds the candidates
    in a few rows; the minute rollup pins each one's minute.
    """
    where, params = where_equal({"service": service, "feature": feature}, ("service", "feature"))
    params.update(lo=lo, hi=hi)
    candidates = store.query(
        "SELECT service, feature, prompt_version, min(minute) AS first_hour FROM requests_1h WHERE 1" + where +
        " GROUP BY service, feature, prompt_version HAVING first_hour >= toStartOfHour({lo:DateTime64(3, 'UTC')}) "
        "AND first_hour < {hi:DateTime64(3, 'UTC')} ORDER BY first_hour", params)
    if not candidates:
        return []
    conds, exact = [], {}
    for i, (svc, feat, version, hour) in enumerate(candidates):
        conds.append(f"(service = {{s{i}:String}} AND feature = {{f{i}:String}} AND prompt_version = {{p{i}:String}} "
                     f"AND minute >= {{h{i}:DateTime}} AND minute < {{h{i}:DateTime}} + INTERVAL 1 HOUR)")
        exact.update({f"s{i}": svc, f"f{i}": feat, f"p{i}": version, f"h{i}": hour})
    firsts = {(s, f, v): m for s, f, v, m in store.query(
        "SELECT service, feature, prompt_version, min(minute) FROM requests_1m WHERE " + " OR ".join(conds) +
        " GROUP BY service, feature, prompt_version", exact)}
    return [PromptChange(svc, feat, version, firsts.get((svc, feat, version)) or hour)
            for svc, feat, version, hour in candidates]


# -- reconciliation: are the rollups what the raw rows say? -----------------------------------------
def raw_counts_per_day(store, family: str, lo: dt.datetime, hi: dt.datetime) -> dict[dt.date, int]:
    """Raw rows per UTC day of their rollup time, for the days of [lo, hi).

    Requests are partitioned by day, so their counts come from the parts' metadata (no rows read);
    feedback is read (FINAL), since it counts at its request's time.
    """
    if family == "requests":
        days = []
        t = lo
        while t < hi:
            days.append(t.strftime("%Y%m%d"))
            t += dt.timedelta(days=1)
        rows = store.query("SELECT _partition_id, count() FROM requests WHERE _partition_id IN {days:Array(String)} "
                           "GROUP BY _partition_id", {"days": days})
        return {dt.datetime.strptime(p, "%Y%m%d").date(): int(n) for p, n in rows}
    rows = store.query(
        f"SELECT toDate({RAW_TIME['feedback']}) AS d, count() FROM feedback FINAL "
        "WHERE ts >= {floor:DateTime64(3, 'UTC')} AND "
        f"{RAW_TIME['feedback']} >= {{lo:DateTime64(3, 'UTC')}} AND {RAW_TIME['feedback']} < {{hi:DateTime64(3, 'UTC')}} "
        "GROUP BY d", {"floor": lo - dt.timedelta(days=1), "lo": lo, "hi": hi})
    return {d: int(n) for d, n in rows}


def raw_counts_per_minute(store, family: str, lo: dt.datetime, hi: dt.datetime) -> dict[dt.datetime, int]:
    """Raw rows (FINAL: what the rollups must equal) per minute of their rollup time in [lo, hi)."""
    time = RAW_TIME[family]
    return {m: int(n) for m, n in store.query(
        f"SELECT toStartOfMinute({time}) AS m, count() FROM {family} FINAL "
        f"WHERE {time} >= {{lo:DateTime64(3, 'UTC')}} AND {time} < {{hi:DateTime64(3, 'UTC')}} GROUP BY m",
        {"lo": lo, "hi": hi})}


def counts_per_bucket(store, table: str, lo: dt.datetime, hi: dt.datetime, seconds: int = 0) -> dict[dt.datetime, int]:
    """The rows a rollup table counts per bucket in [lo, hi), or per ``seconds``-long bucket when given
    (the minutes of a day summed per day, say)."""
    counter = next(entry[5] for entry in LINEAGE if entry[0] == table)
    bucket = "minute" if not seconds else f"toStartOfInterval(minute, toIntervalSecond({int(seconds)}))"
    return {m: int(n) for m, n in store.query(
        f"SELECT {bucket} AS b, sum({counter}) FROM {table} WHERE minute >= {{lo:DateTime64(3, 'UTC')}} "
        "AND minute < {hi:DateTime64(3, 'UTC')} GROUP BY b", {"lo": lo, "hi": hi})}


def rebuild_buckets(store, table: str, buckets: list[dt.datetime]) -> None:
    """Replace the rows of ``table`` in these buckets with what its LINEAGE source holds for them."""
    if not buckets:
        return
    seconds = next(entry[3] for entry in LINEAGE if entry[0] == table)
    params, ranges = {}, []
    for i, b in enumerate(sorted(buckets)):
        params[f"b{i}"] = int(b.timestamp())
        ranges.append(f"({{time}} >= toDateTime({{{{b{i}:UInt32}}}}, 'UTC') AND "
                      f"{{time}} < toDateTime({{{{b{i}:UInt32}}}}, 'UTC') + INTERVAL {seconds} SECOND)")
    where = " OR ".join(ranges)
    # A lightweight delete: rows masked at once, parts rewritten by later merges, not now.
    store.command(f"DELETE FROM {table} WHERE {where.format(time='minute')}", params)
    store.command(f"INSERT INTO {table} " + rebuild_select(table, where), params)


# -- the cardinality budget -----------------------------------------------------------------------
def dimension_values_of_day(store, day: dt.date, dims: tuple[str, ...], cap: int) -> dict[str, dict[str, list[str]]]:
    """service -> dimension -> the values (at most ``cap``) the day rollup counts requests under that day."""
    rows = store.query(
        f"SELECT service, {', '.join(f'groupUniqArray({int(cap)})({d})' for d in dims)} FROM requests_1d "
        "WHERE minute = toDateTime({day:Date}, 'UTC') GROUP BY service", {"day": day})
    return {r[0]: dict(zip(dims, r[1:])) for r in rows}


def segment_values_of_day(store, day: dt.date, dims: tuple[str, ...], cap: int) -> dict[str, dict[str, list[str]]]:
    """service -> segment dimension -> the values (at most ``cap``) the day's segment rollup counts requests under."""
    out: dict[str, dict[str, list[str]]] = {}
    for service, dim, values in store.query(
            f"SELECT service, dimension, groupUniqArray({int(cap)})(value) FROM segments_1d "
            "WHERE minute = toDateTime({day:Date}, 'UTC') AND dimension IN {dims:Array(String)} "
            "GROUP BY service, dimension", {"day": day, "dims": list(dims)}):
        out.setdefault(service, {})[dim] = values
    return out


def overflow_counts(store, table: str, seconds: int, lo: dt.datetime, hi: dt.datetime, dims: tuple[str, ...],
                    overflow: str) -> list[dict]:
    """Requests counted under the overflow value, per ``seconds``-long window (``w_end``, its end) and
    service (``svc``), one column ``ov_<dimension>`` per dimension, for the buckets of ``table`` in [lo, hi)."""
    return store.query_dicts(
        "SELECT toStartOfInterval(minute, toIntervalSecond({w:UInt32})) + toIntervalSecond({w:UInt32}) AS w_end, "
        "service AS svc, " + ", ".join(f"sumIf(requests, {d} = {{ov:String}}) AS ov_{d}" for d in dims) +
        f" FROM {table} WHERE minute >= toDateTime({{lo:UInt32}}, 'UTC') AND minute < toDateTime({{hi:UInt32}}, 'UTC') "
        "AND (" + " OR ".join(f"{d} = {{ov:String}}" for d in dims) + ") GROUP BY w_end, svc",
        {"w": seconds, "lo": int(lo.timestamp()), "hi": int(hi.timestamp()), "ov": overflow})


def overflow_in(store, lo: dt.datetime, hi: dt.datetime, dims: tuple[str, ...], overflow: str) -> list[tuple]:
    """(service, dimension, requests) counted under the overflow value in [lo, hi), most first."""
    src, params = covering_source([(lo, hi)], "", ", ".join(dims) + ", requests")
    row_sql = ", ".join(f"sumIf(requests, {d} = {{ov:String}}) AS ov_{d}" for d in dims)
    out = []
    for r in store.query_dicts(f"SELECT service AS svc, {row_sql} FROM {src} GROUP BY svc", {**params, "ov": overflow}):
        out += [(r["svc"], d, int(r[f"ov_{d}"])) for d in dims if r[f"ov_{d}"]]
    return sorted(out, key=lambda x: -x[2])


# -- live reads for the alert rules: windows that slide with each evaluation ------------------------
def live_requests(store, lo: dt.datetime, hi: dt.datetime, keys: tuple[str, ...], where: str = "",
                  params: dict | None = None) -> list[dict]:
    """The request SLIs' inputs (REQUEST_SELECT) per group of ``keys`` over the rollups tiling [lo, hi)."""
    src, p = covering_source([(lo, hi)], where, ", ".join(keys + REQUEST_SUMS + ("latency_q", "ttft_q")))
    group = f" GROUP BY {', '.join(keys)}" if keys else ""
    select = ", ".join(keys) + ", " if keys else ""
    return store.query_dicts(f"SELECT {select}{REQUEST_SELECT} FROM {src}{group}", {**(params or {}), **p})


def live_segment_requests(store, lo: dt.datetime, hi: dt.datetime, keys: tuple[str, ...], dimension: str) -> list[dict]:
    """As :func:`live_requests`, per group of ``keys`` where one key is the segment ``dimension`` (language,
    region, tenant or a promoted tag) and the others are service or feature, from the segment rollups."""
    plain = tuple(k for k in keys if k != dimension)
    src, p = covering_source([(lo, hi)], " AND dimension = {segment:String}",
                             ", ".join(plain + ("value",) + REQUEST_SUMS + ("latency_q", "ttft_q")), family="segments")
    select = ", ".join(plain + (f"value AS `{dimension}`",))
    return store.query_dicts(f"SELECT {select}, {REQUEST_SELECT} FROM {src} GROUP BY {', '.join(plain + ('value',))}",
                             {**p, "segment": dimension})


def live_feedback(store, lo: dt.datetime, hi: dt.datetime, keys: tuple[str, ...], where: str = "",
                  params: dict | None = None) -> list[dict]:
    """The feedback SLIs' inputs (FEEDBACK_SELECT) per group of ``keys`` for the requests of [lo, hi)."""
    src, p = covering_source([(lo, hi)], where + " AND service != ''",
                             ", ".join(keys + ("thumbs_up", "thumbs_down", "task_success", "task_failure")),
                             family="feedback")
    group = f" GROUP BY {', '.join(keys)}" if keys else ""
    select = ", ".join(keys) + ", " if keys else ""
    return store.query_dicts(f"SELECT {select}{FEEDBACK_SELECT} FROM {src}{group}", {**(params or {}), **p})


def slo_counts(store, slos: list, spans: list[tuple[dt.datetime, dt.datetime]]) -> dict[str, list[tuple[int, int]]]:
    """SLO name -> (good, total) requests in each [lo, hi) span, exactly (see slo_good_sql); one query for
    all of them (an alert evaluation reads every SLO's windows)."""
    if not slos:
        return {}
    params = {"svcs": sorted({s.service for s in slos})}
    # An SLO names a service and a feature only: the per-feature rollups hold its sums in far fewer rows.
    src, p = covering_source(spans, " AND service IN {svcs:Array(String)}",
                             "service, feature, status_ok, latency_le, requests", family="requests_by_feature")
    sums = []
    for i, slo in enumerate(slos):
        when = f"service = {{s{i}:String}}" + (f" AND feature = {{f{i}:String}}" if slo.feature else "")
        params[f"s{i}"], params[f"f{i}"] = slo.service, slo.feature or ""
        sums.append(f"{slo_good_sql(slo, when)}, sumIf(requests, {when})")
    rows = {int(r[0]): r[1:] for r in store.query(f"SELECT span, {', '.join(sums)} FROM {src} GROUP BY span",
                                                  {**params, **p})}
    return {slo.name: [(int(rows[j][2 * i] or 0), int(rows[j][2 * i + 1] or 0)) if j in rows else (0, 0)
                       for j in range(len(spans))] for i, slo in enumerate(slos)}


def requests_per_service(store, spans: list[tuple[dt.datetime, dt.datetime]]) -> dict[tuple[int, str], int]:
    """(span index, service) -> requests in that span."""
    src, p = covering_source(spans, "", "service, requests", family="requests_by_feature")
    return {(int(s), svc): int(n) for s, svc, n in store.query(
        f"SELECT span, service, sum(requests) FROM {src} GROUP BY span, service", p)}


def requests_and_feedback(store, lo: dt.datetime, hi: dt.datetime) -> int:
    """Requests plus feedback rows counted in [lo, hi) (by their rollup time)."""
    src, p = covering_source([(lo, hi)], "", "requests", family="requests_by_feature")
    n = store.scalar(f"SELECT sum(requests) FROM {src}", p) or 0
    src, p = covering_source([(lo, hi)], "", "feedback", family="feedback")
    return int(n) + int(store.scalar(f"SELECT sum(feedback) FROM {src}", p) or 0)


# -- what changed (monitor.foundation.explain): sums per segment from the raw rows -----------------------------
def dimension_sql(name: str, tags: tuple[str, ...]) -> str:
    """The SQL of a dimension's value on a raw row: a column, or a promoted tag's key of segment_tags (a
    name segments.tags admitted, which config checks to be a plain tag key)."""
    if name == "http_status":
        return "toString(http_status)"
    if name in tags:
        return f"segment_tags['{name}']"
    return name


def partition_sums(store, metric, spans: list[tuple[dt.datetime, dt.datetime]], partitions: list[tuple[str, ...]],
                   tags: tuple[str, ...], where: str, params: dict, negative: str = "0") -> list[dict]:
    """Per (``cur``: 1 for the first span, 0 for the second; ``part``: index in ``partitions``, -1 for the
    whole; ``vals``: the segment's values) the ``metric``'s (explain.MetricRows) num, den, sq and shown over
    its table's raw rows in either span; ``where`` filter conditions starting with AND, ``negative`` the
    condition on a feedback row that makes its request unhappy (cost per successful outcome)."""
    (clo, chi), (blo, bhi) = spans
    # Feedback counts in its request's window (and orphans, without one, in none), as on the pages.
    table, time_col = metric.table, {"requests": "ts", "feedback": "request_ts"}[metric.table]

    def within(col: str, lo: str, hi: str) -> str:
        return f"({col} >= {{{lo}:DateTime64(3, 'UTC')}} AND {col} < {{{hi}:DateTime64(3, 'UTC')}})"

    in_cur, in_base = within(time_col, "clo", "chi"), within(time_col, "blo", "bhi")
    cond = f" AND {metric.where}" if metric.where else ""
    # A request of either window with negative feedback (the same set, built once, wherever it is named).
    den = metric.den.replace("unhappy", f"(request_id IN (SELECT request_id FROM feedback WHERE ({negative}) AND "
                             f"({within('request_ts', 'clo', 'chi')} OR {within('request_ts', 'blo', 'bhi')})))")
    sq = f"sum(toFloat64({metric.sq}) * ({den}))" if metric.sq else "NULL"
    # The rows are summed per combination of the partitions' dimensions first (few, for the few dimensions
    # the rollups do not hold), then each combination once per partition: copying every row once per
    # partition and grouping by arrays cost ~80 ns a row and partition.
    names = list(dict.fromkeys(d for dims in partitions for d in dims))
    keys = "".join(f", toString({dimension_sql(d, tags)}) AS d{i}" for i, d in enumerate(names))
    parts = ", ".join(f"({i}, [{', '.join(f'd{names.index(d)}' for d in dims)}])" for i, dims in enumerate(partitions))
    shown_fn, _, shown_args = (metric.shown or "").partition("(0.95)")
    inner = (f"SELECT {in_cur} AS cur{keys}, sum(toFloat64({metric.num}) * ({den})) AS n, sum(toFloat64({den})) AS m, "
             f"{sq} AS s{f', {shown_fn}State(0.95){shown_args} AS q' if metric.shown else ''} FROM {table} "
             f"WHERE ({in_cur} OR {in_base}){cond}{where} GROUP BY cur{''.join(f', d{i}' for i in range(len(names)))}")
    sql = (f"SELECT cur, pv.1 AS part, pv.2 AS vals, sum(n) AS num, sum(m) AS den, {'sum(s)' if metric.sq else 'NULL'} AS sq, "
           f"{f'{shown_fn}Merge(0.95)(q)' if metric.shown else 'NULL'} AS shown FROM ({inner}) "
           f"ARRAY JOIN arrayConcat([(-1, CAST([], 'Array(String)'))]{', [' + parts + ']' if parts else ''}) AS pv "
           "GROUP BY cur, part, vals")
    return store.query_dicts(sql, {**params, "clo": clo, "chi": chi, "blo": blo, "bhi": bhi})


def rollup_partition_sums(store, family: str, num: str, den: str, columns: tuple[str, ...],
                          spans: list[tuple[dt.datetime, dt.datetime]], partitions: list[tuple[str, ...]],
                          where: str, params: dict) -> list[dict]:
    """partition_sums' rows (without ``sq`` and ``shown``) from the rollups of ``family`` tiling the two
    (minute-aligned, disjoint) spans: ``num`` and ``den`` are aggregates of rollup columns. ``requests`` and
    ``feedback`` rollups give the whole (part -1) and any partition of their dimensions; ``segments`` one
    segment dimension per partition (a request is in one row per dimension, so no whole). ``columns``: the
    rollup columns the aggregates read."""
    if family == "segments":
        dims = [d for (d,) in partitions]
        src, p = covering_source(spans, where + " AND dimension IN {dims:Array(String)}",
                                 ", ".join(("dimension", "value", *columns)), family="segments")
        sql = (f"SELECT span = 0 AS cur, toInt32(indexOf({{dims:Array(String)}}, dimension)) - 1 AS part, [toString(value)] "
               f"AS vals, {num} AS num, {den} AS den, NULL AS sq, NULL AS shown FROM {src} "
               "WHERE span >= 0 GROUP BY cur, part, vals")
        return store.query_dicts(sql, {**params, **p, "dims": dims})
    parts = ", ".join(f"({i}, [{', '.join(f'toString({d})' for d in dims)}])" for i, dims in enumerate(partitions))
    read = dict.fromkeys(d for dims in partitions for d in dims) | dict.fromkeys(columns)
    src, p = covering_source(spans, where, ", ".join(read), family=family)
    sql = (f"SELECT span = 0 AS cur, pv.1 AS part, pv.2 AS vals, {num} AS num, {den} AS den, NULL AS sq, "
           f"NULL AS shown FROM {src} ARRAY JOIN arrayConcat([(-1, CAST([], 'Array(String)'))]"
           f"{', [' + parts + ']' if parts else ''}) AS pv WHERE span >= 0 GROUP BY cur, part, vals")
    return store.query_dicts(sql, {**params, **p})


def rollup_shown(store, shown: str, spans: list[tuple[dt.datetime, dt.datetime]], items: list[dict[str, str]],
                 segment_dims: set[str], where: str, params: dict) -> dict[tuple[int, int], float | None]:
    """(cur: 1 for the first span, index in ``items``) -> ``shown`` (an aggregate over rollup rows) of each
    item's segment (its dimensions' values; {} the whole) in each span: from the request rollups for rollup
    dimensions, from the segment rollups for one dimension of ``segment_dims``."""
    out: dict[tuple[int, int], float | None] = {}
    for family in ("requests", "segments"):
        conds, p = [], {}
        for i, item in enumerate(items):
            if (family == "segments") != bool(set(item) & segment_dims):
                continue
            if family == "segments":
                (d, v), = item.items()
                conds.append((i, f"dimension = {{sd{i}:String}} AND value = {{sv{i}:String}}"))
                p |= {f"sd{i}": d, f"sv{i}": v}
            else:
                conds.append((i, " AND ".join(f"toString({d}) = {{sv{i}_{j}:String}}" for j, d in enumerate(item)) or "1"))
                p |= {f"sv{i}_{j}": v for j, v in enumerate(item.values())}
        if not conds:
            continue
        cols = ("dimension", "value") if family == "segments" else tuple(dict.fromkeys(d for i, _ in conds for d in items[i]))
        src, sp = covering_source(spans, where, ", ".join((*cols, "latency_q")), family=family)
        pick = "arrayJoin(arrayFilter(x -> x >= 0, [" + ", ".join(f"if({c}, {i}, -1)" for i, c in conds) + "]))"
        for cur, item, value in store.query(f"SELECT span = 0 AS cur, {pick} AS item, {shown} "
                                            f"FROM {src} WHERE span >= 0 GROUP BY cur, item", {**params, **p, **sp}):
            out[(int(cur), int(item))] = value
    return out


def percentile_of(store, metric, span: tuple[dt.datetime, dt.datetime], where: str, params: dict) -> float | None:
    """The 95th percentile of ``metric.percentile_of`` over the raw requests of ``span`` (the threshold a
    percentile's change is explained through)."""
    col = metric.percentile_of
    return store.scalar(
        f"SELECT quantileTDigestIf(0.95)(toFloat64(assumeNotNull({col})), {col} IS NOT NULL) FROM requests "
        f"WHERE ts >= {{lo:DateTime64(3, 'UTC')}} AND ts < {{hi:DateTime64(3, 'UTC')}}{where}",
        {**params, "lo": span[0], "hi": span[1]})
