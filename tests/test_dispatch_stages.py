"""The dispatcher's stages and the evaluator's step, each on its own, in memory: no store, milliseconds.

Routing is tested from YAML trees, as Alertmanager's ``dispatch/route_test.go`` does: a tree, then
label sets and the routes (receiver, group_by, timings) they must reach."""
from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
import yaml

from alerts.dispatch import decide, group_stage, intervals, mute_stage, payload_stage, route_stage
from alerts.evaluator import nodata, step
from alerts.inhibit import InhibitRule, Inhibitor
from alerts.notify import Receiver, receivers
from alerts.route import build_routes, group_key, match, watchdog_route
from alerts.silence import Silencer, selective
from monitor.foundation.config import Route, load_config
from monitor.foundation.matchers import Matcher, parse_all
from monitor.foundation.tables.alert_state import AlertInstance
from monitor.foundation.tables.notification_log import LogEntry
from monitor.foundation.tables.silences import SilenceRow

pytestmark = pytest.mark.fast
T0 = dt.datetime(2026, 11, 24, 10, 0, 0, 345_678, tzinfo=dt.timezone.utc)  # a real clock's microseconds
M = dt.timedelta(minutes=1)

TREE = yaml.safe_load("""
receiver: default
group_by: [alertname]
group_wait: 30s
group_interval: 5m
repeat_interval: 4h
routes:
  - matchers: [severity=page]
    receiver: pager
    group_by: [alertname, service]
    group_wait: 0s
    routes:
      - matchers: [service=~"billing|payments"]
        receiver: payments-pager
        repeat_interval: 1h
  - matchers: [team=search]
    receiver: search-slack
    continue: true
  - matchers: [team=search, severity=ticket]
    receiver: search-tickets
  - matchers: [team=search]
    receiver: search-rest
  - matchers: [alertname=Watchdog]
    receiver: should-not-get-it
""")


def tree():
    return build_routes(Route.model_validate(TREE))


@pytest.mark.parametrize("labels, expected", [
    # (receiver, group_by, group_wait, group_interval, repeat_interval) of each route reached, in order
    ({"alertname": "X"}, [("default", ("alertname",), "30s", "5m", "4h")]),
    ({"alertname": "X", "severity": "page", "service": "chat"},
     [("pager", ("alertname", "service"), "0s", "5m", "4h")]),
    ({"alertname": "X", "severity": "page", "service": "billing"},
     [("payments-pager", ("alertname", "service"), "0s", "5m", "1h")]),
    ({"alertname": "X", "severity": "page", "service": "billing-eu"},  # regexes match the whole value
     [("pager", ("alertname", "service"), "0s", "5m", "4h")]),
    ({"alertname": "X", "team": "search"},  # continue: on to the next sibling that matches
     [("search-slack", ("alertname",), "30s", "5m", "4h"), ("search-rest", ("alertname",), "30s", "5m", "4h")]),
    ({"alertname": "X", "team": "search", "severity": "ticket"},  # a match without continue stops there
     [("search-slack", ("alertname",), "30s", "5m", "4h"), ("search-tickets", ("alertname",), "30s", "5m", "4h")]),
    ({"alertname": "X", "team": "search", "severity": "page"},  # the first match without continue wins
     [("pager", ("alertname", "service"), "0s", "5m", "4h")]),
])
def test_routing_from_a_yaml_tree(labels, expected):
    def d(text):
        return dt.timedelta(seconds={"s": 1, "m": 60, "h": 3600}[text[-1]] * int(text[:-1]))
    got = [(n.receiver, n.group_by, n.group_wait, n.group_interval, n.repeat_interval) for n in match(tree(), labels)]
    assert got == [(r, g, d(w), d(i), d(p)) for r, g, w, i, p in expected]


def test_group_keys_hold_the_route_and_the_group_by_values():
    node = match(tree(), {"alertname": "HighErrorRate", "severity": "page", "service": "chat", "feature": "x"})[0]
    key, labels = group_key(node, {"alertname": "HighErrorRate", "severity": "page", "service": "chat"})
    assert key == '{}/0:{alertname="HighErrorRate",service="chat"}' and labels == {"alertname": "HighErrorRate",
                                                                                   "service": "chat"}
    assert group_key(node, {"alertname": "A"})[1] == {"alertname": "A", "service": ""}  # a missing label is empty


def alert(name="HighErrorRate", state="firing", fired=T0, resolved=None, **labels) -> AlertInstance:
    labels = {"alertname": name, "severity": "page", "service": "chat", **labels}
    fp = "fp-" + "-".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return AlertInstance(fp, name, labels, {"summary": "s"}, state, fired_at=fired, resolved_at=resolved,
                         value=0.5)


def test_the_watchdog_goes_only_to_its_own_route():
    system = SimpleNamespace(enabled=True, watchdog_receiver="deadman", watchdog_interval=5 * M)
    wd = alert("Watchdog", severity="none")
    routed = route_stage([wd, alert()], tree(), watchdog_route(system))
    assert [(a.rule, n.receiver) for a, n in routed] == [("Watchdog", "deadman"), ("HighErrorRate", "pager")]
    system.watchdog_receiver = None
    assert [a.rule for a, _ in route_stage([wd], tree(), watchdog_route(system))] == []


