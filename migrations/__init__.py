"""Alembic revisions for nlpmon's ClickHouse schema (plain ClickHouse DDL).

Layer: migrations, below everything. A revision imports nothing from the
application (only alembic): its DDL is written out inline, as it was applied,
because an applied revision must never change when today's code does.
Run them with ``nlpmon db upgrade``; see :mod:`monitor.foundation.migrate`.
"""
