"""The ``alertmanager`` receiver against a real Alertmanager, and the dispatcher's resend hook.

The first test starts ``/usr/bin/prometheus-alertmanager`` (Debian's package, v0.25; ``make
tools`` installs it) on loopback and drives the alert engine into it. Alertmanager judges
``endsAt`` by its own wall clock, so there the injected clock is set to the real time before
each evaluation and ``resend_every`` is 1 s: the alert outlives its first ``endsAt`` (4 s after
the first notification) only because nlpmon keeps re-sending it, and the whole test takes
seconds. Everything else runs on a ManualClock and nothing sleeps.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest

from alerts.engine import AlertEngine
from alerts.reads import fingerprint
from alerts.notify import AlertView, incident_url, webhook
from monitor.foundation.clock import ManualClock
from tests.helpers import free_port
from tests.loopback import Recorder

UTC = dt.timezone.utc
EXT = "http://nlpmon.test:8080"
AM_BIN = "/usr/bin/prometheus-alertmanager"
TICK = dt.timedelta(seconds=15)
# A rule over points the cost job would write (read from metric_points, so a test can write them).
RULE = {"name": "CostPerRequestHigh", "metric": "cost_per_request_usd", "window": "1h", "by": ["service", "feature"],
        "op": ">", "threshold": 0.01, "for": "1m", "over": "2m", "labels": {"severity": "page"},
        "annotations": {"summary": "{{ $labels.service }}/{{ $labels.feature }} costs {{ $value }} a request",
                        "runbook_url": "https://runbooks.example/cost"}}
LABELS = {"alertname": "CostPerRequestHigh", "service": "svc", "feature": "chat", "severity": "page"}
ONLY_OURS = ["alertname=CostPerRequestHigh"]   # other alerts (the engine's system rules) go elsewhere


def put(store, ts, value):
    labels = {"service": "svc", "feature": "chat"}
    store.insert("metric_points", [[ts, "1h", "cost_per_request_usd", labels, float(value), ts]],
                 ["ts", "window", "metric", "labels", "value", "computed_at"])


def ours(rows: list[dict], receiver: str) -> list[dict]:
    """Outbox rows of our rule's group for ``receiver``."""
    return [r for r in rows if r.receiver == receiver and 'alertname="CostPerRequestHigh"' in r.group_key]


def parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def real_now() -> dt.datetime:
    """The wall clock, to the millisecond the store keeps (so times read back compare equal)."""
    now = dt.datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# -- a real Alertmanager ----------------------------------------------------------------
class Alertmanager:
    def __init__(self, url: str):
        self.url = url

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if path.startswith("/api/") else body.decode()

    def alerts(self, query: str = "") -> list[dict]:
        return self.get("/api/v2/alerts" + query)

    def metric(self, line: str) -> float:
        """The value of one sample of /metrics, e.g. ``alertmanager_alerts{state="active"}``."""
        for row in self.get("/metrics").splitlines():
            if row.startswith(line + " "):
                return float(row.rsplit(" ", 1)[1])
        raise AssertionError(f"{line} not in Alertmanager's /metrics")


