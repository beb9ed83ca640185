"""The demo's incidents, explained: for each injected incident, the incident explorer's "What changed" names
the injected cause first, and its link filters the explorer to it. Over the 14 days `nlpmon demo` stores by
default (a week of normal traffic before each incident, the explorer's baseline), sent through the real
ingest path; the explanation reads the stored rows, so the demo's jobs, drift and alert replay are not run
here (tests/test_demo_stories.py runs them)."""
from __future__ import annotations

import csv
import datetime as dt
import html as htmlmod
import io
import re
import uuid
from types import SimpleNamespace

import pytest

from monitor import demo
from tests.helpers import recent_friday_noon
from monitor.app import create_app
from monitor.demo.load import send
from monitor.demo.timeline import REGRESSED_PROMPT
from monitor.demo.traffic import BURST_REGION, DOCUMENT_MODEL
from monitor.foundation.clock import ManualClock, iso_utc
from monitor.foundation.config import load_config
from monitor.foundation.storage import Store
from tests.conftest import upgrade_fast
from tests.test_dashboards import sign_in

# One worker loads the demo once for all of the module's tests (make test: --dist loadgroup); spread over two,
# each loaded it (45 s of a 2-core run each).
pytestmark = pytest.mark.xdist_group("demo_explain")
END = recent_friday_noon()  # a Friday noon, as 2026-11-20 was: the shift falls on a weekday
DAYS, RPS = demo.DEFAULT_DAYS, demo.DEFAULT_RPS
# incident -> (the headline metric it moves, the segment that must come first, its kind or None for any)
CAUSES = {
    "error burst": ("error_rate", {"region": BURST_REGION}, "rate"),
    "cost spike": ("cost_per_request_usd", {"model": DOCUMENT_MODEL}, "mix"),
    "latency regression after prompt change": ("latency_p95_ms", {"prompt_version": REGRESSED_PROMPT}, None),
    "topic shift": ("thumbs_up_rate", {"topic": "other"}, None),
    "German summaries broken": ("error_rate", {"language": "de"}, "rate"),
}


@pytest.fixture(scope="module")
def site(chdb_dir):
    config = load_config(env={}, overrides={
        "clickhouse": {"url": f"chdb://{chdb_dir}", "database": f"why_{uuid.uuid4().hex[:12]}"}})
    assert "topic" in config.segments.tags  # the shipped monitor.yaml promotes the demo's tags
    store = Store.from_config(config)
    upgrade_fast(store, config)
    app = create_app(config, store, ManualClock(END))
    result = send(app.extensions["nlpmon"].ingestor.ingest, demo.generate(DAYS, RPS, END, demo.DEFAULT_SEED),
                  demo.expected_requests(DAYS, RPS))
    assert result.rejected == 0 and result.accepted > 100_000
    client = app.test_client()
    assert sign_in(client, app.extensions["nlpmon"].keys.create("why", ["read"])[1]).status_code == 302
    yield SimpleNamespace(client=client, config=config, store=store, app=app)
    store.command(f"DROP DATABASE IF EXISTS `{config.clickhouse.database}`")
    store.close()


def _window(incident: dict) -> tuple[dt.datetime, dt.datetime]:
    if incident["daily"]:  # told in days and lasting to the end: its last whole day
        day = END.replace(hour=0)
        return day - dt.timedelta(days=1), day
    return incident["start"], incident["end"]


def _first_contributor(page: str, metric: str) -> tuple[str, str, str | None]:
    """(text, kind, href) of the first contributor listed for ``metric`` under What changed."""
    section = page[page.index('id="what-changed"'):]
    item = re.search(rf'<li data-metric="{metric}">(.*?)</li>', section, re.S)
    assert item, f"{metric} not under What changed"
    first = re.search(r'<(a href="([^"]*)"|span) data-kind="(\w+)">([^<]*)<', item.group(1))
    assert first, f"{metric}: no contributor: {htmlmod.unescape(re.sub(r'<[^>]+>', ' ', item.group(1)))}"
    href = htmlmod.unescape(first.group(2)) if first.group(2) else None
    return htmlmod.unescape(first.group(4)), first.group(3), href


