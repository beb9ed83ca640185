"""Segments on the pages: the overview, detail page and incident explorer filtered by one segment (a language,
tenant or promoted tag) give that segment's figures, equal to the raw rows; the "by segment" tables carry
feedback and reviewers' hallucination rates per language with their intervals; the cost job's segment series."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from dashboards import kpis
from monitor.foundation.stats import wilson
from monitor.scheduler import build_jobs
from tests.helpers import auth, feedback_event, request_event
from tests.test_dashboards import sign_in
from tests.test_segments import QUESTIONS, segmented_app  # noqa: F401 (a fixture)

T0 = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.timezone.utc)
NOW = T0 + dt.timedelta(hours=2, minutes=5, microseconds=417)


def _z(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _world(seed: int = 11):
    """Requests of one feature in two windows (a day apart, two hours each), the app sending no language, with
    plans as a promoted tag; thumbs on a third of them and reviewers' hallucination labels on a fifth."""
    rng = np.random.default_rng(seed)
    requests, feedback = [], []
    for i in range(900):
        day = -1 if i < 300 else 0
        lang = str(rng.choice(["de", "fr", "en"], p=[0.35, 0.25, 0.4]))
        ts = T0 + dt.timedelta(days=day, seconds=int(rng.integers(0, 7200)), microseconds=int(rng.integers(0, 10**6)))
        fails = rng.random() < {"de": 0.15 if day == 0 else 0.03, "fr": 0.04, "en": 0.03}[lang]
        requests.append(request_event(i, ts=ts.isoformat(), status="error" if fails else "ok",
                                      input_text=QUESTIONS[lang], tags={"plan": str(rng.choice(["free", "pro"]))},
                                      cost_usd=float(rng.uniform(0.001, 0.01))))
        if rng.random() < 1 / 3:
            up = rng.random() < (0.5 if lang == "de" else 0.8)
            feedback.append(feedback_event(i, ts=(ts + dt.timedelta(minutes=1)).isoformat(), value=int(up),
                                           feedback_id=f"fb-{i}"))
        if rng.random() < 1 / 5:
            label = "hallucinated" if rng.random() < (0.3 if lang == "de" else 0.1) else "grounded"
            feedback.append(feedback_event(i, ts=(ts + dt.timedelta(minutes=2)).isoformat(), kind="hallucination",
                                           value=None, label=label, source="reviewer", reviewer="ana",
                                           feedback_id=f"rv-{i}"))
    return requests, feedback


@pytest.fixture
def world(segmented_app, clock):
    app, store, keys = segmented_app
    client = app.test_client()
    requests, feedback = _world()
    assert client.post("/v1/requests", json=requests, headers=auth(keys["ingest"])).json["accepted"] == len(requests)
    assert client.post("/v1/feedback", json=feedback, headers=auth(keys["ingest"])).json["accepted"] == len(feedback)
    clock.set(NOW)
    raw = {r["request_id"]: r for r in store.query_dicts(
        "SELECT request_id, ts, language, tags['plan'] AS plan, status, cost_usd FROM requests")}
    return app, store, keys, client, raw, feedback


def _expected(raw: dict, feedback: list[dict], lo: dt.datetime, hi: dt.datetime, keep) -> dict:
    """The figures of the requests ``keep`` selects in [lo, hi), counted in Python from the raw rows."""
    chosen = {i: r for i, r in raw.items() if lo <= r["ts"] < hi and keep(r)}
    thumbs = [f["value"] for f in feedback if f["kind"] == "thumbs" and f["request_id"] in chosen]
    labels = [f["label"] for f in feedback if f["kind"] == "hallucination" and f["request_id"] in chosen]
    return {"requests": len(chosen), "failed": sum(r["status"] == "error" for r in chosen.values()),
            "thumbs_up": sum(thumbs), "thumbs": len(thumbs),
            "hallucinated": labels.count("hallucinated"), "reviews": len(labels), "ids": set(chosen),
            "cost": sum(r["cost_usd"] for r in chosen.values())}


