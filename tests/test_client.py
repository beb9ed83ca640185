"""monitor.client.Client against the app on a real loopback HTTP server, through real store failures."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from monitor.client import Client, ClientError
from tests.helpers import LiveServer, free_port, request_event


def count(store, table="requests"):
    return store.scalar(f"SELECT count() FROM {table}")


def test_batches_gzip_and_totals(live_server, keys, store):
    with Client(live_server.url, keys["ingest"], batch_size=40, flush_at_exit=False) as c:
        for i in range(100):
            c.log_request(request_event(i))
        assert count(store) == 80  # two full batches went out on their own
        c.log_feedback({"request_id": "req-1", "ts": "2026-11-24T09:31:00Z", "kind": "thumbs", "value": 0})
    assert count(store) == 100 and count(store, "feedback") == 1
    assert c.totals == {"accepted": 101, "duplicates": 0, "rejected": 0, "retries": 0}


def test_rejected_rows_are_reported_not_raised(live_server, keys):
    c = Client(live_server.url, keys["ingest"], flush_at_exit=False)
    answer = c.send("requests", [request_event(1), request_event(2, status="nope")])
    assert answer["accepted"] == 1 and answer["rejected"] == 1
    assert c.errors == [{"index": 1, "field": "status",
                         "reason": "unknown value 'nope'; expected one of ok, error, timeout, blocked, cancelled"}]


def test_client_error_is_not_retried(live_server, keys):
    slept = []
    c = Client(live_server.url, keys["read"], sleep=slept.append, flush_at_exit=False)
    with pytest.raises(ClientError) as err:
        c.send("requests", [request_event(1)])
    assert err.value.status == 403 and slept == []
    assert keys["read"] not in repr(c) and keys["read"] not in str(err.value)


def test_store_outage_gives_503_and_the_client_retries_without_loss(app, keys, store):
    store.command("DETACH TABLE requests")
    with LiveServer(app) as srv:
        import json
        import urllib.error
        import urllib.request
        req = urllib.request.Request(f"{srv.url}/v1/requests", data=json.dumps([request_event(0)]).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {keys['ingest']}"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req)
        assert err.value.code == 503 and err.value.headers["Retry-After"] == "5"
        assert json.loads(err.value.read())["error"] == "store_unavailable"

        waits = []

        def sleep(seconds):
            waits.append(seconds)
            if len(waits) == 2:  # the store comes back after two failed attempts
                store.command("ATTACH TABLE requests")

        c = Client(srv.url, keys["ingest"], sleep=sleep, flush_at_exit=False)
        answer = c.send("requests", [request_event(i) for i in range(10)])
    assert answer["accepted"] == 10 and len(waits) == 2 and c.totals["retries"] == 2
    assert min(waits) >= 5  # Retry-After is honoured
    assert count(store) == 10


def test_failure_after_good_rows_landed_is_retried_without_doubling(app, keys, store):
    store.command("DETACH TABLE rejected_events")
    with LiveServer(app) as srv:
        c = Client(srv.url, keys["ingest"], sleep=lambda s: store.command("ATTACH TABLE rejected_events"),
                   flush_at_exit=False)
        answer = c.send("requests", [request_event(1), request_event(2, latency_ms=-1), request_event(3)])
    assert answer == {"accepted": 2, "duplicates": 2, "rejected": 1,
                      "errors": [{"index": 1, "field": "latency_ms", "reason": "must not be negative (-1)"}]}
    assert count(store) == 2 and count(store, "rejected_events") == 1


def test_connection_refused_is_retried_until_the_server_is_up(app, keys, store):
    port = free_port()
    servers = []

    def sleep(seconds):
        if not servers:
            servers.append(LiveServer(app, port).__enter__())

    c = Client(f"http://127.0.0.1:{port}", keys["ingest"], sleep=sleep, flush_at_exit=False)
    try:
        assert c.send("requests", [request_event(1)])["accepted"] == 1
    finally:
        for s in servers:
            s.__exit__()
    assert c.totals["retries"] == 1 and count(store) == 1


def test_gives_up_with_a_clear_error(keys):
    c = Client(f"http://127.0.0.1:{free_port()}", keys["ingest"], max_retries=2, sleep=lambda s: None,
               flush_at_exit=False)
    with pytest.raises(ClientError, match="gave up after 2 retries: connection failed"):
        c.send("requests", [request_event(1)])


def test_buffer_is_flushed_at_interpreter_exit(live_server, keys, store):
    script = textwrap.dedent(f"""
        from monitor.client import Client
        c = Client({live_server.url!r}, {keys['ingest']!r}, batch_size=1000)
        for i in range(25):
            c.log_request({{"request_id": f"exit-{{i}}", "ts": "2026-11-24T09:00:00Z", "service": "s",
                            "feature": "f", "model": "m", "status": "ok", "latency_ms": 10}})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert store.scalar("SELECT count() FROM requests WHERE request_id LIKE 'exit-%'") == 25
