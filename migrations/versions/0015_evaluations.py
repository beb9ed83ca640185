"""Evaluations: each sampled answer an automated evaluator (an LLM judge) was asked about.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

One row per (evaluator, prompt_version, request): the outcome of asking the judge, newest by
``evaluated_at``. ``labelled`` and ``parse_failure`` are final (never asked again with the same prompt
version); ``failed`` (the endpoint refused, timed out or answered 5xx after its retries) is asked again by a
later run. The label itself is stored as feedback (source ``auto``, reviewer the evaluator's name); the judge's
calls as requests of service ``nlpmon-evaluators``. Token counts and cost are the judge's own usage.
"""
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE IF NOT EXISTS evaluations (
    evaluator       LowCardinality(String),
    prompt_version  LowCardinality(String),
    request_id      String,
    service         LowCardinality(String),
    feature         LowCardinality(String),
    request_ts      DateTime64(6, 'UTC'),
    evaluated_at    DateTime64(6, 'UTC'),
    status          LowCardinality(String),
    label           LowCardinality(String),
    reason          String,
    attempts        UInt8,
    input_tokens    UInt32,
    output_tokens   UInt32,
    cost_usd        Float64,
    latency_ms      Float64,
    error           String
)
ENGINE = ReplacingMergeTree(evaluated_at)
ORDER BY (evaluator, prompt_version, request_id)
""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS evaluations")
