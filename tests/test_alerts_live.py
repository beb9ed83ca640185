"""Paging you can trust, on the injected clock with real ingest and a real loopback receiver: live windows
(pages within a tick or two of the first failing request), low traffic, SLO pages within the workbook's
detection time, and the alerts about data that stops and about nlpmon itself. Seconds: bench/alerts.py."""
from __future__ import annotations

import datetime as dt

import pytest

from alerts.engine import AlertEngine
from monitor.app import create_app
from monitor.foundation.tables import job_runs
from monitor.foundation.tables.job_runs import RunResult
from tests.loopback import Recorder

T0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc)
TICK = dt.timedelta(seconds=15)
FAST = {"for": "0s"}  # the shipped rule, with for: 0s (and group_wait: 0s in the route) to time the pipeline


@pytest.fixture
def hook():
    with Recorder() as r:
        yield r


@pytest.fixture
def setup(make_config, make_store, clock, hook):
    def make(rules=None, slos=(), group_wait="0s", system=None, receivers=None, **alerts):
        cfg = make_config(slos=list(slos), alerts={
            "default_rules": rules is None, "rules": rules or [], "slo_rules": bool(slos),
            "receivers": receivers or [{"name": "hook", "webhook": {"url": hook.url}}],
            "route": {"receiver": "hook", "group_by": ["alertname", "service", "feature"], "group_wait": group_wait,
                      "group_interval": "1m", "repeat_interval": "4h"},
            "system": system or {"enabled": False}, **alerts})
        store = make_store(cfg)
        clock.set(T0)
        app = create_app(cfg, store, clock)
        return AlertEngine(store, cfg, clock), app.extensions["nlpmon"].ingestor
    return make


class Traffic:
    """Requests of one service/feature at a steady rate, written as the clock moves; a share of them fails."""

    def __init__(self, ingestor, per_minute: float, service="svc", feature="chat"):
        self.ingestor, self.per_minute, self.service, self.feature = ingestor, per_minute, service, feature
        self.sent, self.failed, self.n = 0.0, 0.0, 0

    def run(self, lo: dt.datetime, hi: dt.datetime, fail: float = 0.0) -> None:
        events, t = [], lo
        step = dt.timedelta(seconds=60 / self.per_minute)
        while t < hi:
            self.failed += fail
            failing = self.failed >= 1
            self.failed -= 1 if failing else 0
            events.append({"request_id": f"{self.feature}-{self.n}", "ts": t.isoformat(), "service": self.service,
                           "feature": self.feature, "model": "m", "status": "error" if failing else "ok",
                           "latency_ms": 300.0})
            self.n += 1
            t += step
        if events:
            assert self.ingestor.ingest("requests", events).rejected == 0


def ticks_until_page(engine, clock, hook, traffic: Traffic, fail: float, limit: int, alertname="HighErrorRate"):
    """Failures start now; each tick the tick's requests land, then the engine evaluates. The ticks it
    took for the page to reach the receiver, or None."""
    for n in range(1, limit + 1):
        traffic.run(clock.now(), clock.now() + TICK, fail)
        clock.advance(TICK)
        assert engine.run().status == "ok"
        if any(p["status"] == "firing" and p["groupLabels"].get("alertname") == alertname for p in hook.take()):
            return n
    return None


def test_a_burst_pages_within_two_ticks_of_its_first_failure(setup, clock, hook):
    engine, ingest = setup(rules=None)
    engine.rules = [r for r in engine.rules if r.name == "HighErrorRate"]
    for r in engine.rules:
        r.for_ = dt.timedelta(0)
    traffic = Traffic(ingest, per_minute=120)  # 2 requests a second
    traffic.run(T0 - dt.timedelta(minutes=10), T0)  # ten healthy minutes before
    assert engine.run().status == "ok" and hook.take() == []
    # The live 5m window sees the failures of the tick they land in: a page one tick later at most.
    assert ticks_until_page(engine, clock, hook, traffic, fail=1.0, limit=8) <= 2


def test_the_shipped_defaults_page_within_two_minutes(setup, clock, hook):
    engine, ingest = setup(rules=None, group_wait="30s")
    traffic = Traffic(ingest, per_minute=120)
    traffic.run(T0 - dt.timedelta(minutes=10), T0)
    engine.run()
    ticks = ticks_until_page(engine, clock, hook, traffic, fail=1.0, limit=20)
    assert ticks is not None and ticks * TICK <= dt.timedelta(minutes=2)  # for: 1m, group_wait: 30s


def test_slo_page_for_a_total_outage_within_the_workbooks_detection_time(setup, clock, hook):
    slo = {"name": "chat-availability", "service": "svc", "feature": "chat", "objective": 99.9, "sli": "availability"}
    engine, ingest = setup(rules=[], slos=[slo])
    engine.rules = [r for r in engine.rules if r.severity == "page"]
    traffic = Traffic(ingest, per_minute=120)
    # Six healthy hours: with less, the 6x/6h tier would page on less than its window, before 1h/5m's 14.4x.
    traffic.run(T0 - dt.timedelta(hours=6), T0)
    engine.run()
    ticks = ticks_until_page(engine, clock, hook, traffic, fail=1.0, limit=12, alertname="SLOBurnRate")
    # 14.4x over 1h needs 1.44% of an hour's requests failing: 52 s at a steady rate; then within a tick.
    assert ticks is not None and ticks * TICK <= dt.timedelta(seconds=52 + 30)
    assert ticks * TICK >= dt.timedelta(seconds=45)  # not before the hour's error ratio could be over 1.44%


