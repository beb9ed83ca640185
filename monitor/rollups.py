"""What the per-minute rollups hold, shared by the migration that creates them and the jobs that read them.

The latency histogram boundaries live here because a latency SLO can only use
a threshold that is one of them: the rollup counts requests at or under each
boundary when they are inserted, exactly, so "good = latency_ms <= threshold"
needs no scan of raw rows (Prometheus histograms work the same way).
"""
from __future__ import annotations

LATENCY_BUCKETS_MS: tuple[float, ...] = (
    50, 100, 200, 250, 300, 400, 500, 750, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 7500, 10000, 15000,
    20000, 30000, 60000,
)
LATENCY_QUANTILES = (0.5, 0.9, 0.95, 0.99)
TTFT_QUANTILES = (0.5, 0.95)
DIMENSIONS = ("service", "feature", "model", "prompt_version", "environment", "region")

# Kinds of negative feedback, each a bitmap of request-id hashes in feedback_1m.
NEGATIVE_FEEDBACK = {
    "thumbs_down": "neg_thumbs",
    "task_failed": "neg_task",
    "hallucinated": "neg_hallucination",
}


def bucket_index(threshold_ms: float) -> int | None:
    """1-based index of a histogram boundary (ClickHouse arrays count from 1)."""
    for i, b in enumerate(LATENCY_BUCKETS_MS, 1):
        if float(b) == float(threshold_ms):
            return i
    return None


def quantiles_sql(qs: tuple[float, ...]) -> str:
    return ", ".join(repr(q) for q in qs)


DIM_KEY = ", ".join(DIMENSIONS)


def requests_rollup_select(source: str = "requests") -> str:
    """The SELECT behind requests_1m: used by its materialized view and by `nlpmon rollups rebuild`.

    Source columns are qualified where an alias of the same name exists, because
    ClickHouse resolves aliases before columns. ``source`` may be a subquery
    aliased ``requests``.
    """
    lq, tq = quantiles_sql(LATENCY_QUANTILES), quantiles_sql(TTFT_QUANTILES)
    buckets = ", ".join(f"{float(b)}" for b in LATENCY_BUCKETS_MS)
    return f"""SELECT
    toStartOfMinute(ts) AS minute, {DIM_KEY},
    count() AS requests,
    countIf(status = 'ok') AS status_ok,
    countIf(status = 'error') AS status_error,
    countIf(status = 'timeout') AS status_timeout,
    countIf(status = 'blocked') AS status_blocked,
    countIf(status = 'cancelled') AS status_cancelled,
    countIf(ttft_ms IS NOT NULL) AS ttft_count,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sumIf(requests.output_tokens, status = 'ok' AND requests.output_tokens > 0) AS gen_output_tokens,
    countIf(cost_source = 'unpriced') AS unpriced,
    countIf(cache_hit) AS cache_hits,
    countIf(retrieval_hit IS NOT NULL) AS retrieval_known,
    countIf(retrieval_hit = true) AS retrieval_hits,
    countIf(grounded IS NOT NULL) AS grounded_known,
    countIf(grounded = true) AS grounded_true,
    countIf(safety_flagged) AS safety_flagged,
    countIf(pii_detected) AS pii_detected,
    countIf(injection_detected) AS injection_detected,
    countIf(text_truncated) AS text_truncated,
    sum(latency_ms) AS latency_sum_ms,
    sumIf(greatest(latency_ms - ifNull(ttft_ms, 0), 0) / 1000, status = 'ok' AND requests.output_tokens > 0) AS gen_seconds,
    sum(cost_usd) AS cost_usd,
    quantilesTDigestState({lq})(latency_ms) AS latency_q,
    quantilesTDigestStateIf({tq})(assumeNotNull(ttft_ms), ttft_ms IS NOT NULL) AS ttft_q,
    sumForEachState(arrayMap(b -> toUInt64(latency_ms <= b), [{buckets}])) AS latency_le
FROM {source}
GROUP BY minute, {DIM_KEY}
"""


