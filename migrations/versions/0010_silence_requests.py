"""Silences remember the request that created them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

A create sent with an ``Idempotency-Key`` is bound to its body: ``request_hash`` holds a
digest of the body the key was first used with, so a retry with the same body returns
the silence as stored (an expired one stays expired) and a different body under the same
key is refused. The create insert carries the token ``silence:<id>``; on one node that
needs a de-duplication window on the table, as 0009 gave the ingest tables.
"""
from alembic import context, op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

WINDOW = 10000


def upgrade() -> None:
    op.execute("ALTER TABLE silences ADD COLUMN IF NOT EXISTS request_hash String DEFAULT ''")
    if context.config.attributes["nlpmon_config"].clickhouse.cluster is None:
        op.execute(f"ALTER TABLE silences MODIFY SETTING non_replicated_deduplication_window = {WINDOW}")


def downgrade() -> None:
    if context.config.attributes["nlpmon_config"].clickhouse.cluster is None:
        op.execute("ALTER TABLE silences RESET SETTING non_replicated_deduplication_window")
    op.execute("ALTER TABLE silences DROP COLUMN IF EXISTS request_hash")
