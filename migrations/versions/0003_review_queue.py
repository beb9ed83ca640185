"""Hallucination review: the queue of sampled responses and reviewers' leases.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

The queue is keyed on the request id (ReplacingMergeTree), so a rerun of the
sampling job selects the same requests and adds no duplicates. Labels are not
kept here: a review is a feedback event (kind hallucination, source reviewer),
so it flows into the same rollups as every other feedback.
"""
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    days = int(context.config.attributes["nlpmon_config"].retention.days)
    op.execute(f"""
CREATE TABLE IF NOT EXISTS review_queue (
    request_id   String,
    request_ts   DateTime64(3, 'UTC'),
    service      LowCardinality(String),
    feature      LowCardinality(String),
    day          Date,
    reason       LowCardinality(String),
    sampled_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(sampled_at)
PARTITION BY toYYYYMM(day)
ORDER BY (service, feature, day, request_id)
TTL day + INTERVAL {days} DAY
""")
    op.execute(f"""
CREATE TABLE IF NOT EXISTS review_leases (
    request_id   String,
    reviewer     String,
    leased_at    DateTime64(3, 'UTC'),
    expires_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(leased_at)
ORDER BY request_id
TTL toDateTime(expires_at) + INTERVAL {days} DAY
""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS review_leases")
    op.execute("DROP TABLE IF EXISTS review_queue")
