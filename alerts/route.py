"""The routing tree (Alertmanager's ``dispatch/route.go``): which receivers an alert goes to, in which group.

A route matches an alert when all its matchers do; an alert goes down to the
deepest matching routes, and to a later sibling of a matching route only when
that route says ``continue``. Settings a route leaves out (group_by and the
three timings) are its parent's. The group an alert joins is the route plus
the values of the route's ``group_by`` labels.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from monitor.foundation.matchers import Matcher, match_all, parse_all

DEFAULTS = {"group_by": [], "group_wait": dt.timedelta(seconds=30), "group_interval": dt.timedelta(minutes=5),
            "repeat_interval": dt.timedelta(hours=4)}


@dataclass(frozen=True)
class RouteNode:
    path: str
    receiver: str
    matchers: tuple[Matcher, ...]
    cont: bool
    group_by: tuple[str, ...]
    group_wait: dt.timedelta
    group_interval: dt.timedelta
    repeat_interval: dt.timedelta
    children: tuple["RouteNode", ...] = field(default=())


def build_routes(route, parent: RouteNode | None = None, path: str = "{}") -> RouteNode:
    """The tree of ``alerts.route`` (a config Route), each node with its inherited settings."""
    def pick(name):
        v = getattr(route, name)
        if v is not None:
            return v
        return getattr(parent, name) if parent else DEFAULTS[name]
    receiver = route.receiver or (parent.receiver if parent else None)
    if receiver is None:
        raise ValueError("alerts.route.receiver: the root route needs a receiver")
    node = RouteNode(path, receiver, tuple(parse_all(route.matchers)), route.continue_, tuple(pick("group_by")),
                     pick("group_wait"), pick("group_interval"), pick("repeat_interval"))
    children = tuple(build_routes(child, node, f"{path}/{i}") for i, child in enumerate(route.routes))
    return RouteNode(**{**node.__dict__, "children": children})


def match(node: RouteNode, labels: dict[str, str]) -> list[RouteNode]:
    """The routes an alert goes to: the deepest matching ones, siblings after a match only with ``continue``."""
    out = []
    for child in node.children:
        if match_all(child.matchers, labels):
            out += match(child, labels)
            if not child.cont:
                break
    return out or [node]


def group_key(node: RouteNode, labels: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(the group's key, its labels): the route's path and the values of its group_by labels."""
    group_labels = {k: labels.get(k, "") for k in sorted(node.group_by)}
    inner = ",".join(f'{k}="{v}"' for k, v in group_labels.items())
    return f"{node.path}:{{{inner}}}", group_labels


def watchdog_route(system) -> RouteNode | None:
    """The Watchdog's own route (``alerts.system``): to its receiver only, every watchdog_interval; never to
    on-call, whatever the tree says; None (to nobody) without a watchdog receiver."""
    if not (system.enabled and system.watchdog_receiver):
        return None
    return RouteNode("watchdog", system.watchdog_receiver, (), False, ("alertname",), dt.timedelta(0),
                     system.watchdog_interval, system.watchdog_interval)
