"""Segments: each request also counted under its provider, error type and HTTP status, for explaining a change.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

"What changed" (monitor.foundation.explain) splits a metric's change over every dimension. Those the
rollups held were summed there; provider, error type and HTTP status were read from every raw request of
both windows, which grew with the traffic (a day's explanation at 100M requests: seconds). The segment
rollups now count each request once under each of the three as well, its empty value included (every
request has one: the empty error type of a success is a segment of the split), so an explanation reads
rollups only. The pages do not show them as segments.

The views are recreated with the new SELECT; the requests already stored are counted under the three
dimensions by this revision, a day at a time, into each segment rollup (only rows of the new dimensions are
added: nothing counted before is counted twice). Requests inserted while this revision runs between the
drop and the re-creation of a view would miss their segment rows: run it with ingest stopped, as every
revision (`nlpmon db upgrade` before `nlpmon serve`), or recount the window with `nlpmon rollups rebuild`.

The SQL below is inline, exactly as this revision applied it.
"""
import datetime as dt
import logging

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TABLES = ("segments_1m", "segments_1h", "segments_1d")
SPLITS = ("provider", "error_type", "http_status")
log = logging.getLogger("nlpmon.migrations")


def upgrade() -> None:
    conn = op.get_bind()
    for table in TABLES:
        op.execute(f"DROP VIEW IF EXISTS {table}_mv")
    for statement in VIEWS:
        op.execute(statement)
    days = [r[0] for r in conn.exec_driver_sql("SELECT DISTINCT toDate(ts) AS d FROM requests ORDER BY d").fetchall()]
    for i, day in enumerate(days, 1):
        lo = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
        bounds = {"lo": f"toDateTime64('{lo:%Y-%m-%d %H:%M:%S}', 3, 'UTC')",
                  "hi": f"toDateTime64('{lo + dt.timedelta(days=1):%Y-%m-%d %H:%M:%S}', 3, 'UTC')"}
        for table, bucket in zip(TABLES, ("toStartOfMinute", "toStartOfHour", "toStartOfDay")):
            op.execute(f"INSERT INTO {table} " + BACKFILL.replace("toStartOfMinute(ts)", f"{bucket}(ts)").format(**bounds))
        log.info("segments of provider, error type and HTTP status: day %d of %d counted (%s)", i, len(days), day)


def downgrade() -> None:
    from importlib import import_module
    for table in TABLES:
        op.execute(f"DROP VIEW IF EXISTS {table}_mv")
        op.execute(f"ALTER TABLE {table} DELETE WHERE dimension IN ('provider', 'error_type', 'http_status') "
                   "SETTINGS mutations_sync = 2")
    for statement in import_module("migrations.versions.0012_segments")._statements(0):
        if "MATERIALIZED VIEW" in statement:
            op.execute(statement)


# As applied: generated in December 2026 by monitor.foundation.rollups (requests_rollup_select over segmented()).
VIEWS = [
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
FROM (SELECT ts, service, feature, status, ttft_ms, input_tokens, output_tokens, cached_input_tokens, cost_source, cache_hit, retrieval_hit, grounded, safety_flagged, pii_detected, injection_detected, text_truncated, latency_ms, cost_usd, segment.1 AS dimension, segment.2 AS value FROM requests ARRAY JOIN arrayConcat(arrayFilter(s -> s.2 != '', arrayConcat([('language', toString(language)), ('region', toString(region)), ('tenant', toString(tenant))], arrayMap((k, v) -> (toString(k), v), mapKeys(segment_tags), mapValues(segment_tags)))), [('provider', toString(provider)), ('error_type', toString(error_type)), ('http_status', toString(http_status))]) AS segment) AS requests
GROUP BY minute, service, feature, dimension, value

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
FROM (SELECT ts, service, feature, status, ttft_ms, input_tokens, output_tokens, cached_input_tokens, cost_source, cache_hit, retrieval_hit, grounded, safety_flagged, pii_detected, injection_detected, text_truncated, latency_ms, cost_usd, segment.1 AS dimension, segment.2 AS value FROM requests ARRAY JOIN arrayConcat(arrayFilter(s -> s.2 != '', arrayConcat([('language', toString(language)), ('region', toString(region)), ('tenant', toString(tenant))], arrayMap((k, v) -> (toString(k), v), mapKeys(segment_tags), mapValues(segment_tags)))), [('provider', toString(provider)), ('error_type', toString(error_type)), ('http_status', toString(http_status))]) AS segment) AS requests
GROUP BY minute, service, feature, dimension, value

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
FROM (SELECT ts, service, feature, status, ttft_ms, input_tokens, output_tokens, cached_input_tokens, cost_source, cache_hit, retrieval_hit, grounded, safety_flagged, pii_detected, injection_detected, text_truncated, latency_ms, cost_usd, segment.1 AS dimension, segment.2 AS value FROM requests ARRAY JOIN arrayConcat(arrayFilter(s -> s.2 != '', arrayConcat([('language', toString(language)), ('region', toString(region)), ('tenant', toString(tenant))], arrayMap((k, v) -> (toString(k), v), mapKeys(segment_tags), mapValues(segment_tags)))), [('provider', toString(provider)), ('error_type', toString(error_type)), ('http_status', toString(http_status))]) AS segment) AS requests
GROUP BY minute, service, feature, dimension, value

""",
]
# The stored requests counted under the new dimensions only ({lo} and {hi}: a day's bounds).
BACKFILL = """SELECT
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
FROM (SELECT ts, service, feature, status, ttft_ms, input_tokens, output_tokens, cached_input_tokens, cost_source, cache_hit, retrieval_hit, grounded, safety_flagged, pii_detected, injection_detected, text_truncated, latency_ms, cost_usd, segment.1 AS dimension, segment.2 AS value FROM (SELECT * FROM requests FINAL WHERE ts >= {lo} AND ts < {hi}) AS r ARRAY JOIN [('provider', toString(provider)), ('error_type', toString(error_type)), ('http_status', toString(http_status))] AS segment) AS requests
GROUP BY minute, service, feature, dimension, value

"""
