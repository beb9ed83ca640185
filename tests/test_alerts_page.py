"""The alerts page keeps the always-firing Watchdog apart from incidents: no "Explore incident" for a heartbeat."""
from __future__ import annotations

import re

from alerts.engine import AlertEngine
from monitor.foundation.tables import alert_state
from monitor.foundation.tables.alert_state import AlertInstance
from tests.test_dashboards import sign_in


def test_the_watchdog_is_a_heartbeat_not_an_incident(app, store, clock):
    svc = app.extensions["nlpmon"]
    AlertEngine(store, svc.config, clock).run(clock.now())  # the shipped system rules: the Watchdog fires
    now = clock.now()
    alert_state.write(store, [AlertInstance("fp-errors", "HighErrorRate", {"alertname": "HighErrorRate",
                                                                           "severity": "page", "service": "svc"},
                                            state="firing", fired_at=now, active_at=now, updated_at=now)])
    c = app.test_client()
    sign_in(c, svc.keys.create("reader", ["read"])[1])
    html = c.get("/alerts").get_data(as_text=True)
    active = html[html.index('id="active"'):html.index("</table>", html.index('id="active"'))]
    assert "HighErrorRate" in active and "Watchdog" not in active
    assert active.count("Explore incident") == 1
    heartbeats = re.search(r'<p class="heartbeats[^>]*>(.*?)</p>', html, re.S).group(1)
    assert "Watchdog" in heartbeats and "Explore" not in heartbeats
