"""Alembic revisions for nlpmon's ClickHouse schema (plain ClickHouse DDL).

Run them with ``nlpmon db upgrade``; see :mod:`monitor.migrate`.
"""
