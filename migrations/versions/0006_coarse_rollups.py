"""Coarser rollups for long windows: feedback per hour and day, requests per (service, feature) per hour and day.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

feedback_1m alone made a 30-day feedback figure merge one bitmap state per
minute and dimension set (300k states on 10M requests with 3% rated); the
hour and day tables let monitor.foundation.rollups.covering tile long windows with
coarse rows, as it does for requests. Same columns as feedback_1m; a row's
bucket is the start of the hour (day) of its request's time.

requests_feature_1h/1d hold the request rollups' columns for (service, feature)
alone: the overview of all traffic reads a few t-digest states per day instead
of one per model, prompt_version, environment and region (about 20 times fewer
on the benchmark's data), and merging those states is most of its cost. They are
back-filled by merging the existing requests_1h/1d rows (exact: sums and merged
states).

The views count what is inserted from their creation on; the feedback already
stored is aggregated once from the de-duplicated raw rows. Like every upgrade
this runs before the service starts (``nlpmon db upgrade``, ``make run``): feedback
inserted while it runs may be counted twice, which ``nlpmon rollups rebuild``
for that day repairs. A failed attempt is simply run again: each table is
emptied before it is filled.

The SQL below is inline, exactly as this revision applied it: an applied
migration never changes, whatever later code does to the rollup SQL.
"""
from alembic import context, op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = (("feedback_1h", "toStartOfHour"), ("feedback_1d", "toStartOfDay"))
FEATURE_TABLES = (("requests_feature_1h", "toStartOfHour", "requests_1h"),
                  ("requests_feature_1d", "toStartOfDay", "requests_1d"))


def upgrade() -> None:
    days = int(context.config.attributes["nlpmon_config"].retention.days)
    for statement in _statements(days):
        op.execute(statement)


