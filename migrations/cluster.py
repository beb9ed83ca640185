"""Cluster DDL: the one text transform that turns a single-node statement into its replicated form.

Every statement a migration executes passes through :func:`render` (env.py hooks it under
the migration connection, so a revision cannot bypass it and the frozen revisions are not
edited). With no cluster configured the statement is returned unchanged, byte for byte: an
existing embedded store sees exactly the SQL it saw when each revision was applied.

With ``clickhouse.cluster`` set:

- on an ordinary (Atomic) database, DDL gets ``ON CLUSTER '<cluster>'`` after the object
  name (after the whole list for RENAME), because CREATE/DROP/RENAME are not replicated by
  the table engines themselves;
- on a database whose engine is ``Replicated``, no ``ON CLUSTER`` (ClickHouse refuses it
  there: error 80, "ON CLUSTER is not allowed for Replicated database"): the database's own
  DDL log carries every statement to the other replicas;
- in both, a MergeTree-family engine becomes its Replicated variant without arguments, so the
  server's ``default_replica_path`` and ``default_replica_name`` (by default
  ``/clickhouse/tables/{uuid}/{shard}`` and ``{replica}``) place it in Keeper. Explicit paths
  are what breaks when the same DDL is run by hand, from a backup or on another cluster.

Data statements (INSERT, SELECT) are not DDL: an INSERT runs on the host that executes the
migration and replication copies its parts. Mutations of rows (``ALTER TABLE t DELETE``,
alembic's version bookkeeping) replicate through the table engine and run once.

A statement the renderer does not understand is an error, never passed through: a CREATE
that silently stayed single-node would leave one replica with a table the others lack.
"""
from __future__ import annotations

import re

_NAME = r"(?:`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)(?:\.(?:`[^`]+`|[A-Za-z_][A-Za-z0-9_]*))?"
_LEAD = re.compile(r"\A(\s*(?:--[^\n]*\n\s*)*)")
_DATA = re.compile(r"(?is)\A\s*(SELECT|WITH|INSERT|SHOW|DESCRIBE|DESC|EXISTS)\b")
_MUTATION = re.compile(rf"(?is)\A\s*ALTER\s+TABLE\s+{_NAME}\s+(DELETE|UPDATE)\b")
# Where ON CLUSTER goes: right after the object's name.
_AFTER_NAME = [
    ("table", re.compile(rf"(?is)\A\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}")),
    ("materialized view", re.compile(rf"(?is)\A\s*CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}")),
    ("view", re.compile(rf"(?is)\A\s*CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}")),
    ("alter", re.compile(rf"(?is)\A\s*ALTER\s+TABLE\s+{_NAME}")),
    ("drop", re.compile(rf"(?is)\A\s*DROP\s+(?:TABLE|VIEW|DICTIONARY)\s+(?:IF\s+EXISTS\s+)?{_NAME}")),
    ("truncate", re.compile(rf"(?is)\A\s*TRUNCATE\s+TABLE\s+(?:IF\s+EXISTS\s+)?{_NAME}")),
]
_RENAME = re.compile(rf"(?is)\A\s*RENAME\s+TABLE\s+{_NAME}\s+TO\s+{_NAME}(?:\s*,\s*{_NAME}\s+TO\s+{_NAME})*")
_ON_CLUSTER = re.compile(r"(?i)\bON\s+CLUSTER\b")
_ENGINE = re.compile(r"(?i)\bENGINE\s*=?\s*(Replicated)?(\w*)MergeTree\b")
_ANY_ENGINE = re.compile(r"(?i)\bENGINE\s*=?\s*(\w+)")
_MV_TARGET = re.compile(rf"(?is)\A\s*CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}\s+"
                        rf"(?:ON\s+CLUSTER\s+'[^']*'\s+)?TO\s+{_NAME}")
MERGE_TREE_FAMILY = {"", "Replacing", "Aggregating", "Summing", "Collapsing", "VersionedCollapsing",
                     "Graphite", "Coalescing"}
CLUSTER_NAME = r"^[A-Za-z0-9_.{}-]{1,128}$"


class ClusterDDLError(ValueError):
    """A statement the cluster renderer cannot make replicated; the message quotes it."""


def render(sql: str, cluster: str | None, replicated_database: bool = False) -> str:
    """``sql`` as it must run on ``cluster`` (None: unchanged); see the module docstring."""
    if cluster is None:
        return sql
    if not re.match(CLUSTER_NAME, cluster):
        raise ClusterDDLError(f"cluster name {cluster!r} is not a plain name or macro")
    if _DATA.match(sql) or _MUTATION.match(sql):
        return sql
    if _ON_CLUSTER.search(sql):
        raise ClusterDDLError(f"already has ON CLUSTER (the renderer adds it): {_head(sql)}")
    kind, end = _object_end(sql)
    if kind in ("table", "materialized view", "view"):
        sql = _replicated_engine(sql, kind)
    if replicated_database:
        return sql
    return f"{sql[:end]} ON CLUSTER '{cluster}'{sql[end:]}"


def _object_end(sql: str) -> tuple[str, int]:
    """The statement's kind and the offset right after its object name (the whole list for RENAME)."""
    for kind, pattern in _AFTER_NAME:
        m = pattern.match(sql)
        if m:
            return kind, m.end()
    m = _RENAME.match(sql)
    if m:
        return "rename", m.end()
    raise ClusterDDLError(f"no cluster form known for this statement: {_head(sql)}")


def _replicated_engine(sql: str, kind: str) -> str:
    engines = list(_ENGINE.finditer(sql))
    if kind == "view":
        if _ANY_ENGINE.search(sql):
            raise ClusterDDLError(f"a plain view has no engine: {_head(sql)}")
        return sql
    if kind == "materialized view":
        # A view with an inner table would need that table replicated too; a TO target is an
        # ordinary replicated table, created (and replicated) by its own statement.
        if not _MV_TARGET.match(sql) or _ANY_ENGINE.search(sql):
            raise ClusterDDLError(f"materialized views must write TO a table of their own: {_head(sql)}")
        return sql
    if len(engines) != 1 or len(_ANY_ENGINE.findall(sql)) != 1:
        raise ClusterDDLError(f"expected one MergeTree-family ENGINE clause: {_head(sql)}")
    m = engines[0]
    if m.group(2) not in MERGE_TREE_FAMILY:
        raise ClusterDDLError(f"unknown MergeTree engine {m.group(2)}MergeTree: {_head(sql)}")
    if m.group(1):
        return sql  # already replicated: its arguments are the author's choice
    start = m.start(2)
    return f"{sql[:start]}Replicated{sql[start:]}"


def unrender(sql: str) -> str:
    """The single-node statement a rendered one came from (for the tests that compare the two forms)."""
    sql = re.sub(r" ON CLUSTER '[^']*'", "", sql, count=1)
    return re.sub(r"(?i)(\bENGINE\s*=?\s*)Replicated(\w*MergeTree\b)", r"\1\2", sql, count=1)


def _head(sql: str) -> str:
    return " ".join(sql.split())[:160]


class Renderer:
    """:func:`render` bound to one deployment: what migrate hands to env.py and uses for its own DDL."""

    def __init__(self, cluster: str | None = None, replicated_database: bool = False):
        self.cluster = cluster
        self.replicated_database = replicated_database

    def __call__(self, sql: str) -> str:
        return render(sql, self.cluster, self.replicated_database)

    def before_cursor_execute(self, conn, cursor, statement, parameters, context, executemany):
        """SQLAlchemy's hook (``retval=True``): every statement of the migration connection, rendered."""
        return self(statement), parameters
