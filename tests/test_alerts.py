"""The alert engine on a virtual clock, with real loopback receivers.

Assertions say which payloads arrived between two moments; the clock moves in
evaluation ticks (15 s), nothing sleeps.
"""
from __future__ import annotations

import datetime as dt
from fractions import Fraction

import pytest

from alerts.engine import AlertEngine
from alerts.rules import burn_rate_threshold, load_rules
from monitor.app import create_app
from monitor.foundation.config import ConfigError
from tests.loopback import Recorder

T0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc)
TICK = dt.timedelta(seconds=15)
RULE = {"name": "HighErrorRate", "metric": "error_rate", "source": "points", "window": "1m", "by": ["service", "feature"],
        "op": ">", "threshold": 0.1, "for": "1m", "over": "2m", "labels": {"severity": "page"},
        "annotations": {"summary": "{{ $labels.service }}/{{ $labels.feature }} errors {{ $value }}",
                        "runbook_url": "https://runbooks.example/errors"}}


@pytest.fixture
def hook():
    with Recorder() as r:
        yield r


@pytest.fixture
def make_engine(make_config, make_store, clock, hook):
    state = {}

    def make(rules=(RULE,), send_resolved=True, route=None, inhibit=(), receivers=None, fresh_store=True, slos=(),
             **alerts):
        if fresh_store or "store" not in state:
            cfg = make_config(slos=list(slos), alerts={
                "default_rules": False, "slo_rules": False, "rules": list(rules),
                "receivers": receivers or [{"name": "hook", "webhook": {"url": hook.url, "send_resolved": send_resolved}}],
                "route": route or {"receiver": "hook", "group_by": ["alertname", "service"], "group_wait": "30s",
                                   "group_interval": "2m", "repeat_interval": "1h"},
                "inhibit_rules": list(inhibit), "delivery": {"backoff_initial": "10s", "backoff_max": "1m"},
                # The system rules (Watchdog, TrafficStopped...) have tests of their own: test_alerts_live.py.
                "system": {"enabled": False}, **alerts})
            state["config"], state["store"] = cfg, make_store(cfg)
        clock.set(T0)
        return AlertEngine(state["store"], state["config"], clock)
    return make


def put(store, ts, value, metric="error_rate", window="1m", **labels):
    labels = labels or {"service": "svc", "feature": "chat"}
    store.insert("metric_points", [[ts, window, metric, labels, float(value), ts]],
                 ["ts", "window", "metric", "labels", "value", "computed_at"])


def run_for(engine, clock, duration, values=None):
    """Advance tick by tick; before each evaluation write the series' value for the minute that just closed."""
    end = clock.now() + duration
    while clock.now() < end:
        clock.advance(TICK)
        now = clock.now()
        if values is not None and now.second == 0:
            for labels, value in values(now).items():
                put(engine.store, now, value, **dict(labels))
        result = engine.run()
        assert result.status == "ok", result.error


CHAT = (("service", "svc"), ("feature", "chat"))
SEARCH = (("service", "svc"), ("feature", "search"))


def test_for_suppresses_a_short_blip(make_engine, clock, hook):
    engine = make_engine()
    run_for(engine, clock, dt.timedelta(minutes=1), lambda t: {CHAT: 0.5})  # one bad minute: pending, not firing
    run_for(engine, clock, dt.timedelta(minutes=5), lambda t: {CHAT: 0.0})
    assert hook.take() == []
    states = [(r[0], r[1]) for r in engine.store.query("SELECT from_state, to_state FROM alert_history ORDER BY ts")]
    assert states == [("inactive", "pending"), ("pending", "inactive")]


