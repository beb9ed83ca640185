"""The demo's four stories, checked from what the demo stored: the whole load (`monitor.demo.load.load`, as
`nlpmon demo` and `serve --demo` run it) over ten days of traffic through the real ingest path, jobs, drift
with the real model and the alert replay. Drift is limited to the topic-shifted feature (drift.targets) to
keep the test short; the other features take the same code path."""
from __future__ import annotations

import collections
import datetime as dt
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from monitor import demo
from tests.helpers import recent_friday_noon
from monitor.app import create_app
from monitor.demo.load import STEPS, load
from monitor.foundation.clock import ManualClock
from monitor.foundation.progress import Progress
from monitor.foundation.tables import alert_history, drift_reports, metric_points
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.xdist_group("demo_stories")  # one worker builds the demo (make test: --dist loadgroup)
END = recent_friday_noon()  # a Friday noon, as 2026-11-20 was: the shift falls on a weekday
DAYS, RPS = 10.0, 0.12
SLOS = yaml.safe_load((Path(__file__).parent.parent / "monitor.yaml").read_text())["slos"]
# The alert each injected incident must raise once and resolve once: (alertname, service).
EXPECTED = {"error burst": ("HighErrorRate", "support-bot"), "cost spike": ("CostPerOutcomeHigh", "copilot"),
            "latency regression after prompt change": ("HighLatencyP95", "copilot"),
            "topic shift": ("EmbeddingDrift", "support-bot")}
OTHERS = [{"service": s, "feature": f, "enabled": False}
          for s, f in (("support-bot", "summarize"), ("search", "query-rewrite"), ("copilot", "draft-email"),
                       ("copilot", "translate"))]


@pytest.fixture(scope="module")
def loaded(chdb_dir):
    from monitor.foundation.config import load_config
    from monitor.foundation.storage import Store
    from tests.conftest import upgrade_fast
    config = load_config(env={}, overrides={
        "clickhouse": {"url": f"chdb://{chdb_dir}", "database": f"stories_{uuid.uuid4().hex[:12]}"}, "slos": SLOS,
        "grounding": {"enabled": False}, "drift": {"targets": OTHERS}})
    store = Store.from_config(config)
    upgrade_fast(store, config)
    clock = ManualClock(END)
    app = create_app(config, store, clock)
    progress = Progress("demo data")
    load(app.extensions["nlpmon"].ingestor.ingest, config, DAYS, RPS, 7, END, store=store, clock=clock,
         echo=lambda m: None, progress=progress, key=False)
    yield SimpleNamespace(store=store, progress=progress, app=app,
                          key=app.extensions["nlpmon"].keys.create("stories", ["read"])[1])
    store.command(f"DROP DATABASE IF EXISTS `{config.clickhouse.database}`")
    store.close()


def _incident(name: str) -> dict:
    return next(i for i in demo.incidents(DAYS, END) if i["name"] == name)


def test_every_step_finished_and_reported(loaded):
    progress = loaded.progress
    snap = progress.snapshot()
    assert not snap["active"] and snap["failed"] == [] and snap["done"] == len(STEPS)
    assert not progress.pending("drift") and not progress.pending("alerts")


def test_each_incident_fires_once_and_resolves_once_in_its_window(loaded):
    store = loaded.store
    history = alert_history.between(store, END - dt.timedelta(days=DAYS), END + dt.timedelta(days=1))
    # Per alert instance (fingerprint): when it fired and when it resolved. One incident may raise
    # several instances of its rule (drift of the input and of the output texts): one page, grouped.
    fired, resolved = collections.defaultdict(list), collections.defaultdict(list)
    group = {}
    for h in history:
        group[h.fingerprint] = (h.rule, h.labels.get("service"))
        if h.to_state == "firing" and h.from_state != "firing":
            fired[h.fingerprint].append(h.ts)
        if h.from_state == "firing" and h.to_state == "inactive":
            resolved[h.fingerprint].append(h.ts)
    for name, key in EXPECTED.items():
        inc = _incident(name)
        instances = [fp for fp, g in group.items() if g == key and fired[fp]]
        assert instances, (name, key)
        for fp in instances:
            assert len(fired[fp]) == 1 and len(resolved[fp]) == 1, (name, key, fired[fp], resolved[fp])
            assert inc["start"] <= fired[fp][0] <= inc["end"], (name, fired[fp], inc)
            assert fired[fp][0] < resolved[fp][0] <= inc["end"] + dt.timedelta(hours=13), (name, resolved[fp], inc)
    # Nothing pages that no incident explains.
    # (The SLO rules are named per SLO; the shift also raises the reviewed hallucination rate.)
    # German summaries break till the end: its segment's ticket stays open (the locale story, below).
    explained = set(EXPECTED.values()) | {("SLOBurnRate", "copilot"), ("HallucinationRateHigh", "support-bot"),
                                          ("SegmentRegression", "support-bot")}
    raised = {(rule.split(":")[0], service) for rule, service in (group[fp] for fp in fired if fired[fp])}
    assert raised <= explained | {("Watchdog", None)}, raised
    # The prompt change also burns the draft-email latency SLO's budget: a ticket, not silence.
    assert ("SLOBurnRate", "copilot") in raised, raised