def test_the_overview_filtered_by_a_language_or_a_promoted_tag_counts_that_segment_alone(world):
    app, store, keys, client, raw, feedback = world
    config = app.extensions["nlpmon"].config
    period = kpis.make_period("24h", NOW)
    for filters, keep in (({"language": "de"}, lambda r: r["language"] == "de"),
                          ({"plan": "pro", "feature": "answer"}, lambda r: r["plan"] == "pro")):
        rows = kpis.overview(store, config, period, filters)
        total = rows[0]
        assert total.is_total and [(r.service, r.feature) for r in rows[1:]] == [("support-bot", "answer")]
        for side, (lo, hi) in ((total.current, (period.start, period.end)),
                               (total.previous, (period.previous.start, period.previous.end))):
            want = _expected(raw, feedback, lo, hi, keep)
            assert side["requests"] == want["requests"] > 50, filters
            assert side["error_rate"] == pytest.approx(want["failed"] / want["requests"])
            assert side["thumbs_up_rate"] == pytest.approx(want["thumbs_up"] / want["thumbs"])
            assert side["hallucination_reviews"] == want["reviews"]
            assert side["hallucination_rate"] == pytest.approx(want["hallucinated"] / want["reviews"])
            assert (side["hallucination_rate_low"], side["hallucination_rate_high"]) == pytest.approx(
                wilson(want["hallucinated"], want["reviews"]))
            assert side["cost_usd"] == pytest.approx(want["cost"])
    # The filter in the query string, and the segment named on the page; the menus offer each segment's values.
    assert sign_in(client, keys["read"]).status_code == 302
    page = client.get("/?period=24h&language=de").get_data(as_text=True)
    assert 'data-segment-filter="language=de"' in page
    assert '<option value="pro" >pro</option>' in page.replace("  ", " ") or 'value="pro"' in page


@pytest.mark.parametrize("query, names", [
    ("language=de&model=gpt-4o-mini", "model: cannot be combined with the segment filter language"),
    ("language=de&plan=pro", "plan: filter by one segment at a time"),
    ("tenant=acme&environment=prod", "environment: cannot be combined"),
])
def test_a_segment_filter_that_cannot_be_answered_is_a_clear_error_naming_the_parameter(world, query, names):
    app, store, keys, client, raw, feedback = world
    assert sign_in(client, keys["read"]).status_code == 302
    urls = [f"/?period=24h&{query}"]
    if "one segment at a time" in names:  # the explorer filters by service, feature and segments only
        urls += [f"/incidents?from={_z(T0)}&to={_z(NOW)}&{query}", f"/v1/incidents?from={_z(T0)}&to={_z(NOW)}&{query}"]
    for url in urls:
        resp = client.get(url, headers=auth(keys["read"]))
        assert resp.status_code == 400, url
        assert names in resp.get_data(as_text=True), url


def test_the_by_segment_table_gives_each_language_its_feedback_and_hallucination_rate_with_an_interval(world):
    app, store, keys, client, raw, feedback = world
    config = app.extensions["nlpmon"].config
    period = kpis.make_period("24h", NOW)
    tables = kpis.by_segment(store, config, period, {})  # all traffic
    assert {r.value for r in tables["language"]} == {"de", "fr", "en"}
    assert {r.value for r in tables["plan"]} == {"free", "pro"}
    for r in tables["language"]:
        for side, (lo, hi) in ((r.current, (period.start, period.end)),
                               (r.previous, (period.previous.start, period.previous.end))):
            want = _expected(raw, feedback, lo, hi, lambda x: x["language"] == r.value)
            assert side["requests"] == want["requests"]
            assert side["error_rate"] == pytest.approx(want["failed"] / want["requests"])
            assert side["thumbs_up_rate"] == pytest.approx(want["thumbs_up"] / want["thumbs"])
            assert side["thumbs"] == want["thumbs"]
            assert side["hallucination_rate"] == pytest.approx(want["hallucinated"] / want["reviews"])
            assert (side["hallucination_rate_low"], side["hallucination_rate_high"]) == pytest.approx(
                wilson(want["hallucinated"], want["reviews"]))
    # The overview's table: each language row links to the overview filtered by it, with its interval shown.
    assert sign_in(client, keys["read"]).status_code == 302
    page = client.get("/?period=24h").get_data(as_text=True)
    table = page[page.index('data-dimension="language"'):]
    table = table[:table.index("</table>")]
    assert table.count("data-segment=") == 3 and "language=de" in table
    assert table.count('class="interval"') == 3 and 'data-kpi="hallucination_rate"' in table


