"""Receivers and the notification outbox, against real loopback HTTP and SMTP servers and the real store.

Time is a ManualClock: retries become due because the clock moves, never because a test sleeps.
"""
from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import logging
import threading
import time
import uuid
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import asyncore
    import smtpd

from alerts.delivery import Outbox
from alerts.notify import AlertView, DeliveryError, Notification, build_payload, dedup_key, send
from alerts.notify.alertmanager import AlertmanagerReceiver
from alerts.notify.email import EmailReceiver
from alerts.notify.pagerduty import PagerDutyReceiver
from alerts.notify.slack import SlackReceiver
from alerts.notify.webhook import WebhookReceiver
from monitor.foundation import migrate
from monitor.foundation.config import load_config
from monitor.foundation.storage import Store
from tests.helpers import ServerThread, free_port

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
EXT = "http://nlpmon.test:8080"


# -- loopback servers -----------------------------------------------------------------
class HttpRecorder(ServerThread):
    """A loopback HTTP server that records every request and answers from a list of statuses (then 200)."""

    def __init__(self, *statuses, port: int = 0, delay: float = 0.0):
        self.requests: list[dict] = []
        self.answers = list(statuses)   # int, or (int, body text), or (int, body text, headers)
        self.delay = delay
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rec.requests.append({"method": self.command, "path": self.path,
                                     "headers": {k.lower(): v for k, v in self.headers.items()},
                                     "body": json.loads(raw) if raw else None})
                if rec.delay:
                    time.sleep(rec.delay)
                answer = rec.answers.pop(0) if rec.answers else 200
                status, text, headers = (answer, "", {}) if isinstance(answer, int) else (*answer, {})[:3]
                data = (text or "ok").encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    @property
    def bodies(self) -> list[dict]:
        return [r["body"] for r in self.requests]


class SmtpSink(smtpd.SMTPServer):
    """A loopback SMTP server (stdlib smtpd) that keeps what it receives; ``reply`` refuses the DATA."""

    def __init__(self, reply: str | None = None):
        self._sink_map: dict = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            super().__init__(("127.0.0.1", 0), None, map=self._sink_map, decode_data=False)
        self.reply = reply
        self.messages: list[dict] = []
        self.port = self.socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            # poll(), not select(): the embedded engine can push descriptors past 1024.
            asyncore.loop(timeout=0.02, count=1, map=self._sink_map, use_poll=True)

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        if self.reply:
            return self.reply
        self.messages.append({"from": mailfrom, "to": rcpttos,
                              "message": email.message_from_bytes(data, policy=email.policy.default)})
        return None

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        asyncore.close_all(map=self._sink_map)


# -- notifications --------------------------------------------------------------------
def _alerts() -> list[AlertView]:
    common = {"alertname": "HighErrorRate", "service": "support-bot", "severity": "page"}
    return [
        AlertView("fp-answer", "firing", {**common, "feature": "answer"},
                  {"summary": "Error rate 12% on answer", "runbook_url": "https://runbooks.example/errors"},
                  dt.datetime(2026, 11, 24, 9, 50, tzinfo=UTC), None, 0.12),
        AlertView("fp-search", "resolved", {**common, "feature": "search"},
                  {"summary": "Error rate 9% on search", "runbook_url": "https://runbooks.example/errors"},
                  dt.datetime(2026, 11, 24, 9, 40, 0, 500000, tzinfo=UTC),
                  dt.datetime(2026, 11, 24, 9, 55, tzinfo=UTC), 0.01),
    ]


def _notification(alerts=None, receiver="team", group_key='{}:{alertname="HighErrorRate", service="support-bot"}'):
    return Notification(receiver=receiver, group_key=group_key, status="resolved",
                        group_labels={"service": "support-bot", "alertname": "HighErrorRate"},
                        alerts=_alerts() if alerts is None else alerts, external_url=EXT, now=NOW)


def _resolved(n: Notification) -> Notification:
    alerts = [AlertView(a.fingerprint, "resolved", a.labels, a.annotations, a.starts_at,
                        a.ends_at or dt.datetime(2026, 11, 24, 10, 0, tzinfo=UTC), a.value) for a in n.alerts]
    return Notification(n.receiver, n.group_key, "firing", n.group_labels, alerts, n.external_url, now=NOW)


