"""Coarser rollups for long windows: feedback per hour and day, requests per (service, feature) per hour and day.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

feedback_1m alone made a 30-day feedback figure merge one bitmap state per
minute and dimension set (300k states on 10M requests with 3% rated); the
hour and day tables let monitor.rollups.covering tile long windows with
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
"""
from alembic import context, op

from monitor.foundation.rollups import (FEATURE_DIMENSIONS, LATENCY_QUANTILES, TTFT_QUANTILES,
                             feedback_rollup_select, quantiles_sql, requests_remerge_columns, requests_rollup_select)

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = (("feedback_1h", "toStartOfHour"), ("feedback_1d", "toStartOfDay"))
FEATURE_TABLES = (("requests_feature_1h", "toStartOfHour", "requests_1h"),
                  ("requests_feature_1d", "toStartOfDay", "requests_1d"))
REQUEST_COUNTERS = ("requests", "status_ok", "status_error", "status_timeout", "status_blocked", "status_cancelled",
                    "ttft_count", "input_tokens", "output_tokens", "cached_input_tokens", "gen_output_tokens",
                    "unpriced", "cache_hits", "retrieval_known", "retrieval_hits", "grounded_known", "grounded_true",
                    "safety_flagged", "pii_detected", "injection_detected", "text_truncated")


def upgrade() -> None:
    days = int(context.config.attributes["nlpmon_config"].retention.days)
    counters = ["feedback", "thumbs_up", "thumbs_down", "task_success", "task_failure", "hallucinated",
                "grounded", "unsure", "rating_count", "orphaned"]
    counter_cols = "\n".join(f"    {c:<16} SimpleAggregateFunction(sum, UInt64)," for c in counters)
    for table, bucket in TABLES:
        op.execute(f"""
CREATE TABLE IF NOT EXISTS {table} (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    feature         LowCardinality(String),
    model           LowCardinality(String),
    prompt_version  LowCardinality(String),
    environment     LowCardinality(String),
    region          LowCardinality(String),
    request_status  LowCardinality(String),
{counter_cols}
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
        op.execute(f"TRUNCATE TABLE {table}")
        op.execute(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {table}_mv TO {table} AS\n"
                   f"{feedback_rollup_select('feedback', bucket)}")
        op.execute(f"INSERT INTO {table} "
                   + feedback_rollup_select("(SELECT * FROM feedback FINAL) AS feedback", bucket))
    lq, tq = quantiles_sql(LATENCY_QUANTILES), quantiles_sql(TTFT_QUANTILES)
    counter_cols = "\n".join(f"    {c:<20} SimpleAggregateFunction(sum, UInt64)," for c in REQUEST_COUNTERS)
    for table, bucket, finer in FEATURE_TABLES:
        op.execute(f"""
CREATE TABLE IF NOT EXISTS {table} (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    feature         LowCardinality(String),
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
ORDER BY (service, feature, minute)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 256
""")
        op.execute(f"TRUNCATE TABLE {table}")
        op.execute(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {table}_mv TO {table} AS\n"
                   f"{requests_rollup_select('requests', bucket, FEATURE_DIMENSIONS)}")
        op.execute(f"INSERT INTO {table} (minute, service, feature, {', '.join(REQUEST_COUNTERS)}, latency_sum_ms, "
                   f"gen_seconds, cost_usd, latency_q, ttft_q, latency_le) "
                   f"SELECT minute, service, feature, {requests_remerge_columns()} FROM {finer} "
                   "GROUP BY minute, service, feature")


def downgrade() -> None:
    for table, _, _ in reversed(FEATURE_TABLES):
        op.execute(f"DROP TABLE IF EXISTS {table}_mv")
        op.execute(f"DROP TABLE IF EXISTS {table}")
    for table, _ in reversed(TABLES):
        op.execute(f"DROP TABLE IF EXISTS {table}_mv")
        op.execute(f"DROP TABLE IF EXISTS {table}")
