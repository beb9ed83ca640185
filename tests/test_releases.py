"""Releases judged: found in the traffic (canary or before/after), declared through the API, judged per metric
with statistics, rollbacks linked, and the ReleaseRegression ticket. Traffic goes through the real ingest
path into the real engine; the job runs with an injected clock."""
from __future__ import annotations

import datetime as dt
import math
import random

import numpy as np
import pytest

from alerts.engine import AlertEngine
from jobs import release_verdict as rv
from jobs.releases import ReleasesJob
from monitor.app import create_app
from monitor.foundation.clock import iso_utc, parse_time
from monitor.foundation.tables import alert_history, metric_points, releases
from tests.helpers import auth

# Within retention.text_days of the real date: the engine's TTL blanks older texts as they are inserted.
T0 = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=12)).replace(hour=0, minute=0, second=0, microsecond=0)
HOUR = dt.timedelta(hours=1)


def _traffic(seed: int, feature: str, hours: range, per_hour, shares, *, latency=None, thumbs_up=None,
             error=None, outputs=None, start=T0):
    """Requests (and thumbs) of support-bot/``feature``: ``per_hour(t)`` requests in the hour t, split over
    prompt versions by ``shares(i)`` ({version: share}); per version a latency median (ms, default 1000),
    a chance of thumbs up (0.8), an error rate (0.01) and output texts."""
    rng = random.Random(f"{seed}-{feature}")
    latency, thumbs_up, error = latency or {}, thumbs_up or {}, error or {}
    reqs, fbs = [], []
    for i in hours:
        t = start + i * HOUR
        split = shares(i)
        for k in range(per_hour(t)):
            ts = t + dt.timedelta(seconds=rng.uniform(0, 3599.9))
            r, version = rng.random(), None
            for v, share in split.items():
                r -= share
                if r < 0:
                    version = v
                    break
            version = version or list(split)[-1]
            rid = f"{seed}-{feature}-{i}-{k}"
            failed = rng.random() < error.get(version, 0.01)
            median = latency.get(version, 1000.0)
            if callable(median):
                median = median(ts)
            out = (outputs or {}).get(version) or ["Here is the answer to your question."]
            reqs.append({"request_id": rid, "ts": iso_utc(ts), "service": "support-bot", "feature": feature,
                         "model": "gpt-4o-mini", "prompt_version": version,
                         "status": "error" if failed else "ok", "error_type": "upstream_5xx" if failed else "",
                         "latency_ms": round(rng.lognormvariate(math.log(median), 0.35), 1),
                         "input_tokens": 500, "output_tokens": 0 if failed else rng.randint(80, 120),
                         "input_text": "a question", "output_text": "" if failed else rng.choice(out)})
            if not failed and rng.random() < 0.3:
                fbs.append({"feedback_id": f"fb-{rid}", "request_id": rid, "kind": "thumbs",
                            "ts": iso_utc(ts + dt.timedelta(seconds=30)),
                            "value": int(rng.random() < thumbs_up.get(version, 0.8))})
    return reqs, fbs


def _ingest(app, reqs, fbs):
    # Received as they happen (texts older than retention.text_days are stored blank).
    app.extensions["nlpmon"].clock.set(max(parse_time(x["ts"]) for x in reqs + fbs) + dt.timedelta(seconds=1))
    ingest = app.extensions["nlpmon"].ingestor.ingest
    for i in range(0, len(reqs), 5000):
        assert ingest("requests", reqs[i:i + 5000]).rejected == 0
    for i in range(0, len(fbs), 5000):
        assert ingest("feedback", fbs[i:i + 5000]).rejected == 0


def _job(store, config, clock, now):
    clock.set(now)
    job = ReleasesJob(store, config, clock, dt.timedelta(minutes=15))
    result = job.run(now=now)
    assert result.status == "ok" and not result.error, result.error
    return result


def _of(store, feature):
    return [r for r in releases.search(store, feature=feature)]


@pytest.fixture
def setup(make_config, make_store, clock):
    config = make_config(drift={"enabled": False}, grounding={"enabled": False})
    store = make_store(config)
    return config, store, create_app(config, store, clock)


