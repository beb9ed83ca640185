"""What the rollups hold: the SQL that fills them and the SQL fragments that read them.

The materialized views that fill the rollup tables were created from
``requests_rollup_select`` and ``feedback_rollup_select`` (the migrations keep
frozen copies of the SQL they applied); ``nlpmon rollups rebuild`` runs the
same SELECTs, so a rebuilt rollup is what the views would have written. The
jobs and the pages read the rollups with the fragments at the end of this
module, so a figure on a page is the figure a job wrote.

The latency histogram boundaries live here because a latency SLO can only use
a threshold that is one of them: the rollup counts requests at or under each
boundary when they are inserted, exactly, so "good = latency_ms <= threshold"
needs no scan of raw rows (Prometheus histograms work the same way).
"""
from __future__ import annotations

import datetime as dt

from monitor.foundation.stats import ratio

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
# Segments: the request figures per (service, feature) and one segment dimension at a time (language,
# region, tenant and the tags promoted by segments.tags, held by each request in segment_tags), so a
# regression of one language shows without multiplying the rollups above by every combination: a request
# is counted once per segment dimension it has a value for, each a row of (dimension, value).
SEGMENT_DIMENSIONS = ("language", "region", "tenant")


def segment_dimensions(config) -> tuple[str, ...]:
    """Every segment dimension of this deployment: the built-in ones and the tags segments.tags promotes."""
    return SEGMENT_DIMENSIONS + tuple(config.segments.tags)


# The raw columns requests_rollup_select reads besides the dimensions.
ROLLUP_SOURCE_COLUMNS = ("ts", "service", "feature", "status", "ttft_ms", "input_tokens", "output_tokens",
                         "cached_input_tokens", "cost_source", "cache_hit", "retrieval_hit", "grounded",
                         "safety_flagged", "pii_detected", "injection_detected", "text_truncated", "latency_ms",
                         "cost_usd")
SEGMENT_KEY = ("service", "feature", "dimension", "value")
SEGMENT_ROLLUPS = (("segments_1m", "toStartOfMinute", 60), ("segments_1h", "toStartOfHour", 3600),
                   ("segments_1d", "toStartOfDay", 86400))
ROLLUPS = {"requests": REQUEST_ROLLUPS, "feedback": FEEDBACK_ROLLUPS, "requests_by_feature": FEATURE_ROLLUPS,
           "segments": SEGMENT_ROLLUPS}


def segmented(source: str = "requests") -> str:
    """``source`` (a table, or a subquery in parentheses) with each request once per segment it is in: the
    columns ``dimension`` and ``value``; empty values are in no segment, except of the OUTCOME_SPLITS, where
    every request has one. Aliased ``requests`` for :func:`requests_rollup_select`."""
    # Only what the rollup reads: ARRAY JOIN copies each column once per segment, texts and embeddings too.
    return (f"(SELECT {', '.join(ROLLUP_SOURCE_COLUMNS)}, segment.1 AS dimension, segment.2 AS value FROM {source} "
            f"ARRAY JOIN {SEGMENTS_OF_REQUEST} AS segment) AS requests")


# The (dimension, value) pairs of a row that carries the segment columns (requests, feedback), without the
# empty ones: what a row is ARRAY JOINed with to count it once per segment it is in.
SEGMENTS_OF_ROW = ("arrayFilter(s -> s.2 != '', arrayConcat(["
                   + ", ".join(f"('{d}', toString({d}))" for d in SEGMENT_DIMENSIONS) + "], "
                   "arrayMap((k, v) -> (toString(k), v), mapKeys(segment_tags), mapValues(segment_tags))))")


# Dimensions the segment rollups also count every request in, its empty value included, so that a change is
# split over them from the rollups (monitor.foundation.explain): the provider, and the error type and HTTP
# status of a request. They are not segments the pages show.
OUTCOME_SPLITS = ("provider", "error_type", "http_status")
SEGMENTS_OF_REQUEST = (f"arrayConcat({SEGMENTS_OF_ROW}, ["
                       + ", ".join(f"('{d}', toString({d}))" for d in OUTCOME_SPLITS) + "])")