def test_daily_drift_rises_on_the_shift_day_and_not_on_the_two_days_before(loaded):
    store = loaded.store
    shift = _incident("topic shift")
    day_end = shift["start"].replace(hour=0) + dt.timedelta(days=1)
    reports = {r.ts: r for r in drift_reports.search(
        store, {"service": "support-bot", "feature": "answer", "window": "1d"}, None,
        day_end - dt.timedelta(days=3), day_end + dt.timedelta(seconds=1), 50)}
    assert reports[day_end].status == "ok" and reports[day_end].drift_detected, reports.get(day_end)
    for before in (day_end - dt.timedelta(days=1), day_end - dt.timedelta(days=2)):
        assert reports[before].status == "ok" and not reports[before].drift_detected, reports.get(before)
    # More than one point per series: every day of the window with a reference has its report.
    days = drift_reports.search(store, {"service": "support-bot", "feature": "answer", "window": "1d"}, None,
                                None, None, 100)
    assert len({r.ts for r in days}) >= DAYS - 1
    # The new topic's texts explain the drift.
    explanation = drift_reports.get(store, reports[day_end].report_id, explanation=True).explanation
    explained = " ".join([x.text for ex in explanation.values() for x in ex.farthest]
                         + [t for ex in explanation.values() for c in ex.clusters for t in c.examples])
    assert "crypto" in explained.lower() or "assistant" in explained.lower(), explained[:500]


def test_reviewers_label_most_samples_and_the_shift_hallucinates_more(loaded):
    store = loaded.store
    shift = _incident("topic shift")
    labels = {"service": "support-bot", "feature": "answer"}

    def day(metric: str, end: dt.datetime) -> float:
        rows = metric_points.series(store, metric, "1d", end, end, labels, ["feature", "service"], 10)
        assert rows, (metric, end)
        return rows[-1][2]

    shift_day_end = shift["start"].replace(hour=0) + dt.timedelta(days=1)
    normal_day_end = shift_day_end - dt.timedelta(days=3)
    assert 0.5 <= day("review_coverage", normal_day_end) <= 1.0
    during, before = day("hallucination_rate", shift_day_end), day("hallucination_rate", normal_day_end)
    assert during > before, (during, before)
    low, high = day("hallucination_rate_low", shift_day_end), day("hallucination_rate_high", shift_day_end)
    assert low < during < high


def test_german_summaries_regress_in_their_segment_alone_and_the_hidden_regression_check_names_them(loaded):
    from dashboards import kpis
    from monitor.foundation import hidden_regressions
    store, config = loaded.store, loaded.app.extensions["nlpmon"].config
    locale = _incident("German summaries broken")
    day_end = END.replace(hour=0)  # the last whole UTC day of the window, all of it in the incident
    day = (day_end - dt.timedelta(days=1), day_end)
    assert locale["start"] <= day[0]
    verdict = hidden_regressions.find(store, config, day, (day[0] - dt.timedelta(days=7), day[0]))
    found = [(r.service, r.feature, r.dimension, r.value) for r in verdict.regressions]
    # German first; with it, the segments whose traffic is mostly German (umbrella-gmbh's users write German,
    # from eu-central-1): one cause seen through correlated dimensions, none of them noise.
    assert found[0] == ("support-bot", "summarize", "language", "de"), found
    carriers = {("region", "eu-central-1"), ("tenant", "umbrella-gmbh")}
    assert {(d, v) for _, _, d, v in found[1:]} <= carriers, found
    # The feature's own rate hardly moved; the German segment's is far worse, in the segment table too.
    # The day against the 7 days before it, as the check judges it.
    period, week = kpis.Period("custom", *day), kpis.Period("baseline", day[0] - dt.timedelta(days=7), day[0])
    row = next(r for r in kpis.overview(store, config, period, {"service": "support-bot"}, baseline=week)
               if r.feature == "summarize")
    assert row.current["error_rate"] - row.previous["error_rate"] < hidden_regressions.MIN_RISE
    german = next(r for r in kpis.by_segment(store, config, period, {"service": "support-bot",
                                                                      "feature": "summarize"}, week)["language"]
                  if r.value == "de")
    assert german.current["error_rate"] > german.previous["error_rate"] + 0.05
    # The daily check wrote its verdict and the default ticket rule raised it.
    fired = {h.labels.get("segment") for h in alert_history.between(store, locale["start"], END + dt.timedelta(1))
             if h.rule == "SegmentRegression" and h.to_state == "firing"}
    assert "de" in fired and fired <= {"de"} | {v for _, v in carriers}, fired