def test_a_canary_slower_and_less_liked_fails_on_those_and_not_on_errors(make_config, make_store, clock):
    # Drift on: the candidate's answers read differently (the real model embeds both sides).
    config = make_config(grounding={"enabled": False})
    store = make_store(config)
    app = create_app(config, store, clock)
    # v1 for a day; then v2 takes 20% of the traffic for 12 hours, slower (x1.5) and less liked; then all of it.
    reqs, fbs = _traffic(1, "answer", range(0, 44), lambda t: 60 if t < T0 + 24 * HOUR else 160,
                         lambda i: {"v1": 1.0} if i < 24 else {"v1": 0.8, "v2": 0.2} if i < 36 else {"v2": 1.0},
                         latency={"v2": 1500.0}, thumbs_up={"v2": 0.55},
                         outputs={"v2": [f"Certainly! Let me walk you through every step of option {k} in detail."
                                         for k in range(40)]})
    _ingest(app, reqs, fbs)
    _job(store, config, clock, T0 + 44 * HOUR + dt.timedelta(minutes=7, microseconds=123456))
    (r,) = _of(store, "answer")
    assert (r.dimension, r.previous_value, r.value, r.mode) == ("prompt_version", "v1", "v2", "canary")
    assert r.ts >= T0 + 24 * HOUR and r.full_rollout == T0 + 36 * HOUR
    assert r.verdict == "fail", (r.reason, {k: m["verdict"] for k, m in r.metrics.items()})
    m = r.metrics
    assert m["latency_p95_ms"]["verdict"] == "worse" and m["latency_p95_ms"]["test"] == "bootstrap"
    assert m["latency_p95_ms"]["change_low"] > 0 and m["latency_p95_ms"]["p_adjusted"] < 0.05
    assert m["thumbs_up_rate"]["verdict"] == "worse" and m["thumbs_up_rate"]["change_high"] < 0
    assert m["error_rate"]["verdict"] == "same" and m["error_rate"]["test"] in ("two-proportion z", "fisher")
    assert m["output_drift"]["verdict"] == "worse", m["output_drift"]
    # Both sides over the same hours: the canary's 12 hours.
    assert r.judged_from == T0 + 24 * HOUR and m["latency_p95_ms"]["candidate"]["n"] > 200
    # The ReleaseRegression ticket fires from the job's point.
    points = metric_points.series(store, "release_regression", "1h", T0, T0 + 2 * 24 * HOUR,
                                  {"release": r.release_id}, None, 10)
    assert points and points[-1][2] == 1.0
    engine = AlertEngine(store, config, clock)
    assert engine.run().status == "ok"
    fired = [h for h in alert_history.between(store, T0, T0 + 3 * 24 * HOUR) if h.rule == "ReleaseRegression"]
    assert fired and fired[0].labels["candidate"] == "v2", fired


def test_a_neutral_canary_stays_quiet_across_40_seeds(setup, clock):
    config, store, app = setup
    reqs, fbs = [], []
    for seed in range(40):  # one feature per seed: 40 releases of the same nothing
        r, f = _traffic(seed, f"f{seed}", range(0, 16), lambda t: 100,
                        lambda i: {"v1": 1.0} if i < 6 else {"v1": 0.5, "v2": 0.5})
        reqs += r
        fbs += f
    _ingest(app, reqs, fbs)
    _job(store, config, clock, T0 + 16 * HOUR + dt.timedelta(minutes=3, microseconds=987654))
    found = releases.search(store, service="support-bot")
    assert len(found) == 40 and all(r.mode == "canary" for r in found)
    verdicts = [r.verdict for r in found]
    assert verdicts.count("fail") <= 2, verdicts  # 5% of 40
    assert all(v in ("pass", "marginal", "fail") for v in verdicts), verdicts


def test_a_before_after_release_under_a_daily_pattern_is_not_flagged(setup, clock):
    config, store, app = setup
    # Latency follows the day: slow at the 14:00 peak, quick at night. v2 (same speed) replaces v1 at 08:00
    # on day 8; judged at 18:00, its hours are all daytime.

    def diurnal(ts):
        return 1000.0 * (1.25 + 0.45 * math.cos(2 * math.pi * (ts.hour + ts.minute / 60 - 14) / 24))
    switch = 7 * 24 + 8
    reqs, fbs = _traffic(3, "answer", range(0, switch + 10), lambda t: 40,
                         lambda i: {"v1": 1.0} if i < switch else {"v2": 1.0},
                         latency={"v1": diurnal, "v2": diurnal})
    _ingest(app, reqs, fbs)
    _job(store, config, clock, T0 + (switch + 10) * HOUR + dt.timedelta(minutes=5, microseconds=1))
    (r,) = _of(store, "answer")
    assert r.mode == "before_after" and r.value == "v2" and r.previous_value == "v1"
    assert r.verdict == "pass", (r.reason, r.metrics["latency_p95_ms"])
    assert r.metrics["latency_p95_ms"]["verdict"] == "same"
    # The known truth the same-hours baseline corrects: all of the week before (nights included) against
    # these daytime hours would call the same speed a regression.
    day = [x["latency_ms"] for x in reqs if x["prompt_version"] == "v2"]
    week = [x["latency_ms"] for x in reqs if x["prompt_version"] == "v1"]
    naive = rv.bootstrap("latency_p95_ms", np.array(week), np.array(day), rv.percentile(95), 200, 1)
    naive_verdict = rv.decide([naive], config.releases, len(week), len(day)).metrics["latency_p95_ms"].verdict
    assert naive_verdict == "worse"


