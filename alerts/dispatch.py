"""From alert instances to notifications, as Alertmanager decides them: a pipeline of stages.

    route -> inhibit -> silence -> group -> decide -> payload

Each stage is a function of what the one before gave it (tested on its own, in
memory: tests/test_dispatch_stages.py); :class:`Dispatcher` reads the store, runs
them and writes the outcome.

- **route**: each firing or recently resolved alert goes down the route tree
  (alerts/route.py) to one or more routes; the Watchdog only to its own route.
- **inhibit**, **silence**: a firing alert that a Muter mutes notifies nobody
  (its transitions are still in ``alert_history``).
- **group**: per route, receiver and values of the route's ``group_by`` labels.
- **decide**: per (group, receiver), against the persisted notification log: a new
  group notifies once ``group_wait`` after its first alert fired (an alert that
  fired and cleared inside ``group_wait`` is never sent); then at most every
  ``group_interval``, when alerts joined, resolved (``send_resolved``) or when
  ``repeat_interval`` passed; when everything in it has resolved, it notifies
  once and closes.
- **payload**: the receiver kind's body, under an id derived from the decision.

A receiver kind that must hear about firing alerts again before it times them
out (Alertmanager as a receiver, as Prometheus re-sends every resend delay)
defines ``RESEND_EVERY``: its groups use it, when shorter, as both their
``repeat_interval`` and their ``group_interval``.

A decision goes to the outbox (alerts/delivery.py), then to the log: a crash in
between makes the same decision, with the same id, on the next run, so nothing
is lost or doubled.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Iterable

from alerts import contributors, notify
from alerts.inhibit import Inhibitor, inhibit_rules
from alerts.model import Decision, Group, Muter, Notice
from alerts.notify import AlertView, Notification, build_payload
from alerts.route import RouteNode, build_routes, group_key, match, watchdog_route
from alerts.rules import load_rules
from alerts.silence import Silencer
from monitor.foundation.tables import alert_state, notification_log
from monitor.foundation.tables.alert_state import AlertInstance
from monitor.foundation.tables.notification_log import LogEntry

log = logging.getLogger(__name__)
RESOLVED_LOOKBACK = dt.timedelta(days=2)
WATCHDOG = "Watchdog"


# -- the stages ----------------------------------------------------------------------------------
def route_stage(alerts: Iterable[AlertInstance], tree: RouteNode, watchdog: RouteNode | None
                ) -> list[tuple[AlertInstance, RouteNode]]:
    """Each alert with each route it goes to."""
    out = []
    for a in alerts:
        nodes = ([watchdog] if watchdog else []) if a.labels.get("alertname") == WATCHDOG else match(tree, a.labels)
        out += [(a, node) for node in nodes]
    return out


def mute_stage(routed: list[tuple[AlertInstance, RouteNode]], muter: Muter) -> set[str]:
    """The fingerprints of the firing alerts ``muter`` mutes (the inhibit and the silence stages)."""
    return {a.fingerprint for a, _ in routed if a.state == "firing" and muter.mutes(a.labels)}


def group_stage(routed: list[tuple[AlertInstance, RouteNode]], muted: set[str]) -> dict[tuple[str, str], Group]:
    """(group key, receiver) -> the group of alerts routed there."""
    groups: dict[tuple[str, str], Group] = {}
    for a, node in routed:
        key, labels = group_key(node, a.labels)
        g = groups.setdefault((key, node.receiver), Group(key, node.receiver, node, labels))
        g.alerts[a.fingerprint] = a
        if a.fingerprint in muted:
            g.muted.add(a.fingerprint)
    return groups


def decide(g: Group, entry: LogEntry | None, now: dt.datetime, interval: dt.timedelta, repeat: dt.timedelta,
           send_resolved: bool) -> Decision | None:
    """What the group tells its receiver now, given what the log says it told it last; None: nothing."""
    firing = {fp for fp, a in g.alerts.items() if a.state == "firing" and fp not in g.muted}
    notified = set(entry.firing) if entry and entry.active else set()
    resolved = {fp for fp in notified if fp in g.alerts and g.alerts[fp].state == "inactive"}
    if not notified:
        if not firing:
            return None
        started = min(g.alerts[fp].fired_at for fp in firing)
        if now - started < g.route.group_wait:
            return None
        return Decision(frozenset(firing), frozenset(), True)
    if now - entry.notified_at < interval:
        return None
    if firing - notified:
        return Decision(frozenset(firing), frozenset(resolved if send_resolved else ()), True)
    if resolved:
        return Decision(frozenset(firing), frozenset(resolved), send_resolved)
    if firing and now - entry.notified_at >= repeat:
        return Decision(frozenset(firing), frozenset(), True)
    if not firing:
        # Everything notified is muted or gone without resolving: close quietly.
        return Decision(frozenset(), frozenset(), False)
    return None


def intervals(route: RouteNode, resend: dt.timedelta | None) -> tuple[dt.timedelta, dt.timedelta]:
    """(group_interval, repeat_interval) of a route, both at most its receiver kind's ``RESEND_EVERY``.

    Lowering only the repeat would not do: a repeat waits for group_interval too, and the
    receiver would time the alerts out in between."""
    if not resend:
        return route.group_interval, route.repeat_interval
    repeat = min(route.repeat_interval, resend)
    return min(route.group_interval, repeat), repeat


def payload_stage(g: Group, decision: Decision, entry: LogEntry | None, receiver, external_url: str,
                  now: dt.datetime, contributors: dict[str, str] | None = None) -> Notice:
    """The notice for the outbox: the receiver kind's body, under an id derived from the decision (not from
    ``contributors``, the annotations what-changed gave the firing alerts in time, so a decision made again
    after a crash is queued once however its explanation went)."""
    views = [_view(g.alerts[fp], "firing", (contributors or {}).get(fp)) for fp in sorted(decision.firing)]
    views += [_view(g.alerts[fp], "resolved") for fp in sorted(decision.resolved)]
    status = "firing" if decision.firing else "resolved"
    n = Notification(receiver.name, g.key, status, g.labels, views, external_url, now=now)
    previous = entry.notified_at.isoformat() if entry and entry.active else "new"
    oid = hashlib.sha256("|".join([g.key, receiver.name, status, ",".join(sorted(decision.firing)),
                                   ",".join(sorted(decision.resolved)), previous]).encode()).hexdigest()[:32]
    return Notice(oid, g.key, receiver.name, status, build_payload(receiver.kind, receiver.target, n))


def _view(a: AlertInstance, status: str, contributors: str | None = None) -> AlertView:
    annotations = {**a.annotations, "contributors": contributors} if contributors else a.annotations
    return AlertView(a.fingerprint, status, a.labels, annotations, a.fired_at,
                     a.resolved_at if status == "resolved" else None, a.value)


def resend_every(receiver) -> dt.timedelta | None:
    """The receiver kind's RESEND_EVERY (a timedelta or a function of the receiver's settings), if any."""
    resend = notify.KINDS[receiver.kind].RESEND_EVERY if receiver else None
    return resend(receiver.target) if callable(resend) else resend


# -- the run -------------------------------------------------------------------------------------
class Dispatcher:
    def __init__(self, store, config, clock, outbox):
        self.store = store
        self.config = config
        self.clock = clock
        self.outbox = outbox
        self.routes = build_routes(config.alerts.route)
        self.watchdog = watchdog_route(config.alerts.system)
        self.receivers = notify.receivers(config)
        self.inhibit_rules = inhibit_rules(config)
        self.rules = {r.name: r for r in load_rules(config)}

    def silenced(self, now: dt.datetime) -> Silencer:
        return Silencer.at(self.store, now)

    def run(self, now: dt.datetime | None = None) -> list[str]:
        """Decide every group's notifications as of ``now``; returns the outbox ids enqueued."""
        now = now or self.clock.now()
        if not self.receivers:
            return []  # no receivers configured: alerts are evaluated and kept in history, nobody is notified
        alerts = alert_state.firing_or_resolved_since(self.store, now - RESOLVED_LOOKBACK)
        routed = route_stage(alerts, self.routes, self.watchdog)
        inhibitor = Inhibitor(self.inhibit_rules, [a.labels for a in alerts if a.state == "firing"])
        muted = mute_stage(routed, inhibitor) | mute_stage(routed, self.silenced(now))
        groups: dict[tuple[str, str], Group | None] = dict(group_stage(routed, muted))
        entries = notification_log.entries(self.store)
        for k, entry in entries.items():
            if entry.active and k not in groups:
                groups[k] = None  # every alert of a notified group is gone from the state: close it
        decided, log_entries = [], []
        for (key, name), g in groups.items():
            if g is None:
                log_entries.append(LogEntry(key, name, (), (), now, False))
                continue
            receiver, entry = self.receivers.get(name), entries.get((key, name))
            decision = decide(g, entry, now, *intervals(g.route, resend_every(receiver)),
                              send_resolved=bool(receiver and receiver.target.send_resolved))
            if decision is None:
                continue
            if decision.send:
                if receiver is None:
                    log.warning("route to unknown receiver %s: notification for %s dropped", name, key)
                else:
                    decided.append((g, decision, entry, receiver))
            log_entries.append(LogEntry(key, name, tuple(sorted(decision.firing)), tuple(sorted(decision.resolved)),
                                        now, bool(decision.firing)))
        # A group's first notification says what changed, for every new group at once within one budget.
        first = {fp: g.alerts[fp] for g, decision, entry, _ in decided if not (entry and entry.active)
                 for fp in decision.firing}
        found = contributors.annotate(self.store, self.config, self.rules, list(first.values()), now) if first else {}
        notices = [payload_stage(g, decision, entry, receiver, self.config.alerts.external_url, now,
                                 found if not (entry and entry.active) else None)
                   for g, decision, entry, receiver in decided]
        # The outbox before the log, each in one insert (a storm is thousands of groups): a crash
        # between them decides the same notifications again, with the same ids, queued once.
        enqueued = self.outbox.enqueue_many(notices)
        self._write_log(log_entries)
        return enqueued

    def _write_log(self, entries: list[LogEntry]) -> None:
        notification_log.write_many(self.store, entries)