# -- the pages, in Chromium, over the demo's data ------------------------------------------------
@pytest.fixture(scope="module")
def site(loaded):
    from tests.helpers import LiveServer
    with LiveServer(loaded.app) as srv:
        yield srv


@pytest.fixture(scope="module")
def signed_in(browser, site, loaded):
    """Signed in through the login page once; each test's page starts from that session."""
    from tests.helpers import browser_session
    return browser_session(browser, site.url, loaded.key, {"width": 1280, "height": 900})


@pytest.fixture(params=[1280, 1440])
def page(request, browser, site, signed_in):
    ctx = browser.new_context(viewport={"width": request.param, "height": 900}, storage_state=signed_in)
    pg = ctx.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.width = request.param
    yield pg
    ctx.close()


def test_browser_overview_of_the_demo_fits_and_shows_changes(page, site):
    for period in ("24h", "7d"):
        page.goto(f"{site.url}/?period={period}")
        page.wait_for_selector("#kpis .spark .main-svg")
        assert page.evaluate("document.documentElement.scrollWidth") <= page.width
        right = page.evaluate("Math.max(...[...document.querySelectorAll('#kpis thead th')]"
                              ".map(th => th.getBoundingClientRect().right))")
        assert right <= page.width, (period, right)
        page.screenshot(path=str(ARTIFACTS / f"demo-overview-{period}-{page.width}.png"), full_page=True)
    # The day before has a full previous period: changes are numbers there, not reasons.
    page.goto(f"{site.url}/?period=24h")
    numeric = page.locator("#kpis td.kpi .delta:not(.reason)").all_inner_texts()
    assert sum(any(ch.isdigit() for ch in t) for t in numeric) >= 20, numeric
    rates = page.locator('#kpis td[data-kpi="hallucination_rate"] .interval').all_inner_texts()
    assert any("%" in r for r in rates), rates  # hallucination rates come with their interval
    assert page.errors == []


def test_browser_drift_chart_has_more_than_one_point_per_series(page, site):
    page.goto(f"{site.url}/drift?service=support-bot&feature=answer&window=1d&period=30d")
    page.wait_for_selector(".plot .main-svg")
    counts = page.evaluate("[...document.querySelectorAll('.plot')].filter(p => p.data)"
                           ".flatMap(p => p.data.filter(t => t.x && t.x.length).map(t => t.x.length))")
    assert counts and min(counts) > 1, counts
    page.screenshot(path=str(ARTIFACTS / f"demo-drift-{page.width}.png"), full_page=True)
    assert page.errors == []


def test_browser_alerts_page_lists_each_incident_with_its_resolve(page, site):
    page.goto(f"{site.url}/alerts?days=14")
    rows = page.locator("table.incidents tbody tr").all()
    seen = collections.Counter()
    for row in rows:
        cells = row.locator("td").all_inner_texts()
        labels = cells[1]
        service = next((part.split("=", 1)[1] for part in labels.split() if part.startswith("service=")), None)
        if (cells[0], service) in EXPECTED.values():
            assert cells[3] != "still firing", cells
            seen[(cells[0], labels)] += 1
    assert {(rule, next(p.split("=", 1)[1] for p in labels.split() if p.startswith("service=")))
            for rule, labels in seen} == set(EXPECTED.values()), seen
    assert max(seen.values()) == 1, seen  # each alert instance once
    page.screenshot(path=str(ARTIFACTS / f"demo-alerts-{page.width}.png"), full_page=True)
    assert page.errors == []
