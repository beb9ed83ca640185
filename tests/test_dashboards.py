"""The pages and the incident export, on one day of demo traffic with its error burst replayed through the alert engine.

Everything runs on the real store; the dataset is built once per test process
(the module's tests run in one xdist group) because ingesting the traffic and
running the jobs takes a while.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid

import pytest

from alerts.engine import AlertEngine
from monitor import demo
from monitor.app import create_app
from monitor.foundation.clock import ManualClock, iso_utc
from monitor.foundation.config import load_config
from monitor.foundation.storage import Store
from monitor.scheduler import build_jobs
from tests.conftest import ARTIFACTS, TEST_RETENTION, upgrade_fast
from tests.helpers import auth

pytestmark = pytest.mark.xdist_group("dashboards")

END = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
DAYS = 1.0
HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">"


class Dataset:
    def __init__(self, config, store, clock):
        self.config, self.store, self.clock = config, store, clock
        self.app = create_app(config, store, clock)
        ks = self.app.extensions["nlpmon"].keys
        self.keys = {scope: ks.create(f"ui-{scope}", [scope])[1] for scope in ("ingest", "read", "review", "admin")}
        revoked, self.keys["revoked"] = ks.create("ui-revoked", ["read"])
        ks.revoke(revoked.key_id)
        self.burst = next(i for i in demo.incidents(DAYS, END) if i["name"] == "error burst")


@pytest.fixture(scope="session")  # not module: xdist interleaves modules on a worker, which would rebuild it
def data(chdb_dir):
    config = load_config(env={}, overrides={
        "clickhouse": {"url": f"chdb://{chdb_dir}", "database": f"ui_{uuid.uuid4().hex[:12]}"},
        "retention": TEST_RETENTION, "jobs": {"catchup_max": "2d"}, "grounding": {"enabled": False}, "drift": {"enabled": False},
        "review": {"sample_rate": 0.01, "min_per_day": 5},
        "slos": [{"name": "answer-availability", "service": "support-bot", "feature": "answer", "objective": 98,
                  "sli": "availability", "period": "30d"}]})
    store = Store.from_config(config)
    upgrade_fast(store, config)
    clock = ManualClock(END)
    ds = Dataset(config, store, clock)
    ingestor = ds.app.extensions["nlpmon"].ingestor
    batches = {"requests": [], "feedback": []}
    for kind, event in demo.generate(DAYS, 0.25, END, seed=11):
        batches[kind].append(event)
    # A hostile prompt and answer, failing inside the burst so it shows among the failing requests.
    batches["requests"].append({
        "request_id": "hostile-1", "ts": iso_utc(ds.burst["start"] + dt.timedelta(minutes=3)),
        "service": "support-bot", "feature": "answer", "model": "gpt-4o-mini", "provider": "openai",
        "prompt_version": "v3", "status": "error", "error_type": "upstream_5xx", "latency_ms": 99_000.0,
        "input_tokens": 10, "output_tokens": 0, "input_text": HOSTILE, "output_text": HOSTILE,
        "context_text": HOSTILE})
    batches["feedback"].append({"request_id": "hostile-1", "ts": iso_utc(ds.burst["start"] + dt.timedelta(minutes=4)),
                                "kind": "thumbs", "value": 0, "comment": HOSTILE})
    for kind in ("requests", "feedback"):
        assert ingestor.ingest(kind, batches[kind]).rejected == 0
    start = END - dt.timedelta(days=DAYS)
    for name, job in build_jobs(store, config, clock).items():
        if name == "alerts":
            continue
        assert job.run(now=END, since=start).status == "ok", name
    engine = AlertEngine(store, config, clock)
    times = [ds.burst["start"] - dt.timedelta(minutes=10) + dt.timedelta(minutes=i) for i in range(60)]
    assert engine.replay(times) > 0
    # A drift run whose explanation quotes a hostile text (drift itself is tested in test_drift).
    summary = {"samples": {"reference": 300, "current": 300},
               "sides": {"input": {"detected": True, "methods": {"mmd": {"score": 0.02, "detected": True}}}}}
    explanation = {"input": {"novel_share": 0.3, "farthest": [{"text": HOSTILE, "distance": 0.9, "nearest": "hi"}],
                             "clusters": [{"size": 4, "share": 0.1, "examples": [HOSTILE]}]}}
    store.insert("drift_reports", [["r-hostile", END - dt.timedelta(hours=1), "1d", "support-bot", "answer", "ok", True,
                                    start - dt.timedelta(days=7), start, json.dumps(summary),
                                    json.dumps(explanation), "", END]],
                 ["report_id", "ts", "window", "service", "feature", "status", "drift_detected", "reference_from",
                  "reference_to", "summary", "explanation", "snapshot", "created_at"])
    yield ds
    store.command(f"DROP DATABASE IF EXISTS `{config.clickhouse.database}`")
    store.close()


def sign_in(client, key: str, next_url: str | None = None):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/login" + (f"?next={next_url}" if next_url else ""),
                       data={"csrf_token": token, "api_key": key})


def csrf(client, url: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(url).get_data(as_text=True)).group(1)


@pytest.fixture
def reader(data):
    c = data.app.test_client()
    assert sign_in(c, data.keys["read"]).status_code == 302
    return c


@pytest.fixture
def admin(data):
    c = data.app.test_client()
    assert sign_in(c, data.keys["admin"]).status_code == 302
    return c


PAGES = ["/", "/?period=24h", "/?period=30d&service=support-bot", "/detail?service=support-bot&feature=answer",
         "/drift", "/alerts", "/incidents", "/requests/hostile-1"]


# -- access ------------------------------------------------------------------------
@pytest.mark.parametrize("url", PAGES + ["/review"])
def test_pages_redirect_to_sign_in_without_a_session(data, url):
    r = data.app.test_client().get(url)
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=")


def test_sign_in_rejects_bad_keys_with_the_field_named(data):
    c = data.app.test_client()
    for key, reason in (("nlpm_nothing", "not a valid key"), (data.keys["revoked"], "revoked"),
                        (data.keys["ingest"], "pages need read")):
        r = sign_in(c, key)
        assert r.status_code == 401
        assert "api_key:" in r.get_data(as_text=True) and reason in r.get_data(as_text=True)
    assert c.get("/").status_code == 302


def test_sign_in_needs_the_csrf_token_and_refuses_open_redirects(data):
    c = data.app.test_client()
    c.get("/login")
    r = c.post("/login", data={"api_key": data.keys["read"]})
    assert r.status_code == 400 and "csrf_token" in r.get_data(as_text=True)
    r = sign_in(c, data.keys["read"], next_url="https://evil.example/")
    assert r.status_code == 302 and r.headers["Location"] == "/"
    r = sign_in(c, data.keys["read"], next_url="/alerts")
    assert r.headers["Location"] == "/alerts"


def test_session_cookie_flags_and_sign_out(data):
    c = data.app.test_client()
    r = sign_in(c, data.keys["read"])
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert data.keys["read"] not in cookie  # the key itself never travels in the cookie
    assert c.get("/").status_code == 200
    c.post("/logout", data={"csrf_token": csrf(c, "/")})
    assert c.get("/").status_code == 302


def test_revoking_the_key_ends_its_sessions(data):
    ks = data.app.extensions["nlpmon"].keys
    api_key, plain = ks.create("short-lived", ["read"])
    c = data.app.test_client()
    sign_in(c, plain)
    assert c.get("/alerts").status_code == 200
    ks.revoke(api_key.key_id)
    assert c.get("/alerts").status_code == 302


def test_session_expires(data):
    c = data.app.test_client()
    sign_in(c, data.keys["read"])
    data.clock.advance(data.config.auth.session_lifetime + dt.timedelta(minutes=1))
    try:
        assert c.get("/alerts").status_code == 302
    finally:
        data.clock.set(END)


def test_access_matrix(data, reader, admin):
    reviewer = data.app.test_client()
    r = sign_in(reviewer, data.keys["review"])
    assert r.headers["Location"] == "/review"  # a review-only key lands on its page
    assert reviewer.get("/").status_code == 403
    assert reviewer.get("/review").status_code == 200
    assert reader.get("/review").status_code == 403
    assert reader.get("/").status_code == 200
    # Silences: read sees them, only admin changes them.
    form = {"csrf_token": csrf(reader, "/alerts"), "matchers": "service=search", "duration": "1h", "comment": "x"}
    assert reader.post("/alerts/silences", data=form).status_code == 403
    assert "Create silence" not in reader.get("/alerts").get_data(as_text=True)
    assert "Create silence" in admin.get("/alerts").get_data(as_text=True)
    # A session reads the JSON API (GET) but never changes anything through it.
    assert reader.get("/v1/alerts").status_code == 200
    assert admin.post("/v1/silences", json={"matchers": ["a=b"], "duration": "1h"}).status_code == 401
    assert reviewer.get("/v1/alerts").status_code == 403


def test_security_headers(reader):
    r = reader.get("/")
    csp = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp.split(
        "style-src")[0]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert r.headers["Cache-Control"] == "no-store"


# -- pages ---------------------------------------------------------------------------
@pytest.mark.parametrize("url", PAGES)
def test_every_page_renders(reader, url):
    r = reader.get(url)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    assert r.mimetype == "text/html"


def test_overview_shows_the_kpis_of_each_feature_with_links_to_their_charts(reader, data):
    html = reader.get("/?period=24h").get_data(as_text=True)
    for f in demo.FEATURES:
        assert f"{f.service} / {f.name}" in html
    for label in ("Task success", "Thumbs up", "Cost / success", "Cost / request", "p95 latency", "TTFT p95",
                  "Error rate", "Hallucination rate", "Drift", "SLO budget left", "Incidents"):
        assert label in html
    assert 'href="/detail?service=support-bot&amp;feature=answer&amp;period=24h#chart-error_rate"' in html
    # The burst's alert is an incident of support-bot/answer; the drift row links to its drift page.
    row = html[html.index('data-service="support-bot" data-feature="answer"'):]
    row = row[:row.index("</tr>")]
    # The burst fired HighErrorRate and the SLO's burn-rate alerts.
    count = re.search(r'data-kpi="incidents">\s*<a href="[^"]*" class="value">(\d+)</a>', row).group(1)
    assert int(count) >= 1
    assert ">drift<" in row.replace("\n", "").replace(" ", "")


def test_overview_numbers_match_the_store(reader, data):
    html = reader.get("/?period=24h&service=search").get_data(as_text=True)
    expected = data.store.scalar(
        "SELECT count() FROM requests FINAL WHERE service = 'search' AND ts >= {lo:DateTime64(3, 'UTC')}",
        {"lo": END - dt.timedelta(hours=24) + dt.timedelta(minutes=1)})  # the running minute is in the period
    # Abbreviated in the cell (7.3k), exact in its title.
    from dashboards.formatting import count
    cell = re.search(r'data-kpi="requests">\s*<a href="[^"]*" class="value" title="([^"]*)">([^<]*)</a>', html)
    assert cell.groups() == (f"{expected:,}", count(expected, short=True))
    assert "support-bot / answer" not in html  # the filter applies


@pytest.mark.parametrize("model", ["", "gpt-4o-mini"])
def test_overview_figures_equal_plain_queries_on_the_raw_rows(data, model):
    """Period figures are merged from minute, hour and day rollups (per feature, or per every dimension when
    filtering by model); ragged ends must not change them."""
    from dashboards import kpis
    store = data.store
    period = kpis.make_period("custom", END, END - dt.timedelta(hours=20, minutes=17), END - dt.timedelta(minutes=3))
    rows = {(r.service, r.feature): r for r in kpis.overview(store, data.config, period, {"model": model})}
    p = {"lo": period.start, "hi": period.end, "model": model}
    in_period = "ts >= {lo:DateTime64(3, 'UTC')} AND ts < {hi:DateTime64(3, 'UTC')}"
    one = " AND service = 'support-bot' AND feature = 'answer'"
    for key, cond in ((kpis.TOTAL, ""), (("support-bot", "answer"), one)):
        cond += " AND model = {model:String}" if model else ""
        cur = rows[key].current
        n, failed, cost = store.query(f"SELECT count(), countIf(status IN ('error', 'timeout')), sum(cost_usd) "
                                      f"FROM requests WHERE {in_period}{cond}", p)[0]
        assert cur["requests"] == n and cur["error_rate"] == pytest.approx(failed / n)
        assert cur["cost_usd"] == pytest.approx(cost)
        up, down, unhappy = store.query(
            "SELECT countIf(kind = 'thumbs' AND value = 1), countIf(kind = 'thumbs' AND value = 0), "
            "uniqExactIf(request_id, request_status = 'ok' AND ((kind IN ('thumbs', 'task_success') AND value = 0) "
            "OR label = 'hallucinated')) FROM feedback WHERE request_ts >= {lo:DateTime64(3, 'UTC')} "
            "AND request_ts < {hi:DateTime64(3, 'UTC')}" + cond, p)[0]
        assert down > 0 and cur["thumbs_up_rate"] == pytest.approx(up / (up + down))
        ok = store.scalar(f"SELECT count() FROM requests WHERE {in_period} AND status = 'ok'{cond}", p)
        assert cur["successful_outcomes"] == ok - unhappy
        assert 0 < len(rows[key].trend["requests"]) <= kpis.MAX_BUCKETS
        assert rows[key].trend["thumbs_up_rate"]


def test_a_baseline_overlapping_its_period_counts_in_both(data):
    """An incident window longer than a week overlaps its baseline; each side must see all of its rows."""
    from dashboards import kpis
    store = data.store
    period = kpis.make_period("custom", END, END - dt.timedelta(hours=20), END)
    baseline = kpis.Period("baseline", END - dt.timedelta(hours=22), END - dt.timedelta(hours=2))
    total = kpis.overview(store, data.config, period, {}, baseline=baseline, trend=False)[0]
    for side, p in ((total.current, period), (total.previous, baseline)):
        n = store.scalar("SELECT count() FROM requests WHERE ts >= {lo:DateTime64(3, 'UTC')} "
                         "AND ts < {hi:DateTime64(3, 'UTC')}", {"lo": p.start, "hi": p.end})
        up, down = store.query("SELECT countIf(kind = 'thumbs' AND value = 1), countIf(kind = 'thumbs' AND value = 0) "
                               "FROM feedback WHERE request_ts >= {lo:DateTime64(3, 'UTC')} "
                               "AND request_ts < {hi:DateTime64(3, 'UTC')}", {"lo": p.start, "hi": p.end})[0]
        assert side["requests"] == n and side["thumbs_up_rate"] == pytest.approx(up / (up + down)), p.name


def test_period_and_filter_errors_name_the_parameter(reader):
    r = reader.get("/?period=5y")
    assert r.status_code == 400 and "period:" in r.get_data(as_text=True)
    r = reader.get("/?period=custom&from=2026-11-24T10:00:00Z&to=2026-11-24T09:00:00Z")
    assert r.status_code == 400 and "from:" in r.get_data(as_text=True)
    assert reader.get("/?from=2026-11-23T10:00&to=2026-11-23T16:00").status_code == 200


def test_detail_has_slo_lines_alert_and_prompt_markers(reader):
    html = reader.get("/detail?service=support-bot&feature=answer&period=24h").get_data(as_text=True)
    payload = json.loads(re.search(r'id="chart-data">(.*?)</script>', html, re.S).group(1))
    by_id = {c["id"]: c for c in payload["charts"]}
    assert by_id["error_rate"]["traces"][0]["x"]
    assert by_id["availability"]["lines"][0]["y"] == pytest.approx(0.98)
    assert by_id["slo"]["traces"][0]["x"]
    assert any(m["kind"] == "alert" and m["label"] == "HighErrorRate" for m in payload["markers"])
    html = reader.get("/detail?service=copilot&feature=draft-email&period=24h").get_data(as_text=True)
    payload = json.loads(re.search(r'id="chart-data">(.*?)</script>', html, re.S).group(1))
    assert any(m["kind"] == "prompt" and m["label"] == "prompt v8" for m in payload["markers"])


def test_alerts_page_lists_the_burst_and_links_to_its_incident_window(reader, data):
    html = reader.get("/alerts").get_data(as_text=True)
    assert "HighErrorRate" in html
    windows = {}
    for link in re.findall(r'<a class="explore" href="([^"]+)">', html):
        link = link.replace("&amp;", "&")
        frm = re.search(r"from=([^&]+)", link).group(1).replace("%3A", ":")
        to = re.search(r"to=([^&]+)", link).group(1).replace("%3A", ":")
        windows[link] = tuple(dt.datetime.fromisoformat(x.replace("Z", "+00:00")) for x in (frm, to))
    # The burst's page (HighErrorRate) links to a window around it; the SLO ticket it also raised, to its own.
    around = [link for link, (start, end) in windows.items()
              if start <= data.burst["start"] - dt.timedelta(minutes=20) and end >= data.burst["end"]]
    assert around, windows
    assert reader.get(around[0]).status_code == 200


def test_silence_create_and_expire_from_the_page(admin, data):
    token = csrf(admin, "/alerts")
    r = admin.post("/alerts/silences", data={"csrf_token": token, "matchers": "service=search\nseverity=~page|ticket",
                                               "duration": "2h", "comment": "deploying"})
    assert r.status_code == 302
    html = admin.get("/alerts").get_data(as_text=True)
    assert "deploying" in html and "silence created" in html
    sid = re.search(r'action="/alerts/silences/([^/]+)/expire"', html).group(1)
    admin.post(f"/alerts/silences/{sid}/expire", data={"csrf_token": token})
    assert "silence expired" in admin.get("/alerts").get_data(as_text=True)
    bad = admin.post("/alerts/silences", data={"csrf_token": token, "matchers": "service=search", "duration": "soon",
                                               "comment": "x"}, follow_redirects=True)
    assert "duration:" in bad.get_data(as_text=True), re.findall(r'class="flash[^"]*"[^>]*>([^<]*)', bad.get_data(as_text=True))
    assert admin.post("/alerts/silences", data={"matchers": "a=b", "duration": "1h",
                                                "comment": "no token"}).status_code == 400


def test_review_page_labels_with_a_form_and_shows_progress(data):
    c = data.app.test_client()
    sign_in(c, data.keys["review"])
    html = c.get("/review").get_data(as_text=True)
    before = int(re.search(r"<strong>(\d+)</strong> of (\d+) labelled", html).group(1))
    rid = re.search(r'data-request="([^"]+)"', html).group(1)
    for key in ('data-key="g"', 'data-key="h"', 'data-key="u"'):
        assert key in html
    r = c.post(f"/review/{rid}", data={"csrf_token": csrf(c, "/review"), "label": "hallucinated"})
    assert r.status_code == 302
    html = c.get("/review").get_data(as_text=True)
    assert f"labelled {rid} as hallucinated" in html
    assert int(re.search(r"<strong>(\d+)</strong> of", html).group(1)) in (before, before + 1)
    assert data.store.scalar("SELECT count() FROM feedback WHERE request_id = {r:String} AND kind = 'hallucination'",
                             {"r": rid}) == 1


def test_incident_explorer_compares_with_a_week_before_and_lists_failures(reader, data):
    b = data.burst
    url = (f"/incidents?from={iso_utc(b['start'] - dt.timedelta(minutes=30))}&to={iso_utc(b['end'])}"
           "&service=support-bot&feature=answer")
    html = reader.get(url).get_data(as_text=True)
    assert "a week before" in html and "HighErrorRate" in html
    assert "upstream_5xx" in html or "upstream" in html
    assert '/requests/hostile-1' in html
    assert "/v1/incidents?" in html
    payload = json.loads(re.search(r'id="chart-data">(.*?)</script>', html, re.S).group(1))
    error_rate = next(c for c in payload["charts"] if c["id"] == "inc-error_rate")
    assert [t["name"] for t in error_rate["traces"]] == ["window", "a week before"]
    assert max(error_rate["traces"][0]["y"]) > 0.05  # the burst, from the window's own series


@pytest.mark.parametrize("which", ["whole day and edges", "burst, one feature"])
def test_incident_report_lists_equal_plain_queries_on_the_raw_rows(data, which):
    """The report reads rollups, whole-day partitions and narrowed ranges; the answers are the plain queries'."""
    from dashboards import incidents
    store, b = data.store, data.burst
    if which == "whole day and edges":  # 2026-11-23 whole, both ends partial
        lo, hi, filters = END - dt.timedelta(days=2, hours=6), END - dt.timedelta(minutes=7), {}
    else:
        lo, hi = b["start"] - dt.timedelta(minutes=30), b["end"] + dt.timedelta(minutes=3)
        filters = {"service": "support-bot", "feature": "answer"}
    rep = incidents.report(store, data.config, incidents.window(lo, hi), filters)
    cond = "ts >= {lo:DateTime64(3, 'UTC')} AND ts < {hi:DateTime64(3, 'UTC')}" + "".join(
        f" AND {k} = {{{k}:String}}" for k in filters)
    p = {"lo": lo, "hi": hi, **filters}
    total = store.scalar(f"SELECT count() FROM requests WHERE {cond}", p)
    for dim in ("error_type", "model", "prompt_version", "status"):
        expected = {v: (f, n if dim in ("model", "prompt_version") else total) for v, f, n in store.query(
            f"SELECT {dim}, countIf(status != 'ok') AS f, count() FROM requests WHERE {cond} GROUP BY {dim} "
            "HAVING f > 0", p)}
        assert {e["value"]: (e["failed"], e["requests"]) for e in rep.errors[dim]} == expected, dim
    assert expected and total > 0
    slowest = [r[0] for r in store.query(
        f"SELECT request_id FROM requests WHERE {cond} ORDER BY latency_ms DESC LIMIT 20", p)]
    assert [r.request_id for r in rep.slowest] == slowest
    # read above the floor the rollups' histogram gives (the error types, from the segment rollups)
    from monitor.foundation.filters import where_equal
    from monitor.foundation.tables import rollups
    where, wp = where_equal(filters, ("service", "feature"))
    assert rollups.latency_floor(store, rep.period.start, rep.period.end, where, wp, "requests", 20) > 0
    failing = [r[0] for r in store.query(
        f"SELECT request_id FROM requests WHERE {cond} AND status IN ('error', 'timeout') ORDER BY ts DESC LIMIT 20", p)]
    assert len(failing) == 20 and [r.request_id for r in rep.failing] == failing
    negative = {r[0] for r in store.query(
        "SELECT f.feedback_id FROM feedback AS f INNER JOIN (SELECT request_id FROM requests WHERE " + cond + ") AS r "
        "ON f.request_id = r.request_id WHERE (f.kind = 'thumbs' AND f.value = 0) "
        "OR (f.kind = 'task_success' AND f.value = 0) OR f.label = 'hallucinated'", p)}
    assert negative and len(rep.negative_feedback) == min(20, len(negative))
    assert all(f.kind in ("thumbs", "task_success", "hallucination") for f in rep.negative_feedback)
    first_seen = {(s, f, v): t for s, f, v, t in store.query(
        "SELECT service, feature, prompt_version, toStartOfMinute(min(ts)) FROM requests GROUP BY ALL", {})}
    expected = sorted((k for k, t in first_seen.items() if lo <= t < hi
                       and all(dict(zip(("service", "feature"), k))[f] == v for f, v in filters.items())),
                      key=lambda k: first_seen[k])
    assert [(c.service, c.feature, c.prompt_version) for c in rep.prompt_changes] == expected
    assert ("support-bot", "answer", "v3") in expected  # hostile-1 brought v3 in, inside both windows