@pytest.mark.parametrize("name", list(CAUSES))
def test_the_explorer_names_each_injected_cause_first(site, name):
    incident = next(i for i in demo.incidents(DAYS, END) if i["name"] == name)
    metric, segment, kind = CAUSES[name]
    start, end = _window(incident)
    url = (f"/incidents?from={iso_utc(start)}&to={iso_utc(end)}&service={incident['service']}"
           f"&feature={incident['feature']}")
    response = site.client.get(url)
    assert response.status_code == 200
    text, found_kind, href = _first_contributor(response.get_data(as_text=True), metric)
    (dimension, value), = segment.items()
    assert text.startswith(f"{dimension}={value}: "), (name, text)
    share = int(re.match(r".*?: (\d+)% of the change", text).group(1))
    assert share >= 50, (name, text)  # it explains most of the change, not a slice of it
    assert kind is None or found_kind == kind, (name, text, found_kind)
    # Its link is the explorer narrowed to that segment, and it opens.
    assert href and f"{dimension}={value}" in href, (name, href)
    assert site.client.get(href).status_code == 200


def test_the_cost_spike_is_said_as_traffic_moving_to_the_pricier_model(site):
    spike = next(i for i in demo.incidents(DAYS, END) if i["name"] == "cost spike")
    response = site.client.get(f"/incidents?from={iso_utc(spike['start'])}&to={iso_utc(spike['end'])}"
                               f"&service=copilot&feature=translate")
    text, kind, _ = _first_contributor(response.get_data(as_text=True), "cost_per_request_usd")
    # Its share of the traffic is what moved: the sentence says so (new since the baseline, or from-to).
    assert kind == "mix" and ("of the traffic" in text or "traffic " in text), text


def test_the_releases_page_shows_the_regression_failing_on_latency_its_rollback_and_the_others_passing(site):
    """The releases job over the demo: the regressed prompt fails on latency in its canary, judged on the hours
    before its full rollout (where the p95 alert stays quiet), the rollback is linked to it, the two releases
    that went well (one of them a canary) pass."""
    from jobs.releases import ReleasesJob
    from monitor.foundation.tables import releases
    clock = site.app.extensions["nlpmon"].clock
    clock.set(END + dt.timedelta(minutes=1, microseconds=314))
    job = ReleasesJob(site.store, site.config, clock, dt.timedelta(minutes=15))
    assert job.run(since=END - dt.timedelta(days=DAYS)).status == "ok"
    found = {(r.feature, r.previous_value, r.value): r for r in releases.search(site.store)}
    regressed = found[("draft-email", "v7", REGRESSED_PROMPT)]
    assert regressed.mode == "canary" and regressed.verdict == "fail", (regressed.reason, regressed.metrics)
    incident = next(i for i in demo.incidents(DAYS, END) if i["name"] == "latency regression after prompt change")
    assert incident["start"] <= regressed.ts < incident["start"] + dt.timedelta(hours=1)  # its first request
    assert regressed.full_rollout is not None and regressed.judged_to == regressed.full_rollout
    assert regressed.ts < regressed.full_rollout < incident["end"]
    judged = regressed.metrics
    assert judged["latency_p95_ms"]["verdict"] == "worse" and judged["latency_p95_ms"]["p_adjusted"] < 0.05
    assert judged["error_rate"]["verdict"] == "same", judged["error_rate"]
    assert min(judged["latency_p95_ms"]["baseline"]["n"], judged["latency_p95_ms"]["candidate"]["n"]) >= \
        site.config.releases.min_requests
    # The p95 alert could not see it: the canary's hours of the feature stay under HighLatencyP95's 8 s.
    canary_p95 = site.store.query(
        "SELECT quantile(0.95)(latency_ms) FROM requests WHERE service = 'copilot' AND feature = 'draft-email' "
        "AND ts >= {lo:DateTime64(6)} AND ts < {hi:DateTime64(6)}",
        {"lo": incident["start"], "hi": regressed.full_rollout})[0][0]
    assert canary_p95 < 8000, canary_p95
    rollback = found[("draft-email", REGRESSED_PROMPT, "v7")]
    assert rollback.rollback_of == regressed.release_id
    others = [r for key, r in found.items() if key[0] != "draft-email"]
    assert {(r.feature, r.mode) for r in others} == {("query-rewrite", "before_after"), ("translate", "canary")}
    assert all(r.verdict == "pass" for r in others), [(r.feature, r.reason) for r in others]
    assert len(found) == 4, sorted(found)
    page = site.client.get("/releases").get_data(as_text=True)
    row = re.search(rf'<tr data-release="{regressed.release_id}" data-verdict="(\w+)">', page)
    assert row and row.group(1) == "fail"
    page = site.client.get(f"/releases/{rollback.release_id}").get_data(as_text=True)
    assert f'/releases/{regressed.release_id}' in page and "rollback" in page
    # The detail page's version marker links to its release; the postmortem export lists the releases.
    start, end = regressed.ts - dt.timedelta(hours=2), rollback.ts + dt.timedelta(hours=2)
    page = site.client.get(f"/detail?service=copilot&feature=draft-email&from={iso_utc(start)}"
                           f"&to={iso_utc(end)}").get_data(as_text=True)
    assert f'"href":"/releases/{regressed.release_id}"' in page, page[:200]
    q = f"from={iso_utc(start)}&to={iso_utc(end)}&service=copilot&feature=draft-email"
    md = site.client.get(f"/v1/incidents?{q}&format=md").get_data(as_text=True)
    assert f"/releases/{regressed.release_id}" in md and "a rollback" in md
    listed = site.client.get(f"/v1/incidents?{q}&format=json").get_json()["releases"]
    assert {r["release_id"] for r in listed} == {regressed.release_id, rollback.release_id}
    rows = list(csv.reader(io.StringIO(site.client.get(f"/v1/incidents?{q}&format=csv").get_data(as_text=True))))
    released = {row[3]: row for row in rows if row[0] == "release"}
    assert released[f"prompt_version={REGRESSED_PROMPT}"][4] == "fail"
    assert released[f"prompt_version={REGRESSED_PROMPT}"][5] == "v7"
    assert f"rollback /releases/{rollback.release_id}" in released["prompt_version=v7"][6]


