"""The demo's four stories, checked from what the demo stored: the whole load (`monitor.demo.load.load`, as
`nlpmon demo` and `serve --demo` run it) over ten days of traffic through the real ingest path, jobs, drift
with the real model and the alert replay. Drift is limited to the topic-shifted feature (drift.targets) to
keep the test short; the other features take the same code path."""
from __future__ import annotations

import collections
import datetime as dt
import uuid
from pathlib import Path

import pytest
import yaml

from monitor import demo
from monitor.app import create_app
from monitor.demo.load import STEPS, load
from monitor.foundation.clock import ManualClock
from monitor.foundation.progress import Progress
from monitor.foundation.tables import alert_history, drift_reports, metric_points

END = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)  # the shift falls on a weekday
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
    ingestor = create_app(config, store, clock).extensions["nlpmon"].ingestor
    progress = Progress("demo data")
    load(ingestor.ingest, config, DAYS, RPS, 7, END, store=store, clock=clock, echo=lambda m: None,
         progress=progress, key=False)
    yield store, progress
    store.command(f"DROP DATABASE IF EXISTS `{config.clickhouse.database}`")
    store.close()


def _incident(name: str) -> dict:
    return next(i for i in demo.incidents(DAYS, END) if i["name"] == name)


def test_every_step_finished_and_reported(loaded):
    _, progress = loaded
    snap = progress.snapshot()
    assert not snap["active"] and snap["failed"] == [] and snap["done"] == len(STEPS) - 1  # grounding is off
    assert not progress.pending("drift") and not progress.pending("alerts")


def test_each_incident_fires_once_and_resolves_once_in_its_window(loaded):
    store, _ = loaded
    history = alert_history.between(store, END - dt.timedelta(days=DAYS), END + dt.timedelta(days=1))
    fired, resolved = collections.defaultdict(list), collections.defaultdict(list)
    for h in history:
        key = (h["rule"], h["labels"].get("service"))
        if h["to_state"] == "firing" and h["from_state"] != "firing":
            fired[key].append(h["ts"].replace(tzinfo=dt.timezone.utc))
        if h["from_state"] == "firing" and h["to_state"] == "inactive":
            resolved[key].append(h["ts"].replace(tzinfo=dt.timezone.utc))
    for name, key in EXPECTED.items():
        inc = _incident(name)
        assert len(fired[key]) == 1, (name, key, fired[key])
        assert len(resolved[key]) == 1, (name, key, resolved[key])
        assert inc["start"] <= fired[key][0] <= inc["end"], (name, fired[key], inc)
        assert fired[key][0] < resolved[key][0] <= inc["end"] + dt.timedelta(hours=13), (name, resolved[key], inc)
    # The prompt change also burns the draft-email latency SLO's budget: a ticket, not silence.
    assert any(rule == "SLOBurnRate" and service == "copilot" for rule, service in fired), dict(fired)


def test_daily_drift_rises_on_the_shift_day_and_not_on_the_two_days_before(loaded):
    store, _ = loaded
    shift = _incident("topic shift")
    day_end = shift["start"].replace(hour=0) + dt.timedelta(days=1)
    reports = {r["ts"].replace(tzinfo=dt.timezone.utc): r for r in drift_reports.search(
        store, {"service": "support-bot", "feature": "answer", "window": "1d"}, None,
        day_end - dt.timedelta(days=3), day_end + dt.timedelta(seconds=1), 50)}
    assert reports[day_end]["status"] == "ok" and reports[day_end]["drift_detected"], reports.get(day_end)
    for before in (day_end - dt.timedelta(days=1), day_end - dt.timedelta(days=2)):
        assert reports[before]["status"] == "ok" and not reports[before]["drift_detected"], reports.get(before)
    # More than one point per series: every day of the window with a reference has its report.
    days = drift_reports.search(store, {"service": "support-bot", "feature": "answer", "window": "1d"}, None,
                                None, None, 100)
    assert len({r["ts"] for r in days}) >= DAYS - 1
    # The new topic's texts explain the drift.
    explained = drift_reports.get(store, reports[day_end]["report_id"], "explanation")["explanation"]
    assert "crypto" in explained.lower() or "assistant" in explained.lower(), explained[:500]


def test_reviewers_label_most_samples_and_the_shift_hallucinates_more(loaded):
    store, _ = loaded
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
