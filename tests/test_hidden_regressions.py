"""Hidden regressions (monitor.foundation.hidden_regressions): a segment worse while its feature is not, found
with a known truth (an injected cause comes out first) and quiet on noise across many seeds; then through the
store, the job and the default ticket rule."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from monitor.foundation.hidden_regressions import MIN_REQUESTS, Counts, judge

FEATURE = ("shop", "answer")


def _segments(rng, rates: dict[str, tuple[float, float]], sizes: dict[str, int]):
    """Binomial failures of each segment in both periods; the feature's counts are their sums."""
    segments, cur, base = {}, Counts(0, 0), Counts(0, 0)
    for value, (before, now) in rates.items():
        n = sizes[value]
        c, b = Counts(int(rng.binomial(n, now)), n), Counts(int(rng.binomial(n, before)), n)
        segments[(*FEATURE, "language", value)] = (c, b)
        cur, base = Counts(cur.failures + c.failures, cur.requests + n), Counts(base.failures + b.failures, base.requests + n)
    return segments, {FEATURE: (cur, base)}


@pytest.mark.fast
def test_an_injected_regression_of_one_language_comes_out_first_while_the_feature_stays_flat():
    others = {f"l{i}": (0.03, 0.03) for i in range(11)}
    for seed in range(50):
        rng = np.random.default_rng(seed)
        segments, features = _segments(rng, {"de": (0.02, 0.10), **others},
                                       {"de": 500, **{k: 2000 for k in others}})
        verdict = judge(segments, features)
        assert verdict.regressions, seed
        first = verdict.regressions[0]
        assert (first.value, first.dimension) == ("de", "language"), (seed, verdict.regressions)
        assert len(verdict.regressions) == 1 and verdict.too_thin == 0
        assert first.sentence({"de": "German"}).startswith("German: error rate ")
        assert "while the feature stayed at" in first.sentence() or "while the feature went" in first.sentence()


@pytest.mark.fast
def test_noise_over_fifty_segments_stays_quiet_across_many_seeds():
    flagged = 0
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        base_rates = rng.uniform(0.005, 0.08, 50)
        sizes = rng.integers(MIN_REQUESTS, 3000, 50)
        segments, features = _segments(rng, {f"s{i}": (r, r) for i, r in enumerate(base_rates)},
                                       {f"s{i}": int(n) for i, n in enumerate(sizes)})
        verdict = judge(segments, features)
        assert len(verdict.tested) == 50
        flagged += len(verdict.regressions)
    # 10,000 comparisons of segments that did not change: a false alarm at most now and then.
    assert flagged <= 3, flagged


@pytest.mark.fast
def test_a_regression_in_plain_sight_or_too_small_or_too_thin_is_not_a_hidden_one():
    rng = np.random.default_rng(5)
    # The whole feature got worse with it: the feature's alerts speak, not this one.
    segments, features = _segments(rng, {"de": (0.02, 0.12), "en": (0.02, 0.12)}, {"de": 3000, "en": 3000})
    assert judge(segments, features).regressions == []
    # Significant on a huge segment but under 2 points: not a rise that matters.
    segments, features = _segments(rng, {"de": (0.010, 0.018), **{f"l{i}": (0.03, 0.03) for i in range(5)}},
                                   {"de": 200_000, **{f"l{i}": 200_000 for i in range(5)}})
    assert judge(segments, features).regressions == []
    # Too few requests to judge: said as such, never read as healthy.
    segments, features = _segments(rng, {"de": (0.0, 0.5), "en": (0.03, 0.03)}, {"de": 40, "en": 5000})
    verdict = judge(segments, features)
    assert verdict.regressions == [] and verdict.too_thin == 1 and len(verdict.tested) == 1


