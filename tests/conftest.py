"""Shared fixtures: a real chDB store (one data directory per test process, a fresh database per test)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one math thread each, or torch, BLAS and the drift methods
    # oversubscribe the CPU and every heavy test runs slower than it would alone.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import pytest

from monitor.app import create_app
from monitor.foundation import migrate
from monitor.foundation.clock import ManualClock
from monitor.foundation.config import load_config
from monitor.foundation.storage import Store
from tests.helpers import FineClock, LiveServer

NOW = "2026-11-24T10:00:00+00:00"


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory):
    # chDB allows one data directory per process, so the whole session shares one
    # and each test gets its own database inside it.
    return tmp_path_factory.mktemp("chdb")


# The engine applies TTLs by the real date, as rows are inserted: with the defaults (90 days, texts 30), tests
# whose data has fixed dates (NOW) would find their texts blanked, then their rows gone, as the calendar moves
# on. Tests keep their data for years unless they set retention themselves (the migration tests do).
TEST_RETENTION = {"days": 2000, "text_days": 2000}


@pytest.fixture
def make_config(chdb_dir):
    def make(**sections):
        base = {"clickhouse": {"url": f"chdb://{chdb_dir}", "database": f"t_{uuid.uuid4().hex[:12]}"},
                "retention": dict(TEST_RETENTION) if "retention" not in sections else {}}
        for k, v in sections.items():
            base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
        return load_config(env={}, overrides=base)
    return make


@pytest.fixture
def config(make_config):
    return make_config()


_TEMPLATES: dict[tuple, tuple[str, list[str]]] = {}


def upgrade_fast(store: Store, config) -> None:
    """The migrated schema, copied from a template database migrated once per test process.

    Alembic's revisions take about 1 s a database, replaying their DDL 0.2 s, and nearly every
    test starts from a fresh database. The template is keyed by the retention settings the DDL
    depends on; tests of the migrations themselves call monitor.foundation.migrate directly.
    """
    key = (config.clickhouse.url, config.retention.days, config.retention.text_days)
    if key not in _TEMPLATES:
        name = f"tmpl_{uuid.uuid4().hex[:12]}"
        cfg = config.model_copy(update={"clickhouse": config.clickhouse.model_copy(update={"database": name})})
        template = Store.from_config(cfg)
        migrate.upgrade(template, cfg)
        ddl = [r[0] for r in template.query(
            "SELECT create_table_query FROM system.tables WHERE database = {db:String} "
            "ORDER BY engine = 'MaterializedView', name", {"db": name})]
        template.close()
        _TEMPLATES[key] = (name, ddl)
    name, ddl = _TEMPLATES[key]
    target = config.clickhouse.database
    store.command(f"CREATE DATABASE IF NOT EXISTS `{target}`")
    for statement in ddl:
        store.command(statement.replace(f"{name}.", f"`{target}`."))
    store.command(f"INSERT INTO `{target}`.alembic_version SELECT * FROM `{name}`.alembic_version")


@pytest.fixture
def make_store():
    """Stores opened (and migrated) for a test, dropped and closed after it."""
    opened = []

    def make(config, upgrade=True):
        s = Store.from_config(config)
        if upgrade:
            upgrade_fast(s, config)
        opened.append((s, config.clickhouse.database))
        return s
    yield make
    for s, database in opened:
        s.command(f"DROP DATABASE IF EXISTS `{database}`")
        s.close()


@pytest.fixture
def store(config):
    s = Store.from_config(config)
    upgrade_fast(s, config)
    yield s
    s.command(f"DROP DATABASE IF EXISTS `{config.clickhouse.database}`")
    s.close()


# Modules whose tests run on a clock with microseconds (FineClock), as a real clock has: what they store is
# compared at the precision it is stored, which a clock of whole seconds never tests (it hid a review queue
# that no reviewer could get an item from).
FINE_CLOCK_MODULES = {"test_review", "test_silences", "test_scheduler_lease", "test_alerts", "test_alerts_live",
                      "test_replicas", "test_alerts_page", "test_evaluators"}


@pytest.fixture
def clock(request):
    if request.module.__name__.rpartition(".")[2] in FINE_CLOCK_MODULES:
        return FineClock(NOW)
    return ManualClock(NOW)


@pytest.fixture
def app(config, store, clock):
    return create_app(config, store, clock)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def keys(app):
    """Plain-text keys per scope, plus a revoked one."""
    ks = app.extensions["nlpmon"].keys
    out = {scope: ks.create(f"test-{scope}", [scope])[1] for scope in ("ingest", "read", "admin")}
    revoked, plain = ks.create("test-revoked", ["ingest", "read"])
    ks.revoke(revoked.key_id)
    out["revoked"] = plain
    out["ingest_read"] = ks.create("test-both", ["ingest", "read"])[1]
    return out


@pytest.fixture
def live_server(app):
    with LiveServer(app) as srv:
        yield srv


# make test hands tests to its two workers in collection order, a module with a costly fixture as one group
# (--dist loadgroup): the longest first, so neither worker is left with a four-minute group at the end.
SLOW_FIRST = ("test_demo_stories.py", "test_demo_explain.py", "test_dashboards.py", "test_crash.py", "test_demo_alerts.py",
              "test_drift_degenerate.py", "test_cli.py")


def pytest_ignore_collect(collection_path, config):
    """Under ``-m fast``, modules without a fast test are not even imported: importing the model, torch
    and Evidently for tests that will not run would take longer than the fast tier itself."""
    if config.getoption("markexpr", "") == "fast" and collection_path.suffix == ".py" \
            and collection_path.name.startswith("test_"):
        return "mark.fast" not in collection_path.read_text()
    return None


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: the rest keep their order


CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()