def test_inhibition_mutes_targets_with_equal_labels_and_never_the_source_itself():
    rules = [InhibitRule(tuple(parse_all(["severity=page"])), tuple(parse_all(["severity=ticket"])), ("service",))]
    page, ticket, other = alert(), alert("SLOBurnRate", severity="ticket"), alert("X", severity="ticket",
                                                                                    service="search")
    inhibitor = Inhibitor(rules, [page.labels, ticket.labels, other.labels])
    routed = route_stage([page, ticket, other], tree(), None)
    assert mute_stage(routed, inhibitor) == {ticket.fingerprint}
    # A rule whose source and target both match an alert does not let it mute itself.
    both = [InhibitRule(tuple(parse_all(["service=chat"])), tuple(parse_all(["service=chat"])), ())]
    assert mute_stage(route_stage([page], tree(), None), Inhibitor(both, [page.labels])) == set()


def test_silences_mute_firing_alerts_they_match_while_active():
    row = SilenceRow("s1", tuple(parse_all(["service=chat", 'severity=~"page|ticket"'])), T0, T0 + 60 * M, "ana",
                     "deploy", T0)
    firing, resolved = alert(), alert("Y", state="inactive", resolved=T0)
    routed = route_stage([firing, resolved, alert("Z", service="search")], tree(), None)
    assert mute_stage(routed, Silencer([row])) == {firing.fingerprint}  # a resolve is never muted
    assert mute_stage(routed, Silencer([])) == set()
    assert [selective(m) for m in parse_all(["a=b", "a=", "a=~.+", "a=~x|y", "a!=b", "a!~b"])] == [
        True, False, False, True, False, False]


def groups_of(*alerts_, muted=frozenset()):
    return group_stage(route_stage(alerts_, tree(), None), set(muted))


def test_group_stage_groups_by_route_receiver_and_group_labels():
    a, b, c = alert(feature="x"), alert(feature="y"), alert(service="search")
    groups = groups_of(a, b, c, muted={c.fingerprint})
    assert sorted((k[1], tuple(sorted(g.alerts))) for k, g in groups.items()) == [
        ("pager", (a.fingerprint, b.fingerprint)), ("pager", (c.fingerprint,))]
    assert [g.muted for g in groups.values() if c.fingerprint in g.alerts] == [{c.fingerprint}]


def only(groups):
    (g,) = groups.values()
    return g


def test_decide_waits_for_group_wait_then_sends_then_holds_for_group_interval():
    g = only(group_stage(route_stage([alert()], tree(), None), set()))
    g.route = build_routes(Route.model_validate({"receiver": "r", "group_wait": "30s"}))
    assert decide(g, None, T0 + dt.timedelta(seconds=29), 5 * M, 240 * M, True) is None
    first = decide(g, None, T0 + dt.timedelta(seconds=30), 5 * M, 240 * M, True)
    assert first.send and first.firing == {alert().fingerprint} and not first.resolved
    sent = LogEntry(g.key, "r", tuple(first.firing), (), T0 + dt.timedelta(seconds=30), True)
    assert decide(g, sent, T0 + 4 * M, 5 * M, 240 * M, True) is None        # nothing new within group_interval
    assert decide(g, sent, T0 + 10 * M, 5 * M, 240 * M, True) is None       # nor after it: no change, no repeat
    again = decide(g, sent, T0 + 241 * M, 5 * M, 240 * M, True)
    assert again.send and again.firing == first.firing                        # repeat_interval passed


def test_decide_sends_a_resolve_once_and_a_muted_group_closes_quietly():
    fired = alert()
    sent = LogEntry("k", "r", (fired.fingerprint,), (), T0, True)
    resolved = alert(state="inactive", resolved=T0 + 6 * M)
    g = only(groups_of(resolved))
    d = decide(g, sent, T0 + 6 * M, 5 * M, 240 * M, send_resolved=True)
    assert d.send and d.resolved == {fired.fingerprint} and not d.firing
    assert decide(g, sent, T0 + 6 * M, 5 * M, 240 * M, send_resolved=False).send is False
    muted = only(groups_of(fired, muted={fired.fingerprint}))
    assert decide(muted, sent, T0 + 6 * M, 5 * M, 240 * M, True) == type(d)(frozenset(), frozenset(), False)
    # An alert that fired and cleared inside group_wait is never sent.
    assert decide(only(groups_of(alert(state="inactive", resolved=T0 + M))), None, T0 + 2 * M, 5 * M, 240 * M,
                  True) is None


def test_a_receiver_that_must_be_resent_shortens_both_intervals():
    node = build_routes(Route.model_validate({"receiver": "r", "group_interval": "5m", "repeat_interval": "4h"}))
    assert intervals(node, None) == (5 * M, 240 * M)
    assert intervals(node, 3 * M) == (3 * M, 3 * M)
    assert intervals(node, 60 * M) == (5 * M, 60 * M)


