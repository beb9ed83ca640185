"""Errors that say what they are: an unreachable store is 503 + Retry-After (retry later); a query the
store rejects is a bug, 500 with a reference logged beside the full error, and no client retries it."""
from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request

import pytest

from monitor.client import Client, ClientError
from monitor.foundation.storage import Store, StoreQueryError, StoreUnavailable
from tests.helpers import LiveServer, auth, free_port, request_event


def test_the_store_says_which_error_it_is(store):
    with pytest.raises(StoreQueryError) as err:
        store.query("SELECT no_such_column FROM requests")
    assert "UNKNOWN_IDENTIFIER" in str(err.value) and "no_such_column" in err.value.sql
    with pytest.raises(StoreQueryError):
        store.insert("requests", [["r1"]], ["no_such_column"])
    store.command("DETACH TABLE feedback")  # a table that is not there (yet): retry later
    with pytest.raises(StoreUnavailable):
        store.query("SELECT count() FROM feedback")
    store.command("ATTACH TABLE feedback")
    gone = Store(f"http://127.0.0.1:{free_port()}", "nlpmon", connect_timeout=1)
    with pytest.raises(StoreUnavailable):
        gone.query("SELECT 1")


def _reference(text: str) -> str:
    return re.search(r"reference ([0-9a-f]{12})", text).group(1)


def test_a_rejected_query_is_a_500_with_a_logged_reference_not_a_retry(app, keys, store, caplog):
    # Schema and code disagree (a bug): the store rejects what ingest writes and what the API reads.
    store.command("ALTER TABLE requests DROP COLUMN session_id")
    store.command("ALTER TABLE metric_points RENAME COLUMN value TO v")
    c = app.test_client()
    with caplog.at_level(logging.ERROR, logger="monitor.app"):
        r = c.post("/v1/requests", json=[request_event(1)], headers=auth(keys["ingest"]))
        assert r.status_code == 500 and "Retry-After" not in r.headers
        assert r.json["error"] == "internal_error" and "not an outage" in r.json["message"]
        ref = _reference(r.json["message"])
        logged = [rec.getMessage() for rec in caplog.records if ref in rec.getMessage()]
        assert logged and "session_id" in logged[0] and "INSERT INTO requests" in logged[0]
        r = c.get("/v1/metrics?metric=error_rate", headers=auth(keys["read"]))
        assert r.status_code == 500 and "Retry-After" not in r.headers
        assert "Traceback" not in r.get_data(as_text=True)
        assert any(_reference(r.json["message"]) in rec.getMessage() and "UNKNOWN_IDENTIFIER" in rec.getMessage()
                   for rec in caplog.records)
    with LiveServer(app) as srv:
        slept = []
        client = Client(srv.url, keys["ingest"], sleep=slept.append, flush_at_exit=False)
        with pytest.raises(ClientError) as err:
            client.send("requests", [request_event(2)])
        assert err.value.status == 500 and slept == []  # not resent: it would fail again
        req = urllib.request.Request(f"{srv.url}/v1/metrics?metric=error_rate", headers=auth(keys["read"]))
        with pytest.raises(urllib.error.HTTPError) as http:
            urllib.request.urlopen(req)
        assert http.value.code == 500 and json.loads(http.value.read())["error"] == "internal_error"


def test_an_unreachable_store_is_a_503_to_retry(clock):
    from monitor.app import create_app
    from monitor.foundation.config import load_config
    cfg = load_config(env={}, overrides={"clickhouse": {"url": f"http://default:@127.0.0.1:{free_port()}/nlpmon",
                                                        "connect_timeout_seconds": 1}})
    c = create_app(cfg, Store.from_config(cfg), clock).test_client()
    r = c.get("/v1/metrics?metric=error_rate", headers=auth("nlpm_0123456789ab_" + "x" * 32))
    assert r.status_code == 503 and r.headers["Retry-After"] == "5" and r.json["error"] == "store_unavailable"
