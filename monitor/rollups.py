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

# Kinds of negative feedback: the condition on a feedback row, and the rollup column holding
# a bitmap of the request-id hashes that got it.
NEGATIVE_FEEDBACK_WHEN = {
    "thumbs_down": "kind = 'thumbs' AND value = 0",
    "task_failed": "kind = 'task_success' AND value = 0",
    "hallucinated": "kind = 'hallucination' AND label = 'hallucinated'",
}
# The feedback rollups' counters: the condition on a feedback row each counts.
FEEDBACK_COUNTS = {
    "thumbs_up": "kind = 'thumbs' AND value = 1",
    "thumbs_down": NEGATIVE_FEEDBACK_WHEN["thumbs_down"],
    "task_success": "kind = 'task_success' AND value = 1",
    "task_failure": NEGATIVE_FEEDBACK_WHEN["task_failed"],
    "hallucinated": NEGATIVE_FEEDBACK_WHEN["hallucinated"],
    "grounded": "kind = 'hallucination' AND label = 'grounded'",
    "unsure": "kind = 'hallucination' AND label = 'unsure'",
    "rating_count": "kind = 'rating'",
    "orphaned": "request_ts IS NULL",
}
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

# Rollups, finest first: (table, function giving a row's bucket, bucket seconds). Each family
# is fed from its raw table at insert time. Long windows read the coarse ones: merging a
# t-digest or bitmap state costs about the same whatever it holds, so a 30-day figure over
# day buckets merges ~60x fewer states than over minute buckets.
REQUEST_ROLLUPS = (("requests_1m", "toStartOfMinute", 60), ("requests_1h", "toStartOfHour", 3600),
                   ("requests_1d", "toStartOfDay", 86400))
FEEDBACK_ROLLUPS = (("feedback_1m", "toStartOfMinute", 60), ("feedback_1h", "toStartOfHour", 3600),
                    ("feedback_1d", "toStartOfDay", 86400))
# The same request figures per (service, feature) only, for reads that need no other dimension:
# a day of all traffic is a handful of t-digest states instead of one per dimension set (~20x fewer).
# Minutes come from requests_1m (its finest rows are cheap to read).
FEATURE_DIMENSIONS = ("service", "feature")
FEATURE_ROLLUPS = (("requests_1m", "toStartOfMinute", 60), ("requests_feature_1h", "toStartOfHour", 3600),
                   ("requests_feature_1d", "toStartOfDay", 86400))
ROLLUPS = {"requests": REQUEST_ROLLUPS, "feedback": FEEDBACK_ROLLUPS, "requests_by_feature": FEATURE_ROLLUPS}


def rollup_for(seconds: int, family: str = "requests") -> str:
    """The coarsest rollup of ``family`` whose buckets tile windows of ``seconds``."""
    tables = ROLLUPS[family]
    best = tables[0][0]
    for table, _, size in tables:
        if seconds % size == 0:
            best = table
    return best


def covering(lo, hi, family: str = "requests") -> list[tuple[str, object, object]]:
    """(table, from, to) pieces that tile [lo, hi) (minute-aligned) with as few rollup rows as possible."""
    import datetime as dt

    tables = ROLLUPS[family]
    pieces = []

    def split(a, b, level):
        if a >= b:
            return
        table, _, size = tables[level]
        if level == 0:
            pieces.append((table, a, b))
            return
        epoch = int(a.timestamp())
        first = a if epoch % size == 0 else a + dt.timedelta(seconds=size - epoch % size)
        last = b - dt.timedelta(seconds=int(b.timestamp()) % size)
        if first >= last:
            split(a, b, level - 1)
            return
        split(a, first, level - 1)
        pieces.append((table, first, last))
        split(last, b, level - 1)

    split(lo, hi, len(tables) - 1)
    return pieces


def covering_source(spans, where: str = "", columns: str = "*", family: str = "requests") -> tuple[str, dict]:
    """A FROM clause over the rollups of ``family`` tiling each span, and its parameters.

    ``spans`` is a list of (lo, hi); each row of the source has the column ``span``, the
    index of the span it was read for (spans may overlap: an incident and its baseline a
    week before). ``where`` is extra conditions ending in AND, with its own {name:Type}
    parameters; ``columns`` the rollup columns the outer query needs (fewer columns,
    fewer states read).

    Each table is read by one SELECT with its time ranges OR'ed (per span when spans
    overlap): a pipeline per range costs more than the rows of a short range.
    """
    params: dict = {}
    bounds = sorted(spans)
    disjoint = all(a[1] <= b[0] for a, b in zip(bounds, bounds[1:]))
    groups: dict[tuple, list[str]] = {}
    n = 0
    for i, span in enumerate(spans):
        params[f"slo{i}"], params[f"shi{i}"] = int(span[0].timestamp()), int(span[1].timestamp())
        for table, a, b in covering(span[0], span[1], family):
            groups.setdefault((table, None if disjoint else i), []).append(
                f"(minute >= toDateTime({{lo{n}:UInt32}}, 'UTC') AND minute < toDateTime({{hi{n}:UInt32}}, 'UTC'))")
            params[f"lo{n}"], params[f"hi{n}"] = int(a.timestamp()), int(b.timestamp())
            n += 1
    which = "multiIf(" + ", ".join(
        f"minute >= toDateTime({{slo{i}:UInt32}}, 'UTC') AND minute < toDateTime({{shi{i}:UInt32}}, 'UTC'), {i}"
        for i in range(len(spans))) + ", -1)"
    parts = [f"SELECT {which if i is None else i} AS span, {columns} FROM {table} WHERE {where} ({' OR '.join(conds)})"
             for (table, i), conds in groups.items()]
    return "(" + " UNION ALL ".join(parts) + ")", params