# -- honest comparisons and the overview at a glance ------------------------------------------
def test_first_hours_are_the_first_hour_of_the_raw_rows(data):
    from monitor.foundation.tables import rollups
    store = data.store
    raw = {(s, f): t.replace(tzinfo=dt.timezone.utc) for s, f, t in store.query(
        "SELECT service, feature, toStartOfHour(min(ts)) FROM requests FINAL GROUP BY service, feature", {})}
    assert rollups.first_hours(store, "requests_by_feature", "", {}) == raw
    model = store.query("SELECT model FROM requests GROUP BY model ORDER BY count() LIMIT 1", {})[0][0]
    raw = {(s, f): t.replace(tzinfo=dt.timezone.utc) for s, f, t in store.query(
        "SELECT service, feature, toStartOfHour(min(ts)) FROM requests FINAL WHERE model = {m:String} "
        "GROUP BY service, feature", {"m": model})}
    assert raw and rollups.first_hours(store, "requests", " AND model = {f_model:String}", {"f_model": model}) == raw


def _row_html(html: str, service: str, feature: str) -> str:
    row = html[html.index(f'data-service="{service}" data-feature="{feature}"'):]
    return row[:row.index("</tr>")]


def _delta_of(row_html: str, kpi: str) -> tuple[str, str]:
    """(data-reason, text) of a KPI cell's change."""
    m = re.search(rf'data-kpi="{kpi}">.*?<span class="delta[^"]*" data-reason="([^"]*)"[^>]*>([^<]*)</span>',
                  row_html, re.S)
    return m.group(1), m.group(2)


