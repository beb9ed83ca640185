"""The cardinality budget: an id put into a dimension is counted under one overflow value, the raw row
keeps the real value, and nlpmon says so (counter, metric, alert, overview). Figures: bench/cardinality.py."""
from __future__ import annotations

import datetime as dt
import time

import pytest

from alerts.engine import AlertEngine
from jobs.sli import SliJob
from monitor.app import create_app
from tests.helpers import auth
from tests.test_dashboards import sign_in
from tests.test_jobs import T0, traffic

OV = "__overflow__"


@pytest.fixture
def env(make_config, clock, make_store):
    cfg = make_config(cardinality={"limits": {"feature": 3, "prompt_version": 2}, "services": 2},
                      jobs={"catchup_max": "6h", "grace": "30s"})
    store = make_store(cfg)
    clock.set(T0 + dt.timedelta(hours=1, minutes=1))
    app = create_app(cfg, store, clock)
    return cfg, store, clock, app


def events(n: int, *, start=T0, prefix="r", **over):
    out = traffic(n=n, errors=0, timeouts=0, start=start, prefix=prefix)[0]
    for i, e in enumerate(out):
        e.update({k: (v(i) if callable(v) else v) for k, v in over.items()})
    return out


def test_values_beyond_the_budget_count_as_overflow_and_the_raw_row_keeps_them(env):
    cfg, store, clock, app = env
    ing = app.extensions["nlpmon"].ingestor
    ing.ingest("requests", events(30, feature=lambda i: f"f{i % 6}", prompt_version=lambda i: f"p{i % 4}"))
    counted = dict(store.query("SELECT feature, sum(requests) FROM requests_1h GROUP BY feature"))
    assert counted == {"f0": 5, "f1": 5, "f2": 5, OV: 15}  # three admitted, in arrival order
    assert set(dict(store.query("SELECT prompt_version, sum(requests) FROM requests_1d GROUP BY prompt_version"))) \
        == {"p0", "p1", OV}
    row = store.query_dicts("SELECT feature, dimension_overflow FROM requests WHERE request_id = 'r-11'")[0]
    assert row == {"feature": OV, "dimension_overflow": {"feature": "f5", "prompt_version": "p3"}}
    key = app.extensions["nlpmon"].keys.create("reader", ["read"])[1]
    shown = app.test_client().get("/v1/requests/r-11", headers=auth(key)).json["request"]
    assert shown["feature"] == "f5" and shown["prompt_version"] == "p3"
    assert shown["counted_as_overflow"] == ["feature", "prompt_version"]
    # Services have their own budget, over all; a new day starts a new budget.
    ing.ingest("requests", events(4, prefix="s", service=lambda i: f"svc{i}"))
    assert dict(store.query("SELECT service, sum(requests) FROM requests_1h WHERE minute = {h:DateTime('UTC')} "
                            "GROUP BY service", {"h": T0.replace(tzinfo=None)})) == {"svc": 30, "svc0": 1, OV: 3}
    clock.set(T0 + dt.timedelta(days=1, hours=1))
    ing.ingest("requests", events(6, start=T0 + dt.timedelta(days=1), prefix="d2", feature=lambda i: f"g{i}"))
    assert dict(store.query("SELECT feature, sum(requests) FROM requests_1d WHERE minute = {d:DateTime('UTC')} "
                            "GROUP BY feature", {"d": (T0 + dt.timedelta(days=1)).replace(hour=0, tzinfo=None)})) \
        == {"g0": 1, "g1": 1, "g2": 1, OV: 3}


def test_the_budget_survives_a_restart(env, make_config):
    cfg, store, clock, app = env
    app.extensions["nlpmon"].ingestor.ingest("requests", events(3, feature=lambda i: f"f{i}"))
    # A new process: what was admitted today is read back from the day rollup.
    fresh = create_app(cfg, store, clock).extensions["nlpmon"].ingestor
    fresh.ingest("requests", events(2, prefix="after", feature=lambda i: ("f1", "f9")[i]))
    assert dict(store.query("SELECT feature, sum(requests) FROM requests_1d GROUP BY feature")) == \
        {"f0": 1, "f1": 2, "f2": 1, OV: 1}


def test_overflow_is_said_counter_metric_alert_and_overview(env):
    cfg, store, clock, app = env
    svc = app.extensions["nlpmon"]
    svc.ingestor.ingest("requests", events(40, feature=lambda i: f"user-{i}"))
    keys = svc.keys
    read = keys.create("reader", ["read"])[1]
    metrics = app.test_client().get("/metrics", headers=auth(read)).get_data(as_text=True)
    assert 'nlpmon_cardinality_overflow_events_total{dimension="feature",service="svc"} 37.0' in metrics
    assert SliJob(store, cfg, clock, dt.timedelta(minutes=1)).run().status == "ok"
    hourly = store.query("SELECT labels, value FROM metric_points FINAL WHERE metric = 'cardinality_overflow_requests' "
                         "AND window = '1h'")
    assert hourly == [({"service": "svc", "dimension": "feature"}, 37.0)]
    engine = AlertEngine(store, cfg, clock)
    engine.run()
    firing = store.query("SELECT labels FROM alert_state FINAL WHERE state = 'firing' "
                         "AND labels['alertname'] = 'CardinalityBudgetExceeded'")
    assert {"alertname": "CardinalityBudgetExceeded", "service": "svc", "dimension": "feature",
            "severity": "ticket"}.items() <= firing[0][0].items()
    page = app.test_client()
    assert sign_in(page, read).status_code == 302
    html = page.get("/?period=24h").get_data(as_text=True)
    assert 'data-overflow="svc/feature"' in html and "37 requests" in html


def test_a_unique_value_per_request_stays_cheap(env):
    """Figures for 50,000 unique values through a running server: bench/cardinality.py. Here: the
    series stay bounded and the sli job's time does not grow with the number of values."""
    cfg, store, clock, app = env
    ing = app.extensions["nlpmon"].ingestor
    for chunk in range(5):
        ing.ingest("requests", events(2000, prefix=f"u{chunk}", feature=lambda i, c=chunk: f"id-{c}-{i}",
                                      prompt_version=lambda i, c=chunk: f"hash-{c}-{i}"))
    t0 = time.perf_counter()
    result = SliJob(store, cfg, clock, dt.timedelta(minutes=1)).run()
    elapsed = time.perf_counter() - t0
    assert result.status == "ok"
    series = store.scalar("SELECT uniqExact(labels) FROM metric_points WHERE metric = 'requests'")
    assert series <= 20, series  # the total, the service, 3 features + overflow, and their breakdowns
    assert store.scalar("SELECT count() FROM requests") == 10_000
    print(f"\nsli job over 10,000 unique features and prompt versions: {elapsed:.2f} s, {result.rows} points, "
          f"{series} request series")