def test_fires_once_repeats_and_resolves_once(make_engine, clock, hook):
    engine = make_engine(route={"receiver": "hook", "group_by": ["alertname", "service"], "group_wait": "30s",
                                "group_interval": "2m", "repeat_interval": "20m"})
    run_for(engine, clock, dt.timedelta(minutes=10), lambda t: {CHAT: 0.5})
    (page,) = hook.take()  # deduplicated across 40 evaluations
    assert page["version"] == "4" and page["status"] == "firing" and page["receiver"] == "hook"
    assert page["groupLabels"] == {"alertname": "HighErrorRate", "service": "svc"}
    (alert,) = page["alerts"]
    assert alert["labels"] == {"alertname": "HighErrorRate", "service": "svc", "feature": "chat", "severity": "page"}
    assert alert["annotations"]["summary"] == "svc/chat errors 0.5" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    run_for(engine, clock, dt.timedelta(minutes=15), lambda t: {CHAT: 0.5})
    repeat = hook.take()
    assert len(repeat) == 1 and repeat[0]["status"] == "firing"  # repeat_interval (20m) after the first page
    run_for(engine, clock, dt.timedelta(minutes=10), lambda t: {CHAT: 0.0})
    (resolved,) = hook.take()
    assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    run_for(engine, clock, dt.timedelta(minutes=30), lambda t: {CHAT: 0.0})
    assert hook.take() == []


def test_grouping_and_a_late_joiner(make_engine, clock, hook):
    engine = make_engine()
    run_for(engine, clock, dt.timedelta(minutes=3), lambda t: {CHAT: 0.5, SEARCH: 0.5})
    (first,) = hook.take()
    assert sorted(a["labels"]["feature"] for a in first["alerts"]) == ["chat", "search"]
    third = (("service", "svc"), ("feature", "draft"))
    run_for(engine, clock, dt.timedelta(minutes=5), lambda t: {CHAT: 0.5, SEARCH: 0.5, third: 0.9})
    (joined,) = hook.take()
    assert sorted(a["labels"]["feature"] for a in joined["alerts"]) == ["chat", "draft", "search"]
    assert joined["groupKey"] == first["groupKey"]


def test_fire_and_clear_inside_group_wait_is_never_sent(make_engine, clock, hook):
    engine = make_engine(rules=[{**RULE, "for": "0s"}],
                         route={"receiver": "hook", "group_by": ["alertname"], "group_wait": "5m"})
    run_for(engine, clock, dt.timedelta(minutes=1), lambda t: {CHAT: 0.5})
    run_for(engine, clock, dt.timedelta(minutes=15), lambda t: {CHAT: 0.0})
    assert hook.take() == []


def test_send_resolved_false(make_engine, clock, hook):
    engine = make_engine(send_resolved=False)
    run_for(engine, clock, dt.timedelta(minutes=5), lambda t: {CHAT: 0.5})
    assert len(hook.take()) == 1
    run_for(engine, clock, dt.timedelta(minutes=10), lambda t: {CHAT: 0.0})
    assert hook.take() == []


def test_silence_suppresses_then_expires(make_engine, clock, hook):
    from alerts import silence as silences
    engine = make_engine()
    silences.create(engine.store, clock, ["feature=chat"], T0 + dt.timedelta(minutes=10), "ana", "deploying a fix")
    run_for(engine, clock, dt.timedelta(minutes=9), lambda t: {CHAT: 0.5})
    assert hook.take() == []
    assert engine.store.scalar("SELECT countIf(silenced) FROM alert_history WHERE to_state = 'firing'") == 1
    run_for(engine, clock, dt.timedelta(minutes=3), lambda t: {CHAT: 0.5})
    assert len(hook.take()) == 1


def test_inhibition(make_engine, clock, hook):
    ticket = {**RULE, "name": "ManyErrors", "threshold": 0.05, "labels": {"severity": "ticket"}}
    engine = make_engine(rules=[RULE, ticket], inhibit=[{"source_matchers": ["severity=page"],
                                                         "target_matchers": ["severity=ticket"],
                                                         "equal": ["service"]}],
                         route={"receiver": "hook", "group_by": ["alertname"], "group_wait": "30s"})
    run_for(engine, clock, dt.timedelta(minutes=5), lambda t: {CHAT: 0.5})
    sent = hook.take()
    assert [p["groupLabels"]["alertname"] for p in sent] == ["HighErrorRate"]


