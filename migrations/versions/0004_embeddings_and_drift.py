"""Embedding cache, drift reports, and the grounding proxy's score on review items.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

``embedding_cache`` holds a vector per (model, text hash) so no text is encoded
twice; it lives as long as raw text does. ``drift_reports`` keeps one row per
(service, feature, window, window end): the numbers, the explanation (texts,
so the text retention applies to that column) and the Evidently snapshot in
its reloadable ``dumps()`` form. A rerun replaces the row.
"""
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    cfg = context.config.attributes["nlpmon_config"]
    days, text_days = int(cfg.retention.days), int(cfg.retention.text_days)
    op.execute(f"""
CREATE TABLE IF NOT EXISTS embedding_cache (
    model       LowCardinality(String),
    text_hash   String,
    vector      Array(Float32) CODEC(ZSTD(1)),
    created_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (model, text_hash)
TTL toDateTime(created_at) + INTERVAL {text_days} DAY
""")
    op.execute(f"""
CREATE TABLE IF NOT EXISTS drift_reports (
    report_id       String,
    ts              DateTime64(3, 'UTC'),
    window          LowCardinality(String),
    service         LowCardinality(String),
    feature         LowCardinality(String),
    status          LowCardinality(String),
    drift_detected  Bool,
    reference_from  DateTime64(3, 'UTC'),
    reference_to    DateTime64(3, 'UTC'),
    summary         String CODEC(ZSTD(3)),
    explanation     String CODEC(ZSTD(3)) TTL toDateTime(ts) + INTERVAL {text_days} DAY,
    snapshot        String CODEC(ZSTD(3)),
    created_at      DateTime64(3, 'UTC'),
    INDEX idx_report_id report_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(created_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (service, feature, window, ts)
TTL toDateTime(ts) + INTERVAL {days} DAY
""")
    op.execute("ALTER TABLE review_queue ADD COLUMN IF NOT EXISTS ungrounded_proxy Nullable(Float32)")


def downgrade() -> None:
    op.execute("ALTER TABLE review_queue DROP COLUMN IF EXISTS ungrounded_proxy")
    op.execute("DROP TABLE IF EXISTS drift_reports")
    op.execute("DROP TABLE IF EXISTS embedding_cache")