def test_overview_changes_follow_the_comparison_rule_computed_from_the_raw_rows(reader, data):
    """Periods placed on the stored data so each outcome of the rule happens: new (nothing before the
    data), partial (the previous period starts an hour before the data), too few (a short period), a number."""
    from dashboards import compare
    store = data.store
    first = store.scalar("SELECT min(ts) FROM requests", {}).replace(tzinfo=dt.timezone.utc)
    last = store.scalar("SELECT max(ts) FROM requests", {}).replace(tzinfo=dt.timezone.utc)
    h = first.replace(minute=0, second=0, microsecond=0)
    end = last.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    periods = [(h, h + dt.timedelta(hours=3)), (h + dt.timedelta(hours=1), h + dt.timedelta(hours=3)),
               (end - dt.timedelta(minutes=10), end), (end - dt.timedelta(hours=6), end)]
    seen = set()
    for lo, hi in periods:
        prev_lo = lo - (hi - lo)
        counts = {(s, f): (int(c), int(p)) for s, f, c, p in store.query(
            "SELECT service, feature, countIf(ts >= {lo:DateTime64(3, 'UTC')}) AS c, "
            "countIf(ts < {lo:DateTime64(3, 'UTC')}) AS p FROM requests FINAL "
            "WHERE ts >= {plo:DateTime64(3, 'UTC')} AND ts < {hi:DateTime64(3, 'UTC')} GROUP BY service, feature",
            {"lo": lo, "hi": hi, "plo": prev_lo})}
        firsts = {(s, f): t.replace(tzinfo=dt.timezone.utc) for s, f, t in store.query(
            "SELECT service, feature, toStartOfHour(min(ts)) FROM requests FINAL GROUP BY service, feature", {})}
        counts[("", "")] = (sum(c for c, _ in counts.values()), sum(p for _, p in counts.values()))
        firsts[("", "")] = min(firsts.values())
        html = reader.get(f"/?from={iso_utc(lo)}&to={iso_utc(hi)}").get_data(as_text=True)
        for (svc, feat), (cur_n, prev_n) in counts.items():
            row = _row_html(html, svc, feat)
            if prev_n == 0:
                expected = ("new", "new")
            elif firsts[(svc, feat)] > prev_lo:
                expected = ("partial", "partial previous period")
            elif min(prev_n, cur_n) < compare.MIN_REQUESTS:
                n, when = (prev_n, "before") if prev_n < compare.MIN_REQUESTS else (cur_n, "now")
                expected = ("too few", f"too few requests ({n} {when})")
            else:
                expected = ("", None)
            reason, text = _delta_of(row, "error_rate")
            if cur_n == 0:
                assert text == "–"
                continue
            assert reason == expected[0], (lo, hi, svc, feat, cur_n, prev_n, text)
            if expected[1]:
                assert text == expected[1]
            else:
                assert re.fullmatch(r"[+-]\d+\.\d\d pp", text), text
            seen.add(expected[0])
            # Requests are a count: no minimum, the rest of the rule alike.
            reason, text = _delta_of(row, "requests")
            assert reason == ("" if expected[0] == "too few" else expected[0])
            if not reason:
                assert text == f"{(cur_n - prev_n) / prev_n * 100:+.1f}%"
    assert seen == {"new", "partial", "too few", ""}
    assert "partial previous period" in html and f"at least {compare.MIN_REQUESTS} requests" in html