def test_receiver_500_then_200_delivers_once_and_400_is_not_retried(make_engine, clock, hook):
    engine = make_engine()
    hook.statuses = [500, 503]
    run_for(engine, clock, dt.timedelta(minutes=5), lambda t: {CHAT: 0.5})
    assert len(hook.take()) == 1 and hook.refused == 2
    hook.statuses = [400]
    run_for(engine, clock, dt.timedelta(minutes=5), lambda t: {CHAT: 0.0})
    assert hook.take() == [] and hook.refused == 3
    failed = engine.store.query("SELECT status, last_error FROM notification_outbox FINAL WHERE alert_status = 'resolved'")
    assert failed[0][0] == "failed" and "400" in failed[0][1]


def test_restart_while_firing(make_engine, clock, hook):
    engine = make_engine()
    run_for(engine, clock, dt.timedelta(minutes=5), lambda t: {CHAT: 0.5})
    assert len(hook.take()) == 1
    at = clock.now()
    restarted = make_engine(fresh_store=False)  # a new process: same store, nothing in memory
    clock.set(at)
    run_for(restarted, clock, dt.timedelta(minutes=30), lambda t: {CHAT: 0.5})
    assert hook.take() == []  # no re-page before repeat_interval
    # Down for 20 minutes while the errors stop; the resolve is delivered once after the restart.
    for minute in range(1, 21):
        put(restarted.store, clock.now() + dt.timedelta(minutes=minute), 0.0, service="svc", feature="chat")
    clock.advance(dt.timedelta(minutes=20))
    again = make_engine(fresh_store=False)
    clock.set(at + dt.timedelta(minutes=50))
    run_for(again, clock, dt.timedelta(minutes=10), lambda t: {CHAT: 0.0})
    (resolved,) = hook.take()
    assert resolved["status"] == "resolved"


def test_query_error_keeps_a_firing_alert_firing(make_engine, clock, hook):
    engine = make_engine()
    run_for(engine, clock, dt.timedelta(minutes=5), lambda t: {CHAT: 0.5})
    assert len(hook.take()) == 1
    engine.store.command("RENAME TABLE metric_points TO metric_points_away")
    try:
        for _ in range(8):
            clock.advance(TICK)
            engine.run()
    finally:
        engine.store.command("RENAME TABLE metric_points_away TO metric_points")
    state = engine.store.query("SELECT state, health FROM alert_state FINAL")
    assert state == [("firing", "error")]
    assert hook.take() == []
    reasons = [r[0] for r in engine.store.query("SELECT reason FROM alert_history WHERE reason LIKE 'error%'")]
    assert len(reasons) == 1


