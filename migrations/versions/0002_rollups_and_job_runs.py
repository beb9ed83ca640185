"""Rollups fed at insert time (requests per minute, hour and day; feedback per minute), feedback
enriched with its request, and job_runs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

requests_1m/1h/1d and feedback_1m are AggregatingMergeTree tables filled by
materialized views as rows are inserted, so any window from 5 minutes to 90
days is read from rollup rows, the coarsest that tile it (monitor.foundation.rollups.covering).
The sort key puts the bucket right after (service, feature) and granules are
small, because reading a column of t-digest states deserialises every state in
a granule: a time range of one feature must be a contiguous, narrow read. Percentiles are
t-digest states (merged, never averaged); the latency histogram counts requests
at or under each boundary in monitor.foundation.rollups.LATENCY_BUCKETS_MS.

Feedback rows carry their request's dimensions, time and status (looked up at
ingest), so feedback is attributed to the minute its request happened and a
late thumbs-down changes the outcome of the window it belongs to.

The SQL below is inline, exactly as this revision applied it: an applied
migration never changes, whatever later code does to the rollup SQL.
"""
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


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
CREATE TABLE IF NOT EXISTS requests_1m (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    feature         LowCardinality(String),
    model           LowCardinality(String),
    prompt_version  LowCardinality(String),
    environment     LowCardinality(String),
    region          LowCardinality(String),
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
ORDER BY (service, feature, minute, model, prompt_version, environment, region)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 1024
""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS requests_1m_mv TO requests_1m AS
SELECT
    toStartOfMinute(ts) AS minute, service, feature, model, prompt_version, environment, region,
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
GROUP BY minute, service, feature, model, prompt_version, environment, region
""",
    f"""
CREATE TABLE IF NOT EXISTS requests_1h (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    feature         LowCardinality(String),
    model           LowCardinality(String),
    prompt_version  LowCardinality(String),
    environment     LowCardinality(String),
    region          LowCardinality(String),
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
ORDER BY (service, feature, minute, model, prompt_version, environment, region)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 1024
""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS requests_1h_mv TO requests_1h AS
SELECT
    toStartOfHour(ts) AS minute, service, feature, model, prompt_version, environment, region,
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
GROUP BY minute, service, feature, model, prompt_version, environment, region
""",
    f"""
CREATE TABLE IF NOT EXISTS requests_1d (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    feature         LowCardinality(String),
    model           LowCardinality(String),
    prompt_version  LowCardinality(String),
    environment     LowCardinality(String),
    region          LowCardinality(String),
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
ORDER BY (service, feature, minute, model, prompt_version, environment, region)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 1024
""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS requests_1d_mv TO requests_1d AS
SELECT
    toStartOfDay(ts) AS minute, service, feature, model, prompt_version, environment, region,
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
GROUP BY minute, service, feature, model, prompt_version, environment, region
""",
    """ALTER TABLE feedback ADD COLUMN IF NOT EXISTS request_ts Nullable(DateTime64(3, 'UTC'))""",
    """ALTER TABLE feedback ADD COLUMN IF NOT EXISTS service LowCardinality(String)""",
    """ALTER TABLE feedback ADD COLUMN IF NOT EXISTS feature LowCardinality(String)""",
    """ALTER TABLE feedback ADD COLUMN IF NOT EXISTS model LowCardinality(String)""",
    """ALTER TABLE feedback ADD COLUMN IF NOT EXISTS prompt_version LowCardinality(String)""",
    """ALTER TABLE feedback ADD COLUMN IF NOT EXISTS environment LowCardinality(String)""",
    """ALTER TABLE feedback ADD COLUMN IF NOT EXISTS region LowCardinality(String)""",
    """ALTER TABLE feedback ADD COLUMN IF NOT EXISTS request_status LowCardinality(String)""",
    f"""
CREATE TABLE IF NOT EXISTS feedback_1m (
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
    """
CREATE MATERIALIZED VIEW IF NOT EXISTS feedback_1m_mv TO feedback_1m AS
SELECT
    toStartOfMinute(ifNull(request_ts, ts)) AS minute, service, feature, model, prompt_version, """
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
    f"""
CREATE TABLE IF NOT EXISTS job_runs (
    job           LowCardinality(String),
    run_id        UUID,
    started_at    DateTime64(3, 'UTC'),
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    duration_ms   Float64,
    rows          UInt64,
    status        LowCardinality(String),
    error         String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(started_at)
ORDER BY (job, started_at)
TTL toDateTime(started_at) + INTERVAL {days} DAY
""",
    ]


def downgrade() -> None:
    for name in ("job_runs", "feedback_1m_mv", "feedback_1m", "requests_1d_mv", "requests_1d", "requests_1h_mv",
                 "requests_1h", "requests_1m_mv", "requests_1m"):
        op.execute(f"DROP TABLE IF EXISTS {name}")
    for col in ("request_status", "region", "environment", "prompt_version", "model", "feature", "service",
                "request_ts"):
        op.execute(f"ALTER TABLE feedback DROP COLUMN IF EXISTS {col}")