def test_overview_marks_the_worst_value_of_each_column(reader, data):
    from dashboards import compare
    html = reader.get("/?period=24h").get_data(as_text=True)
    lo = END - dt.timedelta(hours=24) + dt.timedelta(minutes=1)
    rates = {(s, f): (e / n) for s, f, e, n in data.store.query(
        "SELECT service, feature, countIf(status IN ('error', 'timeout')), count() FROM requests FINAL "
        "WHERE ts >= {lo:DateTime64(3, 'UTC')} GROUP BY service, feature HAVING count() >= {m:UInt32}",
        {"lo": lo, "m": compare.MIN_REQUESTS})}
    worst_key = max(rates, key=rates.get)
    assert sorted(rates.values())[-1] > sorted(rates.values())[-2]
    marked = re.findall(r'<tr class="" data-service="([^"]*)" data-feature="([^"]*)">(.*?)</tr>', html, re.S)
    cells = [(s, f) for s, f, row in marked if re.search(r'class="kpi worst"[^>]*data-kpi="error_rate"', row)]
    assert cells == [worst_key]
    assert 'class="kpi worst"' not in _row_html(html, "", "")  # all traffic is not a candidate
    # Each column with a better direction has at most one worst cell.
    for key in ("task_success_rate", "thumbs_up_rate", "cost_per_successful_outcome_usd", "latency_p95_ms",
                "incidents", "slo", "requests"):
        n = len(re.findall(rf'class="kpi worst"[^>]*data-kpi="{key}"', html))
        assert n <= (0 if key == "requests" else 1), key