@pytest.fixture
def alertmanager(tmp_path):
    if not os.access(AM_BIN, os.X_OK):
        pytest.fail(f"{AM_BIN} is not installed: `make test` installs Debian's prometheus-alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "alertmanager.log", "wb") as log:
        proc = subprocess.Popen([AM_BIN, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                                 "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"alertmanager exited with {proc.returncode}: "
                                f"{(tmp_path / 'alertmanager.log').read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(url + "/-/ready", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"alertmanager not ready at {url} after 30 s")
                time.sleep(0.05)
            yield Alertmanager(url)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_real_alertmanager_gets_the_alert_keeps_it_while_resent_and_resolves_it(alertmanager, make_config,
                                                                                   make_store):
    am = alertmanager
    with Recorder() as elsewhere:
        cfg = make_config(alerts={
            "default_rules": False, "slo_rules": False, "external_url": EXT, "rules": [{**RULE, "for": "0s"}],
            "receivers": [{"name": "team-am", "alertmanager": {"url": am.url, "send_resolved": True, "timeout": "5s",
                                                               "resend_every": "1s"}},
                          {"name": "elsewhere", "webhook": {"url": elsewhere.url}}],
            # group_interval and repeat_interval far longer than the resend: the hook shortens both.
            "route": {"receiver": "elsewhere", "group_by": ["alertname", "service"], "group_wait": "0s",
                      "group_interval": "5m", "repeat_interval": "4h",
                      "routes": [{"matchers": ONLY_OURS, "receiver": "team-am"}]}})
        _drive_a_real_alertmanager(am, cfg, make_store)


def _drive_a_real_alertmanager(am, cfg, make_store):
    store = make_store(cfg)
    clock = ManualClock(real_now())
    engine = AlertEngine(store, cfg, clock)

    def step(value=None):
        clock.set(real_now())
        if value is not None:
            put(store, clock.now(), value)
        result = engine.run()
        assert result.status == "ok", result.error

    def sent(status):
        rows = [r for r in ours(engine.outbox.rows(), "team-am") if r.alert_status == status]
        assert all(r.status == "sent" for r in rows), rows
        return rows

    # 1. It fires: Alertmanager has it, with our labels, annotations and incident link.
    step(0.05)
    t1 = clock.now()
    assert len(sent("firing")) == 1
    [alert] = am.alerts()
    assert alert["labels"] == LABELS
    assert alert["annotations"] == {"summary": "svc/chat costs 0.05 a request",
                                    "runbook_url": "https://runbooks.example/cost"}
    fp = fingerprint(LABELS)
    assert alert["generatorURL"] == incident_url(EXT, AlertView(fp, "firing", LABELS, {}, t1), t1)
    assert parse_qs(urlsplit(alert["generatorURL"]).query)["fingerprint"] == [fp]
    assert alert["generatorURL"].startswith(f"{EXT}/incidents?")
    assert alert["status"]["state"] in ("active", "unprocessed") and alert["receivers"] == [{"name": "null"}]
    assert parse(alert["startsAt"]) == t1
    first_ends = parse(alert["endsAt"])
    assert first_ends == t1 + dt.timedelta(seconds=4)   # 4 x resend_every

    # 2. nlpmon keeps it firing and re-sends it (at most every second): it outlives its first endsAt.
    while real_now() <= first_ends + dt.timedelta(milliseconds=500):
        time.sleep(0.2)
        step()
    [alert] = am.alerts()
    assert real_now() > first_ends
    assert alert["status"]["state"] == "active" and parse(alert["startsAt"]) == t1
    assert parse(alert["endsAt"]) > real_now() and parse(alert["endsAt"]) > first_ends
    resent = sent("firing")
    assert len(resent) >= 2 and len({r.id for r in resent}) == len(resent)   # (how many: as fast as the engine runs)
    gaps = [(b.created_at - a.created_at).total_seconds() for a, b in zip(resent, resent[1:])]
    assert all(g >= 1 for g in gaps), gaps            # no more often than resend_every
    last_firing_ends = parse(alert["endsAt"])   # of the last re-send: the resolve comes next

    # 3. It clears: nlpmon resolves it and Alertmanager ends it at once, long before it would time out.
    step(0.0)
    deadline = time.monotonic() + 10
    while not sent("resolved"):
        assert time.monotonic() < deadline, "no resolve was sent"
        time.sleep(0.1)
        step()
    [resolve] = sent("resolved")
    [resolved] = json.loads(resolve.payload)
    assert resolved["labels"] == LABELS and resolve.created_at - resent[-1].created_at >= dt.timedelta(seconds=1)
    # It ends when nlpmon resolved it, before the endsAt Alertmanager held from the last re-send.
    assert parse(resolved["endsAt"]) < last_firing_ends
    # Alertmanager v0.25's API lists no alert whose endsAt has passed, in any filter; /metrics counts
    # the resolve it received, so the alert is gone because it was resolved, not for lack of news.
    assert am.alerts() == []
    assert am.alerts("?active=false&silenced=true&inhibited=true&unprocessed=true") == []
    assert am.alerts("?active=true&silenced=true&inhibited=true&unprocessed=true") == []
    assert all(not g["alerts"] for g in am.get("/api/v2/alerts/groups"))
    assert am.metric('alertmanager_alerts_received_total{status="resolved",version="v2"}') == 1
    assert am.metric('alertmanager_alerts_received_total{status="firing",version="v2"}') == len(sent("firing"))
    assert am.metric('alertmanager_alerts{state="active"}') == 0


# -- the resend hook, on a virtual clock ---------------------------------------------------
@pytest.fixture
def recorders():
    with Recorder() as am, Recorder() as hook:
        yield am, hook


def _engine(make_config, make_store, clock, route, receivers):
    cfg = make_config(alerts={"default_rules": False, "slo_rules": False, "external_url": EXT, "rules": [RULE],
                              "receivers": receivers, "route": route,
                              "delivery": {"backoff_initial": "10s", "backoff_max": "1m"}})
    clock.set(dt.datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    return AlertEngine(make_store(cfg), cfg, clock)


def _run_for(engine, clock, minutes, value):
    end = clock.now() + dt.timedelta(minutes=minutes)
    while clock.now() < end:
        clock.advance(TICK)
        if clock.now().second == 0:
            put(engine.store, clock.now(), value)
        result = engine.run()
        assert result.status == "ok", result.error


def test_a_kind_with_resend_every_is_resent_while_firing_and_others_are_not(make_config, make_store, clock,
                                                                            recorders, monkeypatch):
    am, hook = recorders
    route = {"receiver": "hook", "group_by": ["alertname", "service"], "group_wait": "30s", "group_interval": "5m",
             "repeat_interval": "4h", "routes": [{"matchers": ONLY_OURS, "receiver": "am", "continue": True},
                                                 {"matchers": ONLY_OURS, "receiver": "hook"}]}
    receivers = [{"name": "am", "alertmanager": {"url": am.url, "resend_every": "1m"}},
                 {"name": "hook", "webhook": {"url": hook.url}}]
    engine = _engine(make_config, make_store, clock, route, receivers)
    _run_for(engine, clock, 8, 0.05)
    bodies = am.take()
    # Every minute while firing (group_interval 5m and repeat_interval 4h notwithstanding), each
    # time with endsAt four minutes after its decision; the webhook hears once.
    rows = ours(engine.outbox.rows(), "am")
    decided = [r.created_at for r in rows]
    assert len(bodies) == len(rows) >= 6 and all(r.status == "sent" for r in rows)
    assert all(b - a == dt.timedelta(minutes=1) for a, b in zip(decided, decided[1:]))
    assert [parse(b[0]["endsAt"]) for b in bodies] == [d + dt.timedelta(minutes=4) for d in decided]
    assert all(b == [{**bodies[0][0], "endsAt": b[0]["endsAt"], "generatorURL": b[0]["generatorURL"]}] for b in bodies)
    assert len({r.id for r in rows}) == len(rows)   # one id per decision (derived from it, as before)
    assert len(ours(engine.outbox.rows(), "hook")) == 1
    # It clears: one resolve, endsAt the resolve time, and nothing afterwards.
    _run_for(engine, clock, 3, 0.0)   # (the low value is written at the next whole minute: one more re-send first)
    *firing, resolve = am.take()
    resolved_at = parse(resolve[0]["endsAt"])
    assert len(firing) <= 1 and all(parse(b[0]["endsAt"]) > resolved_at for b in firing)
    assert decided[-1] < resolved_at <= clock.now()
    assert ours(engine.outbox.rows(), "am")[-1].alert_status == "resolved"
    _run_for(engine, clock, 6, 0.0)
    assert am.take() == []

    # The hook is generic: any kind may set RESEND_EVERY, a timedelta will do; never above repeat_interval.
    monkeypatch.setattr(webhook, "RESEND_EVERY", dt.timedelta(minutes=2), raising=False)
    engine = _engine(make_config, make_store, clock, route, receivers)
    _run_for(engine, clock, 9, 0.05)
    sent = [r.created_at for r in ours(engine.outbox.rows(), "hook")]
    assert len(sent) >= 4 and all(b - a == dt.timedelta(minutes=2) for a, b in zip(sent, sent[1:]))
    engine = _engine(make_config, make_store, clock, {**route, "repeat_interval": "1m"}, receivers)
    _run_for(engine, clock, 9, 0.05)
    sent = [r.created_at for r in ours(engine.outbox.rows(), "hook")]
    assert len(sent) >= 6 and all(b - a == dt.timedelta(minutes=1) for a, b in zip(sent, sent[1:]))
