"""Where a request's language came from.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

``language_source``: ``sent`` (by the app), ``detected`` (from the input text at ingest,
monitor.ingest.language) or ``undetermined`` (``language`` is then ``und``: too short, code,
mixed scripts, or a detection not confident enough). Rows stored before this revision keep
an empty source and the language they were sent with.
"""
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE requests ADD COLUMN IF NOT EXISTS language_source LowCardinality(String) DEFAULT '' "
               "AFTER language")


def downgrade() -> None:
    op.execute("ALTER TABLE requests DROP COLUMN IF EXISTS language_source")
