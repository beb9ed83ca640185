"""The cardinality budget: the real values of dimensions counted under the overflow value.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Beyond ``cardinality.limits`` distinct values per service and day, a request's
dimension columns hold the overflow value, so the rollups, the metrics, the
jobs that sample per (service, feature) and the pages all see a bounded number
of values; the real values stay on the raw row in this map (dimension -> value).
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE requests ADD COLUMN IF NOT EXISTS dimension_overflow Map(LowCardinality(String), String)")


def downgrade() -> None:
    op.execute("ALTER TABLE requests DROP COLUMN IF EXISTS dimension_overflow")
