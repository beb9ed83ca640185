"""Releases: each change of a prompt version, model (or another ``releases.dimensions``) of a feature.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

One row per release, versions replacing each other by ``updated_at``: the ``releases`` job finds a
release when a new value starts taking traffic (``source`` ``detected``), POST /v1/releases declares
one (``declared``: a deploy marker, with its description and link), and each judging run writes the
release again with its mode, rollout times, verdict and per-metric statistics (``metrics``: JSON, the
answer of GET /v1/releases/<id>). ``rollback_of`` names the release a rollback reverts.
"""
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE IF NOT EXISTS releases (
    release_id      String,
    service         LowCardinality(String),
    feature         LowCardinality(String),
    dimension       LowCardinality(String),
    value           String,
    previous_value  String,
    ts              DateTime64(3, 'UTC'),
    source          LowCardinality(String),
    description     String,
    link            String,
    mode            LowCardinality(String),
    full_rollout    Nullable(DateTime64(3, 'UTC')),
    ended           Nullable(DateTime64(3, 'UTC')),
    rollback_of     String,
    verdict         LowCardinality(String),
    reason          String,
    metrics         String CODEC(ZSTD(3)),
    judged_from     Nullable(DateTime64(3, 'UTC')),
    judged_to       Nullable(DateTime64(3, 'UTC')),
    updated_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY release_id
""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS releases")
