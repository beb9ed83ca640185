"""Core tables: requests, feedback, rejected_events, api_keys, metric_points, instance_settings.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Habits from DESIGN.md: ReplacingMergeTree on the event id so replays replace,
time partitions so retention is a TTL that drops whole parts, LowCardinality
dimensions, ZSTD on text, and a shorter column TTL on raw text for privacy.
Retention days come from the nlpmon config; ``nlpmon db upgrade`` re-applies
them afterwards (monitor.foundation.migrate.apply_retention), so a config change takes effect.
"""
from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _retention():
    cfg = context.config.attributes["nlpmon_config"]
    return cfg.retention.days, cfg.retention.text_days


def upgrade() -> None:
    days, text_days = _retention()
    text_ttl = f"TTL toDateTime(ts) + INTERVAL {int(text_days)} DAY"
    op.execute(f"""
CREATE TABLE IF NOT EXISTS requests (
    request_id          String,
    ts                  DateTime64(3, 'UTC'),
    service             LowCardinality(String),
    feature             LowCardinality(String),
    model               LowCardinality(String),
    provider            LowCardinality(String),
    prompt_version      LowCardinality(String),
    environment         LowCardinality(String),
    region              LowCardinality(String),
    language            LowCardinality(String),
    tenant              LowCardinality(String),
    status              LowCardinality(String),
    error_type          LowCardinality(String),
    http_status         UInt16,
    latency_ms          Float64,
    ttft_ms             Nullable(Float64),
    input_tokens        UInt32,
    output_tokens       UInt32,
    cached_input_tokens UInt32,
    cost_usd            Float64,
    cost_source         LowCardinality(String),
    input_text          String CODEC(ZSTD(3)) {text_ttl},
    output_text         String CODEC(ZSTD(3)) {text_ttl},
    context_text        String CODEC(ZSTD(3)) {text_ttl},
    text_truncated      Bool,
    retrieval_hit       Nullable(Bool),
    grounded            Nullable(Bool),
    cache_hit           Bool,
    safety_flagged      Bool,
    pii_detected        Bool,
    injection_detected  Bool,
    user_id_hash        String,
    session_id          String,
    tags                Map(LowCardinality(String), String),
    input_embedding     Array(Float32),
    ingested_at         DateTime64(3, 'UTC'),
    INDEX idx_request_id halfMD5(request_id) TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (service, feature, toStartOfHour(ts), request_id)
TTL toDateTime(ts) + INTERVAL {int(days)} DAY
SETTINGS ttl_only_drop_parts = 1
""")
    op.execute(f"""
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id  String,
    request_id   String,
    ts           DateTime64(3, 'UTC'),
    kind         LowCardinality(String),
    value        Nullable(Float64),
    label        LowCardinality(String),
    source       LowCardinality(String),
    reviewer     String,
    comment      String CODEC(ZSTD(3)) {text_ttl},
    ingested_at  DateTime64(3, 'UTC'),
    INDEX idx_feedback_id halfMD5(feedback_id) TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (request_id, feedback_id)
TTL toDateTime(ts) + INTERVAL {int(days)} DAY
SETTINGS ttl_only_drop_parts = 1
""")
    op.execute(f"""
CREATE TABLE IF NOT EXISTS rejected_events (
    rejected_id  UUID,
    received_at  DateTime64(3, 'UTC'),
    kind         LowCardinality(String),
    batch_id     String,
    row_index    UInt32,
    field        String,
    reason       String,
    raw          String CODEC(ZSTD(3)),
    api_key_id   String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (kind, received_at)
TTL toDateTime(received_at) + INTERVAL {int(days)} DAY
SETTINGS ttl_only_drop_parts = 1
""")
    op.execute("""
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      String,
    name        String,
    scopes      Array(LowCardinality(String)),
    key_hash    String,
    created_at  DateTime64(3, 'UTC'),
    revoked_at  Nullable(DateTime64(3, 'UTC')),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_id
""")
    op.execute(f"""
CREATE TABLE IF NOT EXISTS metric_points (
    ts           DateTime64(3, 'UTC'),
    `window`     LowCardinality(String),
    metric       LowCardinality(String),
    labels       Map(LowCardinality(String), String),
    series_id    UInt64 MATERIALIZED sipHash64(toString(mapSort(labels))),
    value        Float64,
    computed_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (metric, `window`, series_id, ts)
TTL toDateTime(ts) + INTERVAL {int(days)} DAY
SETTINGS ttl_only_drop_parts = 1
""")
    op.execute("""
CREATE TABLE IF NOT EXISTS instance_settings (
    key      String,
    value    String,
    version  UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key
""")


def downgrade() -> None:
    for table in ("instance_settings", "metric_points", "api_keys", "rejected_events", "feedback", "requests"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
