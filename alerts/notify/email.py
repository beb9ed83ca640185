"""The ``email`` receiver: to/from/subject with a plain and an HTML body, sent over SMTP.

The subject is the group's title on one line, so a label value cannot inject a
header; every piece of user text in the HTML body is escaped. Bodies go out
quoted-printable: 7-bit safe for servers without 8BITMIME, whatever text a
label holds.

Sending: port 465 is implicit TLS, ``starttls`` upgrades any other port, and a
username means AUTH. SMTP 4xx and connection errors are retryable; 5xx, a
missing STARTTLS or AUTH, and an untrusted certificate are configuration
problems and are not.
"""
from __future__ import annotations

import datetime as dt
import html
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from pydantic import Field

from alerts.notify.common import (_ERROR_BODY_CHARS, USER_AGENT, DeliveryError, Notification, _is_http_url, _now,
                                  _runbook, _sorted_pairs, _summary, _value_text, incident_url, keep_all, rfc3339, title)
from alerts.notify.transport import _reason
from monitor.foundation.config import Duration, _Section

__all__ = ["EmailReceiver", "KIND", "Settings", "payload", "send"]

KIND = "email"


class EmailReceiver(_Section):
    to: list[str] = Field(min_length=1)
    from_: str = Field(alias="from", min_length=3)
    smarthost: str = Field(pattern=r"^[^:]+:\d+$")
    username: str = ""
    password: str = ""
    starttls: bool = False
    send_resolved: bool = True
    timeout: Duration = dt.timedelta(seconds=10)


RESEND_EVERY = None  # a firing group repeats on its route's repeat_interval
stored = keep_all  # the payload holds no secret
Settings = EmailReceiver


def payload(target: EmailReceiver | None, n: Notification) -> dict:
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
            if a.annotations.get("contributors"):
                text_lines.append(f"  What changed: {a.annotations['contributors']}")
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
            if a.annotations.get("contributors"):
                rows.insert(0, ("What changed", html.escape(a.annotations["contributors"])))
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


def _smtp_error(exc: smtplib.SMTPResponseException, where: str, what: str) -> DeliveryError:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    text = " ".join(text.split())[:_ERROR_BODY_CHARS]
    code = exc.smtp_code
    return DeliveryError(f"SMTP {code} from {where} ({what}): {text}", retryable=not 500 <= code < 600, status=code)


def send(target: EmailReceiver, payload: dict, timeout: float) -> None:
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