# -- payloads ---------------------------------------------------------------------------
def test_webhook_payload_is_alertmanager_v4_field_for_field():
    n = _notification()
    assert n.status == "firing"  # derived: one alert fires
    payload = build_payload("webhook", WebhookReceiver(url="http://x.test/hook"), n)
    assert payload == {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate", service="support-bot"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "team",
        "groupLabels": {"service": "support-bot", "alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate", "service": "support-bot", "severity": "page"},
        "commonAnnotations": {"runbook_url": "https://runbooks.example/errors"},
        "externalURL": EXT,
        "alerts": [
            {"status": "firing",
             "labels": {"alertname": "HighErrorRate", "service": "support-bot", "severity": "page", "feature": "answer"},
             "annotations": {"summary": "Error rate 12% on answer", "runbook_url": "https://runbooks.example/errors"},
             "startsAt": "2026-11-24T09:50:00Z",
             "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": f"{EXT}/incidents?fingerprint=fp-answer"
                             "&from=2026-11-24T09%3A20%3A00Z&to=2026-11-24T10%3A05%3A00Z",
             "fingerprint": "fp-answer"},
            {"status": "resolved",
             "labels": {"alertname": "HighErrorRate", "service": "support-bot", "severity": "page", "feature": "search"},
             "annotations": {"summary": "Error rate 9% on search", "runbook_url": "https://runbooks.example/errors"},
             "startsAt": "2026-11-24T09:40:00.5Z",
             "endsAt": "2026-11-24T09:55:00Z",
             "generatorURL": f"{EXT}/incidents?fingerprint=fp-search"
                             "&from=2026-11-24T09%3A10%3A00.5Z&to=2026-11-24T09%3A55%3A00Z",
             "fingerprint": "fp-search"},
        ],
    }
    # All resolved: the group is resolved.
    assert build_payload("webhook", None, _resolved(n))["status"] == "resolved"


