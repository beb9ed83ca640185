"""Rollups fed at insert time (requests per minute, hour and day; feedback per minute), feedback
enriched with its request, and job_runs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

requests_1m/1h/1d and feedback_1m are AggregatingMergeTree tables filled by
materialized views as rows are inserted, so any window from 5 minutes to 90
days is read from rollup rows, the coarsest that tile it (monitor.rollups.covering).
The sort key puts the bucket right after (service, feature) and granules are
small, because reading a column of t-digest states deserialises every state in
a granule: a time range of one feature must be a contiguous, narrow read. Percentiles are
t-digest states (merged, never averaged); the latency histogram counts requests
at or under each boundary in monitor.rollups.LATENCY_BUCKETS_MS.

Feedback rows carry their request's dimensions, time and status (looked up at
ingest), so feedback is attributed to the minute its request happened and a
late thumbs-down changes the outcome of the window it belongs to.
"""
from alembic import context, op

from monitor.foundation.rollups import (
    LATENCY_QUANTILES,
    REQUEST_ROLLUPS,
    TTFT_QUANTILES,
    feedback_rollup_select,
    quantiles_sql,
    requests_rollup_select,
)

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
    counters = ["requests", "status_ok", "status_error", "status_timeout", "status_blocked", "status_cancelled",
                "ttft_count", "input_tokens", "output_tokens", "cached_input_tokens", "gen_output_tokens",
                "unpriced", "cache_hits", "retrieval_known", "retrieval_hits", "grounded_known", "grounded_true",
                "safety_flagged", "pii_detected", "injection_detected", "text_truncated"]
    counter_cols = "\n".join(f"    {c:<20} SimpleAggregateFunction(sum, UInt64)," for c in counters)
    for table, bucket, _ in REQUEST_ROLLUPS:
        op.execute(f"""
CREATE TABLE IF NOT EXISTS {table} (
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
ORDER BY (service, feature, minute, model, prompt_version, environment, region)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 1024
""")
        op.execute(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {table}_mv TO {table} AS\n"
                   f"{requests_rollup_select('requests', bucket)}")
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
ORDER BY (service, feature, minute, model, prompt_version, environment, region, request_status)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 1024
""")
    op.execute(f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS feedback_1m_mv TO feedback_1m AS
{feedback_rollup_select()}
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
    for name in ("job_runs", "feedback_1m_mv", "feedback_1m", "requests_1d_mv", "requests_1d", "requests_1h_mv",
                 "requests_1h", "requests_1m_mv", "requests_1m"):
        op.execute(f"DROP TABLE IF EXISTS {name}")
    for col in ("request_status", "region", "environment", "prompt_version", "model", "feature", "service",
                "request_ts"):
        op.execute(f"ALTER TABLE feedback DROP COLUMN IF EXISTS {col}")
