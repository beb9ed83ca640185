"""Schema management: alembic revisions in ``migrations/`` over the one storage client."""
from __future__ import annotations

from pathlib import Path

import clickhouse_connect.cc_sqlalchemy.alembic  # noqa: F401  registers the ClickHouse alembic impl
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from monitor.foundation.config import Config
from monitor.foundation.storage import Store

MIGRATIONS_DIR = Path(migrations.__file__).parent
# Tables whose row TTL follows retention.days, and their time column.
_ROW_TTL = {"requests": "ts", "feedback": "ts", "rejected_events": "received_at", "metric_points": "ts",
            "requests_1m": "minute", "requests_1h": "minute", "requests_1d": "minute", "feedback_1m": "minute",
            "feedback_1h": "minute", "feedback_1d": "minute", "requests_feature_1h": "minute",
            "requests_feature_1d": "minute",
            "job_runs": "started_at", "review_queue": "day", "drift_reports": "ts"}
_TEXT_TTL = {"requests": ("input_text", "output_text", "context_text"), "feedback": ("comment",),
             "drift_reports": ("explanation",)}
# Tables whose whole rows are derived from text, so they follow retention.text_days.
_TEXT_ROW_TTL = {"embedding_cache": "created_at"}


def _run(store: Store, config: Config, fn, *args) -> None:
    engine = sa.create_engine("clickhousedb://", creator=store.dbapi_connection, poolclass=sa.pool.StaticPool)
    try:
        with engine.connect() as conn:
            cfg = AlembicConfig()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            cfg.attributes["connection"] = conn
            cfg.attributes["nlpmon_config"] = config
            fn(cfg, *args)
    finally:
        engine.dispose()


def upgrade(store: Store, config: Config, revision: str = "head") -> None:
    _run(store, config, command.upgrade, revision)
    apply_retention(store, config)


def downgrade(store: Store, config: Config, revision: str) -> None:
    _run(store, config, command.downgrade, revision)


def current(store: Store) -> str | None:
    """The applied revision, or None on an empty store."""
    engine = sa.create_engine("clickhousedb://", creator=store.dbapi_connection, poolclass=sa.pool.StaticPool)
    try:
        with engine.connect() as conn:
            if not store.scalar("EXISTS TABLE alembic_version"):
                return None
            return MigrationContext.configure(conn, opts={"version_table": "alembic_version"}).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


def apply_retention(store: Store, config: Config) -> None:
    """Make the tables' TTLs match ``retention.days`` / ``retention.text_days``.

    Cheap and idempotent: only metadata changes (old parts are not rewritten;
    parts are dropped whole as they expire).
    """
    days, text_days = int(config.retention.days), int(config.retention.text_days)
    existing = {r[0] for r in store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")}
    for table, col in _ROW_TTL.items():
        if table in existing:
            store.command(f"ALTER TABLE {table} MODIFY TTL toDateTime({col}) + INTERVAL {days} DAY "
                          f"SETTINGS materialize_ttl_after_modify = 0")
    for table, col in _TEXT_ROW_TTL.items():
        if table in existing:
            store.command(f"ALTER TABLE {table} MODIFY TTL toDateTime({col}) + INTERVAL {text_days} DAY "
                          f"SETTINGS materialize_ttl_after_modify = 0")
    for table, cols in _TEXT_TTL.items():
        if table not in existing:
            continue
        for c in cols:
            store.command(f"ALTER TABLE {table} MODIFY COLUMN {c} String CODEC(ZSTD(3)) "
                          f"TTL toDateTime(ts) + INTERVAL {text_days} DAY SETTINGS materialize_ttl_after_modify = 0")
