"""Leases (one active scheduler, one schema upgrade at a time) and insert de-duplication windows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

``leases`` is append-only: a claim row per candidate and term, renewal rows by the
holder, a release row. Every claim of a term carries the insert de-duplication token
``lease:<name>:<term>``, so ClickHouse keeps exactly one claim per term (atomically: on a
cluster the token is a Keeper node), and the earliest claim read back is the holder.
Claims are kept (one row per term); renewals expire after a week.

Ingest sends each batch with a token derived from its content, so the same batch sent
twice at once (two API processes, a retry through a load balancer) lands once in the raw
tables and, with ``deduplicate_blocks_in_dependent_materialized_views``, once in every
rollup. Replicated tables keep the tokens of their last blocks by default
(``replicated_deduplication_window``); a single node keeps none unless
``non_replicated_deduplication_window`` is set, on the raw tables and on every rollup
(the views still fire for a de-duplicated block, and their targets drop it only with a
window of their own). So on one node this sets it; on a cluster it is left to the
Replicated engines.
"""
from alembic import context, op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

WINDOW = 10000
DEDUPLICATED = ("requests", "feedback", "requests_1m", "requests_1h", "requests_1d", "requests_feature_1h",
                "requests_feature_1d", "feedback_1m", "feedback_1h", "feedback_1d", "review_leases")


def leases_ddl(single_node: bool) -> str:
    """The leases table; ``nlpmon db upgrade`` also runs this before any revision, since the
    upgrade itself holds a lease (monitor.foundation.migrate.schema_lease)."""
    window = f"\nSETTINGS non_replicated_deduplication_window = {WINDOW}" if single_node else ""
    return f"""
CREATE TABLE IF NOT EXISTS leases (
    name        LowCardinality(String),
    term        UInt64,
    holder      String,
    kind        LowCardinality(String),
    claimed_at  DateTime64(6, 'UTC'),
    expires_at  DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (name, term, claimed_at, holder)
TTL toDateTime(claimed_at) + INTERVAL 7 DAY DELETE WHERE kind != 'claim'{window}
"""


def upgrade() -> None:
    single_node = context.config.attributes["nlpmon_config"].clickhouse.cluster is None
    op.execute(leases_ddl(single_node))
    if single_node:
        for table in DEDUPLICATED:
            op.execute(f"ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = {WINDOW}")


def downgrade() -> None:
    single_node = context.config.attributes["nlpmon_config"].clickhouse.cluster is None
    if single_node:
        for table in DEDUPLICATED:
            op.execute(f"ALTER TABLE {table} RESET SETTING non_replicated_deduplication_window")
    op.execute("DROP TABLE IF EXISTS leases")