def feedback_rollup_select(source: str = "feedback") -> str:
    """The SELECT behind feedback_1m (its view and the rebuild).

    Feedback counts in the minute of its request; feedback whose request is
    unknown counts in its own minute, under empty dimensions, as "orphaned".
    """
    return f"""SELECT
    toStartOfMinute(ifNull(request_ts, ts)) AS minute, {DIM_KEY}, request_status,
    count() AS feedback,
    countIf(kind = 'thumbs' AND value = 1) AS thumbs_up,
    countIf(kind = 'thumbs' AND value = 0) AS thumbs_down,
    countIf(kind = 'task_success' AND value = 1) AS task_success,
    countIf(kind = 'task_success' AND value = 0) AS task_failure,
    countIf(kind = 'hallucination' AND label = 'hallucinated') AS hallucinated,
    countIf(kind = 'hallucination' AND label = 'grounded') AS grounded,
    countIf(kind = 'hallucination' AND label = 'unsure') AS unsure,
    countIf(kind = 'rating') AS rating_count,
    countIf(request_ts IS NULL) AS orphaned,
    sumIf(ifNull(value, 0), kind = 'rating') AS rating_sum,
    groupBitmapStateIf(halfMD5(request_id), kind = 'thumbs' AND value = 0) AS neg_thumbs,
    groupBitmapStateIf(halfMD5(request_id), kind = 'task_success' AND value = 0) AS neg_task,
    groupBitmapStateIf(halfMD5(request_id), kind = 'hallucination' AND label = 'hallucinated') AS neg_hallucination
FROM {source}
GROUP BY minute, {DIM_KEY}, request_status
"""


def rebuild_plan(store, start, end) -> list:
    """The (day start, day end) ranges a rebuild of [start, end) will process.

    Only where raw rows exist: a range past the data would delete rollups with
    nothing to rebuild them from (raw rows expire before nothing else does).
    """
    import datetime as dt
    lo, hi, n = store.query("SELECT min(ts), max(ts), count() FROM "
                            "(SELECT ts FROM requests UNION ALL SELECT ts FROM feedback)")[0]
    if not n:
        return []
    lo = lo.replace(tzinfo=dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    hi = hi.replace(tzinfo=dt.timezone.utc) + dt.timedelta(minutes=1)
    t, stop, out = max(start, lo), min(end, hi), []
    while t < stop:
        nxt = min(t + dt.timedelta(days=1), stop)
        out.append((t, nxt))
        t = nxt
    return out


def rebuild(store, start, end, on_day=None) -> int:
    """Recompute requests_1m and feedback_1m for [start, end) from the raw tables, a day at a time.

    For after a schema change or a repair: each day's rollup rows are deleted
    and re-aggregated from the de-duplicated raw rows (FINAL). Returns the days done.
    """
    plan = rebuild_plan(store, start, end)
    for t, hi in plan:
        params = {"lo": int(t.timestamp()), "hi": int(hi.timestamp())}
        rng = "{col} >= toDateTime({{lo:UInt32}}, 'UTC') AND {col} < toDateTime({{hi:UInt32}}, 'UTC')"
        for table in ("requests_1m", "feedback_1m"):
            store.command(f"ALTER TABLE {table} DELETE WHERE {rng.format(col='minute')} "
                          "SETTINGS mutations_sync = 2", params)
        store.command("INSERT INTO requests_1m " + requests_rollup_select(
            f"(SELECT * FROM requests FINAL WHERE {rng.format(col='ts')}) AS requests"), params)
        store.command("INSERT INTO feedback_1m " + feedback_rollup_select(
            f"(SELECT * FROM feedback FINAL WHERE {rng.format(col='ifNull(request_ts, ts)')}) AS feedback"), params)
        if on_day:
            on_day(t)
    return len(plan)
