"""Alembic environment: runs revisions over the connection nlpmon hands in.

nlpmon never lets alembic open its own connection: :mod:`monitor.foundation.migrate` puts
a SQLAlchemy connection over the one storage client into
``config.attributes["connection"]``, and the nlpmon config (for retention) into
``config.attributes["nlpmon_config"]``.

Every statement on that connection (the revisions' DDL and alembic's own) goes through the
cluster renderer in ``config.attributes["ddl"]`` (migrations/cluster.py): unchanged on a single
node, ``ON CLUSTER`` with Replicated engines on a cluster. Hooking the connection rather than
editing each revision keeps applied revisions byte-identical and leaves no way to bypass it.
"""
from alembic import context
from sqlalchemy import event

import clickhouse_connect.cc_sqlalchemy.alembic  # noqa: F401  registers the ClickHouse alembic impl

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `nlpmon db upgrade`, not the bare alembic command")

ddl = context.config.attributes.get("ddl")
if ddl is not None and ddl.cluster is not None:
    event.listen(connection, "before_cursor_execute", ddl.before_cursor_execute, retval=True)

context.configure(connection=connection, version_table="alembic_version", transactional_ddl=False)
with context.begin_transaction():
    context.run_migrations()
