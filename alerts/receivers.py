"""Receivers: what a notification looks like for each kind, and sending it.

:func:`build_payload` turns a :class:`Notification` (one group of alerts for one
receiver) into the body a receiver kind expects:

* ``webhook``: the Alertmanager webhook payload, version 4, so anything that
  consumes Alertmanager webhooks consumes ours;
* ``slack``: an incoming-webhook message with Block Kit blocks;
* ``pagerduty``: an Events API v2 event (trigger or resolve) with a dedup key
  that is stable per group, so a resolve closes the incident the trigger opened;
* ``email``: to/from/subject and a plain and an HTML body.

:func:`send` delivers a payload once and raises :class:`DeliveryError` telling
the caller whether trying again later can help. Retrying, backoff and giving up
are the outbox's business (:mod:`alerts.delivery`).

Payloads are built once, when the decision to notify is made, and stored in the
outbox; the only thing :func:`send` adds is the PagerDuty routing key, taken from
the config at send time so the secret is not stored and a rotated key applies.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from monitor.foundation.clock import utc
from monitor.foundation.incident_window import incident_window

__all__ = ["AlertView", "DeliveryError", "KINDS", "Notification", "build_payload", "dedup_key",
           "incident_url", "rfc3339", "send", "title"]

KINDS = ("webhook", "slack", "pagerduty", "email")
ZERO_TIME = "0001-01-01T00:00:00Z"   # Alertmanager's endsAt for an alert that is still firing
USER_AGENT = "nlpmon-alerts"

_SLACK_MAX_ALERTS = 10          # alerts shown one by one in a Slack message; the rest are counted
_SLACK_SECTION_CHARS = 3000     # Block Kit limit for a section's text
_SLACK_HEADER_CHARS = 150       # and for a header's
_PD_SUMMARY_CHARS = 1024
_PD_MAX_ALERTS = 20             # alerts listed in custom_details
_PD_MAX_LINKS = 10
_ERROR_BODY_CHARS = 200


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


# -- shared pieces ------------------------------------------------------------------


def rfc3339(ts: dt.datetime | None) -> str:
    """RFC 3339 in UTC with a Z; fractional seconds only when there are some (as Go writes them).

    None is Go's zero time, which Alertmanager sends as the end of a firing alert.
    """
    if ts is None:
        return ZERO_TIME
    ts = utc(ts)
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        text += ("." + f"{ts.microsecond:06d}").rstrip("0")
    return text + "Z"


def _now(n: Notification) -> dt.datetime:
    return utc(n.now) if n.now is not None else dt.datetime.now(dt.timezone.utc)


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


def dedup_key(group_key: str) -> str:
    """Stable per group: PagerDuty resolves the incident the same group triggered."""
    return hashlib.sha256(group_key.encode()).hexdigest()[:32]


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


# -- webhook ------------------------------------------------------------------------
def _webhook(n: Notification) -> dict:
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


# -- slack --------------------------------------------------------------------------
def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters: & < > (everything else is shown as is)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack(target, n: Notification) -> dict:
    now = _now(n)
    head = title(n)
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": _truncate(head, _SLACK_HEADER_CHARS)}}]
    shown = sorted(n.alerts, key=lambda a: a.status != "firing")[:_SLACK_MAX_ALERTS]
    for a in shown:
        lines = [f"*{a.status.upper()}* · *{slack_escape(_summary(a))}*"]
        description = a.annotations.get("description")
        if description and description != _summary(a):
            lines.append(slack_escape(description))
        labels = ", ".join(f"{k}=`{slack_escape(v)}`" for k, v in _sorted_pairs(a.labels))
        if labels:
            lines.append(f"*Labels:* {labels}")
        facts = []
        if a.value is not None:
            facts.append(f"*Value:* {_value_text(a.value)}")
        facts.append(f"*Since:* {rfc3339(a.starts_at)}")
        if a.status != "firing" and a.ends_at is not None:
            facts.append(f"*Resolved:* {rfc3339(a.ends_at)}")
        lines.append(" · ".join(facts))
        runbook = _runbook(a)
        if runbook and not _is_http_url(runbook):
            lines.append(f"*Runbook:* {slack_escape(runbook)}")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _truncate("\n".join(lines), _SLACK_SECTION_CHARS)}})
        # Buttons carry URLs as plain JSON strings: no mrkdwn link syntax to break or escape.
        buttons = [{"type": "button", "text": {"type": "plain_text", "text": "View incident"},
                    "url": incident_url(n.external_url, a, now), "action_id": f"incident-{a.fingerprint}"[:255]}]
        if _is_http_url(runbook):
            buttons.append({"type": "button", "text": {"type": "plain_text", "text": "Runbook"},
                            "url": runbook, "action_id": f"runbook-{a.fingerprint}"[:255]})
        blocks.append({"type": "actions", "elements": buttons})
    hidden = len(n.alerts) - len(shown)
    if hidden > 0:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"…and {hidden} more alert{'s' if hidden != 1 else ''} in this group"}]})
    first = shown[0] if shown else None
    text = slack_escape(head) + (f": {slack_escape(_summary(first))}" if first else "")
    out = {"text": _truncate(text, _SLACK_SECTION_CHARS), "blocks": blocks}
    channel = getattr(target, "channel", "") if target is not None else ""
    if channel:
        out["channel"] = channel
    return out


# -- pagerduty ----------------------------------------------------------------------
_PD_SEVERITY = {"page": "critical", "ticket": "warning"}
_PD_RANK = {"critical": 3, "error": 2, "warning": 1, "info": 0}


def _pagerduty(target, n: Notification) -> dict:
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
    payload: dict[str, Any] = {
        "summary": _truncate(summary, _PD_SUMMARY_CHARS),
        "source": "nlpmon",
        "severity": severity,
        "timestamp": rfc3339(min((utc(a.starts_at) for a in firing if a.starts_at is not None), default=now)),
        "custom_details": details,
    }
    common = _common(a.labels for a in n.alerts)
    if common.get("service"):
        payload["component"] = common["service"]
    if common.get("alertname"):
        payload["class"] = common["alertname"]
    return {"routing_key": routing_key, "event_action": "trigger", "dedup_key": key, "payload": payload,
            "client": "nlpmon", "client_url": n.external_url, "links": links}


# -- email --------------------------------------------------------------------------
def _email(target, n: Notification) -> dict:
    now = _now(n)
    subject = " ".join(title(n).split())  # one line: no header injection through a label value
    text_lines = [subject, ""]
    html_parts = [f"<h2>{html.escape(subject)}</h2>"]
    for heading, alerts in (("Firing", n.firing), ("Resolved", n.resolved)):
        if not alerts:
            continue
        text_lines += [f"{heading} ({len(alerts)})", "=" * (len(heading) + len(str(len(alerts))) + 3), ""]
        html_parts.append(f"<h3>{heading} ({len(alerts)})</h3>")
        for a in alerts:
            link, runbook = incident_url(n.external_url, a, now), _runbook(a)
            text_lines.append(f"* {_summary(a)}")
            description = a.annotations.get("description")
            if description and description != _summary(a):
                text_lines.append(f"  {description}")
            text_lines.append("  Labels: " + ", ".join(f"{k}={v}" for k, v in _sorted_pairs(a.labels)))
            if a.value is not None:
                text_lines.append(f"  Value: {_value_text(a.value)}")
            text_lines.append(f"  Since: {rfc3339(a.starts_at)}")
            if a.status != "firing" and a.ends_at is not None:
                text_lines.append(f"  Resolved: {rfc3339(a.ends_at)}")
            text_lines.append(f"  Incident: {link}")
            if runbook:
                text_lines.append(f"  Runbook: {runbook}")
            text_lines.append("")
            rows = [("Labels", html.escape(", ".join(f"{k}={v}" for k, v in _sorted_pairs(a.labels))))]
            if a.value is not None:
                rows.append(("Value", html.escape(_value_text(a.value))))
            rows.append(("Since", html.escape(rfc3339(a.starts_at))))
            if a.status != "firing" and a.ends_at is not None:
                rows.append(("Resolved", html.escape(rfc3339(a.ends_at))))
            links = [f'<a href="{html.escape(link)}">View incident</a>']
            if _is_http_url(runbook):
                links.append(f'<a href="{html.escape(runbook)}">Runbook</a>')
            elif runbook:
                rows.append(("Runbook", html.escape(runbook)))
            html_parts.append(
                "<div style=\"margin-bottom:16px\">"
                f"<p><strong>{html.escape(_summary(a))}</strong></p>"
                + (f"<p>{html.escape(description)}</p>" if description and description != _summary(a) else "")
                + "<table>" + "".join(f"<tr><th align=\"left\">{k}</th><td>{v}</td></tr>" for k, v in rows)
                + "</table>"
                f"<p>{' · '.join(links)}</p></div>")
    text_lines.append(f"-- nlpmon {n.external_url}")
    body_html = ("<!DOCTYPE html><html><body style=\"font-family:sans-serif\">" + "".join(html_parts)
                 + f"<p style=\"color:#888\">nlpmon · <a href=\"{html.escape(n.external_url)}\">"
                   f"{html.escape(n.external_url)}</a></p></body></html>")
    return {"to": list(getattr(target, "to", []) or []), "from": getattr(target, "from_", ""),
            "subject": subject, "text": "\n".join(text_lines), "html": body_html}


def build_payload(kind: str, target, n: Notification) -> dict:
    """The body receiver ``kind`` expects for notification ``n``; ``target`` is its config model."""
    if kind == "webhook":
        return _webhook(n)
    if kind == "slack":
        return _slack(target, n)
    if kind == "pagerduty":
        return _pagerduty(target, n)
    if kind == "email":
        return _email(target, n)
    raise ValueError(f"unknown receiver kind {kind!r}; expected one of {', '.join(KINDS)}")


# -- sending ------------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirected POST would silently become a GET without the body; report it instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _where(url: str) -> str:
    """scheme://host:port only: Slack webhook paths and query strings are secrets."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc.rpartition('@')[2]}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _post_json(url: str, body: dict, timeout: float) -> None:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": USER_AGENT})
    where = _where(url)
    try:
        with _opener.open(req, timeout=timeout) as resp:
            resp.read(65536)
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        try:
            text = exc.read(4096).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - the body is only for the message
            text = ""
        finally:
            exc.close()
        text = " ".join(text.split())[:_ERROR_BODY_CHARS]
        msg = f"HTTP {status} from {where}" + (f": {text}" if text else "")
        if 300 <= status < 400:
            location = exc.headers.get("Location", "") if exc.headers else ""
            raise DeliveryError(f"HTTP {status} redirect from {where} to {_where(location) if location else '?'}; "
                                f"configure the final URL", retryable=False, status=status) from None
        raise DeliveryError(msg, retryable=status == 429 or status >= 500, status=status) from None
    except urllib.error.URLError as exc:
        reason = _reason(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
        raise DeliveryError(f"cannot reach {where}: {reason}", retryable=True) from None
    except TimeoutError:
        raise DeliveryError(f"timed out after {timeout:g}s waiting for {where}", retryable=True) from None
    except OSError as exc:  # refused, reset, TLS errors
        raise DeliveryError(f"connection to {where} failed: {_reason(exc)}", retryable=True) from None
    except Exception as exc:  # noqa: BLE001 - http.client.HTTPException and friends: a broken answer
        raise DeliveryError(f"bad answer from {where}: {type(exc).__name__}: {_reason(exc)}", retryable=True) from None
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status} from {where}", retryable=status == 429 or status >= 500, status=status)