def _statements(days: int) -> list[str]:
    # As applied: generated in November 2026 by monitor.rollups (requests_rollup_select,
    # feedback_rollup_select, requests_remerge_columns), inlined so that editing today's
    # code never changes what this revision does.
    return [
    f"""
CREATE TABLE IF NOT EXISTS feedback_1h (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    feature         LowCardinality(String),
    model           LowCardinality(String),
    prompt_version  LowCardinality(String),
    environment     LowCardinality(String),
    region          LowCardinality(String),
    request_status  LowCardinality(String),
    feedback         SimpleAggregateFunction(sum, UInt64),
    thumbs_up        SimpleAggregateFunction(sum, UInt64),
    thumbs_down      SimpleAggregateFunction(sum, UInt64),
    task_success     SimpleAggregateFunction(sum, UInt64),
    task_failure     SimpleAggregateFunction(sum, UInt64),
    hallucinated     SimpleAggregateFunction(sum, UInt64),
    grounded         SimpleAggregateFunction(sum, UInt64),
    unsure           SimpleAggregateFunction(sum, UInt64),
    rating_count     SimpleAggregateFunction(sum, UInt64),
    orphaned         SimpleAggregateFunction(sum, UInt64),
    rating_sum      SimpleAggregateFunction(sum, Float64),
    neg_thumbs        AggregateFunction(groupBitmap, UInt64),
    neg_task          AggregateFunction(groupBitmap, UInt64),
    neg_hallucination AggregateFunction(groupBitmap, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (service, feature, minute, model, prompt_version, environment, region, request_status)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 1024
""",
    """TRUNCATE TABLE feedback_1h""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS feedback_1h_mv TO feedback_1h AS
SELECT
    toStartOfHour(ifNull(request_ts, ts)) AS minute, service, feature, model, prompt_version, """
    """environment, region, request_status,
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
    groupBitmapStateIf(halfMD5(request_id), """
    """kind = 'hallucination' AND label = 'hallucinated') AS neg_hallucination
FROM feedback
GROUP BY minute, service, feature, model, prompt_version, environment, region, request_status
""",
    """INSERT INTO feedback_1h SELECT
    toStartOfHour(ifNull(request_ts, ts)) AS minute, service, feature, model, prompt_version, """
    """environment, region, request_status,
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
    groupBitmapStateIf(halfMD5(request_id), """
    """kind = 'hallucination' AND label = 'hallucinated') AS neg_hallucination
FROM (SELECT * FROM feedback FINAL) AS feedback
GROUP BY minute, service, feature, model, prompt_version, environment, region, request_status
""",
    f"""
CREATE TABLE IF NOT EXISTS feedback_1d (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    feature         LowCardinality(String),
    model           LowCardinality(String),
    prompt_version  LowCardinality(String),
    environment     LowCardinality(String),
    region          LowCardinality(String),
    request_status  LowCardinality(String),
    feedback         SimpleAggregateFunction(sum, UInt64),
    thumbs_up        SimpleAggregateFunction(sum, UInt64),
    thumbs_down      SimpleAggregateFunction(sum, UInt64),
    task_success     SimpleAggregateFunction(sum, UInt64),
    task_failure     SimpleAggregateFunction(sum, UInt64),
    hallucinated     SimpleAggregateFunction(sum, UInt64),
    grounded         SimpleAggregateFunction(sum, UInt64),
    unsure           SimpleAggregateFunction(sum, UInt64),
    rating_count     SimpleAggregateFunction(sum, UInt64),
    orphaned         SimpleAggregateFunction(sum, UInt64),
    rating_sum      SimpleAggregateFunction(sum, Float64),
    neg_thumbs        AggregateFunction(groupBitmap, UInt64),
    neg_task          AggregateFunction(groupBitmap, UInt64),
    neg_hallucination AggregateFunction(groupBitmap, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (service, feature, minute, model, prompt_version, environment, region, request_status)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 1024
""",
    """TRUNCATE TABLE feedback_1d""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS feedback_1d_mv TO feedback_1d AS
SELECT
    toStartOfDay(ifNull(request_ts, ts)) AS minute, service, feature, model, prompt_version, """
    """environment, region, request_status,
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
    groupBitmapStateIf(halfMD5(request_id), """
    """kind = 'hallucination' AND label = 'hallucinated') AS neg_hallucination
FROM feedback
GROUP BY minute, service, feature, model, prompt_version, environment, region, request_status
""",
    """INSERT INTO feedback_1d SELECT
    toStartOfDay(ifNull(request_ts, ts)) AS minute, service, feature, model, prompt_version, """
    """environment, region, request_status,
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
    groupBitmapStateIf(halfMD5(request_id), """
    """kind = 'hallucination' AND label = 'hallucinated') AS neg_hallucination
FROM (SELECT * FROM feedback FINAL) AS feedback
GROUP BY minute, service, feature, model, prompt_version, environment, region, request_status
""",
    f"""
CREATE TABLE IF NOT EXISTS requests_feature_1h (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    feature         LowCardinality(String),
    requests             SimpleAggregateFunction(sum, UInt64),
    status_ok            SimpleAggregateFunction(sum, UInt64),
    status_error         SimpleAggregateFunction(sum, UInt64),
    status_timeout       SimpleAggregateFunction(sum, UInt64),
    status_blocked       SimpleAggregateFunction(sum, UInt64),
    status_cancelled     SimpleAggregateFunction(sum, UInt64),
    ttft_count           SimpleAggregateFunction(sum, UInt64),
    input_tokens         SimpleAggregateFunction(sum, UInt64),
    output_tokens        SimpleAggregateFunction(sum, UInt64),
    cached_input_tokens  SimpleAggregateFunction(sum, UInt64),
    gen_output_tokens    SimpleAggregateFunction(sum, UInt64),
    unpriced             SimpleAggregateFunction(sum, UInt64),
    cache_hits           SimpleAggregateFunction(sum, UInt64),
    retrieval_known      SimpleAggregateFunction(sum, UInt64),
    retrieval_hits       SimpleAggregateFunction(sum, UInt64),
    grounded_known       SimpleAggregateFunction(sum, UInt64),
    grounded_true        SimpleAggregateFunction(sum, UInt64),
    safety_flagged       SimpleAggregateFunction(sum, UInt64),
    pii_detected         SimpleAggregateFunction(sum, UInt64),
    injection_detected   SimpleAggregateFunction(sum, UInt64),
    text_truncated       SimpleAggregateFunction(sum, UInt64),
    latency_sum_ms  SimpleAggregateFunction(sum, Float64),
    gen_seconds     SimpleAggregateFunction(sum, Float64),
    cost_usd        SimpleAggregateFunction(sum, Float64),
    latency_q       AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), Float64),
    ttft_q          AggregateFunction(quantilesTDigest(0.5, 0.95), Float64),
    latency_le      AggregateFunction(sumForEach, Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (service, feature, minute)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 256
""",
    """TRUNCATE TABLE requests_feature_1h""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS requests_feature_1h_mv TO requests_feature_1h AS
SELECT
    toStartOfHour(ts) AS minute, service, feature,
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
    sumIf(greatest(latency_ms - ifNull(ttft_ms, 0), 0) / 1000, """
    """status = 'ok' AND requests.output_tokens > 0) AS gen_seconds,
    sum(cost_usd) AS cost_usd,
    quantilesTDigestState(0.5, 0.9, 0.95, 0.99)(latency_ms) AS latency_q,
    quantilesTDigestStateIf(0.5, 0.95)(assumeNotNull(ttft_ms), ttft_ms IS NOT NULL) AS ttft_q,
    sumForEachState(arrayMap(b -> toUInt64(latency_ms <= b), [50.0, 100.0, 200.0, 250.0, 300.0, """
    """400.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0, 5000.0, 7500.0, 10000.0, """
    """15000.0, 20000.0, 30000.0, 60000.0])) AS latency_le
FROM requests
GROUP BY minute, service, feature
""",
    """INSERT INTO requests_feature_1h (minute, service, feature, requests, status_ok, status_error, """
    """status_timeout, status_blocked, status_cancelled, ttft_count, input_tokens, output_tokens, """
    """cached_input_tokens, gen_output_tokens, unpriced, cache_hits, retrieval_known, retrieval_hits, """
    """grounded_known, grounded_true, safety_flagged, pii_detected, injection_detected, text_truncated, """
    """latency_sum_ms, gen_seconds, cost_usd, latency_q, ttft_q, latency_le) SELECT minute, service, """
    """feature, sum(requests) AS requests, sum(status_ok) AS status_ok, sum(status_error) AS status_error, """
    """sum(status_timeout) AS status_timeout, sum(status_blocked) AS status_blocked, """
    """sum(status_cancelled) AS status_cancelled, sum(ttft_count) AS ttft_count, """
    """sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, """
    """sum(cached_input_tokens) AS cached_input_tokens, sum(gen_output_tokens) AS gen_output_tokens, """
    """sum(unpriced) AS unpriced, sum(cache_hits) AS cache_hits, sum(retrieval_known) AS retrieval_known, """
    """sum(retrieval_hits) AS retrieval_hits, sum(grounded_known) AS grounded_known, """
    """sum(grounded_true) AS grounded_true, sum(safety_flagged) AS safety_flagged, """
    """sum(pii_detected) AS pii_detected, sum(injection_detected) AS injection_detected, """
    """sum(text_truncated) AS text_truncated, sum(latency_sum_ms) AS latency_sum_ms, """
    """sum(gen_seconds) AS gen_seconds, sum(cost_usd) AS cost_usd, quantilesTDigestMergeState(0.5, 0.9, """
    """0.95, 0.99)(latency_q) AS latency_q, quantilesTDigestMergeState(0.5, 0.95)(ttft_q) AS ttft_q, """
    """sumForEachMergeState(latency_le) AS latency_le FROM requests_1h GROUP BY minute, service, feature""",
    f"""
CREATE TABLE IF NOT EXISTS requests_feature_1d (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    feature         LowCardinality(String),
    requests             SimpleAggregateFunction(sum, UInt64),
    status_ok            SimpleAggregateFunction(sum, UInt64),
    status_error         SimpleAggregateFunction(sum, UInt64),
    status_timeout       SimpleAggregateFunction(sum, UInt64),
    status_blocked       SimpleAggregateFunction(sum, UInt64),
    status_cancelled     SimpleAggregateFunction(sum, UInt64),
    ttft_count           SimpleAggregateFunction(sum, UInt64),
    input_tokens         SimpleAggregateFunction(sum, UInt64),
    output_tokens        SimpleAggregateFunction(sum, UInt64),
    cached_input_tokens  SimpleAggregateFunction(sum, UInt64),
    gen_output_tokens    SimpleAggregateFunction(sum, UInt64),
    unpriced             SimpleAggregateFunction(sum, UInt64),
    cache_hits           SimpleAggregateFunction(sum, UInt64),
    retrieval_known      SimpleAggregateFunction(sum, UInt64),
    retrieval_hits       SimpleAggregateFunction(sum, UInt64),
    grounded_known       SimpleAggregateFunction(sum, UInt64),
    grounded_true        SimpleAggregateFunction(sum, UInt64),
    safety_flagged       SimpleAggregateFunction(sum, UInt64),
    pii_detected         SimpleAggregateFunction(sum, UInt64),
    injection_detected   SimpleAggregateFunction(sum, UInt64),
    text_truncated       SimpleAggregateFunction(sum, UInt64),
    latency_sum_ms  SimpleAggregateFunction(sum, Float64),
    gen_seconds     SimpleAggregateFunction(sum, Float64),
    cost_usd        SimpleAggregateFunction(sum, Float64),
    latency_q       AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), Float64),
    ttft_q          AggregateFunction(quantilesTDigest(0.5, 0.95), Float64),
    latency_le      AggregateFunction(sumForEach, Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (service, feature, minute)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 256
""",
    """TRUNCATE TABLE requests_feature_1d""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS requests_feature_1d_mv TO requests_feature_1d AS
SELECT
    toStartOfDay(ts) AS minute, service, feature,
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
    sumIf(greatest(latency_ms - ifNull(ttft_ms, 0), 0) / 1000, """
    """status = 'ok' AND requests.output_tokens > 0) AS gen_seconds,
    sum(cost_usd) AS cost_usd,
    quantilesTDigestState(0.5, 0.9, 0.95, 0.99)(latency_ms) AS latency_q,
    quantilesTDigestStateIf(0.5, 0.95)(assumeNotNull(ttft_ms), ttft_ms IS NOT NULL) AS ttft_q,
    sumForEachState(arrayMap(b -> toUInt64(latency_ms <= b), [50.0, 100.0, 200.0, 250.0, 300.0, """
    """400.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0, 5000.0, 7500.0, 10000.0, """
    """15000.0, 20000.0, 30000.0, 60000.0])) AS latency_le
FROM requests
GROUP BY minute, service, feature
""",
    """INSERT INTO requests_feature_1d (minute, service, feature, requests, status_ok, status_error, """
    """status_timeout, status_blocked, status_cancelled, ttft_count, input_tokens, output_tokens, """
    """cached_input_tokens, gen_output_tokens, unpriced, cache_hits, retrieval_known, retrieval_hits, """
    """grounded_known, grounded_true, safety_flagged, pii_detected, injection_detected, text_truncated, """
    """latency_sum_ms, gen_seconds, cost_usd, latency_q, ttft_q, latency_le) SELECT minute, service, """
    """feature, sum(requests) AS requests, sum(status_ok) AS status_ok, sum(status_error) AS status_error, """
    """sum(status_timeout) AS status_timeout, sum(status_blocked) AS status_blocked, """
    """sum(status_cancelled) AS status_cancelled, sum(ttft_count) AS ttft_count, """
    """sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, """
    """sum(cached_input_tokens) AS cached_input_tokens, sum(gen_output_tokens) AS gen_output_tokens, """
    """sum(unpriced) AS unpriced, sum(cache_hits) AS cache_hits, sum(retrieval_known) AS retrieval_known, """
    """sum(retrieval_hits) AS retrieval_hits, sum(grounded_known) AS grounded_known, """
    """sum(grounded_true) AS grounded_true, sum(safety_flagged) AS safety_flagged, """
    """sum(pii_detected) AS pii_detected, sum(injection_detected) AS injection_detected, """
    """sum(text_truncated) AS text_truncated, sum(latency_sum_ms) AS latency_sum_ms, """
    """sum(gen_seconds) AS gen_seconds, sum(cost_usd) AS cost_usd, quantilesTDigestMergeState(0.5, 0.9, """
    """0.95, 0.99)(latency_q) AS latency_q, quantilesTDigestMergeState(0.5, 0.95)(ttft_q) AS ttft_q, """
    """sumForEachMergeState(latency_le) AS latency_le FROM requests_1d GROUP BY minute, service, feature""",
    ]


def downgrade() -> None:
    for table, _, _ in reversed(FEATURE_TABLES):
        op.execute(f"DROP TABLE IF EXISTS {table}_mv")
        op.execute(f"DROP TABLE IF EXISTS {table}")
    for table, _ in reversed(TABLES):
        op.execute(f"DROP TABLE IF EXISTS {table}_mv")
        op.execute(f"DROP TABLE IF EXISTS {table}")
