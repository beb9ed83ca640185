"""Once per incident: two days of demo traffic through the real ingest path and jobs, then the alert engine
run (evaluate, dispatch, deliver) at the times the demo replays, to a real loopback webhook. Every
injected incident pages or tickets once and resolves once; nothing else fires; no alert flaps."""
from __future__ import annotations

import collections
import datetime as dt
from pathlib import Path

import yaml

from alerts.engine import AlertEngine
from monitor import demo
from monitor.app import create_app
from monitor.demo.load import replay_times
from monitor.foundation.tables import alert_history
from monitor.scheduler import build_jobs
from tests.loopback import Recorder

END = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
DAYS, RPS = 2.0, 0.3
SLOS = yaml.safe_load((Path(__file__).parent.parent / "monitor.yaml").read_text())["slos"]
# The alert each injected incident must raise (alertname, service), by incident name.
EXPECTED = {"error burst": ("HighErrorRate", "support-bot"), "cost spike": ("CostPerOutcomeHigh", "copilot"),
            "latency regression after prompt change": ("HighLatencyP95", "copilot")}


def _ingest(ingestor) -> None:
    batch: dict[str, list] = collections.defaultdict(list)
    for kind, event in demo.generate(DAYS, RPS, END, 7):
        batch[kind].append(event)
        if len(batch[kind]) == 5000:
            assert ingestor.ingest(kind, batch.pop(kind)).rejected == 0
    for kind, events in batch.items():
        assert ingestor.ingest(kind, events).rejected == 0


def test_each_demo_incident_notifies_once_and_resolves_once(make_config, make_store, clock):
    with Recorder() as hook:
        cfg = make_config(slos=SLOS, drift={"enabled": False}, grounding={"enabled": False}, alerts={
            "receivers": [{"name": "hook", "webhook": {"url": hook.url, "send_resolved": True}}],
            # The shipped route (monitor.yaml).
            "route": {"receiver": "hook", "group_by": ["alertname", "service"], "group_wait": "30s",
                      "group_interval": "5m", "repeat_interval": "4h"}})
        store = make_store(cfg)
        clock.set(END)
        _ingest(create_app(cfg, store, clock).extensions["nlpmon"].ingestor)
        jobs = build_jobs(store, cfg, clock)
        for name in ("sli", "cost"):  # the points CostPerOutcomeHigh reads (and its volumes)
            assert jobs[name].run(since=END - dt.timedelta(days=DAYS)).status == "ok"

        engine = AlertEngine(store, cfg, clock)
        engine.rules = [r for r in engine.rules if r.name != "Watchdog"]  # always firing, by design
        sent: dict[tuple, list[str]] = collections.defaultdict(list)
        for t in replay_times(DAYS, END):
            clock.set(t)
            engine.run(t)
            for payload in hook.take():
                group = (payload["groupLabels"]["alertname"], payload["groupLabels"].get("service"))
                sent[group].append(payload["status"])

    # Each notification group: firing (reminders after repeat_interval allowed), then at most one resolve.
    for group, statuses in sent.items():
        first_resolve = statuses.index("resolved") if "resolved" in statuses else len(statuses)
        assert statuses[0] == "firing" and "firing" not in statuses[first_resolve:], (group, statuses)
        assert statuses.count("resolved") <= 1, (group, statuses)

    for inc in demo.incidents(DAYS, END):
        if inc["name"] in EXPECTED:
            assert sent.get(EXPECTED[inc["name"]], [])[-1:] == ["resolved"], (inc["name"], dict(sent))
    # Nothing fired that no incident explains.
    incident_services = {inc["service"] for inc in demo.incidents(DAYS, END)}
    assert {service for _, service in sent} <= incident_services | {None}, dict(sent)

    # No alert instance fires twice (no flaps: no resolve followed by a new firing).
    fires = collections.Counter(
        h.fingerprint for h in alert_history.between(store, END - dt.timedelta(days=DAYS), END + dt.timedelta(1))
        if h.to_state == "firing" and h.from_state != "firing")
    assert fires and max(fires.values()) == 1, fires

    # The demo's replay reads each metric once per stretch of times (ReplayPoints) instead of once per
    # evaluation, as the runs above did: the same transitions at the same times with the same values.
    def history():
        return sorted((h.ts, h.fingerprint, h.rule, h.from_state, h.to_state, h.value) for h in alert_history.between(
            store, END - dt.timedelta(days=DAYS), END + dt.timedelta(1)))
    as_run = history()
    assert "CostPerOutcomeHigh" in {h[2] for h in as_run}  # a rule on metric points (and their volumes)
    assert engine.replay(replay_times(DAYS, END)) == len(as_run)
    assert history() == as_run


def test_a_replay_cut_off_and_resumed_writes_each_transition_once(make_config, make_store, clock):
    """The demo's alert history after a kill mid-replay and a resumed load: as a whole replay writes it."""
    cfg = make_config(slos=SLOS, drift={"enabled": False}, grounding={"enabled": False})
    store = make_store(cfg)
    clock.set(END)
    _ingest(create_app(cfg, store, clock).extensions["nlpmon"].ingestor)  # the error burst's rules read rollups
    burst = next(i for i in demo.incidents(DAYS, END) if i["name"] == "error burst")
    times = [t for t in replay_times(DAYS, END) if t <= burst["end"] + dt.timedelta(minutes=40)]  # fires, resolves
    cut = AlertEngine(store, cfg, clock)
    assert cut.replay(times[: len(times) * 2 // 3]) > 0  # killed two thirds of the way through
    cut.evaluator.evaluate(times[len(times) * 2 // 3])   # and between a step's state and its history rows
    store.command("DELETE FROM alert_history WHERE ts = {t:DateTime64(3, 'UTC')}", {"t": times[len(times) * 2 // 3]})

    def history():
        return [tuple(sorted((k, str(v)) for k, v in vars(h).items()))
                for h in alert_history.between(store, times[0], times[-1] + dt.timedelta(seconds=1))]
    resumed = AlertEngine(store, cfg, clock).replay(times)
    after_resume = history()
    assert len(after_resume) == resumed and len(set(after_resume)) == len(after_resume)
    assert {("HighErrorRate", "firing"), ("HighErrorRate", "inactive")} <= {
        (h.rule, h.to_state) for h in alert_history.between(store, times[0], END)}
