"""Schema management: alembic revisions in ``migrations/`` over the one storage client."""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from pathlib import Path

import clickhouse_connect.cc_sqlalchemy.alembic  # noqa: F401  registers the ClickHouse alembic impl
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from migrations.cluster import Renderer
from monitor.foundation.clock import SystemClock
from monitor.foundation.config import Config
from monitor.foundation.lease import Lease
from monitor.foundation.storage import Store, StoreError

log = logging.getLogger(__name__)

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


# What alembic's ClickHouse impl creates on first use; created by nlpmon beforehand on a cluster
# (rendered, so ON CLUSTER and replicated) so every host reads the same applied revision.
VERSION_TABLE = "CREATE TABLE IF NOT EXISTS alembic_version (version_num String) ENGINE = MergeTree ORDER BY version_num"


def renderer(store: Store, config: Config) -> Renderer:
    """The DDL renderer for this deployment: unchanged SQL on one node; on a cluster, ON CLUSTER
    (or not, when the database itself is Replicated) and Replicated engines."""
    cluster = config.clickhouse.cluster
    if cluster is None:
        return Renderer()
    engine = store.scalar("SELECT engine FROM system.databases WHERE name = currentDatabase()")
    return Renderer(cluster, replicated_database=engine == "Replicated")


def _run(store: Store, config: Config, ddl: Renderer, fn, *args) -> None:
    engine = sa.create_engine("clickhousedb://", creator=store.dbapi_connection, poolclass=sa.pool.StaticPool)
    try:
        with engine.connect() as conn:
            cfg = AlembicConfig()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            cfg.attributes["connection"] = conn
            cfg.attributes["nlpmon_config"] = config
            cfg.attributes["ddl"] = ddl
            fn(cfg, *args)
    finally:
        engine.dispose()


def upgrade(store: Store, config: Config, revision: str = "head") -> None:
    ddl = renderer(store, config)
    with schema_lease(store, config, ddl):
        if ddl.cluster is not None:
            store.command(ddl(VERSION_TABLE))
        _run(store, config, ddl, command.upgrade, revision)
        apply_retention(store, config, ddl)


def downgrade(store: Store, config: Config, revision: str) -> None:
    ddl = renderer(store, config)
    with schema_lease(store, config, ddl):
        _run(store, config, ddl, command.downgrade, revision)


SCHEMA_LEASE = dt.timedelta(minutes=2)
SCHEMA_WAIT = dt.timedelta(minutes=30)


@contextlib.contextmanager
def schema_lease(store: Store, config: Config, ddl: Renderer, clock=None):
    """Hold the "migrate" lease while the schema changes, so two hosts running `nlpmon db upgrade` at
    once take turns (the second then finds nothing to do). The lease table comes first, from the
    revision that defines it (0009), rendered like every statement; it is renewed in the background
    for as long as a long revision runs."""
    script = ScriptDirectory.from_config(_alembic_config())
    store.command(ddl(script.get_revision("0009").module.leases_ddl(config.clickhouse.cluster is None)))
    # On the embedded store only this process can hold it: an upgrade killed midway leaves no wait.
    lease = Lease(store, "migrate", SCHEMA_LEASE, clock or SystemClock(), exclusive=store.embedded)
    give_up = time.monotonic() + SCHEMA_WAIT.total_seconds()
    while not lease.acquire():
        if time.monotonic() > give_up:
            raise StoreError("another `nlpmon db upgrade` has held the schema lease for 30 minutes")
        log.info("another host is upgrading the schema; waiting for it")
        time.sleep(2)
    done = threading.Event()

    def renew():
        while not done.wait(SCHEMA_LEASE.total_seconds() / 3):
            lease.acquire()
    renewer = threading.Thread(target=renew, daemon=True, name="schema-lease")
    renewer.start()
    try:
        yield lease
    finally:
        done.set()
        renewer.join()
        try:
            lease.release()
        except StoreError:
            pass  # a downgrade past 0009 took the table with it


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


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
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def apply_retention(store: Store, config: Config, ddl: Renderer | None = None) -> None:
    """Make the tables' TTLs match ``retention.days`` / ``retention.text_days``.

    Cheap and idempotent: only metadata changes (old parts are not rewritten;
    parts are dropped whole as they expire).
    """
    ddl = ddl or renderer(store, config)
    days, text_days = int(config.retention.days), int(config.retention.text_days)
    existing = {r[0] for r in store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")}
    for table, col in _ROW_TTL.items():
        if table in existing:
            store.command(ddl(f"ALTER TABLE {table} MODIFY TTL toDateTime({col}) + INTERVAL {days} DAY "
                              f"SETTINGS materialize_ttl_after_modify = 0"))
    for table, col in _TEXT_ROW_TTL.items():
        if table in existing:
            store.command(ddl(f"ALTER TABLE {table} MODIFY TTL toDateTime({col}) + INTERVAL {text_days} DAY "
                              f"SETTINGS materialize_ttl_after_modify = 0"))
    for table, cols in _TEXT_TTL.items():
        if table not in existing:
            continue
        for c in cols:
            store.command(ddl(f"ALTER TABLE {table} MODIFY COLUMN {c} String CODEC(ZSTD(3)) "
                              f"TTL toDateTime(ts) + INTERVAL {text_days} DAY SETTINGS materialize_ttl_after_modify = 0"))