def test_incident_explorer_and_its_export_say_why_there_is_no_change(reader, data):
    from dashboards import compare, incidents
    b = data.burst
    lo, hi = b["start"] - dt.timedelta(minutes=30), b["end"] + dt.timedelta(minutes=30)
    rep = incidents.report(data.store, data.config, incidents.window(lo, hi), {})
    total = rep.slis[0]
    expected = {key: compare.row_change(total, key, unit).text for key, _, unit in incidents.SLI_TABLE
                if total.current.get(key) is not None}
    week_before = data.store.scalar("SELECT count() FROM requests WHERE ts >= {a:DateTime64(3, 'UTC')} AND "
                                    "ts < {b:DateTime64(3, 'UTC')}", {"a": lo - dt.timedelta(days=7),
                                                                     "b": hi - dt.timedelta(days=7)})
    if week_before == 0:  # the dataset holds less than a week: the week before is empty
        assert expected["requests"] == "new" and expected["error_rate"] == "new"
    html = reader.get(f"/incidents?from={iso_utc(lo)}&to={iso_utc(hi)}").get_data(as_text=True)
    row = html[html.index('<tr class="total">'):]
    row = row[:row.index("</tr>")]
    for key, text in expected.items():
        cell = re.search(rf'data-kpi="{key}">.*?<span class="delta" data-reason="[^"]*">([^<]*)</span>', row, re.S)
        assert cell.group(1) == text, key
    md = _export(data, "md").get_data(as_text=True)
    for key, label, unit in incidents.SLI_TABLE:
        if key in expected:
            assert re.search(rf"^\| all traffic \| {re.escape(label)} \| .* \| {re.escape(expected[key])} \|$", md,
                             re.M), label