def segment_where(dimension: str, value: str, rows: bool) -> tuple[str, dict]:
    """The conditions (starting with AND) and parameters selecting one segment: on the segment rollups'
    (dimension, value) when ``rows`` is False, else on rows that carry the segment columns (requests and
    feedback: language, region and tenant are columns, a promoted tag is a key of segment_tags)."""
    params = {"seg_dim": dimension, "seg_value": value}
    if not rows:
        return " AND dimension = {seg_dim:String} AND value = {seg_value:String}", params
    column = dimension if dimension in SEGMENT_DIMENSIONS else "segment_tags[{seg_dim:String}]"
    return f" AND {column} = {{seg_value:String}}", params


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
    week before). ``where`` is extra conditions starting with AND, with its own {name:Type}
    parameters; ``columns`` the rollup columns the outer query needs (fewer columns,
    fewer states read).

    Each table is read by one SELECT with its time ranges OR'ed (per span when spans
    overlap): a pipeline per range costs more than the rows of a short range.
    """
    params: dict = {}
    bounds = sorted(spans)
    disjoint = all(a[1] <= b[0] for a, b in zip(bounds, bounds[1:]))
    ranges: dict[str, dict[int, list[str]]] = {}  # table -> span -> its time ranges there
    n = 0
    for i, span in enumerate(spans):
        params[f"slo{i}"], params[f"shi{i}"] = int(span[0].timestamp()), int(span[1].timestamp())
        for table, a, b in covering(span[0], span[1], family):
            ranges.setdefault(table, {}).setdefault(i, []).append(
                f"(minute >= toDateTime({{lo{n}:UInt32}}, 'UTC') AND minute < toDateTime({{hi{n}:UInt32}}, 'UTC'))")
            params[f"lo{n}"], params[f"hi{n}"] = int(a.timestamp()), int(b.timestamp())
            n += 1
    parts = []
    for table, per_span in ranges.items():
        if disjoint:
            span = "multiIf(" + ", ".join(
                f"minute >= toDateTime({{slo{i}:UInt32}}, 'UTC') AND minute < toDateTime({{shi{i}:UInt32}}, 'UTC'), {i}"
                for i in per_span) + ", -1)"
        else:
            # Overlapping spans (nested windows, an incident and its baseline): a row counts once in every
            # span whose tiles hold it, from one read of the table rather than one per span.
            span = "arrayJoin(arrayFilter(x -> x >= 0, [" + ", ".join(
                f"if({' OR '.join(conds)}, {i}, -1)" for i, conds in per_span.items()) + "]))"
        conds = [c for cs in per_span.values() for c in cs]
        parts.append(f"SELECT {span} AS span, {columns} FROM {table} WHERE ({' OR '.join(conds)}){where}")
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


def feedback_remerge_columns() -> str:
    """SELECT columns merging feedback rollup rows into coarser rows with the same column names."""
    return ", ".join([f"sum({c}) AS {c}" for c in ("feedback", *FEEDBACK_COUNTS, "rating_sum")]
                     + [f"groupBitmapMergeState({c}) AS {c}" for c in NEGATIVE_FEEDBACK.values()])


# How each rollup table can be rebuilt: the minute tables from the raw rows (with the views' own
# SELECT), each coarser table by merging the rows of the next finer one (sums and merged states:
# exact for every count). (table, source, bucket function, bucket seconds, dimensions, counter).
LINEAGE = (
    ("requests_1m", "requests", "toStartOfMinute", 60, DIMENSIONS, "requests"),
    ("requests_1h", "requests_1m", "toStartOfHour", 3600, DIMENSIONS, "requests"),
    ("requests_1d", "requests_1h", "toStartOfDay", 86400, DIMENSIONS, "requests"),
    ("requests_feature_1h", "requests_1h", "toStartOfHour", 3600, FEATURE_DIMENSIONS, "requests"),
    ("requests_feature_1d", "requests_1d", "toStartOfDay", 86400, FEATURE_DIMENSIONS, "requests"),
    ("feedback_1m", "feedback", "toStartOfMinute", 60, DIMENSIONS + ("request_status",), "feedback"),
    ("feedback_1h", "feedback_1m", "toStartOfHour", 3600, DIMENSIONS + ("request_status",), "feedback"),
    ("feedback_1d", "feedback_1h", "toStartOfDay", 86400, DIMENSIONS + ("request_status",), "feedback"),
)
# The time a raw row counts at in its rollups: a request's own, feedback's its request's (when known).
RAW_TIME = {"requests": "ts", "feedback": "ifNull(request_ts, ts)"}


def rebuild_select(table: str, where: str) -> str:
    """The SELECT that rebuilds rows of ``table`` from its LINEAGE source; ``where`` (conditions on the
    source's time: ``{time}`` stands for its time column) chooses which buckets."""
    _, source, bucket, _, dims, _ = next(entry for entry in LINEAGE if entry[0] == table)
    if source in RAW_TIME:
        raw = f"(SELECT * FROM {source} FINAL WHERE {where.format(time=RAW_TIME[source])}) AS {source}"
        if source == "requests":
            return requests_rollup_select(raw, bucket, dims)
        return feedback_rollup_select(raw, bucket)
    merge = requests_remerge_columns() if source.startswith("requests") else feedback_remerge_columns()
    key = ", ".join(dims)
    return (f"SELECT {bucket}(src.minute) AS minute, {key}, {merge} FROM {source} AS src "
            f"WHERE {where.format(time='src.minute')} GROUP BY minute, {key}")


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


# -- reading the rollups: the shared SELECT fragments and what their rows mean ---------------------
# The sli and cost jobs and the overview read the same columns with the same SELECTs, so a figure
# on a page is the figure the job wrote.
STATUS_COLUMNS = {"ok": "status_ok", "error": "status_error", "timeout": "status_timeout",
                  "blocked": "status_blocked", "cancelled": "status_cancelled"}

REQUEST_SELECT = f"""
       sum(requests) AS requests, sum(status_ok) AS ok, sum(status_error) AS errors,
       sum(status_timeout) AS timeouts, sum(ttft_count) AS ttft_count,
       sum(gen_output_tokens) AS gen_tokens, sum(gen_seconds) AS gen_seconds,
       sum(cache_hits) AS cache_hits, sum(retrieval_known) AS retrieval_known,
       sum(retrieval_hits) AS retrieval_hits, sum(grounded_known) AS grounded_known,
       sum(grounded_true) AS grounded_true, sum(safety_flagged) AS safety_flagged,
       sum(pii_detected) AS pii_detected, sum(injection_detected) AS injection_detected,
       quantilesTDigestMerge({quantiles_sql(LATENCY_QUANTILES)})(latency_q) AS lq,
       quantilesTDigestMerge({quantiles_sql(TTFT_QUANTILES)})(ttft_q) AS tq"""

FEEDBACK_SELECT = """
       sum(thumbs_up) AS thumbs_up, sum(thumbs_down) AS thumbs_down,
       sum(task_success) AS task_success, sum(task_failure) AS task_failure"""


def _pct(q: float) -> str:
    return f"p{int(round(q * 100))}"


def request_metrics(r: dict) -> dict[str, float | None]:
    n = r["requests"]
    out = {
        "requests": float(n),
        "error_rate": ratio(r["errors"] + r["timeouts"], n),
        "availability": ratio(r["ok"], n),
        "output_tokens_per_second": ratio(r["gen_tokens"], r["gen_seconds"]),
        "cache_hit_rate": ratio(r["cache_hits"], n),
        "retrieval_hit_rate": ratio(r["retrieval_hits"], r["retrieval_known"]),
        "grounding_rate": ratio(r["grounded_true"], r["grounded_known"]),
        "safety_violation_rate": ratio(r["safety_flagged"], n),
        "pii_rate": ratio(r["pii_detected"], n),
        "injection_rate": ratio(r["injection_detected"], n),
    }
    for q, v in zip(LATENCY_QUANTILES, r["lq"]):
        out[f"latency_{_pct(q)}_ms"] = v if n else None
    for q, v in zip(TTFT_QUANTILES, r["tq"]):
        out[f"ttft_{_pct(q)}_ms"] = v if r["ttft_count"] else None
    return out


def slo_good_sql(slo, when: str = "") -> str:
    """SQL counting an SLO's good requests in rollup rows: ok for availability, at or under the
    threshold (a histogram boundary, counted exactly at insert) for latency; of the rows where
    ``when`` holds, when given (several SLOs counted in one pass)."""
    if slo.sli == "availability":
        return f"sumIf(status_ok, {when})" if when else "sum(status_ok)"
    merged = f"sumForEachMergeIf(latency_le, {when})" if when else "sumForEachMerge(latency_le)"
    return f"{merged}[{bucket_index(slo.threshold_ms)}]"


# -- successful outcomes: the one rule the cost job, the pages and the exports count by --------------------
def success_status_sql(statuses) -> str:
    """SQL summing, over request rollup rows, the requests with a status in ``outcomes.success.statuses``."""
    return " + ".join(f"sum({STATUS_COLUMNS[s]})" for s in statuses) or "toUInt64(0)"


def unhappy_sql(kinds, rows: bool) -> str:
    """SQL counting the requests with a success status (``{statuses:Array(String)}``) that got any of the
    negative feedback ``kinds`` (``outcomes.success.negative_feedback``), each once however much it got.

    ``rows``: over feedback rows (distinct request ids; the pages read a period's rows, cheaper than
    merging a bitmap per minute); else over feedback rollup rows already limited to those statuses
    (the union of their bitmaps of request-id hashes; the cost job's windows)."""
    if rows:
        # The ids' 64-bit hashes, as the rollups' bitmaps hold: a set of integers is built faster than one of
        # strings (a third of a 30-day read at 100M requests), and a collision among millions is ~1e-7 likely.
        return (f"uniqExactIf(halfMD5(request_id), request_status IN {{statuses:Array(String)}} "
                f"AND ({negative_when(kinds)}))")
    columns = [NEGATIVE_FEEDBACK[k] for k in kinds]
    if not columns:
        return "toUInt64(0)"
    expr = f"groupBitmapMergeState({columns[0]})"
    for c in columns[1:]:
        expr = f"bitmapOr({expr}, groupBitmapMergeState({c}))"
    return f"bitmapCardinality({expr})"


def negative_when(kinds) -> str:
    """The condition on a feedback row that it is one of the negative feedback ``kinds``."""
    return " OR ".join(f"({NEGATIVE_FEEDBACK_WHEN[k]})" for k in kinds) or "0"


def successful_outcomes(success_status: int, unhappy: int) -> int:
    """Requests with a success status and no negative feedback."""
    return max(success_status - unhappy, 0)


def feedback_metrics(r: dict) -> dict[str, float | None]:
    return {
        "thumbs_up_rate": ratio(r["thumbs_up"], r["thumbs_up"] + r["thumbs_down"]),
        "task_success_rate": ratio(r["task_success"], r["task_success"] + r["task_failure"]),
    }