def test_a_sparse_baseline_is_insufficient_data_not_pass(setup, clock):
    config, store, app = setup
    reqs, fbs = _traffic(4, "answer", range(0, 30), lambda t: 3 if t < T0 + 20 * HOUR else 80,
                         lambda i: {"v1": 1.0} if i < 20 else {"v2": 1.0})
    _ingest(app, reqs, fbs)
    _job(store, config, clock, T0 + 30 * HOUR + dt.timedelta(minutes=1, microseconds=5))
    (r,) = _of(store, "answer")
    assert r.verdict == "insufficient_data" and "baseline" in r.reason, r.reason


def test_a_rollback_is_found_and_linked_to_the_release_it_reverts(setup, clock):
    config, store, app = setup
    reqs, fbs = _traffic(5, "answer", range(0, 60), lambda t: 60,
                         lambda i: {"v1": 1.0} if i < 20 else {"v2": 1.0} if i < 40 else {"v1": 1.0},
                         latency={"v2": 1800.0})
    _ingest(app, reqs, fbs)
    _job(store, config, clock, T0 + 60 * HOUR + dt.timedelta(minutes=2, microseconds=42))
    first, back = sorted(_of(store, "answer"), key=lambda r: r.ts)
    assert (first.previous_value, first.value, first.rollback_of) == ("v1", "v2", "")
    assert (back.previous_value, back.value, back.rollback_of) == ("v2", "v1", first.release_id)
    assert first.ended == T0 + 40 * HOUR and first.verdict == "fail"
    # Rolled back: no longer live, so its ticket's point is 0.
    points = metric_points.series(store, "release_regression", "1h", T0, T0 + 4 * 24 * HOUR,
                                  {"release": first.release_id}, None, 10)
    assert points[-1][2] == 0.0
    rate = metric_points.series(store, "release_rollback_rate", "30d", T0, T0 + 4 * 24 * HOUR,
                                {"service": "support-bot"}, ["service"], 10)
    assert rate and rate[-1][2] == 0.5


def test_a_declared_release_is_judged_under_its_own_id_and_details(setup, clock):
    config, store, app = setup
    client = app.test_client()
    ingest_key = app.extensions["nlpmon"].keys.create("ci", ["ingest"])[1]
    read_key = app.extensions["nlpmon"].keys.create("r", ["read"])[1]
    clock.set(T0 + 23 * HOUR + dt.timedelta(microseconds=250))
    body = {"service": "support-bot", "feature": "answer", "dimension": "prompt_version", "value": "v2",
            "previous_value": "v1", "ts": iso_utc(T0 + 24 * HOUR), "description": "shorter system prompt <b>",
            "link": "https://ci.example/deploys/42"}
    assert client.post("/v1/releases", json=body).status_code == 401
    assert client.post("/v1/releases", json=body, headers=auth(read_key)).status_code == 403
    bad = client.post("/v1/releases", json={**body, "dimension": "colour"}, headers=auth(ingest_key))
    assert bad.status_code == 400 and bad.get_json()["message"].startswith("dimension:")
    bad = client.post("/v1/releases", json={**body, "link": "javascript:alert(1)"}, headers=auth(ingest_key))
    assert bad.status_code == 400 and bad.get_json()["message"].startswith("link:")
    created = client.post("/v1/releases", json=body, headers=auth(ingest_key))
    assert created.status_code == 201, created.get_json()
    rid = created.get_json()["release_id"]
    listed = client.get("/v1/releases?service=support-bot", headers=auth(read_key)).get_json()["releases"]
    assert [(x["release_id"], x["verdict"], x["source"]) for x in listed] == [(rid, "pending", "declared")]
    reqs, fbs = _traffic(6, "answer", range(0, 40), lambda t: 60,
                         lambda i: {"v1": 1.0} if i < 24 else {"v2": 1.0})
    _ingest(app, reqs, fbs)
    _job(store, config, clock, T0 + 40 * HOUR + dt.timedelta(minutes=4, microseconds=77))
    (r,) = _of(store, "answer")
    assert r.release_id == rid and r.source == "declared" and r.link == body["link"]
    assert r.verdict == "pass", r.reason
    one = client.get(f"/v1/releases/{rid}", headers=auth(read_key)).get_json()
    assert one["mode"] == "before_after" and one["metrics"]["error_rate"]["test"] in ("two-proportion z", "fisher")
    for name in ("latency_p95_ms", "thumbs_up_rate", "cost_per_request_usd"):
        stat = one["metrics"][name]
        assert {"baseline", "candidate", "change", "change_low", "change_high", "p_value", "verdict"} <= set(stat)
    assert client.get("/v1/releases/nope", headers=auth(read_key)).status_code == 404
    # The pages: the list and the release, its description escaped.
    from tests.test_dashboards import sign_in
    assert sign_in(client, read_key).status_code == 302
    page = client.get("/releases").get_data(as_text=True)
    assert rid in page and "pass" in page
    page = client.get(f"/releases/{rid}").get_data(as_text=True)
    assert "shorter system prompt &lt;b&gt;" in page and 'data-metric="latency_p95_ms"' in page


