"""OpenTelemetry ingest: the parts of a model call that arrive apart (a span, its content log events).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

A GenAI span whose texts come as log events on /v1/logs (before or after it) is
parked here with them for ``otlp.logs_wait``, then ingested once as one request
with its texts; the parts expire after a day.
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE IF NOT EXISTS otlp_parts (
    trace_id     String,
    span_id      String,
    kind         LowCardinality(String),
    part         String,
    payload      String,
    state        LowCardinality(String),
    received_at  DateTime64(3, 'UTC'),
    updated_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (trace_id, span_id, kind, part)
TTL toDateTime(received_at) + INTERVAL 1 DAY
""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS otlp_parts")