def test_charts_show_the_newest_computation_of_a_point(data):
    from dashboards import charts
    labels = {"service": "zz-charts", "feature": "rerun"}
    at = END - dt.timedelta(hours=1)
    for value, computed in ((0.25, END - dt.timedelta(minutes=40)), (0.5, END - dt.timedelta(minutes=50))):
        data.store.insert("metric_points", [[at, "5m", "error_rate", labels, value, computed]],
                          ["ts", "window", "metric", "labels", "value", "computed_at"])  # two parts, newest first
    got = charts.fetch(data.store, {"error_rate": "5m"}, [labels], at - dt.timedelta(hours=1), at)
    assert got == {("error_rate", 0): [(iso_utc(at), 0.25)]}


# -- escaping ----------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["/requests/hostile-1", "/drift?service=support-bot&feature=answer",
                                 "/incidents?service=support-bot&feature=answer&from={a}&to={b}"])
def test_hostile_texts_render_as_text(reader, data, url):
    url = url.format(a=iso_utc(data.burst["start"]), b=iso_utc(data.burst["end"]))
    html = reader.get(url).get_data(as_text=True)
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html


# -- export ------------------------------------------------------------------------------
def _export(data, fmt, **extra):
    b = data.burst
    q = {"from": iso_utc(b["start"] - dt.timedelta(minutes=30)), "to": iso_utc(b["end"] + dt.timedelta(minutes=30)),
         "format": fmt, **extra}
    c = data.app.test_client()
    return c.get("/v1/incidents", query_string=q, headers=auth(data.keys["read"]))


def test_export_json(data):
    r = _export(data, "json", service="support-bot", feature="answer")
    body = r.get_json()
    assert r.status_code == 200
    assert {"window", "baseline", "slis", "errors", "slowest", "failing", "alerts", "drift"} <= set(body)
    total = body["slis"][0]
    assert total["service"] is None and total["window"]["requests"] > 0
    assert total["window"]["error_rate"] > 0.05  # the burst
    assert any(a["rule"] == "HighErrorRate" and a["to_state"] == "firing" for a in body["alerts"])


def test_export_csv_and_markdown(data):
    rows = list(csv.DictReader(io.StringIO(_export(data, "csv").get_data(as_text=True))))
    assert rows and {"section", "service", "feature", "name", "value", "baseline", "detail"} == set(rows[0])
    assert any(r["section"] == "alert" and r["name"] == "HighErrorRate" for r in rows)
    md = _export(data, "md").get_data(as_text=True)
    for heading in ("# Incident", "## Summary", "## Timeline (UTC)", "## Impact", "## Contributing signals",
                    "## Action items"):
        assert heading in md
    assert "HighErrorRate" in md and "| all traffic | Error rate |" in md
    assert "<script>" not in md


def test_export_errors_and_access(data):
    c = data.app.test_client()
    assert c.get("/v1/incidents?from=2026-11-24T00:00:00Z&to=2026-11-24T01:00:00Z").status_code == 401
    r = c.get("/v1/incidents?from=2026-11-24T00:00:00Z&to=2026-11-24T01:00:00Z&format=pdf",
              headers=auth(data.keys["read"]))
    assert r.status_code == 400 and r.get_json()["message"].startswith("format:")
    r = c.get("/v1/incidents?from=2026-11-24T00:00:00Z", headers=auth(data.keys["read"]))
    assert r.status_code == 400 and "from:" in r.get_json()["message"]
    r = c.get("/v1/incidents?from=2026-10-01T00:00:00Z&to=2026-11-24T00:00:00Z", headers=auth(data.keys["read"]))
    assert r.status_code == 400 and r.get_json()["message"].startswith("to:")


def test_plotly_is_served_locally(reader):
    r = reader.get("/static/vendor/plotly.min.js")
    assert r.status_code == 200 and b"plotly" in r.data[:2000].lower() and len(r.data) > 1_000_000
    html = reader.get("/").get_data(as_text=True)
    assert "cdn" not in html.lower() and "https://" not in html