def _smtp_error(exc: smtplib.SMTPResponseException, where: str, what: str) -> DeliveryError:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    text = " ".join(text.split())[:_ERROR_BODY_CHARS]
    code = exc.smtp_code
    return DeliveryError(f"SMTP {code} from {where} ({what}): {text}", retryable=not 500 <= code < 600, status=code)


def _send_email(target, payload: dict, timeout: float) -> None:
    host, _, port_text = target.smarthost.rpartition(":")
    port = int(port_text)
    where = f"{host}:{port}"
    msg = EmailMessage()
    msg["Subject"] = payload["subject"]
    msg["From"] = payload.get("from") or target.from_
    to = list(payload.get("to") or target.to)
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="nlpmon")
    msg["X-Mailer"] = USER_AGENT
    # quoted-printable: 7-bit safe for servers without 8BITMIME, and label values may be any text.
    msg.set_content(payload.get("text", ""), cte="quoted-printable")
    if payload.get("html"):
        msg.add_alternative(payload["html"], subtype="html", cte="quoted-printable")
    step = "connect"
    try:
        cls = smtplib.SMTP_SSL if port == 465 else smtplib.SMTP
        with cls(host, port, timeout=timeout) as smtp:
            step = "EHLO"
            smtp.ehlo()
            if target.starttls and port != 465:
                step = "STARTTLS"
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if target.username:
                step = "AUTH"
                smtp.login(target.username, target.password)
            step = "send"
            refused = smtp.send_message(msg, from_addr=msg["From"], to_addrs=to)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(f"{r}: {c} {m.decode('utf-8', 'replace') if isinstance(m, bytes) else m}"
                           for r, (c, m) in exc.recipients.items())
        raise DeliveryError(f"SMTP {where} refused every recipient: {detail[:_ERROR_BODY_CHARS]}",
                            retryable=all(400 <= c < 500 for c in codes), status=max(codes, default=None)) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"SMTP {where} ({step}): {_reason(exc)}", retryable=False) from None
    except smtplib.SMTPResponseException as exc:
        raise _smtp_error(exc, where, step) from None
    except smtplib.SMTPServerDisconnected as exc:
        raise DeliveryError(f"SMTP {where} disconnected ({step}): {_reason(exc)}", retryable=True) from None
    except TimeoutError:
        raise DeliveryError(f"timed out after {timeout:g}s talking to SMTP {where} ({step})", retryable=True) from None
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(f"SMTP {where} ({step}): certificate not trusted: {_reason(exc)}", retryable=False) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"cannot reach SMTP {where} ({step}): {_reason(exc)}", retryable=True) from None
    if refused:
        detail = ", ".join(sorted(refused))
        raise DeliveryError(f"SMTP {where} delivered to some recipients but refused {detail}", retryable=False)


def send(kind: str, target, payload: dict, timeout_seconds: float | None = None) -> None:
    """Deliver ``payload`` once. Raises :class:`DeliveryError` (with ``retryable``) when it was not delivered.

    HTTP kinds: 2xx is delivered; 429, 5xx, timeouts and connection errors are
    retryable; other statuses are not. Email: SMTP 4xx and connection errors are
    retryable, 5xx are not.
    """
    if timeout_seconds is None:
        timeout_seconds = target.timeout.total_seconds()
    if kind in ("webhook", "slack"):
        _post_json(target.url, payload, timeout_seconds)
    elif kind == "pagerduty":
        # The key comes from the config now: not stored with the payload, and a rotated key applies.
        _post_json(target.url, {**payload, "routing_key": target.routing_key}, timeout_seconds)
    elif kind == "email":
        _send_email(target, payload, timeout_seconds)
    else:
        raise DeliveryError(f"unknown receiver kind {kind!r}", retryable=False)