@pytest.mark.parametrize("per_minute, fail, minutes, within", [
    (3, 0.4, 15, 5),        # a low-traffic feature failing 40% for 15 minutes: pages within 5 minutes
    (3, 0.2 / 3, 10, None),  # 2 failures in 10 minutes at that rate: never
    (3000, 0.06, 10, 8),    # 50 requests a second at 6%: pages as ever (once 5/6 of the 5m window is failing)
])
def test_any_traffic(setup, clock, hook, per_minute, fail, minutes, within):
    engine, ingest = setup(rules=None, group_wait="30s")  # the shipped HighErrorRate rule and route
    engine.rules = [r for r in engine.rules if r.name == "HighErrorRate"]
    traffic = Traffic(ingest, per_minute=per_minute)
    traffic.run(T0 - dt.timedelta(minutes=10), T0)
    engine.run()
    ticks = ticks_until_page(engine, clock, hook, traffic, fail=fail, limit=minutes * 4)
    if within is None:
        assert ticks is None and traffic.n > 30 + 29  # it ran all 10 minutes, 2 of them failures
    else:
        assert ticks is not None and ticks * TICK <= dt.timedelta(minutes=within)


def test_traffic_stopped_pages_and_resolves_when_traffic_returns(setup, clock, hook):
    engine, ingest = setup(rules=[], system={"traffic_stopped_after": "10m",
                                             "traffic_stopped": [{"service": "batch", "enabled": False}]})
    svc = Traffic(ingest, per_minute=2)
    svc.run(T0 - dt.timedelta(hours=1), T0)
    Traffic(ingest, per_minute=2, service="batch", feature="nightly").run(T0 - dt.timedelta(hours=1), T0)
    Traffic(ingest, per_minute=0.5, service="rare", feature="x").run(T0 - dt.timedelta(hours=1), T0)
    fired_at = None
    for _ in range(60):  # silence for 15 minutes
        clock.advance(TICK)
        engine.run()
        for p in hook.take():
            if p["status"] == "firing":
                assert p["groupLabels"]["alertname"] == "TrafficStopped" and p["groupLabels"]["service"] == "svc"
                fired_at = fired_at or clock.now()
    assert fired_at is not None and dt.timedelta(minutes=10) <= fired_at - T0 <= dt.timedelta(minutes=11, seconds=15)
    svc.run(clock.now(), clock.now() + dt.timedelta(minutes=1))  # new ids: a replay would not count
    clock.advance(TICK)
    engine.run()
    clock.advance(dt.timedelta(minutes=1))
    engine.run()
    assert [p["status"] for p in hook.take()] == ["resolved"]


def test_nlpmon_watches_itself(setup, clock, hook):
    engine, ingest = setup(rules=[], system={"ingest_reject_min": 5},
                           receivers=[{"name": "hook", "webhook": {"url": hook.url}},
                                      {"name": "gone", "webhook": {"url": "http://127.0.0.1:9/x"}}])
    engine.evaluator.job_intervals = {"sli": dt.timedelta(minutes=1)}
    # A job that last completed 4 intervals ago: stalled.
    run = RunResult("sli", T0, T0, run_id=__import__("uuid").uuid4())
    job_runs.record(engine.store, run, T0 - dt.timedelta(minutes=4))
    # Half of the rows sent in the last minutes rejected.
    good = [{"request_id": f"g{i}", "ts": T0.isoformat(), "service": "svc", "feature": "f", "model": "m",
             "status": "ok", "latency_ms": 1.0} for i in range(10)]
    ingest.ingest("requests", good + [{"request_id": f"b{i}", "ts": "yesterday"} for i in range(10)])
    # A notification that failed for good.
    engine.outbox.enqueue("n1", "{}:{}", "gone", "firing", {"x": 1})
    engine.store.command("ALTER TABLE notification_outbox UPDATE status = 'failed' WHERE id = 'n1' "
                         "SETTINGS mutations_sync = 2")
    for _ in range(24):
        clock.advance(TICK)
        engine.run()
    firing = {r[0]["alertname"]: r[0] for r in engine.store.query(
        "SELECT labels FROM alert_state FINAL WHERE state = 'firing'")}
    assert firing["JobStalled"]["job"] == "sli"
    assert "IngestRejectRateHigh" in firing
    assert firing["NotificationsUndeliverable"]["receiver"] == "gone"
    assert firing["Watchdog"]["severity"] == "none"
    # A successful run ends the stall.
    job_runs.record(engine.store, RunResult("sli", clock.now(), clock.now(), run_id=__import__("uuid").uuid4()),
                    clock.now())
    clock.advance(TICK)
    engine.run()
    assert not engine.store.query("SELECT 1 FROM alert_state FINAL WHERE state = 'firing' "
                                  "AND labels['alertname'] = 'JobStalled'")


def test_watchdog_goes_only_to_its_receiver_every_interval(setup, clock, hook):
    with Recorder() as switch:
        engine, ingest = setup(rules=[], system={"watchdog_receiver": "switch", "watchdog_interval": "2m"},
                               receivers=[{"name": "hook", "webhook": {"url": hook.url}},
                                          {"name": "switch", "webhook": {"url": switch.url}}])
        for _ in range(4 * 7):  # 7 minutes
            clock.advance(TICK)
            engine.run()
        beats = switch.take()
        assert len(beats) == 4 and all(b["groupLabels"] == {"alertname": "Watchdog"} for b in beats)
        assert [p for p in hook.take() if p["groupLabels"].get("alertname") == "Watchdog"] == []