def test_digests_of_the_demo_carry_the_overviews_figures_and_name_the_regression(site):
    """A weekly digest at the demo's end has the overview's figures and week-over-week changes for the same
    week; a daily digest of the day the regressed prompt took all of draft-email names its latency first,
    explained by it."""
    from dashboards import digest as dg
    from dashboards import kpis
    from monitor.foundation.config import load_config
    config = load_config(env={}, overrides={
        "clickhouse": {"url": site.config.clickhouse.url, "database": site.config.clickhouse.database},
        "alerts": {"receivers": [{"name": "hook", "webhook": {"url": "http://127.0.0.1:9/hook"}}],
                   "route": {"receiver": "hook"}},
        "digests": [{"name": "weekly", "schedule": "0 12 * * fri", "period": "7d", "receivers": ["hook"]},
                    {"name": "daily", "schedule": "0 7 * * *", "period": "1d", "receivers": ["hook"]}]})
    weekly, daily = config.digests
    start, end = dg.period_of(weekly, END)
    body = dg.as_json(dg.build(site.store, config, weekly, start, end, END))
    rows = {(r.service, r.feature): r for r in kpis.overview(site.store, config, kpis.Period("custom", start, end), {})}
    assert len(body["features"]) == 5
    for f in body["features"]:
        r = rows[(f["service"], f["feature"])]
        for key in ("requests", "error_rate", "latency_p95_ms", "thumbs_up_rate", "cost_per_successful_outcome_usd"):
            # A percentile merges t-digest states, in an order the engine chooses: equal to 1 in 1,000.
            assert f[key]["value"] == pytest.approx(r.current.get(key), rel=1e-3), (f["feature"], key)
            assert f[key]["previous"] == pytest.approx(r.previous.get(key), rel=1e-3), (f["feature"], key)
            assert f[key]["change"] == pytest.approx(r.current[key] - r.previous[key],
                                                     abs=2e-3 * abs(r.current[key]) + 1e-12), (f["feature"], key)
    incident = next(i for i in demo.incidents(DAYS, END) if i["name"] == "latency regression after prompt change")
    full = incident["start"] + dt.timedelta(hours=24)  # the canary's day, then all of draft-email
    day_after = full.replace(hour=7, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    d = dg.build(site.store, config, daily, *dg.period_of(daily, day_after), day_after)
    worse = [m for m in dg.as_json(d)["movers"]["worse"] if m["feature"] == "draft-email"]
    assert worse and worse[0]["metric"] == "latency_p95_ms", dg.as_json(d)["movers"]
    assert any(REGRESSED_PROMPT in text for text in worse[0]["explanation"]), worse[0]
