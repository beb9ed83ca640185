"""Silences through the API, the page and the CLI: idempotency keys bound to their body, inputs checked
field by field, and no silence that would mute (nearly) every alert. Runs on both test clocks."""
from __future__ import annotations

import datetime as dt

import pytest

from monitor.app import create_app
from tests.helpers import auth

BODY = {"matchers": ["service=support-bot"], "duration": "2h", "comment": "deploy in progress"}


@pytest.fixture
def api(config, store, clock):
    app = create_app(config, store, clock)
    ks = app.extensions["nlpmon"].keys
    admin, read = ks.create("ops", ["admin"])[1], ks.create("r", ["read"])[1]
    c = app.test_client()

    def post(body, key=None):
        headers = {**auth(admin), **({"Idempotency-Key": key} if key else {})}
        return c.post("/v1/silences", json=body, headers=headers)

    def listed():
        return c.get("/v1/silences", headers=auth(read)).get_json()["silences"]
    return post, listed, c, admin, app


def test_a_key_reused_with_another_body_is_a_conflict_and_changes_nothing(api):
    post, listed, *_ = api
    first = post(BODY, "deploy-42")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    other = post({**BODY, "matchers": ["service=search"], "duration": "8h", "comment": "other"}, "deploy-42")
    assert other.status_code == 409 and other.get_json()["message"].startswith("Idempotency-Key:")
    (s,) = listed()
    assert s["matchers"] == ['service="support-bot"'] and s["comment"] == "deploy in progress"
    assert s["endsAt"] == first.get_json()["endsAt"]


def test_an_identical_retry_returns_the_stored_silence_unchanged(api, clock):
    post, listed, *_ = api
    first = post(BODY, "deploy-42").get_json()
    clock.advance(dt.timedelta(minutes=5))
    again = post(BODY, "deploy-42")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first  # endsAt not pushed five minutes later
    assert [s["endsAt"] for s in listed()] == [first["endsAt"]]


def test_a_retry_after_delete_stays_deleted(api, clock):
    post, listed, c, admin, _ = api
    sid = post(BODY, "deploy-42").get_json()["id"]
    clock.advance(dt.timedelta(minutes=1))
    expired = c.delete(f"/v1/silences/{sid}", headers=auth(admin)).get_json()
    assert expired["status"] == "expired"
    clock.advance(dt.timedelta(minutes=1))
    again = post(BODY, "deploy-42")
    assert again.status_code == 201 and again.get_json()["status"] == "expired"
    assert again.get_json()["endsAt"] == expired["endsAt"]
    assert [(s["id"], s["status"]) for s in listed()] == [(sid, "expired")]


BAD_INPUTS = [
    ({"duration": "1000000000h"}, "duration"),
    ({"duration": "400d"}, "duration"),
    ({"duration": "-5m"}, "duration"),
    ({"duration": [1]}, "duration"),
    ({"duration": None, "endsAt": "2999-01-01T00:00:00Z"}, "endsAt"),
    ({"duration": None, "endsAt": "soon"}, "endsAt"),
    ({"startsAt": "yesterday-ish"}, "startsAt"),
    ({"createdBy": ["ops"]}, "createdBy"),
    ({"createdBy": "x" * 3000}, "createdBy"),
    ({"comment": {"why": "deploy"}}, "comment"),
    ({"matchers": "service=support-bot"}, "matchers"),
    ({"matchers": [{"name": "service", "value": "x"}]}, "matchers"),
    ({"matchers": []}, "matchers"),
    ({"matchers": ["service=~(unclosed"]}, "matchers"),
    ({"id": "mine"}, "id"),
]


def test_bad_inputs_are_400_naming_the_field(api):
    post, listed, *_ = api
    for change, field in BAD_INPUTS:
        body = {k: v for k, v in {**BODY, **change}.items() if v is not None}
        r = post(body)
        assert r.status_code == 400, (change, r.get_data(as_text=True))
        assert r.get_json()["message"].startswith(f"{field}:"), (change, r.get_json()["message"])
    assert listed() == []


TOO_BROAD = [["service=~.+"], ["service=~.*"], ["alertname!=zzz"], ["service!~support-bot"], ['service=""'],
             ["severity=~[a-z]+"], ["alertname!=Watchdog", "service=~.+"], ["service=~(?s).*"]]
SELECTIVE = [["service=~support-.*"], ["service=~support-bot|search"], ["service=support-bot", "alertname!=Watchdog"],
             ["feature=~ch.*", "severity!=ticket"]]


def test_only_matchers_that_pick_alerts_out_make_a_silence(api):
    post, listed, *_ = api
    for matchers in TOO_BROAD:
        r = post({**BODY, "matchers": matchers})
        assert r.status_code == 400 and "would silence every alert" in r.get_json()["message"], matchers
    assert listed() == []
    for matchers in SELECTIVE:
        assert post({**BODY, "matchers": matchers}).status_code == 201, matchers
    assert len(listed()) == len(SELECTIVE)


def test_the_page_and_the_cli_refuse_an_endless_silence_in_one_line(api, config, chdb_dir, tmp_path):
    import re

    from click.testing import CliRunner

    from monitor.cli import cli
    post, listed, c, admin, app = api
    page = c.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    c.post("/login", data={"csrf_token": token, "api_key": admin})
    token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/alerts").get_data(as_text=True)).group(1)
    r = c.post("/alerts/silences", data={"csrf_token": token, "matchers": "service=search", "duration": "1000000000h",
                                         "comment": "x"}, follow_redirects=True)
    assert r.status_code == 200 and "duration:" in r.get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/alerts").get_data(as_text=True)).group(1)
    c.post("/alerts/silences", data={"csrf_token": token, "matchers": "service=search", "duration": "2h",
                                     "comment": "reindexing"})
    (made,) = listed()
    row = re.search(r'<tr class="active">(.*?)</tr>', c.get("/alerts").get_data(as_text=True), re.S).group(1)
    assert "ops" in row and "reindexing" in row and made["endsAt"][:16].replace("T", " ") in row
    c.delete(f"/v1/silences/{made['id']}", headers=auth(admin))
    env = {"MONITOR_CLICKHOUSE_URL": config.clickhouse.url, "MONITOR_CLICKHOUSE_DATABASE": config.clickhouse.database,
           "MONITOR_CONFIG": str(tmp_path / "none.yaml")}
    (tmp_path / "none.yaml").write_text("{}\n")
    out = CliRunner().invoke(cli, ["silence", "add", "--matcher", "service=svc", "--duration", "1000000000h",
                                   "--comment", "x"], env=env)
    assert out.exit_code == 1 and "duration:" in out.output and "Traceback" not in out.output
    assert [x["status"] for x in listed()] == ["expired"]
