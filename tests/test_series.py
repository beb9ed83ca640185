"""GET /v1/metrics (the series API) and GET /metrics (Prometheus text format), fed by real job runs."""
from __future__ import annotations

import contextlib
import datetime as dt
import urllib.error
import urllib.request
import uuid

import pytest

from monitor.app import create_app
from monitor.foundation import migrate
from monitor.foundation.clock import ManualClock
from monitor.foundation.config import load_config
from monitor.foundation.storage import Store
from monitor.scheduler import build_jobs
from tests.helpers import auth, free_port
from tests.test_jobs import T0, iso, traffic

# Loading the traffic and running the sli/slo/cost jobs takes seconds, and every test
# here only reads the result, so the module builds it once (``served_module``) and each
# test gets it through ``served``, which fails the test if it changed the shared state.
# A test that needs to write must build its own app instead of using ``served``.
STATE_TABLES = ("requests", "feedback", "metric_points", "job_runs", "api_keys")


@contextlib.contextmanager
def served_after_jobs(chdb_dir, prefix: str, slos: list[dict], n: int, n_m2: int, feedback: list[dict]):
    """An app on a module-scoped store of its own (named ``t_<prefix>_...`` so it cannot collide with the
    per-test databases in the same chDB dir) after an hour of traffic, feedback and the sli, slo and cost jobs."""
    cfg = load_config(env={}, overrides={
        "clickhouse": {"url": f"chdb://{chdb_dir}", "database": f"t_{prefix}_{uuid.uuid4().hex[:12]}"},
        "slos": slos, "jobs": {"catchup_max": "3h"},  # the traffic spans one hour; less catch-up, faster setup
    })
    store = Store.from_config(cfg)
    try:
        migrate.upgrade(store, cfg)
        clock = ManualClock(T0 + dt.timedelta(hours=1, minutes=1))
        app = create_app(cfg, store, clock)
        svc = app.extensions["nlpmon"]
        evs = traffic(n=n)[0] + traffic(n=n_m2, errors=n_m2 // 10, timeouts=0, model="m2", prefix="q", seed=2)[0]
        assert svc.ingestor.ingest("requests", evs).rejected == 0
        svc.ingestor.ingest("feedback", feedback)
        jobs = build_jobs(store, cfg, clock)
        for name in ("sli", "slo", "cost"):
            assert jobs[name].run().status == "ok"
        yield app
    finally:
        store.command(f"DROP DATABASE IF EXISTS `{cfg.clickhouse.database}`")
        store.close()


@pytest.fixture(scope="module")
def served_module(chdb_dir):
    slos = [{"name": "chat-availability", "service": "svc", "feature": "chat", "objective": 99.5,
             "sli": "availability", "period": "7d"}]
    feedback = [{"request_id": "r-9", "ts": iso(T0 + dt.timedelta(minutes=30)), "kind": "thumbs", "value": 1}]
    with served_after_jobs(chdb_dir, "series", slos, 600, 300, feedback) as app:
        svc = app.extensions["nlpmon"]
        _, read = svc.keys.create("reader", ["read"])
        _, ingest_only = svc.keys.create("writer", ["ingest"])
        yield app, read, ingest_only


def _snapshot(app):
    svc = app.extensions["nlpmon"]
    ingestor = svc.ingestor_if_built()
    return {"now": svc.clock.now(), "counters": dict(ingestor.counters) if ingestor else None,
            "rows": {t: svc.store.query(f"SELECT count() FROM {t}")[0][0] for t in STATE_TABLES}}


@pytest.fixture
def served(served_module):
    """The shared, read-only app with its read and ingest-only keys."""
    before = _snapshot(served_module[0])
    yield served_module
    assert _snapshot(served_module[0]) == before, "a test changed the state shared by this module"


def get(app, key, url):
    return app.test_client().get(url, headers=auth(key))


def test_series_by_exact_label_set(served):
    app, key, _ = served
    r = get(app, key, f"/v1/metrics?metric=error_rate&step=1h&service=svc&feature=chat&from={iso(T0)}"
                      f"&to={iso(T0 + dt.timedelta(hours=2))}")
    assert r.status_code == 200
    body = r.json
    assert body["metric"] == "error_rate" and body["window"] == "1h"
    assert [s["labels"] for s in body["series"]] == [{"feature": "chat", "service": "svc"}]
    assert body["series"][0]["points"] == [["2026-11-24T09:00:00Z", 80 / 900]]
    by_model = get(app, key, f"/v1/metrics?metric=error_rate&step=1h&service=svc&feature=chat&by=model"
                             f"&from={iso(T0)}").json["series"]
    assert {s["labels"]["model"]: s["points"][0][1] for s in by_model} == {"m1": 50 / 600, "m2": 30 / 300}


def test_slo_and_cost_series(served):
    app, key, _ = served
    burn = get(app, key, f"/v1/metrics?metric=slo_burn_rate&step=1h&slo=chat-availability&from={iso(T0)}").json
    assert burn["series"][0]["labels"]["slo"] == "chat-availability"
    last = burn["series"][0]["points"][-1]
    assert last == ["2026-11-24T09:00:00Z", pytest.approx((80 / 900) / 0.005)]
    budget = get(app, key, "/v1/metrics?metric=slo_error_budget_remaining&step=7d").json
    assert budget["series"] and budget["window"] == "7d"
    cost = get(app, key, f"/v1/metrics?metric=cost_usd&step=1h&from={iso(T0)}").json
    assert cost["series"][0]["labels"] == {} and cost["series"][0]["points"][0][1] == 900 * 0.25


@pytest.mark.parametrize("query, message", [
    ("", "metric: required"),
    ("metric=nope", "metric: unknown metric 'nope'"),
    ("metric=error_rate&colour=red", "colour: unknown label"),
    ("metric=error_rate&by=colour", "by: unknown label 'colour'"),
    ("metric=error_rate&step=7m", "step: error_rate is kept for windows 1m, 5m, 1h, 1d, not '7m'"),
    ("metric=cost_usd&step=1m", "step: cost_usd is kept for windows 1h, 1d"),
    ("metric=error_rate&from=yesterday", "from: must be an ISO 8601"),
    ("metric=error_rate&from=2026-11-25T00:00:00Z&to=2026-11-24T00:00:00Z", "from: must not be after to"),
])
def test_bad_queries_name_the_parameter(served, query, message):
    app, key, _ = served
    r = get(app, key, f"/v1/metrics?{query}")
    assert r.status_code == 400 and message in r.json["message"], r.json


def test_scopes(served):
    app, read, ingest_only = served
    c = app.test_client()
    for path in ("/v1/metrics?metric=requests", "/metrics"):
        assert c.get(path).status_code == 401
        assert c.get(path, headers=auth(ingest_only)).status_code == 403
        assert c.get(path, headers=auth(read)).status_code == 200


def test_prometheus_exposition(served):
    app, key, _ = served
    app.extensions["nlpmon"].ingestor  # built, so its counters are exported
    r = get(app, key, "/metrics")
    assert r.status_code == 200 and r.content_type.startswith("text/plain; version=0.0.4")
    text = r.get_data(as_text=True)
    assert "# HELP nlpmon_error_rate Share of requests with status error or timeout." in text
    assert "# TYPE nlpmon_error_rate gauge" in text
    assert f'nlpmon_error_rate{{feature="chat",service="svc",window="1h"}} {80 / 900}' in text
    assert 'nlpmon_slo_error_budget_remaining{feature="chat",service="svc",sli="availability",' \
           'slo="chat-availability",window="7d"}' in text
    # Names in Prometheus' conventions (docs/metrics.md, "On /metrics"; tests/test_promtool.py lints them).
    assert 'nlpmon_requests_in_window{feature="chat",service="svc",window="1h"} 900.0' in text
    assert "# TYPE nlpmon_latency_seconds summary" in text
    assert 'nlpmon_latency_seconds{feature="chat",quantile="0.95",service="svc",window="1h"}' in text
    assert "nlpmon_latency_p95_ms" not in text and "nlpmon_requests{" not in text
    assert 'nlpmon_ingested_events_total{kind="requests"} 900.0' in text
    assert 'nlpmon_job_last_run_failed{job="sli"} 0.0' in text
    assert 'nlpmon_job_last_duration_seconds{job="cost"}' in text
    assert "nlpmon_process_resident_memory_bytes" in text


def test_metrics_port_serves_without_a_key(served):
    import threading

    import waitress

    from dashboards.series import metrics_only_app
    app, _, _ = served
    server = waitress.create_server(metrics_only_app(app.extensions["nlpmon"]), host="127.0.0.1", port=free_port(),
                                    asyncore_use_poll=True)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.effective_port}"
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
            assert b"nlpmon_requests_in_window{" in r.read()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/v1/metrics?metric=requests", timeout=10)
        assert err.value.code == 404
    finally:
        server.close()