# The request rollups' additive columns (SimpleAggregateFunction(sum)).
REQUEST_SUMS = ("requests", "status_ok", "status_error", "status_timeout", "status_blocked", "status_cancelled",
                "ttft_count", "input_tokens", "output_tokens", "cached_input_tokens", "gen_output_tokens", "unpriced",
                "cache_hits", "retrieval_known", "retrieval_hits", "grounded_known", "grounded_true", "safety_flagged",
                "pii_detected", "injection_detected", "text_truncated", "latency_sum_ms", "gen_seconds", "cost_usd")


def requests_remerge_columns() -> str:
    """SELECT columns merging request rollup rows into coarser rows with the same column names
    (sums of sums, merges of merged states): how a coarser rollup is filled from a finer one."""
    lq, tq = quantiles_sql(LATENCY_QUANTILES), quantiles_sql(TTFT_QUANTILES)
    return ", ".join([f"sum({c}) AS {c}" for c in REQUEST_SUMS]
                     + [f"quantilesTDigestMergeState({lq})(latency_q) AS latency_q",
                        f"quantilesTDigestMergeState({tq})(ttft_q) AS ttft_q",
                        "sumForEachMergeState(latency_le) AS latency_le"])


def requests_rollup_select(source: str = "requests", bucket: str = "toStartOfMinute",
                           dims: tuple[str, ...] = DIMENSIONS) -> str:
    """The SELECT behind the request rollups: used by their materialized views and by `nlpmon rollups rebuild`.

    ``bucket`` turns ts into the row's bucket start (kept in the column ``minute`` in
    every rollup: the bucket's first minute). Source columns are qualified where an alias of the same name exists, because
    ClickHouse resolves aliases before columns. ``source`` may be a subquery
    aliased ``requests``.
    """
    lq, tq = quantiles_sql(LATENCY_QUANTILES), quantiles_sql(TTFT_QUANTILES)
    buckets = ", ".join(f"{float(b)}" for b in LATENCY_BUCKETS_MS)
    dim_key = ", ".join(dims)
    return f"""SELECT
    {bucket}(ts) AS minute, {dim_key},
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
GROUP BY minute, {dim_key}
"""


def feedback_rollup_select(source: str = "feedback", bucket: str = "toStartOfMinute") -> str:
    """The SELECT behind the feedback rollups (their views and the rebuild).

    Feedback counts in the bucket of its request's time; feedback whose request is
    unknown counts in its own, under empty dimensions, as "orphaned".
    """
    counts = ",\n    ".join(f"countIf({when}) AS {name}" for name, when in FEEDBACK_COUNTS.items())
    bitmaps = ",\n    ".join(f"groupBitmapStateIf(halfMD5(request_id), {NEGATIVE_FEEDBACK_WHEN[kind]}) AS {column}"
                             for kind, column in NEGATIVE_FEEDBACK.items())
    return f"""SELECT
    {bucket}(ifNull(request_ts, ts)) AS minute, {DIM_KEY}, request_status,
    count() AS feedback,
    {counts},
    sumIf(ifNull(value, 0), kind = 'rating') AS rating_sum,
    {bitmaps}
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
        for table, _, _ in REQUEST_ROLLUPS + FEATURE_ROLLUPS[1:] + FEEDBACK_ROLLUPS:
            store.command(f"ALTER TABLE {table} DELETE WHERE {rng.format(col='minute')} "
                          "SETTINGS mutations_sync = 2", params)
        for table, bucket, _ in REQUEST_ROLLUPS:
            store.command(f"INSERT INTO {table} " + requests_rollup_select(
                f"(SELECT * FROM requests FINAL WHERE {rng.format(col='ts')}) AS requests", bucket), params)
        for table, bucket, _ in FEATURE_ROLLUPS[1:]:
            store.command(f"INSERT INTO {table} " + requests_rollup_select(
                f"(SELECT * FROM requests FINAL WHERE {rng.format(col='ts')}) AS requests", bucket,
                FEATURE_DIMENSIONS), params)
        for table, bucket, _ in FEEDBACK_ROLLUPS:
            store.command(f"INSERT INTO {table} " + feedback_rollup_select(
                f"(SELECT * FROM feedback FINAL WHERE {rng.format(col='ifNull(request_ts, ts)')}) AS feedback",
                bucket), params)
        if on_day:
            on_day(t)
    return len(plan)
