"""The records the dispatcher hands from stage to stage, and the muting interface (Alertmanager's ``types``).

An alert is an :class:`~monitor.foundation.tables.alert_state.AlertInstance` as the
evaluator stored it. A :class:`Group` holds the alerts one route sends to one receiver
under one set of group labels; the notification log and the group lead to a
:class:`Decision`; a decision to send becomes a :class:`Notice` for the outbox.
A :class:`Muter` (silences, inhibition) says whether an alert notifies nobody for now.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

from alerts.route import RouteNode
from monitor.foundation.tables.alert_state import AlertInstance


class Muter(Protocol):
    def mutes(self, labels: Mapping[str, str]) -> bool:
        """Whether an alert with these labels notifies nobody now."""


@dataclass
class Group:
    key: str
    receiver: str
    route: RouteNode
    labels: dict[str, str]
    alerts: dict[str, AlertInstance] = field(default_factory=dict)  # by fingerprint
    muted: set[str] = field(default_factory=set)                    # fingerprints silenced or inhibited


@dataclass(frozen=True)
class Decision:
    firing: frozenset[str]     # fingerprints the notification shows firing
    resolved: frozenset[str]   # and resolved
    send: bool                 # False: only the log changes (a group closing quietly)


@dataclass(frozen=True)
class Notice:
    """A notification decided: its id is derived from the decision, so deciding again queues it once."""

    id: str
    group_key: str
    receiver: str
    status: str
    payload: dict