# -- real headless Chromium ------------------------------------------------------------


@pytest.fixture(scope="session")
def site(data):
    from tests.helpers import LiveServer
    with LiveServer(data.app) as srv:
        yield srv


VIEWPORT = {"width": 1500, "height": 1000}


@pytest.fixture(scope="session")
def signed_in(browser, site, data):
    """The admin signed in through the login page once; each test's page starts from that session."""
    from tests.helpers import browser_session
    return browser_session(browser, site.url, data.keys["admin"], VIEWPORT)


@pytest.fixture
def page(browser, site, signed_in):
    ctx = browser.new_context(viewport=VIEWPORT, storage_state=signed_in)
    pg = ctx.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_browser_overview_draws_its_charts_without_console_errors(page, site):
    page.goto(site.url + "/?period=24h")
    page.wait_for_selector("#kpis .spark .main-svg")
    assert page.locator("#kpis .spark .main-svg").count() >= 10
    shot(page, "overview")
    assert page.errors == []


@pytest.mark.parametrize("width", [1280, 1440])
@pytest.mark.parametrize("period", ["24h", "7d", "6h"])
def test_browser_overview_fits_the_window_with_every_column_visible(page, site, width, period):
    page.set_viewport_size({"width": width, "height": 900})
    # 24h: a partial previous period, 7d: new rows, 6h (custom): changes shown as numbers.
    query = (f"period={period}" if period != "6h"
             else f"from={iso_utc(END - dt.timedelta(hours=6))}&to={iso_utc(END)}")
    page.goto(site.url + f"/?{query}")
    page.wait_for_selector("#kpis .spark .main-svg")
    fit = page.evaluate("""() => {
        const wrap = document.querySelector('.table-wrap');
        const heads = [...document.querySelectorAll('#kpis thead th')].map(th => {
            const r = th.getBoundingClientRect();
            return {text: th.innerText.split('\\n')[0], left: r.left, right: r.right, width: r.width};
        });
        const incidents = [...document.querySelectorAll('#kpis td[data-kpi=incidents]')].map(
            td => td.getBoundingClientRect().right);
        return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
                wrapScroll: wrap.scrollWidth, wrapClient: wrap.clientWidth, heads, incidents};
    }""")
    assert fit["scroll"] <= fit["inner"], fit
    assert fit["wrapScroll"] <= fit["wrapClient"], fit  # nothing hidden behind the table's own scrollbar
    assert [h["text"] for h in fit["heads"]][-1] == "Incidents" and len(fit["heads"]) == 13
    for h in fit["heads"]:
        assert h["width"] > 0 and h["left"] >= 0 and h["right"] <= fit["inner"], h
    assert fit["incidents"] and all(0 < r <= fit["inner"] for r in fit["incidents"])
    if period != "7d":
        shot(page, f"overview-{width}" + ("-changes" if period == "6h" else ""))
    assert page.errors == []


def _ticks(page, selector: str) -> dict:
    return page.evaluate("""(sel) => {
        const el = document.querySelector(sel);
        const ax = el._fullLayout.xaxis;
        return {dtick: el.layout.xaxis.dtick, values: ax._vals.map(v => v.x),
                texts: [...el.querySelectorAll('.xtick text')].map(t => t.textContent)};
    }""", selector)


def test_browser_charts_never_tick_finer_than_their_data(page, site):
    day, hour = 86_400_000, 3_600_000
    # 30 days: day points (a day or two of them in the test data), day ticks, no time of day.
    page.goto(site.url + "/detail?service=support-bot&feature=answer&period=30d")
    page.wait_for_selector("[data-chart='requests'] .main-svg")
    ticks = _ticks(page, "[data-chart='requests']")
    assert ticks["dtick"] >= day and ticks["texts"], ticks
    assert all(b - a >= day for a, b in zip(ticks["values"], ticks["values"][1:])), ticks
    assert not any(":" in t for t in ticks["texts"]), ticks
    shot(page, "detail-30d")
    # 7 days: hour points, ticks of an hour or more.
    page.goto(site.url + "/detail?service=support-bot&feature=answer&period=7d")
    page.wait_for_selector("[data-chart='requests'] .main-svg")
    ticks = _ticks(page, "[data-chart='requests']")
    assert ticks["dtick"] >= hour and all(b - a >= hour for a, b in zip(ticks["values"], ticks["values"][1:]))
    assert page.errors == []


def test_browser_a_single_day_point_gets_day_ticks(page, site, data):
    """One drift point (a 1d window): a day either side of it, ticks a day apart, never milliseconds."""
    labels = {"service": "zz-one", "feature": "point", "text": "input", "method": "combined"}
    at = END.replace(hour=0, minute=0)
    data.store.insert("drift_reports", [["r-one-point", at, "1d", "zz-one", "point", "ok", False,
                                         at - dt.timedelta(days=8), at - dt.timedelta(days=1), "{}", "{}", "", END]],
                      ["report_id", "ts", "window", "service", "feature", "status", "drift_detected",
                       "reference_from", "reference_to", "summary", "explanation", "snapshot", "created_at"])
    data.store.insert("metric_points", [[at, "1d", "embedding_drift_score", labels, 0.5, END]],
                      ["ts", "window", "metric", "labels", "value", "computed_at"])
    page.goto(site.url + "/drift?service=zz-one&feature=point&window=1d&period=7d")
    page.wait_for_selector("[data-chart='drift-combined'] .main-svg")
    ticks = _ticks(page, "[data-chart='drift-combined']")
    assert ticks["dtick"] == 86_400_000 and len(ticks["values"]) >= 2, ticks
    assert all(b - a >= 86_400_000 for a, b in zip(ticks["values"], ticks["values"][1:]))
    assert not any(":" in t or "." in t for t in ticks["texts"]), ticks
    shot(page, "drift-one-point")
    assert page.errors == []


