"""Schema through alembic: idempotent upgrade, full downgrade and back, engines and TTLs."""
from __future__ import annotations

from monitor.foundation import migrate

TABLES = {"requests", "feedback", "rejected_events", "api_keys", "metric_points", "instance_settings",
          "requests_1m", "requests_1m_mv", "requests_1h", "requests_1h_mv", "requests_1d", "requests_1d_mv",
          "feedback_1m", "feedback_1m_mv", "feedback_1h", "feedback_1h_mv", "feedback_1d", "feedback_1d_mv",
          "job_runs", "review_queue", "review_leases"}


def tables(store):
    return {r[0] for r in store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")}


def test_upgrade_is_idempotent(config, make_store):
    store = make_store(config, upgrade=False)
    assert migrate.current(store) is None
    migrate.upgrade(store, config)
    migrate.upgrade(store, config)
    assert migrate.current(store) == migrate.head()
    assert TABLES <= tables(store)
    assert store.scalar("SELECT count() FROM alembic_version") == 1


def test_upgrade_downgrade_base_upgrade(config, make_store):
    store = make_store(config)
    store.command("INSERT INTO api_keys (key_id, name) VALUES ('k', 'n')")
    migrate.downgrade(store, config, "base")
    assert migrate.current(store) is None
    assert not (TABLES & tables(store))
    migrate.upgrade(store, config)
    assert TABLES <= tables(store)
    assert store.scalar("SELECT count() FROM api_keys") == 0


def test_downgrade_one_step_removes_only_its_revision(config, make_store):
    store = make_store(config)
    migrate.downgrade(store, config, "0001")
    assert migrate.current(store) == "0001"
    left = tables(store)
    assert "requests" in left and not {"requests_1m", "requests_1h", "requests_1d", "feedback_1m", "job_runs",
                                       "review_queue"} & left
    assert "request_ts" not in {r[0] for r in store.query("DESCRIBE TABLE feedback")}
    migrate.upgrade(store, config)
    assert "request_ts" in {r[0] for r in store.query("DESCRIBE TABLE feedback")}


def test_feedback_hour_and_day_rollups_are_backfilled(config, make_store):
    store = make_store(config)
    migrate.downgrade(store, config, "0005")
    assert not {"feedback_1h", "feedback_1d"} & tables(store)
    store.command("INSERT INTO feedback (feedback_id, request_id, ts, kind, value, request_ts, service, feature) "
                  "VALUES "
                  "('f1', 'r1', '2026-11-24 10:05:00', 'thumbs', 0, '2026-11-24 10:00:00', 'svc', 'chat'), "
                  "('f2', 'r2', '2026-11-24 11:05:00', 'thumbs', 1, '2026-11-24 11:00:00', 'svc', 'chat')")
    migrate.upgrade(store, config)
    for table in ("feedback_1h", "feedback_1d"):
        assert store.query(f"SELECT sum(thumbs_down), sum(thumbs_up), count() FROM {table} FINAL")[0] == (
            1, 1, 2 if table == "feedback_1h" else 1), table
    # From now on the views keep them up to date.
    store.command("INSERT INTO feedback (feedback_id, request_id, ts, kind, value, request_ts, service, feature) "
                  "VALUES ('f3', 'r3', '2026-11-24 12:05:00', 'thumbs', 0, '2026-11-24 12:00:00', 'svc', 'chat')")
    assert store.scalar("SELECT sum(thumbs_down) FROM feedback_1d") == 2


def test_outcome_splits_are_backfilled_into_the_segment_rollups(config, make_store):
    """0016 counts the stored requests under provider, error type and HTTP status (the empty error type of a
    success included) in every segment rollup, adding no row of the dimensions counted before; the views then
    count new requests the same way."""
    store = make_store(config)
    migrate.downgrade(store, config, "0015")
    cols = "(request_id, ts, service, feature, provider, status, error_type, http_status, language, latency_ms)"
    store.command(f"INSERT INTO requests {cols} VALUES "
                  "('r1', '2026-11-23 10:05:00', 'svc', 'chat', 'openai', 'ok', '', 200, 'en', 100), "
                  "('r2', '2026-11-24 10:06:00', 'svc', 'chat', 'openai', 'error', 'rate_limit', 429, 'en', 300), "
                  "('r3', '2026-11-24 11:07:00', 'svc', 'chat', 'anthropic', 'error', 'server', 500, '', 200)")
    before = store.query("SELECT dimension, value, sum(requests) FROM segments_1d GROUP BY dimension, value ORDER BY 1, 2")
    assert before == [("language", "en", 2)]
    migrate.upgrade(store, config)
    store.command(f"INSERT INTO requests {cols} VALUES "
                  "('r4', '2026-11-24 12:00:00', 'svc', 'chat', 'openai', 'ok', '', 200, 'de', 100)")
    for table in ("segments_1m", "segments_1h", "segments_1d"):
        got = store.query(f"SELECT dimension, value, sum(requests), sum(status_error) FROM {table} "
                          "GROUP BY dimension, value ORDER BY 1, 2")
        assert got == [("error_type", "", 2, 0), ("error_type", "rate_limit", 1, 1), ("error_type", "server", 1, 1),
                       ("http_status", "200", 2, 0), ("http_status", "429", 1, 1), ("http_status", "500", 1, 1),
                       ("language", "de", 1, 0), ("language", "en", 2, 1),
                       ("provider", "anthropic", 1, 1), ("provider", "openai", 3, 1)], table
    # and back: the rows of the three dimensions go, the views count as 0012's did
    migrate.downgrade(store, config, "0015")
    assert store.query("SELECT DISTINCT dimension FROM segments_1h") == [("language",)]


def test_engines_partitions_and_ttls(store):
    info = {r[0]: r[1:] for r in store.query(
        "SELECT name, engine, partition_key, sorting_key FROM system.tables WHERE database = currentDatabase()")}
    assert info["requests"][0] == "ReplacingMergeTree" and "request_id" in info["requests"][2]
    assert info["requests"][1] == "toYYYYMMDD(ts)"
    assert info["feedback"][0] == "ReplacingMergeTree" and "feedback_id" in info["feedback"][2]
    assert info["metric_points"][0] == "ReplacingMergeTree"
    ddl = store.scalar("SHOW CREATE TABLE requests")
    assert "TTL toDateTime(ts) + toIntervalDay(2000)" in ddl  # tests' retention (conftest.TEST_RETENTION)
    assert "ttl_only_drop_parts = 1" in ddl
    assert "`input_text` String TTL toDateTime(ts) + toIntervalDay(2000) CODEC(ZSTD(3))" in ddl or \
           ("input_text" in ddl and "toIntervalDay(2000)" in ddl)
    assert "LowCardinality(String)" in ddl
    assert info["requests_1m"][0] == "AggregatingMergeTree" and info["feedback_1m"][0] == "AggregatingMergeTree"
    rollup = store.scalar("SHOW CREATE TABLE requests_1m")
    assert "AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), Float64)" in rollup


def test_retention_follows_config(make_config, make_store):
    cfg = make_config(retention={"days": 30, "text_days": 7})
    store = make_store(cfg)
    ddl = store.scalar("SHOW CREATE TABLE requests")
    assert "toIntervalDay(30)" in ddl and "toIntervalDay(7)" in ddl and "toIntervalDay(90)" not in ddl
    longer = make_config(clickhouse={"database": cfg.clickhouse.database}, retention={"days": 120, "text_days": 14})
    migrate.upgrade(store, longer)
    ddl = store.scalar("SHOW CREATE TABLE requests")
    assert "toIntervalDay(120)" in ddl and "toIntervalDay(14)" in ddl


def test_metric_points_rerun_replaces(store):
    store.command("INSERT INTO metric_points (ts, `window`, metric, labels, value, computed_at) VALUES "
                  "('2026-11-24 10:00:00', '5m', 'error_rate', {'service':'a','feature':'b'}, 0.1, '2026-11-24 10:05:00')")
    # The same series with its labels in another order, recomputed later.
    store.command("INSERT INTO metric_points (ts, `window`, metric, labels, value, computed_at) VALUES "
                  "('2026-11-24 10:00:00', '5m', 'error_rate', {'feature':'b','service':'a'}, 0.2, '2026-11-24 10:06:00')")
    assert store.query("SELECT value FROM metric_points FINAL") == [(0.2,)]


def test_rebuild_computes_what_the_views_the_migrations_made_compute(store):
    """The migrations keep frozen copies of the rollup SQL; ``nlpmon rollups rebuild`` uses today's.
    They must agree: ClickHouse's own normal form of each view's SELECT equals today's SELECT's."""
    from monitor.foundation.rollups import (
        FEATURE_DIMENSIONS,
        FEATURE_ROLLUPS,
        FEEDBACK_ROLLUPS,
        REQUEST_ROLLUPS,
        SEGMENT_KEY,
        SEGMENT_ROLLUPS,
        feedback_rollup_select,
        requests_rollup_select,
        segmented,
    )
    today = {f"{t}_mv": requests_rollup_select("requests", b) for t, b, _ in REQUEST_ROLLUPS}
    today |= {f"{t}_mv": requests_rollup_select("requests", b, FEATURE_DIMENSIONS) for t, b, _ in FEATURE_ROLLUPS[1:]}
    today |= {f"{t}_mv": feedback_rollup_select("feedback", b) for t, b, _ in FEEDBACK_ROLLUPS}
    today |= {f"{t}_mv": requests_rollup_select(segmented(), b, SEGMENT_KEY) for t, b, _ in SEGMENT_ROLLUPS}
    installed = dict(store.query("SELECT name, as_select FROM system.tables WHERE database = currentDatabase() "
                                 "AND engine = 'MaterializedView'"))
    assert set(installed) == set(today)
    for name, sql in today.items():
        store.command(f"CREATE VIEW check_{name} AS {sql}")
        normal = store.scalar("SELECT as_select FROM system.tables WHERE database = currentDatabase() "
                              "AND name = {n:String}", {"n": f"check_{name}"})
        assert normal == installed[name], name
    # and the check can fail: a changed SELECT has another normal form
    store.command("CREATE VIEW check_changed AS " + today["requests_1m_mv"].replace("count() AS requests",
                                                                                  "count() + 1 AS requests"))
    assert store.scalar("SELECT as_select FROM system.tables WHERE database = currentDatabase() "
                        "AND name = 'check_changed'") != installed["requests_1m_mv"]
