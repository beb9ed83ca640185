"""The ``pagerduty`` receiver: an Events API v2 event, trigger or resolve.

The dedup key is a hash of the group key, stable per group, so the resolve
closes the incident the trigger opened, and a repeat or an alert joining the
group updates that incident rather than opening another. Severity is the
highest among the firing alerts (``page`` -> critical, ``ticket`` -> warning,
anything else -> info).

The routing key is a secret: :func:`stored` drops it from the payload the
outbox keeps, and :func:`send` puts it back from the config at send time, so
it is not stored and a rotated key applies to notifications already queued.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from pydantic import Field

from alerts.notify.common import (Notification, _common, _is_http_url, _now, _runbook, _summary, _truncate,
    incident_url, rfc3339, title)
from alerts.notify.transport import _post_json
from monitor.foundation.config import Duration, _Section

__all__ = ["KIND", "PagerDutyReceiver", "Settings", "dedup_key", "payload", "send", "stored"]

KIND = "pagerduty"

_PD_SUMMARY_CHARS = 1024
_PD_MAX_ALERTS = 20             # alerts listed in custom_details
_PD_MAX_LINKS = 10
_PD_SEVERITY = {"page": "critical", "ticket": "warning"}
_PD_RANK = {"critical": 3, "error": 2, "warning": 1, "info": 0}


class PagerDutyReceiver(_Section):
    routing_key: str = Field(min_length=1)
    url: str = Field("https://events.pagerduty.com/v2/enqueue", pattern=r"^https?://")
    send_resolved: bool = True
    timeout: Duration = dt.timedelta(seconds=10)


RESEND_EVERY = None  # a firing group repeats on its route's repeat_interval
Settings = PagerDutyReceiver


def dedup_key(group_key: str) -> str:
    """Stable per group: PagerDuty resolves the incident the same group triggered."""
    return hashlib.sha256(group_key.encode()).hexdigest()[:32]


def payload(target: PagerDutyReceiver | None, n: Notification) -> dict:
    key = dedup_key(n.group_key)
    routing_key = getattr(target, "routing_key", "") if target is not None else ""
    if n.status != "firing":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": key}
    now = _now(n)
    firing = n.firing
    severity = max((_PD_SEVERITY.get(a.labels.get("severity", ""), "info") for a in firing),
                   key=_PD_RANK.__getitem__, default="info")
    summary = title(n)
    if firing:
        summary += f": {_summary(firing[0])}"
    links, seen = [], set()
    for a in firing:
        for href, text in ((incident_url(n.external_url, a, now), f"Incident: {_summary(a)}"),
                           (_runbook(a), f"Runbook: {a.labels.get('alertname', '')}".rstrip(": "))):
            if _is_http_url(href) and href not in seen and len(links) < _PD_MAX_LINKS:
                seen.add(href)
                links.append({"href": href, "text": _truncate(text, 256)})
    details = {
        "firing": len(firing),
        "resolved": len(n.resolved),
        "group_labels": dict(n.group_labels),
        "alerts": [{"status": a.status, "summary": _summary(a), "labels": dict(a.labels),
                    "annotations": dict(a.annotations), "starts_at": rfc3339(a.starts_at),
                    "value": a.value, "fingerprint": a.fingerprint} for a in n.alerts[:_PD_MAX_ALERTS]],
    }
    if len(n.alerts) > _PD_MAX_ALERTS:
        details["alerts_not_listed"] = len(n.alerts) - _PD_MAX_ALERTS
    body: dict[str, Any] = {
        "summary": _truncate(summary, _PD_SUMMARY_CHARS),
        "source": "nlpmon",
        "severity": severity,
        "timestamp": rfc3339(min((a.starts_at for a in firing if a.starts_at is not None), default=now)),
        "custom_details": details,
    }
    common = _common(a.labels for a in n.alerts)
    if common.get("service"):
        body["component"] = common["service"]
    if common.get("alertname"):
        body["class"] = common["alertname"]
    return {"routing_key": routing_key, "event_action": "trigger", "dedup_key": key, "payload": body,
            "client": "nlpmon", "client_url": n.external_url, "links": links}


def stored(payload: dict) -> dict:
    """The payload as the outbox keeps it: without the routing key (a secret; :func:`send` adds it)."""
    return {k: v for k, v in payload.items() if k != "routing_key"}


def send(target: PagerDutyReceiver, payload: dict, timeout: float) -> None:
    # The key comes from the config now: not stored with the payload, and a rotated key applies.
    _post_json(target.url, {**payload, "routing_key": target.routing_key}, timeout)
