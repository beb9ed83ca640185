"""What every receiver kind shares: the notification it is given and the pieces its payload is made of.

A :class:`Notification` is one group of alerts for one receiver, as the
dispatcher decided it; each kind turns it into its own body. The pieces here
make those bodies agree with each other and with Alertmanager: the same title
(``[FIRING:2] ...``, labels in Alertmanager's order), the same timestamps (RFC
3339 as Go writes them), and the same incident link for an alert, whichever
integration carries it.

:class:`DeliveryError` is the one way a sender reports a failure: with
``retryable`` it tells the outbox whether trying again later can help, so
retry policy stays out of the integrations.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode

from monitor.foundation.incident_window import incident_window

__all__ = ["AlertView", "DeliveryError", "Notification", "USER_AGENT", "ZERO_TIME", "incident_url", "keep_all",
           "rfc3339", "title"]

ZERO_TIME = "0001-01-01T00:00:00Z"   # Alertmanager's endsAt for an alert that is still firing
USER_AGENT = "nlpmon-alerts"
_ERROR_BODY_CHARS = 200              # of a receiver's answer quoted in an error message


def keep_all(payload):
    """A kind's ``stored`` when its payload holds no secret: the outbox keeps all of it."""
    return payload


@dataclass
class AlertView:
    """One alert instance as a notification shows it."""

    fingerprint: str
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: dt.datetime
    ends_at: dt.datetime | None = None
    value: float | None = None


@dataclass
class Notification:
    """One group of alerts for one receiver.

    ``now`` is the time of the decision; it bounds the incident links of alerts
    that still fire (``to = now + 5 min``). Left None, the system time is used.
    ``status`` is recomputed from the alerts: firing if any alert fires.
    """

    receiver: str
    group_key: str
    status: Literal["firing", "resolved"]
    group_labels: dict[str, str]
    alerts: list[AlertView]
    external_url: str
    now: dt.datetime | None = field(default=None, compare=False)

    def __post_init__(self):
        # Firing if any alert fires, whatever the caller passed.
        if self.alerts:
            self.status = "firing" if any(a.status == "firing" for a in self.alerts) else "resolved"

    @property
    def firing(self) -> list[AlertView]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[AlertView]:
        return [a for a in self.alerts if a.status != "firing"]


class DeliveryError(Exception):
    """A notification was not delivered. ``retryable`` says whether trying again later can help."""

    def __init__(self, message: str, retryable: bool, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


def rfc3339(ts: dt.datetime | None) -> str:
    """RFC 3339 in UTC with a Z; fractional seconds only when there are some (as Go writes them).

    None is Go's zero time, which Alertmanager sends as the end of a firing alert.
    """
    if ts is None:
        return ZERO_TIME
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        text += ("." + f"{ts.microsecond:06d}").rstrip("0")
    return text + "Z"


def _now(n: Notification) -> dt.datetime:
    return n.now if n.now is not None else dt.datetime.now(dt.timezone.utc)


def incident_url(external_url: str, alert: AlertView, now: dt.datetime) -> str:
    """The incident view for the alert's window (monitor.foundation.incident_window)."""
    start, end = incident_window(alert.starts_at, alert.ends_at if alert.status != "firing" else None, now)
    query = urlencode({"fingerprint": alert.fingerprint, "from": rfc3339(start), "to": rfc3339(end)})
    return f"{external_url.rstrip('/')}/incidents?{query}"


def _sorted_pairs(labels: dict[str, str]) -> list[tuple[str, str]]:
    """alertname first, the rest by name (Alertmanager's SortedPairs)."""
    keys = sorted(labels, key=lambda k: (k != "alertname", k))
    return [(k, labels[k]) for k in keys]


def title(n: Notification) -> str:
    """``[FIRING:2] HighErrorRate support-bot`` / ``[RESOLVED] HighErrorRate support-bot``."""
    state = f"FIRING:{len(n.firing)}" if n.status == "firing" else "RESOLVED"
    values = " ".join(v for _, v in _sorted_pairs(n.group_labels))
    if not values:  # grouped by nothing: name what is common instead
        values = " ".join(v for _, v in _sorted_pairs(_common(a.labels for a in n.alerts)))
    return f"[{state}] {values}".strip()


def _common(maps) -> dict[str, str]:
    """Key/value pairs present with the same value in every map."""
    maps = list(maps)
    if not maps:
        return {}
    out = dict(maps[0])
    for m in maps[1:]:
        out = {k: v for k, v in out.items() if k in m and m[k] == v}
    return out


def _summary(a: AlertView) -> str:
    return a.annotations.get("summary") or a.annotations.get("description") or a.labels.get("alertname", "alert")


def _runbook(a: AlertView) -> str | None:
    url = (a.annotations.get("runbook_url") or "").strip()
    return url or None


def _is_http_url(url: str | None) -> bool:
    """Safe as a Slack button URL (a URL Slack refuses fails the whole message) or an HTML/PagerDuty link."""
    return bool(url) and url.lower().startswith(("http://", "https://")) and len(url) <= 3000 \
        and url.isascii() and url.isprintable() and " " not in url and not any(c in url for c in "<>\"")


def _value_text(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.6g}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
