"""Alembic environment: runs revisions over the connection nlpmon hands in.

nlpmon never lets alembic open its own connection: :mod:`monitor.foundation.migrate` puts
a SQLAlchemy connection over the one storage client into
``config.attributes["connection"]``, and the nlpmon config (for retention) into
``config.attributes["nlpmon_config"]``.
"""
from alembic import context

import clickhouse_connect.cc_sqlalchemy.alembic  # noqa: F401  registers the ClickHouse alembic impl

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `nlpmon db upgrade`, not the bare alembic command")

context.configure(connection=connection, version_table="alembic_version", transactional_ddl=False)
with context.begin_transaction():
    context.run_migrations()
