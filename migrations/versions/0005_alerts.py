"""Alerting: current alert instances, their history, silences, the notification log and the outbox.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

``alert_state`` holds one row per alert instance (fingerprint), replaced on
every change. ``notification_log`` records per (group, receiver) which alerts
were last notified as firing, so a restart neither re-pages nor forgets a
resolve. ``notification_outbox`` is the durable queue between deciding to
notify and sending: a decision is written here (with a deterministic id, so a
repeated decision is one row) before anything is sent.
"""
from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    days = int(context.config.attributes["nlpmon_config"].retention.days)
    op.execute("""
CREATE TABLE IF NOT EXISTS alert_state (
    fingerprint   String,
    rule          LowCardinality(String),
    labels        Map(String, String),
    annotations   Map(String, String),
    state         LowCardinality(String),
    health        LowCardinality(String),
    value         Nullable(Float64),
    active_at     Nullable(DateTime64(3, 'UTC')),
    fired_at      Nullable(DateTime64(3, 'UTC')),
    resolved_at   Nullable(DateTime64(3, 'UTC')),
    last_true_at  Nullable(DateTime64(3, 'UTC')),
    updated_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY fingerprint
""")
    op.execute(f"""
CREATE TABLE IF NOT EXISTS alert_history (
    ts           DateTime64(3, 'UTC'),
    fingerprint  String,
    rule         LowCardinality(String),
    labels       Map(String, String),
    from_state   LowCardinality(String),
    to_state     LowCardinality(String),
    value        Nullable(Float64),
    reason       String,
    silenced     Bool
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, fingerprint)
TTL toDateTime(ts) + INTERVAL {days} DAY
""")
    op.execute("""
CREATE TABLE IF NOT EXISTS silences (
    id          String,
    matchers    String,
    starts_at   DateTime64(3, 'UTC'),
    ends_at     DateTime64(3, 'UTC'),
    created_by  String,
    comment     String,
    updated_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY id
""")
    op.execute("""
CREATE TABLE IF NOT EXISTS notification_log (
    group_key    String,
    receiver     LowCardinality(String),
    firing       Array(String),
    resolved     Array(String),
    notified_at  DateTime64(3, 'UTC'),
    active       Bool,
    updated_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (group_key, receiver)
""")
    op.execute(f"""
CREATE TABLE IF NOT EXISTS notification_outbox (
    id               String,
    group_key        String,
    receiver         LowCardinality(String),
    kind             LowCardinality(String),
    status           LowCardinality(String),
    alert_status     LowCardinality(String),
    payload          String CODEC(ZSTD(3)),
    created_at       DateTime64(3, 'UTC'),
    attempts         UInt32,
    next_attempt_at  DateTime64(3, 'UTC'),
    last_error       String,
    sent_at          Nullable(DateTime64(3, 'UTC')),
    updated_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY id
TTL toDateTime(created_at) + INTERVAL {days} DAY
""")


def downgrade() -> None:
    for table in ("notification_outbox", "notification_log", "silences", "alert_history", "alert_state"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
