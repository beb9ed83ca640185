"""The ``webhook`` receiver: the Alertmanager webhook payload, version 4, POSTed as JSON.

Field for field what Alertmanager sends, so anything that consumes Alertmanager
webhooks (alert bridges, chat bots, ticketing glue) consumes ours unchanged.
The one liberty: ``generatorURL`` is the alert's incident view rather than a
query page, since that is where someone paged wants to land.
"""
from __future__ import annotations

import datetime as dt

from pydantic import Field

from alerts.notify.common import Notification, ZERO_TIME, _common, _now, incident_url, keep_all, rfc3339
from alerts.notify.transport import _post_json
from monitor.foundation.config import Duration, _Section

__all__ = ["KIND", "RESEND_EVERY", "Settings", "WebhookReceiver", "payload", "send"]

KIND = "webhook"


class WebhookReceiver(_Section):
    url: str = Field(pattern=r"^https?://")
    send_resolved: bool = True
    timeout: Duration = dt.timedelta(seconds=10)


RESEND_EVERY = None  # a firing group repeats on its route's repeat_interval
stored = keep_all  # the payload holds no secret
Settings = WebhookReceiver


def payload(target: WebhookReceiver | None, n: Notification) -> dict:
    """The webhook body for ``n``; nothing in it depends on the receiver's settings."""
    now = _now(n)
    return {
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": n.status,
        "receiver": n.receiver,
        "groupLabels": dict(n.group_labels),
        "commonLabels": _common(a.labels for a in n.alerts),
        "commonAnnotations": _common(a.annotations for a in n.alerts),
        "externalURL": n.external_url,
        "alerts": [{
            "status": a.status,
            "labels": dict(a.labels),
            "annotations": dict(a.annotations),
            "startsAt": rfc3339(a.starts_at),
            "endsAt": ZERO_TIME if a.status == "firing" else rfc3339(a.ends_at),
            "generatorURL": incident_url(n.external_url, a, now),
            "fingerprint": a.fingerprint,
        } for a in n.alerts],
    }


def send(target: WebhookReceiver, payload: dict, timeout: float) -> None:
    _post_json(target.url, payload, timeout)