def test_slack_message_blocks_links_and_escaping():
    evil = AlertView("fp-evil", "firing", {"alertname": "HighErrorRate", "service": "a<b>&c", "severity": "ticket"},
                     {"summary": "spike <!channel> & <https://evil.example|click>", "description": "rate > 5%",
                      "runbook_url": "https://runbooks.example/errors?x=1&y=2"},
                     dt.datetime(2026, 11, 24, 9, 50, tzinfo=UTC), None, 0.07)
    n = _notification(alerts=[*_alerts(), evil])
    msg = build_payload("slack", SlackReceiver(url="https://hooks.slack.test/services/T/B/X", channel="#alerts"), n)
    assert msg["channel"] == "#alerts"
    assert msg["text"].startswith("[FIRING:2] HighErrorRate support-bot")
    header, *rest = msg["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "[FIRING:2] HighErrorRate support-bot"}}
    sections = [b for b in rest if b["type"] == "section"]
    actions = [b for b in rest if b["type"] == "actions"]
    assert len(sections) == len(actions) == 3
    # Firing alerts first; each section names its state and summary.
    assert [s["text"]["type"] for s in sections] == ["mrkdwn"] * 3
    assert sections[0]["text"]["text"].startswith("*FIRING* · *Error rate 12% on answer*")
    assert sections[2]["text"]["text"].startswith("*RESOLVED* · *Error rate 9% on search*")
    # User text is escaped: no mention, no injected link, no raw < > &.
    evil_text = sections[1]["text"]["text"]
    assert "spike &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in evil_text
    assert "rate &gt; 5%" in evil_text and "service=`a&lt;b&gt;&amp;c`" in evil_text
    for s in sections:
        body = s["text"]["text"].replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")
        assert not set("<>&") & set(body)
    # Buttons: the incident view for the alert's window, and the runbook.
    links = [[e["url"] for e in a["elements"]] for a in actions]
    incident, runbook = links[0]
    q = parse_qs(urlsplit(incident).query)
    assert incident.startswith(f"{EXT}/incidents?")
    assert q == {"fingerprint": ["fp-answer"], "from": ["2026-11-24T09:20:00Z"], "to": ["2026-11-24T10:05:00Z"]}
    assert runbook == "https://runbooks.example/errors"
    assert links[1][1] == "https://runbooks.example/errors?x=1&y=2"  # a JSON string, not mrkdwn: kept as is
    resolved_q = parse_qs(urlsplit(links[2][0]).query)
    assert resolved_q["to"] == ["2026-11-24T09:55:00Z"]  # a resolved alert's window ends when it did
    # The fallback text is escaped too, and a resolved group says so.
    assert "<" not in msg["text"].replace("&lt;", "")
    assert build_payload("slack", SlackReceiver(url="https://h.test/x"), _resolved(n))["text"].startswith(
        "[RESOLVED] HighErrorRate support-bot")


def test_slack_runbook_that_is_not_a_url_is_text_and_many_alerts_are_counted():
    alerts = [AlertView(f"fp{i}", "firing", {"alertname": "A", "service": "s", "severity": "info"},
                        {"summary": f"alert {i}", "runbook_url": "see wiki <page>"},
                        NOW - dt.timedelta(minutes=1), None, None) for i in range(13)]
    msg = build_payload("slack", SlackReceiver(url="https://h.test/x"), _notification(alerts=alerts))
    assert len([b for b in msg["blocks"] if b["type"] == "section"]) == 10
    assert msg["blocks"][-1]["elements"][0]["text"] == "…and 3 more alerts in this group"
    first = next(b for b in msg["blocks"] if b["type"] == "section")["text"]["text"]
    assert "*Runbook:* see wiki &lt;page&gt;" in first
    assert all(len(b["elements"]) == 1 for b in msg["blocks"] if b["type"] == "actions")  # no bad URL button
    assert len(msg["blocks"]) <= 50


def test_pagerduty_trigger_resolve_and_stable_dedup_key():
    target = PagerDutyReceiver(routing_key="R0UTING")
    n = _notification()
    trigger = build_payload("pagerduty", target, n)
    key = dedup_key(n.group_key)
    assert len(key) == 32 and key == build_payload("pagerduty", target, _notification())["dedup_key"]
    assert trigger["routing_key"] == "R0UTING" and trigger["event_action"] == "trigger" and trigger["dedup_key"] == key
    p = trigger["payload"]
    assert p["summary"] == "[FIRING:1] HighErrorRate support-bot: Error rate 12% on answer"
    assert p["source"] == "nlpmon" and p["severity"] == "critical"
    assert p["custom_details"]["firing"] == 1 and p["custom_details"]["resolved"] == 1
    assert [a["fingerprint"] for a in p["custom_details"]["alerts"]] == ["fp-answer", "fp-search"]
    hrefs = [link["href"] for link in trigger["links"]]
    assert hrefs[0].startswith(f"{EXT}/incidents?fingerprint=fp-answer&") and "https://runbooks.example/errors" in hrefs
    resolve = build_payload("pagerduty", target, _resolved(n))
    assert resolve == {"routing_key": "R0UTING", "event_action": "resolve", "dedup_key": key}
    # Another group, another incident; severities map ticket -> warning, anything else -> info.
    assert build_payload("pagerduty", target, _notification(group_key="other"))["dedup_key"] != key
    for sev, expected in (("ticket", "warning"), ("info", "info"), ("", "info")):
        a = AlertView("f", "firing", {"alertname": "X", "severity": sev}, {}, NOW, None, 1.0)
        assert build_payload("pagerduty", target, _notification(alerts=[a]))["payload"]["severity"] == expected
    long = AlertView("f", "firing", {"alertname": "X", "severity": "page"}, {"summary": "x" * 3000}, NOW, None, 1.0)
    assert len(build_payload("pagerduty", target, _notification(alerts=[long]))["payload"]["summary"]) == 1024


def test_email_payload_subject_and_escaped_html():
    target = EmailReceiver(**{"to": ["oncall@example.com"], "from": "nlpmon@example.com", "smarthost": "smtp.test:25"})
    a = AlertView("f", "firing", {"alertname": "HighErrorRate", "service": "support-bot", "severity": "page"},
                  {"summary": "<b>spike</b> & more", "description": "line one\nSubject: injected"}, NOW, None, 0.5)
    m = build_payload("email", target, _notification(alerts=[a]))
    assert m["to"] == ["oncall@example.com"] and m["from"] == "nlpmon@example.com"
    assert m["subject"] == "[FIRING:1] HighErrorRate support-bot"
    assert "<b>spike</b> & more" in m["text"] and "Value: 0.5" in m["text"]
    assert "&lt;b&gt;spike&lt;/b&gt; &amp; more" in m["html"] and "<b>spike</b>" not in m["html"]
    assert f"{EXT}/incidents?fingerprint=f&amp;from=" in m["html"]
    bad = AlertView("f", "firing", {"alertname": "A\r\nBcc: x@evil.test", "severity": "page"}, {}, NOW, None, None)
    assert "\n" not in build_payload("email", target, _notification(alerts=[bad]))["subject"]


def test_alertmanager_payload_is_what_prometheus_posts():
    n = _notification()
    target = AlertmanagerReceiver(url="http://am.test:9093", resend_every="1m")
    assert build_payload("alertmanager", target, n) == [
        {"labels": {"alertname": "HighErrorRate", "service": "support-bot", "severity": "page", "feature": "answer"},
         "annotations": {"summary": "Error rate 12% on answer", "runbook_url": "https://runbooks.example/errors"},
         "startsAt": "2026-11-24T09:50:00Z",
         "endsAt": "2026-11-24T10:04:00Z",   # firing: the decision time plus 4 x resend_every (Prometheus' rule)
         "generatorURL": f"{EXT}/incidents?fingerprint=fp-answer"
                         "&from=2026-11-24T09%3A20%3A00Z&to=2026-11-24T10%3A05%3A00Z"},
        {"labels": {"alertname": "HighErrorRate", "service": "support-bot", "severity": "page", "feature": "search"},
         "annotations": {"summary": "Error rate 9% on search", "runbook_url": "https://runbooks.example/errors"},
         "startsAt": "2026-11-24T09:40:00.5Z",
         "endsAt": "2026-11-24T09:55:00Z",   # resolved: when it resolved
         "generatorURL": f"{EXT}/incidents?fingerprint=fp-search"
                         "&from=2026-11-24T09%3A10%3A00.5Z&to=2026-11-24T09%3A55%3A00Z"},
    ]
    # All resolved: every endsAt is its resolve time (none left in the future for Alertmanager to wait on).
    assert [a["endsAt"] for a in build_payload("alertmanager", target, _resolved(n))] == [
        "2026-11-24T10:00:00Z", "2026-11-24T09:55:00Z"]
    # endsAt follows resend_every; empty labels are left out, as Prometheus does.
    a = AlertView("f", "firing", {"alertname": "X", "severity": "page", "feature": ""}, {}, NOW, None, 1.0)
    [alert] = build_payload("alertmanager", AlertmanagerReceiver(url="http://am.test", resend_every="30s"),
                            _notification(alerts=[a]))
    assert alert["endsAt"] == "2026-11-24T10:02:00Z" and alert["labels"] == {"alertname": "X", "severity": "page"}
    assert AlertmanagerReceiver(url="http://am.test").resend_every == dt.timedelta(minutes=1)
    with pytest.raises(ValueError, match="positive duration"):
        AlertmanagerReceiver(url="http://am.test", resend_every="0s")


# -- sending --------------------------------------------------------------------------
def test_send_webhook_posts_json_and_classifies_errors():
    n = _notification()
    with HttpRecorder(200, (400, "bad payload: " + "x" * 500), 503, 429, (302, "", {"Location": "http://o.test/x"})) as srv:
        target = WebhookReceiver(url=srv.url + "/hooks/alerts?token=s3cret")
        payload = build_payload("webhook", target, n)
        send("webhook", target, payload, 2)
        req = srv.requests[0]
        assert req["method"] == "POST" and req["path"] == "/hooks/alerts?token=s3cret"
        assert req["headers"]["content-type"] == "application/json"
        assert req["body"] == payload

        with pytest.raises(DeliveryError) as e:
            send("webhook", target, payload, 2)
        assert not e.value.retryable and e.value.status == 400
        assert str(e.value) == f"HTTP 400 from {srv.url}: bad payload: " + "x" * 187
        assert "s3cret" not in str(e.value)  # the URL's path and query can be secrets
        for status in (503, 429):
            with pytest.raises(DeliveryError) as e:
                send("webhook", target, payload, 2)
            assert e.value.retryable and e.value.status == status
        with pytest.raises(DeliveryError) as e:   # a redirected POST is not followed (it would become a GET)
            send("webhook", target, payload, 2)
        assert not e.value.retryable and "redirect" in str(e.value)
        assert len(srv.requests) == 5


def test_send_alertmanager_posts_the_array_to_api_v2_alerts_and_classifies_errors():
    n = _notification()
    with HttpRecorder(200, (400, '"at least one label pair required"'), 500, 429) as srv:
        target = AlertmanagerReceiver(url=srv.url + "/am/")   # a base URL with a route prefix
        payload = build_payload("alertmanager", target, n)
        send("alertmanager", target, payload, 2)
        req = srv.requests[0]
        assert req["method"] == "POST" and req["path"] == "/am/api/v2/alerts"
        assert req["headers"]["content-type"] == "application/json" and req["body"] == payload
        with pytest.raises(DeliveryError) as e:   # Alertmanager says why; sending it again cannot help
            send("alertmanager", target, payload, 2)
        assert not e.value.retryable and e.value.status == 400 and "at least one label pair required" in str(e.value)
        for status in (500, 429):
            with pytest.raises(DeliveryError) as e:
                send("alertmanager", target, payload, 2)
            assert e.value.retryable and e.value.status == status
    with pytest.raises(DeliveryError) as e:
        send("alertmanager", AlertmanagerReceiver(url=f"http://127.0.0.1:{free_port()}"), payload, 2)
    assert e.value.retryable and "cannot reach" in str(e.value)


def test_send_connection_refused_and_timeout_are_retryable():
    port = free_port()
    with pytest.raises(DeliveryError) as e:
        send("webhook", WebhookReceiver(url=f"http://127.0.0.1:{port}/x"), {"a": 1}, 2)
    assert e.value.retryable and "cannot reach" in str(e.value)
    with HttpRecorder(delay=0.6) as srv:
        with pytest.raises(DeliveryError) as e:
            send("slack", SlackReceiver(url=srv.url + "/slow"), {"text": "x"}, 0.2)
        assert e.value.retryable and "timed out" in str(e.value)


def test_email_arrives_with_subject_and_bodies():
    n = _notification()
    with SmtpSink() as sink:
        target = EmailReceiver(**{"to": ["oncall@example.com", "lead@example.com"], "from": "nlpmon@example.com",
                                  "smarthost": f"127.0.0.1:{sink.port}"})
        send("email", target, build_payload("email", target, n), 5)
    [got] = sink.messages
    assert got["from"] == "nlpmon@example.com" and got["to"] == ["oncall@example.com", "lead@example.com"]
    msg = got["message"]
    assert msg["Subject"] == "[FIRING:1] HighErrorRate support-bot"
    assert msg["To"] == "oncall@example.com, lead@example.com"
    text = msg.get_body(("plain",)).get_content()
    html_body = msg.get_body(("html",)).get_content()
    assert "Error rate 12% on answer" in text and "Error rate 9% on search" in text
    assert "Firing (1)" in text and "Resolved (1)" in text
    assert "https://runbooks.example/errors" in text and f"{EXT}/incidents?fingerprint=fp-answer" in text
    assert "<h2>[FIRING:1] HighErrorRate support-bot</h2>" in html_body


def test_email_errors_4xx_retry_5xx_do_not():
    def target_for(port, **kw):
        return EmailReceiver(**{"to": ["a@example.com"], "from": "n@example.com", "smarthost": f"127.0.0.1:{port}", **kw})

    payload = build_payload("email", target_for(25), _notification())
    with SmtpSink(reply="451 4.3.0 try again later") as sink:
        with pytest.raises(DeliveryError) as e:
            send("email", target_for(sink.port), payload, 5)
    assert e.value.retryable and e.value.status == 451 and "try again later" in str(e.value)
    with SmtpSink(reply="550 5.7.1 relaying denied") as sink:
        with pytest.raises(DeliveryError) as e:
            send("email", target_for(sink.port), payload, 5)
        assert not e.value.retryable and e.value.status == 550
        with pytest.raises(DeliveryError) as e:  # login configured, server offers no AUTH: a config problem
            send("email", target_for(sink.port, username="u", password="p"), payload, 5)
        assert not e.value.retryable and "AUTH" in str(e.value)
    with pytest.raises(DeliveryError) as e:
        send("email", target_for(free_port()), payload, 5)
    assert e.value.retryable


# -- the outbox ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def outbox_store(chdb_dir):
    """One migrated database for the outbox tests (migrating takes a second or two); emptied per test."""
    config = load_config(env={}, overrides={"clickhouse": {"url": f"chdb://{chdb_dir}",
                                                           "database": f"t_{uuid.uuid4().hex[:12]}"}})
    store = Store.from_config(config)
    migrate.upgrade(store, config)
    yield store
    store.command(f"DROP DATABASE IF EXISTS `{config.clickhouse.database}`")
    store.close()


@pytest.fixture
def outbox_for(make_config, outbox_store, clock):
    outbox_store.command("TRUNCATE TABLE notification_outbox")

    def make(receivers, **delivery):
        config = make_config(alerts={"external_url": EXT, "receivers": receivers,
                                     "route": {"receiver": receivers[0]["name"], "group_by": ["alertname", "service"]},
                                     "delivery": {"backoff_initial": "2s", "backoff_max": "10s",
                                                  "give_up_after": "1m", **delivery}})
        return Outbox(outbox_store, config, clock)
    return make


def _webhook_payload() -> dict:
    return build_payload("webhook", None, _notification())


def test_500_then_200_delivers_once_after_the_backoff(outbox_for, clock, caplog):
    with HttpRecorder(500, 200) as srv:
        ob = outbox_for([{"name": "hook", "webhook": {"url": srv.url + "/hook"}}])
        assert ob.enqueue("n1", "g1", "hook", "firing", _webhook_payload()) is True
        row = ob.get("n1")
        assert (row.status, row.kind, row.attempts, row.next_attempt_at) == ("pending", "webhook", 0, NOW)
        with caplog.at_level(logging.WARNING, logger="alerts.delivery"):
            [r] = ob.deliver_due()
        assert (r.status, r.attempts) == ("pending", 1) and "HTTP 500" in r.last_error
        assert r.next_attempt_at == NOW + dt.timedelta(seconds=2)
        [warning] = [rec for rec in caplog.records if rec.name == "alerts.delivery"]
        assert warning.levelno == logging.WARNING and warning.exc_info is None and "\n" not in warning.getMessage()
        clock.advance(1.9)
        assert ob.deliver_due() == [] and len(srv.requests) == 1   # not before next_attempt_at
        clock.advance(0.1)
        [r] = ob.deliver_due()
        assert (r.status, r.attempts, r.last_error) == ("sent", 2, "")
        assert r.sent_at == NOW + dt.timedelta(seconds=2)
        clock.advance(60)
        assert ob.deliver_due() == []
    assert len(srv.requests) == 2 and srv.bodies[0] == srv.bodies[1] == _webhook_payload()
    assert ob.get("n1").status == "sent" and ob.store.scalar("SELECT count() FROM notification_outbox FINAL") == 1


def test_429_and_connection_refused_are_retried_with_growing_backoff(outbox_for, clock):
    port = free_port()
    with HttpRecorder(429, 429, 200) as srv:
        ob = outbox_for([{"name": "slack", "slack": {"url": srv.url + "/services/T/B/X"}},
                         {"name": "down", "webhook": {"url": f"http://127.0.0.1:{port}/hook"}}])
        ob.enqueue("a", "g", "slack", "firing", {"text": "hi", "blocks": []})
        ob.enqueue("b", "g", "down", "firing", _webhook_payload())
        rows = {r.id: r for r in ob.deliver_due()}
        assert rows["a"].next_attempt_at == NOW + dt.timedelta(seconds=2) and "HTTP 429" in rows["a"].last_error
        assert rows["b"].status == "pending" and "cannot reach" in rows["b"].last_error
        clock.advance(2)
        rows = {r.id: r for r in ob.deliver_due()}
        assert rows["a"].attempts == 2 and rows["a"].next_attempt_at == clock.now() + dt.timedelta(seconds=4)
        assert rows["b"].attempts == 2
        clock.advance(4)
        with HttpRecorder(port=port) as late:   # the receiver comes up
            rows = {r.id: r for r in ob.deliver_due()}
        assert rows["a"].status == rows["b"].status == "sent"
    assert len(srv.requests) == 3 and srv.bodies[2] == {"text": "hi", "blocks": []}
    assert late.bodies == [_webhook_payload()]


def test_400_fails_without_retry_and_unknown_receiver_fails(outbox_for, clock):
    with HttpRecorder((400, '{"error":"invalid payload"}')) as srv:
        ob = outbox_for([{"name": "hook", "webhook": {"url": srv.url}}])
        ob.enqueue("n1", "g", "hook", "firing", _webhook_payload())
        ob.enqueue("n2", "g", "gone", "firing", _webhook_payload())
        rows = {r.id: r for r in ob.deliver_due()}
        assert rows["n1"].status == "failed" and rows["n1"].attempts == 1
        assert rows["n1"].last_error == f'HTTP 400 from {srv.url}: {{"error":"invalid payload"}}'
        assert rows["n2"].status == "failed" and "receiver 'gone' is not configured" in rows["n2"].last_error
        clock.advance(3600)
        assert ob.deliver_due() == []
    assert len(srv.requests) == 1
    assert {r.id: r.last_error for r in ob.rows("failed")} == {
        "n1": rows["n1"].last_error, "n2": rows["n2"].last_error}


def test_enqueue_same_id_twice_is_one_row_and_one_delivery(outbox_for, clock):
    with HttpRecorder() as srv:
        ob = outbox_for([{"name": "hook", "webhook": {"url": srv.url}}])
        assert ob.enqueue("same", "g", "hook", "firing", _webhook_payload()) is True
        assert ob.enqueue("same", "g", "hook", "firing", {"other": True}) is False
        assert [r.status for r in ob.deliver_due()] == ["sent"]
        assert ob.enqueue("same", "g", "hook", "firing", _webhook_payload()) is False  # also once sent
        clock.advance(60)
        assert ob.deliver_due() == []
    assert srv.bodies == [_webhook_payload()]
    assert ob.store.scalar("SELECT count() FROM notification_outbox FINAL WHERE id = 'same'") == 1


def test_gives_up_after_give_up_after(outbox_for, clock):
    with HttpRecorder(*[500] * 20) as srv:
        ob = outbox_for([{"name": "hook", "webhook": {"url": srv.url}}], give_up_after="30s")
        ob.enqueue("n", "g", "hook", "firing", _webhook_payload())
        statuses = []
        for _ in range(10):
            for r in ob.deliver_due():
                statuses.append(r.status)
            clock.advance(10)   # backoff 2, 4, 8, 10 (max), ...
        row = ob.get("n")
    assert row.status == "failed" and statuses[-1] == "failed" and statuses.count("failed") == 1
    assert row.last_error.startswith(f"gave up after {row.attempts} attempts: HTTP 500 from {srv.url}")
    assert len(srv.requests) == row.attempts == len(statuses)
    assert row.updated_at - row.created_at > dt.timedelta(seconds=30)


def test_pagerduty_key_is_not_stored_and_is_sent_from_config(outbox_for, clock):
    with HttpRecorder() as srv:
        ob = outbox_for([{"name": "pd", "pagerduty": {"routing_key": "KEY-1", "url": srv.url + "/v2/enqueue"}}])
        n = _notification(receiver="pd")
        ob.enqueue("t", n.group_key, "pd", "firing", build_payload("pagerduty", ob._receiver("pd").target, n))
        assert [r.status for r in ob.deliver_due()] == ["sent"]
        clock.advance(60)
        ob.enqueue("r", n.group_key, "pd", "resolved", build_payload("pagerduty", ob._receiver("pd").target, _resolved(n)))
        assert "KEY-1" not in json.dumps([r.payload for r in ob.rows()])
        assert [r.status for r in ob.deliver_due()] == ["sent"]
    trigger, resolve = srv.bodies
    assert srv.requests[0]["path"] == "/v2/enqueue"
    assert trigger["routing_key"] == resolve["routing_key"] == "KEY-1"
    assert trigger["event_action"] == "trigger" and resolve == {
        "routing_key": "KEY-1", "event_action": "resolve", "dedup_key": trigger["dedup_key"]}


def test_a_newer_notification_supersedes_an_older_one_still_retrying(outbox_for, clock):
    with HttpRecorder(503) as srv:
        ob = outbox_for([{"name": "pd", "pagerduty": {"routing_key": "K", "url": srv.url}}])
        n = _notification(receiver="pd")
        target = ob._receiver("pd").target
        ob.enqueue("trigger", n.group_key, "pd", "firing", build_payload("pagerduty", target, n))
        clock.advance(1)
        ob.enqueue("other-group", "g2", "pd", "firing", build_payload("pagerduty", target, _notification(group_key="g2")))
        assert [r.status for r in ob.deliver_due()] == ["pending", "sent"]
        clock.advance(5)
        ob.enqueue("resolve", n.group_key, "pd", "resolved", build_payload("pagerduty", target, _resolved(n)))
        rows = {r.id: r for r in ob.deliver_due()}
        assert rows["trigger"].status == "superseded" and "HTTP 503" in rows["trigger"].last_error
        assert rows["trigger"].attempts == 1 and rows["resolve"].status == "sent"
        clock.advance(600)
        assert ob.deliver_due() == []
    assert [b["event_action"] for b in srv.bodies] == ["trigger", "trigger", "resolve"]
    assert {r.id: r.status for r in ob.rows()} == {"trigger": "superseded", "other-group": "sent", "resolve": "sent"}


def test_test_notification_sends_now_or_raises(outbox_for):
    with HttpRecorder(200, 404) as srv:
        ob = outbox_for([{"name": "hook", "webhook": {"url": srv.url}}])
        ob.test_notification("hook")
        [body] = srv.bodies
        assert body["version"] == "4" and body["alerts"][0]["labels"]["alertname"] == "NlpmonTestNotification"
        with pytest.raises(DeliveryError) as e:
            ob.test_notification("hook")
        assert "HTTP 404" in str(e.value) and not e.value.retryable
        with pytest.raises(DeliveryError, match="no receiver named 'nope'"):
            ob.test_notification("nope")
    assert ob.rows() == []  # nothing queued


# -- receiver config ------------------------------------------------------------------------
def test_receiver_settings_are_validated_by_their_kind_which_kinds_lists(make_config, tmp_path, monkeypatch):
    import types

    from click.testing import CliRunner

    from alerts import notify
    from monitor.cli import cli
    from monitor.foundation.config import ConfigError

    def receivers(*rcvs):
        return notify.receivers(make_config(alerts={"receivers": list(rcvs), "route": {"receiver": rcvs[0]["name"]}}))

    # A bad setting names its key, under the receiver's name and kind.
    with pytest.raises(ConfigError) as e:
        receivers({"name": "hook", "webhook": {"url": "ftp://x"}})
    assert str(e.value) == ("config key 'alerts.receivers[hook].webhook.url': "
                            "String should match pattern '^https?://' (got 'ftp://x')")
    with pytest.raises(ConfigError) as e:
        receivers({"name": "pd", "pagerduty": {"routing_key": "K", "timout": "5s"}})
    assert str(e.value) == "config key 'alerts.receivers[pd].pagerduty.timout': unknown key"
    # An unknown kind is named with the kinds there are.
    with pytest.raises(ConfigError) as e:
        receivers({"name": "x", "opsgenie": {"api_key": "k"}})
    assert str(e.value) == ("config key 'alerts.receivers[x]': unknown receiver kind 'opsgenie'; "
                            "kinds are webhook, slack, pagerduty, email, alertmanager")
    # The foundation checks the shape only: a name and exactly one kind, a mapping.
    for bad in ({"name": "none"}, {"name": "two", "webhook": {"url": "http://h.test"}, "slack": {"url": "http://h.test"}}):
        with pytest.raises(ConfigError, match=r"'alerts\.receivers\.0': a receiver has exactly one kind"):
            make_config(alerts={"receivers": [bad], "route": {"receiver": bad["name"]}})
    with pytest.raises(ConfigError, match=r"'alerts\.receivers\.0\.webhook': Input should be a valid dictionary"):
        make_config(alerts={"receivers": [{"name": "h", "webhook": "http://h.test"}], "route": {"receiver": "h"}})

    # KINDS is the one list: a receiver of each kind in it validates into that kind's model.
    examples = {"webhook": {"url": "http://h.test/x"}, "slack": {"url": "https://hooks.slack.test/x", "channel": "#a"},
                "pagerduty": {"routing_key": "K"},
                "email": {"to": ["a@example.com"], "from": "n@example.com", "smarthost": "smtp.test:25"},
                "alertmanager": {"url": "http://am.test:9093"}}
    assert list(examples) == list(notify.KINDS)
    got = receivers(*({"name": f"r-{kind}", kind: settings} for kind, settings in examples.items()))
    assert {name: (r.kind, type(r.target)) for name, r in got.items()} == {
        f"r-{kind}": (kind, module.Settings) for kind, module in notify.KINDS.items()}
    assert got["r-email"].target.from_ == "n@example.com" and got["r-pagerduty"].target.send_resolved is True
    # ... and a kind registered there is configured, built, stored and sent with no other change.
    sent = []

    class FakeSettings(WebhookReceiver):
        token: str

    fake = types.SimpleNamespace(KIND="fake", Settings=FakeSettings,
                                 payload=lambda target, n: {"title": n.receiver, "token": target.token},
                                 stored=lambda payload: {k: v for k, v in payload.items() if k != "token"},
                                 send=lambda target, payload, timeout: sent.append((target.url, payload, timeout)))
    monkeypatch.setitem(notify.KINDS, "fake", fake)
    [rcv] = receivers({"name": "f", "fake": {"url": "http://f.test", "token": "T"}}).values()
    payload = notify.build_payload(rcv.kind, rcv.target, _notification(receiver="f"))
    assert payload == {"title": "f", "token": "T"} and notify.stored(rcv.kind, payload) == {"title": "f"}
    notify.send(rcv.kind, rcv.target, payload)
    assert sent == [("http://f.test", payload, 10.0)]
    assert notify.stored("webhook", payload) is payload  # kinds without the hook store the payload as built

    # Every CLI command fails fast, with the key named, on a bad receiver.
    (tmp_path / "monitor.yaml").write_text(
        "alerts:\n  receivers: [{name: hook, webhook: {url: 'ftp://x'}}]\n  route: {receiver: hook}\n")
    result = CliRunner().invoke(cli, ["alerts", "test-receiver", "hook"],
                                env={"MONITOR_CONFIG": str(tmp_path / "monitor.yaml")})
    assert result.exit_code == 1 and "config key 'alerts.receivers[hook].webhook.url'" in result.output
