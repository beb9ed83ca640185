"""The ``slack`` receiver: an incoming-webhook message with Block Kit blocks.

A header with the group's title, then per alert a section (state, summary,
labels, value, since when) and an actions block with buttons to the incident
view and the runbook. Choices that matter:

* label values and annotations are user text: Slack's control characters are
  escaped, so a value cannot mention ``<!channel>`` or inject a link;
* URLs go in buttons, plain JSON strings, never in mrkdwn link syntax, so
  nothing in a URL needs escaping or can break the message; a runbook that is
  not a URL Slack accepts is shown as text instead (Slack refuses the whole
  message for one bad button URL);
* Block Kit limits (50 blocks, 3000 characters a section, 150 a header): at
  most ten alerts are shown one by one, firing first, and the rest counted.
"""
from __future__ import annotations

import datetime as dt

from pydantic import Field

from alerts.notify.common import (Notification, _is_http_url, _now, _runbook, _sorted_pairs, _summary, _truncate,
                                  _value_text, incident_url, keep_all, rfc3339, title)
from alerts.notify.transport import _post_json
from monitor.foundation.config import Duration, _Section

__all__ = ["KIND", "RESEND_EVERY", "Settings", "SlackReceiver", "payload", "send", "slack_escape"]

KIND = "slack"

_SLACK_MAX_ALERTS = 10          # alerts shown one by one in a Slack message; the rest are counted
_SLACK_SECTION_CHARS = 3000     # Block Kit limit for a section's text
_SLACK_HEADER_CHARS = 150       # and for a header's


class SlackReceiver(_Section):
    url: str = Field(pattern=r"^https?://")
    send_resolved: bool = True
    timeout: Duration = dt.timedelta(seconds=10)
    # Empty: the channel the incoming webhook was created for.
    channel: str = ""


RESEND_EVERY = None  # a firing group repeats on its route's repeat_interval
stored = keep_all  # the payload holds no secret
Settings = SlackReceiver


def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters: & < > (everything else is shown as is)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(target: SlackReceiver | None, n: Notification) -> dict:
    now = _now(n)
    head = title(n)
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": _truncate(head, _SLACK_HEADER_CHARS)}}]
    shown = sorted(n.alerts, key=lambda a: a.status != "firing")[:_SLACK_MAX_ALERTS]
    for a in shown:
        lines = [f"*{a.status.upper()}* · *{slack_escape(_summary(a))}*"]
        description = a.annotations.get("description")
        if description and description != _summary(a):
            lines.append(slack_escape(description))
        if a.annotations.get("contributors"):
            lines.append(f"*What changed:* {slack_escape(a.annotations['contributors'])}")
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


def send(target: SlackReceiver, payload: dict, timeout: float) -> None:
    _post_json(target.url, payload, timeout)
