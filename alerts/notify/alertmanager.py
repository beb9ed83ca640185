"""The ``alertmanager`` receiver: nlpmon's alerts posted to an existing Alertmanager, the way Prometheus does.

For teams whose routing, silences and on-call integrations already live in an
Alertmanager: nlpmon becomes one more alert source and that Alertmanager decides
who is told. The body is what Prometheus POSTs to ``<url>/api/v2/alerts``, a
JSON array with one entry per alert of the group::

    [{"labels": {...}, "annotations": {...}, "startsAt": ..., "endsAt": ..., "generatorURL": ...}]

``generatorURL`` is the alert's incident view (as in the webhook payload).

Alertmanager resolves an alert by itself once its ``endsAt`` has passed, so a
firing alert must be re-sent before then. As Prometheus does with its resend
delay (``--rules.alert.resend-delay``, default 1m), a firing alert's ``endsAt``
is the decision time plus four times ``resend_every``, and the dispatcher
decides a notification for this receiver's groups at the first evaluation
(``jobs.schedule.alerts``) after ``resend_every`` while they fire, whatever the
route's ``group_interval`` and ``repeat_interval`` (:data:`RESEND_EVERY`, the
dispatcher's generic hook; Alertmanager groups by itself, so hearing of changes
that often costs it nothing). Three missed re-sends (the outbox retrying, the
scheduler down) pass before Alertmanager would time the alert out; a resolve
carries the resolve time as ``endsAt`` and ends it at once. With
``send_resolved: false`` resolves are not sent and the alert expires at its
last ``endsAt``.

Alertmanager answers 400 with the reason when it rejects alerts: not retryable.
5xx, 429 and connection errors are retried by the outbox.
"""
from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator

from alerts.notify.common import Notification, _now, incident_url, keep_all, rfc3339
from alerts.notify.transport import _post_json
from monitor.foundation.config import Duration, _Section

__all__ = ["ENDS_AFTER_RESENDS", "KIND", "RESEND_EVERY", "AlertmanagerReceiver", "Settings", "api_url", "payload",
           "send"]

KIND = "alertmanager"
ENDS_AFTER_RESENDS = 4   # a firing alert's endsAt: this many resend intervals ahead (Prometheus: 4 x resend delay)
_RESEND_DEFAULT = dt.timedelta(minutes=1)   # Prometheus' --rules.alert.resend-delay default


class AlertmanagerReceiver(_Section):
    url: str = Field(pattern=r"^https?://")      # the Alertmanager's base URL (with its --web.route-prefix, if any)
    send_resolved: bool = True
    timeout: Duration = dt.timedelta(seconds=10)
    resend_every: Duration = _RESEND_DEFAULT

    @field_validator("resend_every")
    @classmethod
    def _positive(cls, v: dt.timedelta) -> dt.timedelta:
        if v <= dt.timedelta(0):
            raise ValueError("must be a positive duration such as '1m'")
        return v


stored = keep_all  # the payload holds no secret
Settings = AlertmanagerReceiver


def RESEND_EVERY(target: AlertmanagerReceiver) -> dt.timedelta:
    """How often the dispatcher re-sends a firing group to this receiver (at most its ``repeat_interval``)."""
    return target.resend_every


def api_url(base: str) -> str:
    return base.rstrip("/") + "/api/v2/alerts"


def payload(target: AlertmanagerReceiver | None, n: Notification) -> list[dict]:
    """The alerts of ``n`` as Prometheus posts them; a firing alert ends ``ENDS_AFTER_RESENDS`` re-sends ahead."""
    now = _now(n)
    valid_until = now + ENDS_AFTER_RESENDS * (target.resend_every if target is not None else _RESEND_DEFAULT)
    return [{
        # Prometheus never sends an empty label (it is the same as no label).
        "labels": {k: v for k, v in a.labels.items() if v != ""},
        "annotations": dict(a.annotations),
        "startsAt": rfc3339(a.starts_at),
        "endsAt": rfc3339(valid_until if a.status == "firing" else (a.ends_at or now)),
        "generatorURL": incident_url(n.external_url, a, now),
    } for a in n.alerts]


def send(target: AlertmanagerReceiver, payload: list[dict], timeout: float) -> None:
    _post_json(api_url(target.url), payload, timeout)
