"""Segments: each request also counted under its provider, error type and HTTP status, for explaining a change.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

"What changed" (monitor.foundation.explain) splits a metric's change over every dimension. Those the
rollups held were summed there; provider, error type and HTTP status were read from every raw request of
both windows, which grew with the traffic (a day's explanation at 100M requests: seconds). The segment
rollups now count each request once under each of the three as well, its empty value included (every
request has one: the empty error type of a success is a segment of the split), so an explanation reads
rollups only. The pages do not show them as segments.

The views are recreated with the new SELECT; the requests already stored are counted under the three
dimensions by this revision, a day at a time, into each segment rollup (only rows of the new dimensions are
added: nothing counted before is counted twice). Requests inserted while this revision runs between the
drop and the re-creation of a view would miss their segment rows: run it with ingest stopped, as every
revision (`nlpmon db upgrade` before `nlpmon serve`), or recount the window with `nlpmon rollups rebuild`.

Its SQL is 0012's views, as that revision applied them (an applied migration never changes), with the
segments each request is counted in extended by the three dimensions: derived here, not copied.
"""
import datetime as dt
import logging
from importlib import import_module

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TABLES = ("segments_1m", "segments_1h", "segments_1d")
log = logging.getLogger("nlpmon.migrations")

# 0012's segments of a request (the non-empty language, region, tenant and promoted tags), and this
# revision's: those, then provider, error type and HTTP status, empty values included.
SEGMENTS_0012 = ("arrayFilter(s -> s.2 != '', arrayConcat([('language', toString(language)), ('region', "
                 "toString(region)), ('tenant', toString(tenant))], arrayMap((k, v) -> (toString(k), v), "
                 "mapKeys(segment_tags), mapValues(segment_tags))))")
SPLITS = "[('provider', toString(provider)), ('error_type', toString(error_type)), ('http_status', toString(http_status))]"


def _views_0012() -> list[str]:
    """0012's CREATE MATERIALIZED VIEW statements, segments_1m/1h/1d in order."""
    views = [s for s in import_module("migrations.versions.0012_segments")._statements(0) if "MATERIALIZED VIEW" in s]
    assert len(views) == len(TABLES) and all(f"{t}_mv" in v for t, v in zip(TABLES, views))
    return views


def _extended(sql: str, old: str, new: str) -> str:
    assert sql.count(old) == 1, "0012's view is not the one this revision extends"
    return sql.replace(old, new)


def views() -> list[str]:
    """The views as this revision creates them: 0012's, counting each request in its segments and splits."""
    return [_extended(v, f"ARRAY JOIN {SEGMENTS_0012} AS segment",
                      f"ARRAY JOIN arrayConcat({SEGMENTS_0012}, {SPLITS}) AS segment") for v in _views_0012()]


def backfills(lo: str, hi: str) -> list[tuple[str, str]]:
    """(table, INSERT) counting the requests of [lo, hi) (SQL time literals) under the three dimensions
    only, with each table's own view SELECT (FINAL: each request once, as a rebuild counts it)."""
    out = []
    for table, view in zip(TABLES, _views_0012()):
        select = view.split(" AS\n", 1)[1]
        select = _extended(select, f"FROM requests ARRAY JOIN {SEGMENTS_0012} AS segment",
                           f"FROM (SELECT * FROM requests FINAL WHERE ts >= {lo} AND ts < {hi}) AS r "
                           f"ARRAY JOIN {SPLITS} AS segment")
        out.append((table, f"INSERT INTO {table} {select}"))
    return out


def upgrade() -> None:
    conn = op.get_bind()
    for table in TABLES:
        op.execute(f"DROP VIEW IF EXISTS {table}_mv")
    for statement in views():
        op.execute(statement)
    days = [r[0] for r in conn.exec_driver_sql("SELECT DISTINCT toDate(ts) AS d FROM requests ORDER BY d").fetchall()]
    for i, day in enumerate(days, 1):
        lo = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
        for _, insert in backfills(f"toDateTime64('{lo:%Y-%m-%d %H:%M:%S}', 3, 'UTC')",
                                   f"toDateTime64('{lo + dt.timedelta(days=1):%Y-%m-%d %H:%M:%S}', 3, 'UTC')"):
            op.execute(insert)
        log.info("segments of provider, error type and HTTP status: day %d of %d counted (%s)", i, len(days), day)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP VIEW IF EXISTS {table}_mv")
        op.execute(f"ALTER TABLE {table} DELETE WHERE dimension IN ('provider', 'error_type', 'http_status') "
                   "SETTINGS mutations_sync = 2")
    for statement in _views_0012():
        op.execute(statement)