def test_payload_ids_come_from_the_decision_so_deciding_again_queues_once():
    cfg = load_config(env={}, overrides={"alerts": {"receivers": [{"name": "r", "webhook": {"url": "http://x/h"}}],
                                                    "route": {"receiver": "r"}}})
    receiver: Receiver = receivers(cfg)["r"]
    g = only(groups_of(alert()))
    d = decide(g, None, T0 + M, 5 * M, 240 * M, True)
    one, two = (payload_stage(g, d, None, receiver, "http://nlpmon", T0 + M) for _ in range(2))
    assert one.id == two.id and one.status == "firing" and one.payload["alerts"][0]["labels"]["service"] == "chat"
    later = payload_stage(g, d, LogEntry(g.key, "r", tuple(d.firing), (), T0 + M, True), receiver, "x", T0 + 9 * M)
    assert later.id != one.id


# -- the evaluator's step ----------------------------------------------------------------------------
RULE = SimpleNamespace(for_=M, keep_firing_for=2 * M, annotations={"summary": "{{ $labels.service }} at {{ $value }}"})


def test_step_pending_then_firing_then_held_then_resolved():
    inst = AlertInstance("fp", "R", {})
    labels = {"alertname": "R", "service": "chat"}
    t = step(RULE, inst, labels, 0.5, True, T0)
    assert (t.from_state, t.to_state, t.instance.active_at) == ("inactive", "pending", T0)
    t = step(RULE, t.instance, labels, 0.5, True, T0 + M)
    assert (t.to_state, t.instance.fired_at, t.instance.annotations["summary"]) == ("firing", T0 + M, "chat at 0.5")
    held = step(RULE, t.instance, labels, 0.0, False, T0 + 2 * M)                 # keep_firing_for holds it
    assert (held.to_state, held.reason) == ("firing", "")
    done = step(RULE, held.instance, labels, 0.0, False, T0 + 3 * M + dt.timedelta(microseconds=1))
    assert (done.to_state, done.reason, done.instance.resolved_at) == ("inactive", "resolved",
                                                                       T0 + 3 * M + dt.timedelta(microseconds=1))
    assert step(RULE, done.instance, labels, 0.0, False, T0 + 4 * M) is None      # quiet again: nothing to keep


def test_step_a_blip_shorter_than_for_never_fires_and_nodata_modes():
    t = step(RULE, AlertInstance("fp", "R", {}), {}, 1.0, True, T0)
    cleared = step(RULE, t.instance, {}, 0.0, False, T0 + dt.timedelta(seconds=59))
    assert (cleared.to_state, cleared.reason) == ("inactive", "condition cleared before 'for'")
    firing = AlertInstance("fp", "R", {}, state="firing", fired_at=T0)
    assert nodata(RULE, firing, T0 + M, "keep").instance.state == "firing"
    assert nodata(RULE, firing, T0 + M, "resolve").instance.resolved_at == T0 + M
    assert nodata(RULE, AlertInstance("fp", "R", {}, state="pending"), T0, "alert").instance.state == "firing"
    assert nodata(RULE, AlertInstance("fp", "R", {}, state="firing", health="nodata"), T0, "keep") is None


def test_matchers_parse_as_alertmanager_writes_them():
    assert parse_all(['service="a b"', "x!~y.*"]) == [Matcher("service", "=", "a b"), Matcher("x", "!~", "y.*")]


def test_every_system_rule_has_its_read_registered():
    from alerts.reads import SYSTEM_READS
    from alerts.rules import system_rules
    cfg = load_config(env={}, overrides={})
    assert sorted(r.name for r in system_rules(cfg)) == sorted(SYSTEM_READS)


def test_every_task_the_scheduler_builds_states_the_scheduled_task_interface(caplog):
    from monitor.foundation.clock import ManualClock
    from monitor.foundation.storage import Store
    from monitor.foundation.tasks import ScheduledTask
    from monitor.scheduler import build_jobs
    cfg = load_config(env={"MONITOR_REVIEW_RATE_INTERVAL": "2h"}, overrides={
        "clickhouse": {"url": "chdb:///nonexistent/never-opened"},
        "jobs": {"sli_interval": "2m", "schedule": {"slo": "3m"}}, "alerts": {"interval": "30s"}})
    # Old keys are still read, each with a line saying where it moved.
    assert (cfg.jobs.schedule.sli, cfg.jobs.schedule.slo, cfg.jobs.schedule.alerts) == (2 * M, 3 * M, M / 2)
    assert cfg.jobs.schedule.hallucination == 120 * M
    assert "'jobs.sli_interval' is deprecated: use 'jobs.schedule.sli'" in caplog.text
    tasks = build_jobs(Store.from_config(cfg), cfg, ManualClock(T0))  # builds without touching the store
    assert all(isinstance(t, ScheduledTask) for t in tasks.values()), [n for n, t in tasks.items()
                                                                      if not isinstance(t, ScheduledTask)]
    assert {n: t.interval for n, t in tasks.items()} == {n: getattr(cfg.jobs.schedule, n) for n in tasks}