def test_burn_rate_thresholds_for_99_9_over_30_days(make_engine, clock, hook):
    thirty = dt.timedelta(days=30)
    assert [burn_rate_threshold(s, thirty, w) for s, w in ((Fraction(2, 100), "1h"), (Fraction(5, 100), "6h"),
                                                          (Fraction(10, 100), "1d"), (Fraction(10, 100), "3d"))] \
        == [Fraction(72, 5), 6, 3, 1]
    slos = [{"name": f"{f}-availability", "service": "svc", "feature": f, "objective": 99.9, "sli": "availability"}
            for f in ("at", "split", "above")]
    engine = make_engine(rules=[], slo_rules=True, slos=slos,
                         route={"receiver": "hook", "group_by": ["alertname", "slo", "severity"],
                                "group_wait": "0s"})
    page = [r for r in engine.rules if getattr(r, "severity", "") == "page"][0]
    assert [(t.long_window, t.short_window, t.threshold) for t in page.tiers] == [
        ("1h", "5m", Fraction(72, 5)), ("6h", "30m", 6)] and page.labels["severity"] == "page"
    clock.advance(TICK)
    now = clock.now()
    ingest = create_app(engine.config, engine.store, clock).extensions["nlpmon"].ingestor

    def requests(feature, n, failed, lo, hi):
        ingest.ingest("requests", [{
            "request_id": f"{feature}-{lo:%H%M}-{i}", "ts": (lo + (hi - lo) * i / n).isoformat(), "service": "svc",
            "feature": feature, "model": "m", "status": "error" if i < failed else "ok", "latency_ms": 100.0}
            for i in range(n)])
    # Burn rates are live: the last hour and the last 5 minutes of requests as the rule evaluates.
    recent, earlier = (now - dt.timedelta(minutes=3), now), (now - dt.timedelta(minutes=50), now - dt.timedelta(minutes=10))
    # Five healthy hours before the last one, so the 6h tier (6x) stays under its threshold: the page is 1h/5m's.
    for feature in ("at", "split", "above"):
        for hour in range(6, 1, -1):  # 10,000 an hour from 6h to 62 minutes ago
            requests(feature, 10_000, 0, now - dt.timedelta(hours=hour), now - dt.timedelta(hours=hour - 1, minutes=2))
    requests("at", 10_000, 144, *recent)          # 1.44% errors: 14.4x exactly in both windows, not above
    requests("split", 9_000, 124, *earlier)       # the hour at 14.4x, the last 5 minutes at 20x
    requests("split", 1_000, 20, *recent)
    requests("above", 10_000, 145, *recent)       # 14.5x in both
    engine.run()
    # The ticket (3x over 1d, 1x over 3d) waits an hour (for: 1h); the page:
    pages = [s for s in hook.take() if s["alerts"][0]["labels"]["severity"] == "page"]
    assert len(pages) == 1 and pages[0]["alerts"][0]["labels"]["slo"] == "above-availability"


def test_rules_are_validated_with_the_rule_named(make_config):
    with pytest.raises(ConfigError, match=r"HighErrorRate.*labels.severity|severity"):
        make_config(alerts={"rules": [{**RULE, "labels": {}}]})
    cfg = make_config(alerts={"rules": [{**RULE, "metric": "error_rat"}]})
    with pytest.raises(ConfigError, match=r"alerts.rules\[HighErrorRate\].metric: unknown metric 'error_rat'"):
        load_rules(cfg)
    cfg = make_config(alerts={"rules": [{**RULE, "annotations": {"summary": "{{ $valu }}"}}]})
    with pytest.raises(ConfigError, match=r"annotations.summary: unknown template"):
        load_rules(cfg)
    names = {getattr(r, "name") for r in load_rules(make_config())}
    assert {"HighErrorRate", "HighLatencyP95", "SlowTimeToFirstToken", "CostPerOutcomeHigh", "EmbeddingDrift",
            "HallucinationRateHigh"} <= names


def test_api_alerts_history_and_silences(make_engine, clock, hook):
    from monitor.app import create_app
    from tests.helpers import auth
    engine = make_engine()
    run_for(engine, clock, dt.timedelta(minutes=3), lambda t: {CHAT: 0.5})
    app = create_app(engine.config, engine.store, clock)
    ks = app.extensions["nlpmon"].keys
    read, admin = ks.create("r", ["read"])[1], ks.create("a", ["admin"])[1]
    c = app.test_client()
    assert c.get("/v1/alerts").status_code == 401
    (alert,) = c.get("/v1/alerts", headers=auth(read)).get_json()["alerts"]
    assert alert["state"] == "firing" and alert["value"] == 0.5
    assert alert["since"].startswith("2026-11-24T10:02:00")  # with the fine clock's milliseconds too
    history = c.get("/v1/alerts/history?from=2026-11-24T09:00:00Z", headers=auth(read)).get_json()["history"]
    assert [(h["from"], h["to"]) for h in history] == [("inactive", "pending"), ("pending", "firing")]
    body = {"matchers": ["service=svc", "feature=~ch.*"], "duration": "2h", "comment": "known incident"}
    assert c.post("/v1/silences", json=body, headers=auth(read)).status_code == 403
    bad = c.post("/v1/silences", json={**body, "matchers": ["service"]}, headers=auth(admin))
    assert bad.status_code == 400 and bad.get_json()["message"].startswith("matchers:")
    assert c.post("/v1/silences", json={**body, "comment": ""}, headers=auth(admin)).get_json()["message"] \
        .startswith("comment:")
    created = c.post("/v1/silences", json=body, headers=auth(admin))
    assert created.status_code == 201 and created.get_json()["status"] == "active"
    sid = created.get_json()["id"]
    listed = c.get("/v1/silences", headers=auth(read)).get_json()["silences"]
    assert [s["id"] for s in listed] == [sid] and listed[0]["matchers"] == ['service="svc"', 'feature=~"ch.*"']
    assert c.delete(f"/v1/silences/{sid}", headers=auth(admin)).get_json()["status"] == "expired"
    assert c.delete("/v1/silences/nope", headers=auth(admin)).status_code == 404


