"""``incident_kpis``: what the alert history says about on-call, written to metric_points for the dashboards.

An incident is one alert instance firing until it resolves. Per severity, over
trailing 7-day windows ending at each hour:

- ``incidents``: instances that started firing in the window;
- ``incident_mttr_seconds``: mean time from firing to resolved, over incidents
  resolved in the window;
- ``alert_notifications_per_incident``: notifications delivered to people in the
  window (not the Watchdog's heartbeats nor re-sends to an Alertmanager) /
  incidents in the window (the noise an on-call engineer feels).
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable

from monitor.foundation.job import Job
from monitor.foundation.metrics import KPI_WINDOWS, Point, window_ends
from monitor.foundation.tables import alert_history, notification_outbox


class IncidentKpiJob(Job):
    name = "incident_kpis"
    description = "incidents per week by severity, mean time to resolve and notifications per incident"

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        span = window_ends(start, end, 3600)
        if span is None:
            return
        first, last = span
        lo = first - dt.timedelta(seconds=max(KPI_WINDOWS.values()))
        fired = [(r.fingerprint, r.labels.get("severity", ""), r.ts)
                 for r in alert_history.fired(self.store, lo - dt.timedelta(days=30), last)]
        resolved = alert_history.resolved(self.store, lo, last)
        sent = notification_outbox.sent_between(self.store, lo, last)
        # Pair each resolve with the latest firing of the same instance before it.
        starts: dict[str, list[tuple]] = {}
        for fp, severity, ts in fired:
            starts.setdefault(fp, []).append((ts, severity))
        durations = []
        for fp, ts in resolved:
            before = [s for s in starts.get(fp, []) if s[0] <= ts]
            if before:
                began, severity = before[-1]
                durations.append((ts, severity, (ts - began).total_seconds()))
        t = first
        while t <= last:
            for window, seconds in KPI_WINDOWS.items():
                w_lo = t - dt.timedelta(seconds=seconds)
                in_window = [(sev, ts) for fp, sev, ts in fired if w_lo <= ts < t]
                severities = {sev for sev, _ in in_window} | {"all"}
                for sev in sorted(severities):
                    n = sum(1 for s, _ in in_window if sev in ("all", s))
                    labels = {} if sev == "all" else {"severity": sev}
                    yield Point(t, window, "incidents", labels, float(n))
                    ds = [d for ts, s, d in durations if w_lo <= ts < t and sev in ("all", s)]
                    if ds:
                        yield Point(t, window, "incident_mttr_seconds", labels, sum(ds) / len(ds))
                n_all = len(in_window)
                if n_all:
                    notes = sum(1 for ts in sent if w_lo <= ts < t)
                    yield Point(t, window, "alert_notifications_per_incident", {}, notes / n_all)
            t += dt.timedelta(hours=1)