def test_browser_the_releases_pages_tell_a_regression_and_its_rollback(setup, clock, browser):
    """In Chromium: the list shows the failed release and its rollback; the release's page its metrics side by
    side with the failing one marked, charts of both values drawn, and the link to the rollback, which links
    back; nothing wider than the window, no console errors."""
    from tests.helpers import LiveServer
    config, store, app = setup
    reqs, fbs = _traffic(7, "answer", range(0, 48), lambda t: 60,
                         lambda i: {"v1": 1.0} if i < 20 else {"v1": 0.5, "v2": 0.5} if i < 30
                         else {"v2": 1.0} if i < 38 else {"v1": 1.0}, latency={"v2": 1800.0})
    _ingest(app, reqs, fbs)
    _job(store, config, clock, T0 + 48 * HOUR + dt.timedelta(minutes=2, microseconds=271828))
    from monitor.scheduler import build_jobs
    assert build_jobs(store, config, clock)["sli"].run(since=T0).status == "ok"  # the charts' points per version
    first, back = sorted(_of(store, "answer"), key=lambda r: r.ts)
    assert first.verdict == "fail" and first.mode == "canary" and back.rollback_of == first.release_id
    key = app.extensions["nlpmon"].keys.create("pages", ["read"])[1]
    with LiveServer(app) as site:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(site.url + "/login")
        page.fill("#api_key", key)
        page.click("button[type=submit]")
        page.click("nav >> text=Releases")
        page.wait_for_url(site.url + "/releases*")
        rows = page.locator("#releases tbody tr[data-release]")
        assert [rows.nth(i).get_attribute("data-release") for i in range(rows.count())] == \
            [back.release_id, first.release_id]  # newest first
        failed = page.locator(f"tr[data-release={first.release_id}]")
        assert failed.get_attribute("data-verdict") == "fail" and failed.locator(".badge.bad").inner_text() == "fail"
        assert "rollback" in page.locator(f"tr[data-release={back.release_id}]").inner_text()
        failed.locator("a").first.click()
        page.wait_for_url(f"{site.url}/releases/{first.release_id}")
        assert page.locator("#verdict").inner_text() == "fail"
        latency = page.locator("#metrics tr[data-metric=latency_p95_ms]")
        assert latency.get_attribute("data-verdict") == "worse" and "bootstrap" in latency.inner_text()
        assert page.locator("#metrics tr[data-metric=error_rate]").get_attribute("data-verdict") == "same"
        assert "canary" in page.locator("#release-summary").inner_text()
        page.wait_for_selector(".charts .main-svg")
        drawn = page.locator(".charts .plot")
        assert drawn.count() == 3 and page.locator(".charts .plot.js-plotly-plot").count() == 3  # each drawn
        legend = page.locator("#chart-rel-latency_p95_ms .legendtext").all_text_contents()
        assert legend == ["prompt_version v1 (before)", "prompt_version v2 (new)"], legend
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        ARTIFACTS = __import__("pathlib").Path(__file__).parent / "artifacts"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "release.png"), full_page=True)
        page.click("a.rolled-back-by")
        page.wait_for_url(f"{site.url}/releases/{back.release_id}")
        assert page.locator("#reverts").get_attribute("href") == f"/releases/{first.release_id}"
        assert errors == [], errors
        ctx.close()
