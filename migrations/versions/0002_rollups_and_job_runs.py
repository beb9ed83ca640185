"""Per-minute rollups fed at insert time, feedback enriched with its request, and job_runs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

requests_1m and feedback_1m are AggregatingMergeTree tables filled by
materialized views as rows are inserted, so any window from 5 minutes to 90
days is read from at most one row per minute and dimension set. Percentiles are
t-digest states (merged, never averaged); the latency histogram counts requests
at or under each boundary in monitor.rollups.LATENCY_BUCKETS_MS.

Feedback rows carry their request's dimensions, time and status (looked up at
ingest), so feedback is attributed to the minute its request happened and a
late thumbs-down changes the outcome of the window it belongs to.
"""
from alembic import context, op

from monitor.rollups import LATENCY_BUCKETS_MS, LATENCY_QUANTILES, TTFT_QUANTILES, quantiles_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DIMS = """
    service         LowCardinality(String),
    feature         LowCardinality(String),
    model           LowCardinality(String),
    prompt_version  LowCardinality(String),
    environment     LowCardinality(String),
    region          LowCardinality(String),"""
DIM_KEY = "service, feature, model, prompt_version, environment, region"


def upgrade() -> None:
    days = int(context.config.attributes["nlpmon_config"].retention.days)
    lq, tq = quantiles_sql(LATENCY_QUANTILES), quantiles_sql(TTFT_QUANTILES)
    buckets = ", ".join(f"{float(b)}" for b in LATENCY_BUCKETS_MS)
    counters = ["requests", "status_ok", "status_error", "status_timeout", "status_blocked", "status_cancelled",
                "ttft_count", "input_tokens", "output_tokens", "cached_input_tokens", "gen_output_tokens",
                "unpriced", "cache_hits", "retrieval_known", "retrieval_hits", "grounded_known", "grounded_true",
                "safety_flagged", "pii_detected", "injection_detected", "text_truncated"]
    counter_cols = "\n".join(f"    {c:<20} SimpleAggregateFunction(sum, UInt64)," for c in counters)
    op.execute(f"""
CREATE TABLE IF NOT EXISTS requests_1m (
    minute          DateTime('UTC'),{DIMS}
{counter_cols}
    latency_sum_ms  SimpleAggregateFunction(sum, Float64),
    gen_seconds     SimpleAggregateFunction(sum, Float64),
    cost_usd        SimpleAggregateFunction(sum, Float64),
    latency_q       AggregateFunction(quantilesTDigest({lq}), Float64),
    ttft_q          AggregateFunction(quantilesTDigest({tq}), Float64),
    latency_le      AggregateFunction(sumForEach, Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY ({DIM_KEY}, minute)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1
""")
    op.execute(f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS requests_1m_mv TO requests_1m AS
SELECT
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
FROM requests
GROUP BY minute, {DIM_KEY}
""")
    for col, typ in (("request_ts", "Nullable(DateTime64(3, 'UTC'))"), ("service", "LowCardinality(String)"),
                     ("feature", "LowCardinality(String)"), ("model", "LowCardinality(String)"),
                     ("prompt_version", "LowCardinality(String)"), ("environment", "LowCardinality(String)"),
                     ("region", "LowCardinality(String)"), ("request_status", "LowCardinality(String)")):
        op.execute(f"ALTER TABLE feedback ADD COLUMN IF NOT EXISTS {col} {typ}")
    fcounters = ["feedback", "thumbs_up", "thumbs_down", "task_success", "task_failure", "hallucinated",
                 "grounded", "unsure", "rating_count", "orphaned"]
    fcounter_cols = "\n".join(f"    {c:<16} SimpleAggregateFunction(sum, UInt64)," for c in fcounters)
    op.execute(f"""
CREATE TABLE IF NOT EXISTS feedback_1m (
    minute          DateTime('UTC'),{DIMS}
    request_status  LowCardinality(String),
{fcounter_cols}
    rating_sum      SimpleAggregateFunction(sum, Float64),
    neg_thumbs        AggregateFunction(groupBitmap, UInt64),
    neg_task          AggregateFunction(groupBitmap, UInt64),
    neg_hallucination AggregateFunction(groupBitmap, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY ({DIM_KEY}, request_status, minute)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1
""")
    # Source columns are qualified where an alias of the same name exists (ClickHouse resolves aliases first).
    # Feedback counts in the minute of its request; feedback whose request is unknown
    # counts in its own minute, under empty dimensions, as "orphaned".
    op.execute(f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS feedback_1m_mv TO feedback_1m AS
SELECT
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
FROM feedback
GROUP BY minute, {DIM_KEY}, request_status
""")
    op.execute(f"""
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
""")


def downgrade() -> None:
    for name in ("job_runs", "feedback_1m_mv", "feedback_1m", "requests_1m_mv", "requests_1m"):
        op.execute(f"DROP TABLE IF EXISTS {name}")
    for col in ("request_status", "region", "environment", "prompt_version", "model", "feature", "service",
                "request_ts"):
        op.execute(f"ALTER TABLE feedback DROP COLUMN IF EXISTS {col}")
