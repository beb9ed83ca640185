"""Feedback per segment: each feedback row carries its request's language, tenant and promoted tags.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

Feedback rows already carry their request's time, dimensions and status (copied at ingest, or by
the ``reconcile`` job when the request arrives later), so feedback is attributed without a join.
These columns extend that to the segment dimensions (region was one already): thumbs, task
success and reviewers' hallucination labels per language, tenant or cohort are then read from the
feedback rows alone. Feedback stored before this revision is in no segment of these dimensions.
"""
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE feedback ADD COLUMN IF NOT EXISTS language LowCardinality(String) DEFAULT '' AFTER region")
    op.execute("ALTER TABLE feedback ADD COLUMN IF NOT EXISTS tenant LowCardinality(String) DEFAULT '' AFTER language")
    op.execute("ALTER TABLE feedback ADD COLUMN IF NOT EXISTS segment_tags Map(LowCardinality(String), String) "
               "DEFAULT map() AFTER tenant")


def downgrade() -> None:
    for column in ("segment_tags", "tenant", "language"):
        op.execute(f"ALTER TABLE feedback DROP COLUMN IF EXISTS {column}")
