"""Segments: every request figure per language, region, tenant and promoted tag, one dimension at a time.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

``requests.segment_tags`` holds the request's tags that ``segments.tags`` promotes to dimensions, with
the values the cardinality budget admitted (the raw ``tags`` keep what was sent); written at ingest,
so changing ``segments.tags`` counts the new keys from then on.

segments_1m/1h/1d hold the request rollups' columns per (service, feature, dimension, value): the
materialized views count each request once per segment dimension it has a value for (language,
region, tenant and each promoted tag), so the rows grow with the values of each dimension, never with
their combinations. The sort key puts the dimension before the bucket: "this feature by language
over 30 days" is one narrow read. Rows stored before this revision are in no segment until
``nlpmon rollups rebuild`` counts them (their language and tenant as sent).

The SQL below is inline, exactly as this revision applied it: an applied migration never changes,
whatever later code does to the rollup SQL.
"""
from alembic import context, op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TABLES = ("segments_1m", "segments_1h", "segments_1d")


def upgrade() -> None:
    days = int(context.config.attributes["nlpmon_config"].retention.days)
    op.execute("ALTER TABLE requests ADD COLUMN IF NOT EXISTS segment_tags Map(LowCardinality(String), String) "
               "DEFAULT map() AFTER tags")
    for statement in _statements(days):
        op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP VIEW IF EXISTS {table}_mv")
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute("ALTER TABLE requests DROP COLUMN IF EXISTS segment_tags")


def _statements(days: int) -> list[str]:
    # As applied: generated in December 2026 by monitor.foundation.rollups (requests_rollup_select over
    # segmented()), inlined so that editing today's code never changes what this revision does.
    return [
    f"""
CREATE TABLE IF NOT EXISTS segments_1m (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    feature         LowCardinality(String),
    dimension       LowCardinality(String),
    value           LowCardinality(String),
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
ORDER BY (service, feature, dimension, minute, value)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 1024
""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS segments_1m_mv TO segments_1m AS
SELECT
    toStartOfMinute(ts) AS minute, service, feature, dimension, value,
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
    quantilesTDigestState(0.5, 0.9, 0.95, 0.99)(latency_ms) AS latency_q,
    quantilesTDigestStateIf(0.5, 0.95)(assumeNotNull(ttft_ms), ttft_ms IS NOT NULL) AS ttft_q,
    sumForEachState(arrayMap(b -> toUInt64(latency_ms <= b), [50.0, 100.0, 200.0, 250.0, 300.0, 400.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0, 5000.0, 7500.0, 10000.0, 15000.0, 20000.0, 30000.0, 60000.0])) AS latency_le
FROM (SELECT ts, service, feature, status, ttft_ms, input_tokens, output_tokens, cached_input_tokens, cost_source, cache_hit, retrieval_hit, grounded, safety_flagged, pii_detected, injection_detected, text_truncated, latency_ms, cost_usd, segment.1 AS dimension, segment.2 AS value FROM requests ARRAY JOIN arrayFilter(s -> s.2 != '', arrayConcat([('language', toString(language)), ('region', toString(region)), ('tenant', toString(tenant))], arrayMap((k, v) -> (toString(k), v), mapKeys(segment_tags), mapValues(segment_tags)))) AS segment) AS requests
GROUP BY minute, service, feature, dimension, value
""",
    f"""
CREATE TABLE IF NOT EXISTS segments_1h (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    feature         LowCardinality(String),
    dimension       LowCardinality(String),
    value           LowCardinality(String),
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
ORDER BY (service, feature, dimension, minute, value)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 1024
""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS segments_1h_mv TO segments_1h AS
SELECT
    toStartOfHour(ts) AS minute, service, feature, dimension, value,
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
    quantilesTDigestState(0.5, 0.9, 0.95, 0.99)(latency_ms) AS latency_q,
    quantilesTDigestStateIf(0.5, 0.95)(assumeNotNull(ttft_ms), ttft_ms IS NOT NULL) AS ttft_q,
    sumForEachState(arrayMap(b -> toUInt64(latency_ms <= b), [50.0, 100.0, 200.0, 250.0, 300.0, 400.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0, 5000.0, 7500.0, 10000.0, 15000.0, 20000.0, 30000.0, 60000.0])) AS latency_le
FROM (SELECT ts, service, feature, status, ttft_ms, input_tokens, output_tokens, cached_input_tokens, cost_source, cache_hit, retrieval_hit, grounded, safety_flagged, pii_detected, injection_detected, text_truncated, latency_ms, cost_usd, segment.1 AS dimension, segment.2 AS value FROM requests ARRAY JOIN arrayFilter(s -> s.2 != '', arrayConcat([('language', toString(language)), ('region', toString(region)), ('tenant', toString(tenant))], arrayMap((k, v) -> (toString(k), v), mapKeys(segment_tags), mapValues(segment_tags)))) AS segment) AS requests
GROUP BY minute, service, feature, dimension, value
""",
    f"""
CREATE TABLE IF NOT EXISTS segments_1d (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    feature         LowCardinality(String),
    dimension       LowCardinality(String),
    value           LowCardinality(String),
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
ORDER BY (service, feature, dimension, minute, value)
TTL minute + INTERVAL {days} DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 1024
""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS segments_1d_mv TO segments_1d AS
SELECT
    toStartOfDay(ts) AS minute, service, feature, dimension, value,
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
    quantilesTDigestState(0.5, 0.9, 0.95, 0.99)(latency_ms) AS latency_q,
    quantilesTDigestStateIf(0.5, 0.95)(assumeNotNull(ttft_ms), ttft_ms IS NOT NULL) AS ttft_q,
    sumForEachState(arrayMap(b -> toUInt64(latency_ms <= b), [50.0, 100.0, 200.0, 250.0, 300.0, 400.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0, 5000.0, 7500.0, 10000.0, 15000.0, 20000.0, 30000.0, 60000.0])) AS latency_le
FROM (SELECT ts, service, feature, status, ttft_ms, input_tokens, output_tokens, cached_input_tokens, cost_source, cache_hit, retrieval_hit, grounded, safety_flagged, pii_detected, injection_detected, text_truncated, latency_ms, cost_usd, segment.1 AS dimension, segment.2 AS value FROM requests ARRAY JOIN arrayFilter(s -> s.2 != '', arrayConcat([('language', toString(language)), ('region', toString(region)), ('tenant', toString(tenant))], arrayMap((k, v) -> (toString(k), v), mapKeys(segment_tags), mapValues(segment_tags)))) AS segment) AS requests
GROUP BY minute, service, feature, dimension, value
""",
    ]