def test_the_incident_explorer_filtered_by_a_language_lists_only_its_requests_against_its_week_before(world):
    app, store, keys, client, raw, feedback = world
    body = client.get(f"/v1/incidents?from={_z(T0)}&to={_z(NOW)}&language=de&format=json",
                      headers=auth(keys["read"])).json
    want = _expected(raw, feedback, T0, NOW.replace(second=0, microsecond=0), lambda r: r["language"] == "de")
    total = body["slis"][0]
    assert total["window"]["requests"] == want["requests"]
    assert total["window"]["error_rate"] == pytest.approx(want["failed"] / want["requests"])
    assert body["filters"] == {"language": "de"}
    assert body["failing"] and {r["request_id"] for r in body["failing"]} <= want["ids"]
    assert {r["request_id"] for r in body["slowest"]} <= want["ids"]
    negative = {f["request_id"] for f in body["negative_feedback"]}
    assert negative and negative <= want["ids"]
    errors = body["errors"]
    assert sum(e["failed"] for e in errors["model"]) == want["failed"]
    # Unfiltered, the page shows the by-segment tables against the same window a week before.
    assert sign_in(client, keys["read"]).status_code == 302
    page = client.get(f"/incidents?from={_z(T0)}&to={_z(NOW)}").get_data(as_text=True)
    assert 'data-dimension="language"' in page and "the same window a week before" in page
    page = client.get(f"/incidents?from={_z(T0)}&to={_z(NOW)}&language=de").get_data(as_text=True)
    assert 'data-dimension="language"' not in page and "language=de" in page


def test_the_cost_job_writes_spend_per_segment_and_the_detail_page_charts_a_language(world):
    app, store, keys, client, raw, feedback = world
    config = app.extensions["nlpmon"].config
    jobs = build_jobs(store, config, app.extensions["nlpmon"].clock)
    for name in ("sli", "cost"):
        assert jobs[name].run(since=T0 - dt.timedelta(hours=1)).status == "ok"
    body = client.get(f"/v1/metrics?metric=cost_usd&service=support-bot&feature=answer&by=plan&step=1h"
                      f"&from={_z(T0)}&to={_z(T0 + dt.timedelta(hours=2))}", headers=auth(keys["read"])).json
    got = {(s["labels"]["plan"], p[0]): p[1] for s in body["series"] for p in s["points"]}
    expected = {}
    for hour in range(2):
        lo, hi = T0 + dt.timedelta(hours=hour), T0 + dt.timedelta(hours=hour + 1)
        for plan in ("free", "pro"):
            expected[(plan, _z(hi))] = pytest.approx(_expected(raw, [], lo, hi, lambda r: r["plan"] == plan)["cost"])
    assert got == expected
    assert sign_in(client, keys["read"]).status_code == 302
    page = client.get("/detail?service=support-bot&feature=answer&period=24h&language=de").get_data(as_text=True)
    assert "language=de: charts of this segment" in page and 'id="chart-error_rate"' in page
    assert 'id="chart-thumbs_up_rate"' not in page  # the feedback rollups have no segments: no chart that lies


def test_the_slo_job_writes_each_segments_burn_rate_and_the_slos_own_series_stay_apart(make_config, make_store, clock):
    from monitor.app import create_app
    slo = {"name": "answer-availability", "service": "support-bot", "feature": "answer", "objective": 99,
           "period": "30d", "sli": "availability"}
    config = make_config(segments={"tags": ["plan"]}, slos=[slo])
    store = make_store(config)
    app = create_app(config, store, clock)
    keys = app.extensions["nlpmon"].keys
    ingest, read = keys.create("app", ["ingest"])[1], keys.create("reader", ["read"])[1]
    client = app.test_client()
    requests, _ = _world(seed=5)
    assert client.post("/v1/requests", json=requests, headers=auth(ingest)).json["accepted"] == len(requests)
    clock.set(NOW)
    assert build_jobs(store, config, clock)["slo"].run(since=T0 - dt.timedelta(hours=1)).status == "ok"
    raw = store.query_dicts("SELECT ts, language, status FROM requests")
    body = client.get(f"/v1/metrics?metric=slo_burn_rate&slo=answer-availability&by=language&step=1h"
                      f"&from={_z(T0)}&to={_z(T0 + dt.timedelta(hours=2))}", headers=auth(read)).json
    got = {(s["labels"]["language"], p[0]): p[1] for s in body["series"] for p in s["points"]}
    expected = {}
    for hour in range(2):
        lo, hi = T0 + dt.timedelta(hours=hour), T0 + dt.timedelta(hours=hour + 1)
        for lang in ("de", "fr", "en"):
            rows = [r for r in raw if lo <= r["ts"] < hi and r["language"] == lang]
            expected[(lang, _z(hi))] = pytest.approx(sum(r["status"] != "ok" for r in rows) / len(rows) / 0.01)
    assert got == expected
    # The SLO's own 1h burn rate (trailing, every minute) is asked for without by: no segment among its series.
    body = client.get(f"/v1/metrics?metric=slo_burn_rate&slo=answer-availability&step=1h"
                      f"&from={_z(T0)}&to={_z(NOW)}", headers=auth(read)).json
    assert body["series"] and all("language" not in s["labels"] for s in body["series"])
