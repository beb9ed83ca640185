"""From alert instances to notifications, as Alertmanager decides them.

Each firing or recently resolved alert is routed down the route tree
(matchers, ``continue``, settings inherited from the parent) to one or more
(group, receiver) pairs; the group is the route plus the values of its
``group_by`` labels. Silenced and inhibited alerts are muted: they notify
nobody (their transitions are still in ``alert_history``).

Per (group, receiver) the persisted notification log decides:

- a new group notifies once ``group_wait`` after its first alert fired; an
  alert that fired and cleared inside ``group_wait`` is never sent;
- then at most every ``group_interval``: when alerts joined, when alerts
  resolved (``send_resolved``), or when ``repeat_interval`` passed;
- when everything in it has resolved, the group notifies once and closes.

A receiver kind that must hear about firing alerts again before it times them
out (Alertmanager as a receiver, as Prometheus re-sends every resend delay)
defines ``RESEND_EVERY`` (a timedelta, or a function of the receiver's
settings): its groups use it, when shorter, as both their ``repeat_interval``
and their ``group_interval``.

A decision goes to the outbox (alerts/delivery.py) under an id derived from
the decision itself, then to the log: a crash in between makes the same
decision, with the same id, on the next run, so nothing is lost or doubled.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field

from alerts import notify
from alerts.notify import AlertView, Notification, build_payload
from monitor.foundation.matchers import Matcher, match_all, parse_all
from monitor.foundation.tables import alert_state, notification_log, silences

log = logging.getLogger(__name__)
RESOLVED_LOOKBACK = dt.timedelta(days=2)
WATCHDOG = "Watchdog"
DEFAULTS = {"group_by": [], "group_wait": dt.timedelta(seconds=30), "group_interval": dt.timedelta(minutes=5),
            "repeat_interval": dt.timedelta(hours=4)}


@dataclass
class RouteNode:
    path: str
    receiver: str
    matchers: list[Matcher]
    cont: bool
    group_by: list[str]
    group_wait: dt.timedelta
    group_interval: dt.timedelta
    repeat_interval: dt.timedelta
    children: list["RouteNode"] = field(default_factory=list)


def build_routes(route, parent: RouteNode | None = None, path: str = "{}") -> RouteNode:
    def pick(name):
        v = getattr(route, name)
        if v is not None:
            return v
        return getattr(parent, name) if parent else DEFAULTS[name]
    receiver = route.receiver or (parent.receiver if parent else None)
    if receiver is None:
        raise ValueError("alerts.route.receiver: the root route needs a receiver")
    node = RouteNode(path, receiver, parse_all(route.matchers), route.continue_, list(pick("group_by")),
                     pick("group_wait"), pick("group_interval"), pick("repeat_interval"))
    for i, child in enumerate(route.routes):
        node.children.append(build_routes(child, node, f"{path}/{i}"))
    return node


def route(node: RouteNode, labels: dict[str, str]) -> list[RouteNode]:
    """The routes an alert goes to: the deepest matching ones, siblings after a match only with ``continue``."""
    out = []
    for child in node.children:
        if match_all(child.matchers, labels):
            out += route(child, labels)
            if not child.cont:
                break
    return out or [node]


def group_key(node: RouteNode, labels: dict[str, str]) -> tuple[str, dict[str, str]]:
    group_labels = {k: labels.get(k, "") for k in sorted(node.group_by)}
    inner = ",".join(f'{k}="{v}"' for k, v in group_labels.items())
    return f"{node.path}:{{{inner}}}", group_labels


class Dispatcher:
    def __init__(self, store, config, clock, outbox):
        self.store = store
        self.config = config
        self.clock = clock
        self.outbox = outbox
        self.routes = build_routes(config.alerts.route)
        # The Watchdog goes only to its own receiver (a dead-man's switch), every watchdog_interval:
        # never to on-call, whatever the route tree says; without a watchdog receiver, to nobody.
        system = config.alerts.system
        self.watchdog = None if not (system.enabled and system.watchdog_receiver) else RouteNode(
            "watchdog", system.watchdog_receiver, [], False, ["alertname"], dt.timedelta(0),
            system.watchdog_interval, system.watchdog_interval)
        self.receivers = notify.receivers(config)
        self.inhibit = [(parse_all(r.source_matchers), parse_all(r.target_matchers), r.equal)
                        for r in config.alerts.inhibit_rules]

    # -- muting -------------------------------------------------------------------
    def silenced(self, now: dt.datetime):
        return silences.silencer(self.store, now)

    def inhibited(self, firing: list[dict[str, str]]):
        def check(labels: dict[str, str]) -> bool:
            for source, target, equal in self.inhibit:
                if not match_all(target, labels):
                    continue
                for src in firing:
                    if src is not labels and match_all(source, src) and all(src.get(k, "") == labels.get(k, "")
                                                                           for k in equal):
                        return True
            return False
        return check

    # -- one pass -------------------------------------------------------------------
    def run(self, now: dt.datetime | None = None) -> list[str]:
        """Decide every group's notifications as of ``now``; returns the outbox ids enqueued."""
        now = now or self.clock.now()
        if not self.receivers:
            return []  # no receivers configured: alerts are evaluated and kept in history, nobody is notified
        alerts = self._alerts(now)
        firing_labels = [a["labels"] for a in alerts if a["state"] == "firing"]
        is_silenced, is_inhibited = self.silenced(now), self.inhibited(firing_labels)
        groups: dict[tuple[str, str], dict] = {}
        for a in alerts:
            muted = a["state"] == "firing" and (is_silenced(a["labels"]) or is_inhibited(a["labels"]))
            if a["labels"].get("alertname") == WATCHDOG:
                nodes = [self.watchdog] if self.watchdog else []
            else:
                nodes = route(self.routes, a["labels"])
            for node in nodes:
                key, group_labels = group_key(node, a["labels"])
                g = groups.setdefault((key, node.receiver), {"node": node, "labels": group_labels, "alerts": {}})
                g["alerts"][a["fingerprint"]] = {**a, "muted": muted}
        entries = self._log()
        for k, entry in entries.items():
            if entry["active"] and k not in groups:
                groups[k] = None  # every alert of a notified group is gone from the state: close it
        queued, log_entries = [], []
        for (key, receiver), g in groups.items():
            if g is None:
                log_entries.append((key, receiver, [], [], now, False))
                continue
            decision = self._decide(g, entries.get((key, receiver)), now)
            if decision is None:
                continue
            firing, resolved, send = decision
            if send:
                item = self._notification(key, receiver, g, firing, resolved, entries.get((key, receiver)), now)
                if item:
                    queued.append(item)
            log_entries.append((key, receiver, sorted(firing), sorted(resolved), now, bool(firing)))
        # The outbox before the log, each in one insert (a storm is thousands of groups): a crash
        # between them decides the same notifications again, with the same ids, queued once.
        enqueued = self.outbox.enqueue_many(queued)
        self._write_log(log_entries)
        return enqueued

    def _decide(self, g: dict, entry: dict | None, now: dt.datetime):
        node: RouteNode = g["node"]
        alerts = g["alerts"]
        firing = {fp for fp, a in alerts.items() if a["state"] == "firing" and not a["muted"]}
        notified = set(entry["firing"]) if entry and entry["active"] else set()
        resolved = {fp for fp in notified if fp in alerts and alerts[fp]["state"] == "inactive"}
        send_resolved = self._send_resolved(g)
        interval, repeat = self._intervals(g)
        if not notified:
            if not firing:
                return None
            started = min(alerts[fp]["fired_at"] for fp in firing)
            if now - started < node.group_wait:
                return None
            return firing, set(), True
        if now - entry["notified_at"] < interval:
            return None
        if firing - notified:
            return firing, resolved if send_resolved else set(), True
        if resolved:
            return firing, resolved, send_resolved
        if firing and now - entry["notified_at"] >= repeat:
            return firing, set(), True
        if not firing and notified:
            # Everything notified is muted or gone without resolving: close quietly.
            return set(), set(), False
        return None

    def _intervals(self, g: dict) -> tuple[dt.timedelta, dt.timedelta]:
        """(group_interval, repeat_interval) of the group, both at most its receiver kind's ``RESEND_EVERY``.

        Lowering only the repeat would not do: a repeat waits for group_interval too, and the
        receiver would time the alerts out in between."""
        node: RouteNode = g["node"]
        receiver = self.receivers.get(node.receiver)
        resend = getattr(notify.KINDS.get(receiver.kind), "RESEND_EVERY", None) if receiver else None
        if callable(resend):
            resend = resend(receiver.target)
        if not resend:
            return node.group_interval, node.repeat_interval
        repeat = min(node.repeat_interval, resend)
        return min(node.group_interval, repeat), repeat

    def _send_resolved(self, g: dict) -> bool:
        receiver = self.receivers.get(g["node"].receiver)
        return bool(receiver and receiver.target.send_resolved)

    def _notification(self, key, receiver_name, g, firing, resolved, entry, now) -> tuple | None:
        receiver = self.receivers.get(receiver_name)
        if receiver is None:
            log.warning("route to unknown receiver %s: notification for %s dropped", receiver_name, key)
            return None
        views = [self._view(g["alerts"][fp], "firing") for fp in sorted(firing)]
        views += [self._view(g["alerts"][fp], "resolved") for fp in sorted(resolved)]
        status = "firing" if firing else "resolved"
        n = Notification(receiver_name, key, status, g["labels"], views, self.config.alerts.external_url, now=now)
        previous = entry["notified_at"].isoformat() if entry and entry["active"] else "new"
        oid = hashlib.sha256("|".join([key, receiver_name, status, ",".join(sorted(firing)),
                                       ",".join(sorted(resolved)), previous]).encode()).hexdigest()[:32]
        return oid, key, receiver_name, status, build_payload(receiver.kind, receiver.target, n)

    @staticmethod
    def _view(a: dict, status: str) -> AlertView:
        return AlertView(a["fingerprint"], status, a["labels"], a["annotations"], a["fired_at"],
                         a["resolved_at"] if status == "resolved" else None, a["value"])

    # -- reading and writing ------------------------------------------------------------
    def _alerts(self, now: dt.datetime) -> list[dict]:
        return alert_state.firing_or_resolved_since(self.store, now - RESOLVED_LOOKBACK)

    def _log(self) -> dict[tuple[str, str], dict]:
        return notification_log.entries(self.store)

    def _write_log(self, entries: list[tuple]) -> None:
        notification_log.write_many(self.store, entries)
