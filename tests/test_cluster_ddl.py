"""Cluster DDL: every statement a revision runs, rendered for a cluster, parses in the real engine and
defines what the single-node statement defines; single-node SQL is unchanged byte for byte."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from migrations.cluster import ClusterDDLError, Renderer, render, unrender
from monitor.foundation import migrate

VERSIONS = sorted((Path(migrate.MIGRATIONS_DIR) / "versions").glob("0*.py"))


class _Recorder:
    def __init__(self):
        self.statements: list[str] = []

    def execute(self, sql):
        self.statements.append(sql)

    def get_bind(self):
        """A revision that reads data first (0016: the days to backfill) finds none: its DDL is what counts."""
        return SimpleNamespace(exec_driver_sql=lambda sql: SimpleNamespace(fetchall=lambda: []))


def statements(path: Path, config, direction: str = "upgrade") -> list[str]:
    """What the revision would execute, captured by running it against a recording ``op``."""
    spec = importlib.util.spec_from_file_location(f"rev_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rec = _Recorder()
    module.op = rec
    module.context = SimpleNamespace(config=SimpleNamespace(attributes={"nlpmon_config": config}))
    getattr(module, direction)()
    return rec.statements


def every_statement(config) -> list[str]:
    out = [migrate.VERSION_TABLE]
    for path in VERSIONS:
        out += statements(path, config) + statements(path, config, "downgrade")
    return out


def fmt(store, sql: str) -> str:
    return store.scalar("SELECT formatQuery({q:String})", {"q": sql})


def test_every_revision_is_covered():
    assert [p.name[:4] for p in VERSIONS] == [f"{i:04d}" for i in range(1, len(VERSIONS) + 1)]
    assert len(VERSIONS) >= 9


def test_single_node_sql_is_unchanged(config):
    for sql in every_statement(config):
        assert render(sql, None) is sql
        assert Renderer()(sql) is sql


@pytest.mark.parametrize("replicated_database", [False, True], ids=["on-cluster", "replicated-database"])
def test_every_rendered_statement_parses_and_defines_the_same(store, make_config, replicated_database):
    clustered = make_config(clickhouse={"cluster": "nlpmon"})
    ddl = Renderer("nlpmon", replicated_database)
    creates = 0
    for sql in every_statement(clustered):
        out = ddl(sql)
        parsed = fmt(store, out)  # the engine's own parser: raises on anything it cannot read
        is_ddl = re.match(r"\s*(CREATE|ALTER|DROP|TRUNCATE|RENAME)\b", sql) and not re.match(
            r"\s*ALTER\s+TABLE\s+\w+\s+(DELETE|UPDATE)\b", sql)
        if not is_ddl:
            assert out == sql
            continue
        assert ("ON CLUSTER nlpmon" in parsed) is (not replicated_database), parsed
        if re.match(r"\s*CREATE\s+TABLE", sql):
            creates += 1
            assert re.search(r"ENGINE = Replicated\w*MergeTree", parsed), parsed
            assert not re.search(r"ENGINE = Replicated\w*MergeTree\(\s*'", parsed), "no explicit replica path"
        # The cluster form is the single-node form plus ON CLUSTER and "Replicated": same columns,
        # keys, partitions, TTLs, settings and view queries, in the engine's normal form too.
        assert unrender(out) == sql
        normal = re.sub(r" ON CLUSTER nlpmon", "", parsed)
        normal = re.sub(r"ENGINE = Replicated(\w*MergeTree)", r"ENGINE = \1", normal)
        assert normal == fmt(store, sql)
    assert creates >= 25


def test_the_cluster_schema_creates_what_the_single_node_schema_creates(store, make_config):
    """Created in chDB after mapping the rendered statements back: the same tables, columns, keys and
    TTLs as the migrated schema (the renderer dropped or moved nothing)."""
    clustered = make_config(clickhouse={"cluster": "nlpmon"})
    ddl = Renderer("nlpmon")
    target = "cl_" + store.database
    store.command(f"CREATE DATABASE `{target}`")
    try:
        for path in VERSIONS:
            for sql in statements(path, clustered):
                back = unrender(ddl(sql))
                back = re.sub(r"\b(TABLE|VIEW|TO)\s+(IF (?:NOT )?EXISTS\s+)?(\w+)", rf"\1 \2`{target}`.\3", back, count=2)
                back = re.sub(r"^INSERT INTO (\w+)", rf"INSERT INTO `{target}`.\1", back)
                back = back.replace("FROM requests", f"FROM `{target}`.requests").replace(
                    "FROM feedback", f"FROM `{target}`.feedback").replace("FROM requests_1", f"FROM `{target}`.requests_1")
                store.command(back)
        migrate.apply_retention(store, clustered, Renderer())  # the store's own retention, in both

        def shape(db):
            return store.query(
                "SELECT name, engine, sorting_key, primary_key, partition_key, replaceRegexpAll(create_table_query, "
                "'^.*?\\\\) ENGINE', '') FROM system.tables WHERE database = {db:String} AND name != 'alembic_version' "
                "AND engine != 'MaterializedView' ORDER BY name", {"db": db})
        cols = "SELECT table, name, type, default_kind FROM system.columns WHERE database = {db:String} ORDER BY table, position"
        mine = shape(target)
        theirs = shape(store.database)
        assert len(mine) >= 25
        assert [r[:5] for r in mine] == [r[:5] for r in theirs]
        assert store.query(cols, {"db": target}) == [r for r in store.query(cols, {"db": store.database})
                                                     if r[0] != "alembic_version"]
    finally:
        store.command(f"DROP DATABASE IF EXISTS `{target}`")


def test_what_the_renderer_cannot_make_replicated_fails_loudly():
    for sql in ("CREATE TABLE t (a String) ENGINE = Memory",
                "CREATE TABLE t (a String) ORDER BY a",  # no engine: the server's default, maybe not replicated
                "CREATE MATERIALIZED VIEW v ENGINE = SummingMergeTree ORDER BY a AS SELECT a FROM t",  # inner table
                "CREATE DATABASE d",
                "OPTIMIZE TABLE t FINAL",
                "CREATE TABLE t ON CLUSTER other (a String) ENGINE = MergeTree ORDER BY a",
                "CREATE TABLE t (a String) ENGINE = FancyMergeTree ORDER BY a"):
        with pytest.raises(ClusterDDLError):
            render(sql, "c1")
    # and what it can: the places ON CLUSTER goes
    assert render("RENAME TABLE a TO b, c TO d", "c1") == "RENAME TABLE a TO b, c TO d ON CLUSTER 'c1'"
    assert render("DROP TABLE IF EXISTS `x`", "c1") == "DROP TABLE IF EXISTS `x` ON CLUSTER 'c1'"
    assert render("ALTER TABLE alembic_version DELETE WHERE 1", "c1") == "ALTER TABLE alembic_version DELETE WHERE 1"
    assert render("CREATE TABLE t (a String) ENGINE = ReplacingMergeTree(v) ORDER BY a", "c1", True) == \
        "CREATE TABLE t (a String) ENGINE = ReplicatedReplacingMergeTree(v) ORDER BY a"


def test_upgrade_on_a_replicated_database_renders_without_on_cluster(make_config, make_store):
    """The database engine is read from the store: chDB's databases are Atomic, so ON CLUSTER."""
    cfg = make_config(clickhouse={"cluster": "c1"})
    store = make_store(cfg, upgrade=False)
    ddl = migrate.renderer(store, cfg)
    assert (ddl.cluster, ddl.replicated_database) == ("c1", False)
    assert migrate.renderer(store, make_config()).cluster is None