def test_browser_filter_change_updates_the_page(page, site):
    page.goto(site.url + "/?period=24h")
    assert page.locator("tr[data-service='search']").count() == 1
    with page.expect_navigation():
        page.select_option("#filter-service", "copilot")
    assert "service=copilot" in page.url
    assert page.locator("tr[data-service='search']").count() == 0
    assert page.locator("tr[data-service='copilot']").count() >= 1
    with page.expect_navigation():
        page.check("input[name=period][value='7d']")
    assert "period=7d" in page.url and "service=copilot" in page.url
    assert page.errors == []


def test_browser_alert_links_to_the_incident_explorer_with_its_window(page, site, data):
    page.goto(site.url + "/alerts")
    page.wait_for_selector(".timeline .main-svg")
    shot(page, "alerts")
    row = page.locator("table.incidents tr", has_text="HighErrorRate").first
    with page.expect_navigation():
        row.locator("a.explore").click()
    assert "/incidents?" in page.url
    start = dt.datetime.fromisoformat(page.locator("input[name=from]").input_value() + ":00+00:00")
    end = dt.datetime.fromisoformat(page.locator("input[name=to]").input_value() + ":00+00:00")
    from monitor.foundation.tables.alert_history import incident_spans
    spans = [x for x in incident_spans(data.store, END - dt.timedelta(days=2), END) if x.rule == "HighErrorRate"]
    # The alert's window plus margin: from 30 minutes before it fired until after it resolved.
    span = next(x for x in spans if x.start.replace(second=0, microsecond=0) - dt.timedelta(minutes=30) == start)
    assert span.end is not None and end >= span.end.replace(second=0, microsecond=0)
    assert data.burst["start"] - dt.timedelta(minutes=30) <= start <= data.burst["end"]
    assert page.locator("input[name=service]").input_value() == "support-bot"
    page.wait_for_selector("[data-chart='inc-error_rate'] .main-svg")
    shot(page, "incident")
    assert page.errors == []


def test_browser_hostile_prompt_does_not_execute(page, site):
    for url in ("/requests/hostile-1", "/drift?service=support-bot&feature=answer"):
        page.goto(site.url + url)
        assert page.evaluate("window.__pwned === undefined")
        assert "<script>window.__pwned=1</script>" in page.inner_text("main")
    shot(page, "request-hostile")
    page.goto(site.url + "/drift?service=support-bot&feature=answer")
    shot(page, "drift")
    assert page.errors == []


def test_browser_detail_and_review_pages(page, site, data):
    page.goto(site.url + "/detail?service=support-bot&feature=answer&period=24h")
    page.wait_for_selector("[data-chart='error_rate'] .main-svg")
    shot(page, "detail")
    page.goto(site.url + "/review")
    shot(page, "review")
    rid = page.get_attribute("#review-item", "data-request")
    with page.expect_navigation():
        page.keyboard.press("g")  # the keyboard shortcut submits "grounded"
    assert f"labelled {rid} as grounded" in page.inner_text("main")
    assert page.errors == []


def test_cli_incident_prints_the_same_export(data, tmp_path):
    from click.testing import CliRunner

    from monitor.cli import cli
    (tmp_path / "monitor.yaml").write_text("{}\n")
    env = {"MONITOR_CONFIG": str(tmp_path / "monitor.yaml"), "MONITOR_CLICKHOUSE_URL": data.config.clickhouse.url,
           "MONITOR_CLICKHOUSE_DATABASE": data.config.clickhouse.database}
    b = data.burst
    args = ["incident", "--from", iso_utc(b["start"] - dt.timedelta(minutes=30)),
            "--to", iso_utc(b["end"] + dt.timedelta(minutes=30))]
    out = CliRunner().invoke(cli, args + ["--format", "md"], env=env)
    assert out.exit_code == 0, out.output
    assert out.output.startswith("# Incident") and "HighErrorRate" in out.output
    assert out.output.strip() == _export(data, "md").get_data(as_text=True).strip()
    bad = CliRunner().invoke(cli, ["incident", "--from", "yesterday", "--to", iso_utc(b["end"])], env=env)
    assert bad.exit_code == 2 and "--from" in bad.output


def test_background_work_shows_a_banner_and_marks_what_it_has_not_computed(reader, data):
    from monitor.foundation.progress import Progress
    svc = data.app.extensions["nlpmon"]
    saved = svc.progress
    svc.progress = progress = Progress("demo data")
    try:
        progress.plan([("traffic", "demo traffic", ("overview",)), ("alerts", "alert history", ("alerts",)),
                       ("drift", "daily drift <of every feature>", ("drift",))])
        progress.start("traffic", 10)
        progress.finish("traffic")
        progress.start("alerts", 40)
        progress.advance("alerts", 10)
        html = reader.get("/?period=24h").get_data(as_text=True)
        banner = html[html.index('id="background"'):html.index("</section>")]
        assert "Still computing the demo data" in banner and "1 of 3 steps done" in banner
        assert "alert history: 10 of 40" in banner and "waiting" in banner
        assert "&lt;of every feature&gt;" in banner  # labels are escaped like everything else
        assert 'http-equiv="refresh"' in html
        # Figures of unfinished steps say so instead of a number; finished ones show theirs.
        assert html.count('data-kpi="incidents">\n      <span class="value muted computing">') >= 2
        assert html.count('data-kpi="drift">\n      <span class="value muted computing">') >= 2
        assert 'data-kpi="slo">\n      <span class="value muted computing">' not in html
        for page in ("/drift", "/alerts"):
            assert 'id="background"' in reader.get(page).get_data(as_text=True)
        progress.fail("alerts", "StoreUnavailable: down")
        progress.finish("drift")
        html = reader.get("/?period=24h").get_data(as_text=True)
        assert "alert history failed: StoreUnavailable: down" in html and "Still computing" not in html
        assert 'http-equiv="refresh"' not in html and "computing</span>" not in html
    finally:
        svc.progress = saved
    assert 'id="background"' not in reader.get("/?period=24h").get_data(as_text=True)