def test_the_job_writes_the_verdicts_and_the_default_ticket_rule_fires_for_the_segment(make_config, make_store, clock):
    from alerts.engine import AlertEngine
    from monitor.app import create_app
    from monitor.foundation.tables import metric_points
    from monitor.scheduler import build_jobs
    from tests.loopback import Recorder

    day0 = dt.datetime(2026, 11, 16, tzinfo=dt.timezone.utc)
    rng = np.random.default_rng(11)
    events = []
    for d in range(8):  # seven days as before, then the day German answers broke; English got a little better
        for lang, n, rate in (("de", 200, 0.15 if d == 7 else 0.02), ("en", 700, 0.005 if d == 7 else 0.02),
                              ("fr", 300, 0.02)):
            for i in range(n):
                events.append({"request_id": f"{d}-{lang}-{i}", "service": "shop", "feature": "answer", "model": "m",
                               "ts": (day0 + dt.timedelta(days=d, seconds=int(rng.integers(0, 86400)))).isoformat(),
                               "status": "error" if rng.random() < rate else "ok", "latency_ms": 300.0,
                               "language": lang})
    with Recorder() as hook:
        config = make_config(alerts={"default_rules": True, "slo_rules": False, "system": {"enabled": False},
                                     "receivers": [{"name": "hook", "webhook": {"url": hook.url}}],
                                     "route": {"receiver": "hook", "group_wait": "0s",
                                               "group_by": ["alertname", "segment"]}},
                             retention={"days": 90})
        store = make_store(config)
        clock.set(day0 + dt.timedelta(days=8, hours=1, microseconds=517))
        app = create_app(config, store, clock)
        assert app.extensions["nlpmon"].ingestor.ingest("requests", events).rejected == 0
        assert build_jobs(store, config, clock)["segment_regression"].run(
            since=day0 + dt.timedelta(days=7)).status == "ok"
        verdicts = {labels["segment"]: v for labels, _, v in metric_points.series(
            store, "segment_regression", "1d", day0, clock.now(), {"dimension": "language"}, None, 100)}
        assert verdicts == {"de": 1.0, "en": 0.0, "fr": 0.0}
        assert AlertEngine(store, config, clock).run().status == "ok"
        firing = [a for p in hook.take() for a in p["alerts"]
                  if a["status"] == "firing" and a["labels"]["alertname"] == "SegmentRegression"]
    assert [(a["labels"]["dimension"], a["labels"]["segment"]) for a in firing] == [("language", "de")]
    assert firing[0]["labels"]["severity"] == "ticket"


@pytest.fixture
def broken_german(make_config, make_store, clock):
    """An app whose feature shop/answer had German answers break in the last 24 hours while English got a
    little better, so the feature's error rate did not move; and a key to read it."""
    from monitor.app import create_app
    now = dt.datetime(2026, 11, 24, 12, 0, 30, 412, tzinfo=dt.timezone.utc)
    rng = np.random.default_rng(3)
    events = []
    for d in range(2):  # the day before, then the last 24 hours
        for lang, n, rate in (("de", 300, 0.12 if d else 0.02), ("en", 1500, 0.01 if d else 0.02)):
            for i in range(n):
                ts = now - dt.timedelta(days=2 - d) + dt.timedelta(seconds=int(rng.integers(0, 86000)))
                events.append({"request_id": f"{d}-{lang}-{i}", "service": "shop", "feature": "answer", "model": "m",
                               "ts": ts.isoformat(), "status": "error" if rng.random() < rate else "ok",
                               "latency_ms": 300.0, "language": lang, "tenant": f"t{i % 3}",
                               "input_text": "<b>not shown</b>"})
    config = make_config()
    store = make_store(config)
    clock.set(now)
    app = create_app(config, store, clock)
    assert app.extensions["nlpmon"].ingestor.ingest("requests", events).rejected == 0
    return app, app.extensions["nlpmon"].keys.create("manager", ["read"])[1]


def test_the_overview_names_a_hidden_regression_of_its_period(broken_german):
    from tests.test_dashboards import sign_in
    app, key = broken_german
    client = app.test_client()
    assert sign_in(client, key).status_code == 302
    page = client.get("/?period=24h").get_data(as_text=True)
    assert 'data-hidden-regression="shop/answer/language/de"' in page
    assert "German: error rate 2." in page and "→ 1" in page and "while the feature" in page
    assert page.count("data-hidden-regression=") == 1


def test_browser_the_detail_page_shows_the_feature_by_segment_with_the_regression_marked(broken_german, browser):
    from tests.helpers import LiveServer
    app, key = broken_german
    with LiveServer(app) as site:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(site.url + "/login")
        page.fill("#api_key", key)
        page.click("button[type=submit]")
        page.goto(site.url + "/detail?service=shop&feature=answer&period=24h")
        table = page.locator("table.segments[data-dimension=language]")
        table.wait_for()
        assert table.is_visible()
        rows = table.locator("tbody tr")
        assert [rows.nth(i).get_attribute("data-segment") for i in range(rows.count())] == ["en", "de"]
        german = table.locator("tr[data-segment=de]")
        assert "German" in german.locator("th").inner_text() and german.locator(".badge").inner_text() == \
            "hidden regression"
        assert german.get_attribute("class") == "regressed"
        error_cell = german.locator("td[data-kpi=error_rate]")
        assert error_cell.locator(".delta").get_attribute("data-reason") == ""  # a change is shown: enough data
        assert error_cell.locator(".delta").inner_text().startswith("+")
        # Tenants are a segment table of their own; nothing wider than the window.
        assert page.locator("table.segments[data-dimension=tenant] tbody tr").count() == 3
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        ARTIFACTS = __import__("pathlib").Path(__file__).parent / "artifacts"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "detail_by_segment.png"), full_page=True)
        assert errors == []
        ctx.close()