def test_cli_silence_alerts_list_and_test_receiver(make_engine, clock, hook, chdb_dir, tmp_path):
    from click.testing import CliRunner

    from monitor.cli import cli
    engine = make_engine()
    run_for(engine, clock, dt.timedelta(minutes=3), lambda t: {CHAT: 0.5})
    hook.take()
    cfg = engine.config
    (tmp_path / "monitor.yaml").write_text(
        "alerts:\n  receivers: [{name: hook, webhook: {url: '%s'}}]\n  route: {receiver: hook}\n" % hook.url)
    env = {"MONITOR_CONFIG": str(tmp_path / "monitor.yaml"), "MONITOR_CLICKHOUSE_URL": cfg.clickhouse.url,
           "MONITOR_CLICKHOUSE_DATABASE": cfg.clickhouse.database}
    runner = CliRunner()
    listed = runner.invoke(cli, ["alerts", "list"], env=env)
    assert listed.exit_code == 0 and "firing" in listed.output and "alertname=HighErrorRate" in listed.output
    added = runner.invoke(cli, ["silence", "add", "--matcher", "service=svc", "--duration", "2h", "--comment", "fix"],
                          env=env)
    assert added.exit_code == 0, added.output
    assert engine.store.scalar("SELECT count() FROM silences") == 1
    assert runner.invoke(cli, ["silence", "add", "--matcher", "service=svc"], env=env).exit_code == 1
    sent = runner.invoke(cli, ["alerts", "test-receiver", "hook"], env=env)
    assert sent.exit_code == 0, sent.output
    (test,) = hook.take()
    assert test["version"] == "4"
    assert runner.invoke(cli, ["alerts", "test-receiver", "nope"], env=env).exit_code == 2


def test_incident_kpis(make_engine, clock, hook):
    from jobs.incident_kpis import IncidentKpiJob
    engine = make_engine()
    run_for(engine, clock, dt.timedelta(minutes=6), lambda t: {CHAT: 0.5})  # fires at 10:02
    run_for(engine, clock, dt.timedelta(minutes=6), lambda t: {CHAT: 0.0})  # resolves at 10:07
    assert [p["status"] for p in hook.take()] == ["firing", "resolved"]
    clock.set(T0 + dt.timedelta(hours=1, minutes=1))
    assert IncidentKpiJob(engine.store, engine.config, clock, dt.timedelta(hours=1)).run().status == "ok"

    def kpi(metric, **labels):
        return engine.store.scalar(
            "SELECT argMax(value, computed_at) FROM metric_points WHERE metric = {m:String} AND window = '7d' "
            "AND ts = {ts:DateTime64(3, 'UTC')} AND labels = mapFromArrays({k:Array(String)}, {v:Array(String)})",
            {"m": metric, "ts": T0 + dt.timedelta(hours=1), "k": list(labels), "v": list(labels.values())})
    assert kpi("incidents") == 1 and kpi("incidents", severity="page") == 1
    fired, resolved = engine.store.query("SELECT ts FROM alert_history WHERE (from_state, to_state) IN "
                                         "(('pending', 'firing'), ('firing', 'inactive')) ORDER BY ts")
    assert kpi("incident_mttr_seconds", severity="page") == pytest.approx((resolved[0] - fired[0]).total_seconds())
    assert kpi("alert_notifications_per_incident") == 2


