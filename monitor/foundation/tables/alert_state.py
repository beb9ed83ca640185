"""``alert_state``: every alert instance's current state, health and times (a ReplacingMergeTree by
``updated_at``: writing an instance again replaces it)."""
from __future__ import annotations

import datetime as dt
from dataclasses import astuple, dataclass, field, fields



@dataclass(frozen=True)
class AlertInstance:
    """One rule applied to one series: its identity (the fingerprint of its label set), state and times."""

    fingerprint: str
    rule: str
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    state: str = "inactive"        # inactive, pending, firing
    health: str = "ok"             # ok, nodata, error
    value: float | None = None
    active_at: dt.datetime | None = None
    fired_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    last_true_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    @property
    def since(self) -> dt.datetime | None:
        """When it fired, or (pending) when its condition first held."""
        return self.fired_at if self.state == "firing" else self.active_at


COLUMNS = [f.name for f in fields(AlertInstance)]


def _instances(rows: list[dict]) -> list[AlertInstance]:
    return [AlertInstance(**r) for r in rows]


def all_instances(store) -> list[AlertInstance]:
    return _instances(store.query_dicts(f"SELECT {', '.join(COLUMNS)} FROM alert_state FINAL"))


def write(store, instances: list[AlertInstance]) -> None:
    """Each instance replaces its previous row."""
    if instances:
        store.insert("alert_state", [list(astuple(i)) for i in instances], COLUMNS)


def remove_updated_until(store, until: dt.datetime) -> None:
    """Delete the instances last written at or before ``until`` (a replay rebuilding the state up to then)."""
    store.command("DELETE FROM alert_state WHERE updated_at <= {t:DateTime64(3, 'UTC')}", {"t": until})


def active(store) -> list[AlertInstance]:
    """Pending and firing instances, firing first, each by when it fired (then became active)."""
    return _instances(store.query_dicts(
        f"SELECT {', '.join(COLUMNS)} FROM alert_state FINAL WHERE state IN ('firing', 'pending') "
        "ORDER BY state = 'pending', fired_at, active_at"))


def firing_or_resolved_since(store, since: dt.datetime) -> list[AlertInstance]:
    """Firing instances and those resolved after ``since``, that fired at some point: what the
    notification dispatcher groups."""
    found = _instances(store.query_dicts(
        f"SELECT {', '.join(COLUMNS)} FROM alert_state FINAL "
        "WHERE state = 'firing' OR (state = 'inactive' AND resolved_at IS NOT NULL "
        "AND resolved_at > {lo:DateTime64(3, 'UTC')})", {"lo": since}))
    return [a for a in found if a.fired_at is not None]


def sync_replica(store) -> None:
    """On a cluster, wait until this replica has every part of the table (a new active scheduler)."""
    store.sync_replica("alert_state")
