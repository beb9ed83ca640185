"""The one incident window: what a link to the incident explorer covers for an alert.

Notifications (the webhook's generatorURL, Slack and PagerDuty links, email)
and the pages (alerts, request detail) link to the same window: from LEAD
before the alert started, to its end when it has resolved, or to TAIL past now
while it still fires (so the link opened later still shows the latest minutes).
"""
from __future__ import annotations

import datetime as dt


LEAD = dt.timedelta(minutes=30)
TAIL = dt.timedelta(minutes=5)


def incident_window(start: dt.datetime | None, end: dt.datetime | None,
                    now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(from, to) of the explorer for an alert that started at ``start`` and ended at ``end`` (None
    while it fires); a missing start counts as now."""
    return (start or now) - LEAD, end if end is not None else now + TAIL