def test_demo_error_burst_pages_through_a_webhook_and_resolves(make_config, make_store, clock, hook):
    """The demo's injected error burst, through ingest, the sli job and the default rules."""
    from jobs.sli import SliJob
    from monitor import demo
    from monitor.app import create_app
    end = T0
    cfg = make_config(alerts={"receivers": [{"name": "hook", "webhook": {"url": hook.url}}],
                              "route": {"receiver": "hook", "group_by": ["alertname", "service", "feature"],
                                        "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}},
                      jobs={"catchup_max": "1d"})
    store = make_store(cfg)
    clock.set(end)
    ingestor = create_app(cfg, store, clock).extensions["nlpmon"].ingestor
    batches = {"requests": [], "feedback": []}
    for kind, event in demo.generate(0.1, 2.0, end, seed=3):
        batches[kind].append(event)
    for kind, events in batches.items():
        assert ingestor.ingest(kind, events).rejected == 0
    start = end - dt.timedelta(days=0.1)
    assert SliJob(store, cfg, clock, dt.timedelta(minutes=1)).run(now=end, since=start).status == "ok"
    burst = next(i for i in demo.incidents(0.1, end) if i["name"] == "error burst")
    engine = AlertEngine(store, cfg, clock)
    clock.set(burst["start"] - dt.timedelta(minutes=5))
    while clock.now() < burst["end"] + dt.timedelta(minutes=20):
        clock.advance(dt.timedelta(minutes=1))
        assert engine.run().status == "ok"
    group = {"alertname": "HighErrorRate", "service": "support-bot", "feature": "answer"}
    pages = [p for p in hook.take() if p["groupLabels"] == group]
    assert [p["status"] for p in pages] == ["firing", "resolved"]
    fired = dt.datetime.fromisoformat(pages[0]["alerts"][0]["startsAt"].replace("Z", "+00:00"))
    assert burst["start"] <= fired <= burst["end"] + dt.timedelta(minutes=5)


def test_crash_between_deciding_and_sending_neither_loses_nor_duplicates(make_engine, clock, hook):
    engine = make_engine()
    run_for(engine, clock, dt.timedelta(minutes=2), lambda t: {CHAT: 0.5})
    assert hook.take() == []
    # The process dies after deciding (outbox row written) and before writing the log or sending.
    clock.advance(dt.timedelta(minutes=1))
    put(engine.store, clock.now(), 0.5, service="svc", feature="chat")
    engine.evaluator.evaluate(clock.now())

    def crash(*args, **kwargs):
        raise SystemExit("killed")
    engine.dispatcher._write_log = crash
    with pytest.raises(SystemExit):
        engine.dispatcher.run(clock.now())
    assert engine.store.scalar("SELECT count() FROM notification_outbox FINAL WHERE status = 'pending'") == 1
    assert hook.take() == []
    restarted = make_engine(fresh_store=False)
    clock.set(T0 + dt.timedelta(minutes=3))
    run_for(restarted, clock, dt.timedelta(minutes=3), lambda t: {CHAT: 0.5})
    assert len(hook.take()) == 1  # the same decision again: one row, one delivery
    assert restarted.store.scalar("SELECT count() FROM notification_outbox FINAL") == 1


@pytest.mark.parametrize("mode,state,health", [("keep", "firing", "nodata"), ("resolve", "inactive", "nodata")])
def test_nodata_handling(make_engine, clock, hook, mode, state, health):
    engine = make_engine(nodata=mode)
    run_for(engine, clock, dt.timedelta(minutes=5), lambda t: {CHAT: 0.5})
    assert len(hook.take()) == 1
    run_for(engine, clock, dt.timedelta(minutes=10))  # the series stops: no points at all
    assert engine.store.query("SELECT state, health FROM alert_state FINAL") == [(state, health)]
    sent = hook.take()
    assert [p["status"] for p in sent] == ([] if mode == "keep" else ["resolved"])
    reasons = [r[0] for r in engine.store.query("SELECT reason FROM alert_history WHERE reason LIKE 'no data%'")]
    assert len(reasons) == 1 and mode in reasons[0]


def test_rule_files(make_config, tmp_path):
    good = tmp_path / "team.yaml"
    good.write_text("rules:\n  - {name: TeamErrors, metric: error_rate, window: 5m, by: [service], threshold: 0.2,"
                    " labels: {severity: ticket}}\n")
    names = [r.name for r in load_rules(make_config(alerts={"rule_files": [str(good)], "default_rules": False,
                                                            "slo_rules": False, "system": {"enabled": False}}))]
    assert names == ["TeamErrors"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {name: Broken, metric: error_rate, threshold: high, labels: {severity: page}}\n")
    with pytest.raises(ConfigError, match=r"rule Broken .*bad.yaml: rules\[0\]\): threshold"):
        load_rules(make_config(alerts={"rule_files": [str(bad)]}))
    with pytest.raises(ConfigError, match="alerts.rule_files: cannot read"):
        load_rules(make_config(alerts={"rule_files": [str(tmp_path / "missing.yaml")]}))


def test_an_alert_of_a_removed_rule_resolves(make_engine, clock, hook):
    engine = make_engine()
    run_for(engine, clock, dt.timedelta(minutes=5), lambda t: {CHAT: 0.5})
    assert [p["status"] for p in hook.take()] == ["firing"]
    # The rule leaves the config (or an upgrade renames its id): its firing alert would never end otherwise.
    engine = make_engine(fresh_store=False)
    engine.rules = []
    clock.set(T0 + dt.timedelta(minutes=5))
    run_for(engine, clock, dt.timedelta(minutes=3))
    assert [p["status"] for p in hook.take()] == ["resolved"]
    [(reason,)] = engine.store.query("SELECT reason FROM alert_history WHERE to_state = 'inactive'")
    assert reason == "rule removed"


def test_a_hallucination_bound_from_a_handful_of_reviews_does_not_fire(make_engine, clock, hook):
    rule = {"name": "HallucinationRateHigh", "metric": "hallucination_rate_low", "window": "1d",
            "by": ["service", "feature"], "over": "2h", "op": ">", "threshold": 0.05, "min_reviews": 30,
            "labels": {"severity": "ticket"}}
    engine = make_engine(rules=[rule])
    # 1 of 3 reviewed answers hallucinated: the Wilson lower bound is 6%, past the threshold on 3 reviews.
    values = {"hallucination_rate_low": 0.0615, "hallucination_reviews": 3}

    def write(now):
        for metric, v in values.items():
            put(engine.store, now, v, metric=metric, window="1d")
        return {}
    run_for(engine, clock, dt.timedelta(minutes=3), write)
    assert hook.take() == [] and engine.store.query("SELECT count() FROM alert_state FINAL WHERE state = 'firing'") \
        == [(0,)]
    values.update(hallucination_rate_low=0.071, hallucination_reviews=120)  # 16 of 120: the same alarm, enough reviews
    run_for(engine, clock, dt.timedelta(minutes=3), write)
    clock.advance(dt.timedelta(minutes=1))
    engine.run()
    assert [p["status"] for p in hook.take()] == ["firing"]
    with pytest.raises(ConfigError, match=r"min_reviews: only for hallucination_rate"):
        load_rules(make_engine(rules=[{**RULE, "min_reviews": 5}]).config)
