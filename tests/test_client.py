"""monitor.client.Client against the app on a real loopback HTTP server, through real store failures."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from monitor.app import create_app
from monitor.client import Client, ClientError
from monitor.foundation.clock import ManualClock
from tests.conftest import NOW
from tests.helpers import LiveServer, feedback_event, free_port, request_event
from tests.loopback import Recorder


def count(store, table="requests"):
    return store.scalar(f"SELECT count() FROM {table}")


def eventually(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_batches_gzip_and_totals(live_server, keys, store):
    # A long flush_interval: only full batches go out until the block ends.
    with Client(live_server.url, keys["ingest"], batch_size=40, flush_interval=60, flush_at_exit=False) as c:
        for i in range(100):
            c.log_request(request_event(i))
        assert eventually(lambda: count(store) == 80)  # two full batches went out on their own
        time.sleep(0.1)
        assert count(store) == 80  # the last 20 wait for a full batch, the interval or the end
        c.log_feedback({"request_id": "req-1", "ts": "2026-11-24T09:31:00Z", "kind": "thumbs", "value": 0})
    assert count(store) == 100 and count(store, "feedback") == 1
    assert c.totals == {"accepted": 101, "duplicates": 0, "rejected": 0, "retries": 0, "failed": 0}
    assert c.undelivered() == {"dropped": 0, "refused": 0, "queued": 0}


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
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    assert store.scalar("SELECT count() FROM requests WHERE request_id LIKE 'exit-%'") == 25


# -- faults: the client never hurts its host -------------------------------------------------------
FAST = {"backoff": 0.01, "max_backoff": 0.05, "flush_interval": 0.05, "flush_at_exit": False}


def test_server_down_never_blocks_the_caller_and_nothing_is_lost_when_it_returns(app, keys, store):
    port = free_port()  # nothing listens here yet
    c = Client(f"http://127.0.0.1:{port}", keys["ingest"], **FAST)
    slowest, start = 0.0, time.perf_counter()
    for i in range(1000):
        t = time.perf_counter()
        c.log_request(request_event(i))
        slowest = max(slowest, time.perf_counter() - t)
    loop = time.perf_counter() - start
    assert slowest < 0.05 and loop < 0.5, (slowest, loop)
    assert c.flush(timeout=0.5) is False
    assert c.totals["retries"] > 0 and c.last_problem.startswith("connection failed")
    assert c.undelivered() == {"dropped": 0, "refused": 0, "queued": 1000}
    with LiveServer(app, port):  # the server comes up on that port
        assert c.flush(timeout=30) is True
        c.close(1)
    assert count(store) == 1000
    assert store.scalar("SELECT uniqExact(request_id) FROM requests") == 1000
    assert c.totals["accepted"] == 1000 and c.totals["duplicates"] == 0 and c.totals["failed"] == 0


def test_a_hung_server_costs_the_caller_nothing_and_close_is_bounded(keys):
    with socket.socket() as hung:  # accepts connections into its backlog, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(100)
        c = Client(f"http://127.0.0.1:{hung.getsockname()[1]}", keys["ingest"], timeout=30, **FAST)
        start = time.perf_counter()
        for i in range(200):
            c.log_request(request_event(i))
        assert time.perf_counter() - start < 0.5
        start = time.perf_counter()
        assert c.close(0.3) is False
        assert time.perf_counter() - start < 1.0
        assert c.undelivered()["queued"] == 200


def test_an_oversize_event_is_set_aside_and_the_rest_flow(make_config, make_store, tmp_path):
    config = make_config(ingest={"max_body_bytes": 4096})
    app = create_app(config, make_store(config), ManualClock(NOW))
    key = app.extensions["nlpmon"].keys.create("small-bodies", ["ingest"])[1]
    store = app.extensions["nlpmon"].store
    big = request_event("big", input_text="x" * 10_000)
    with LiveServer(app) as srv:
        c = Client(srv.url, key, batch_size=5, **FAST)
        for i in range(20):
            c.log_request(big if i == 7 else request_event(i))
        assert c.flush(timeout=30) is True
        assert count(store) == 19
        assert store.scalar("SELECT count() FROM requests WHERE request_id = 'req-big'") == 0
        assert [(f["kind"], f["event"], f["status"]) for f in c.failed] == [("requests", big, 413)]
        assert "over the limit of 4096 bytes" in c.failed[0]["reason"] and c.totals["failed"] == 1
        for i in range(20, 30):  # later events still flow
            c.log_request(request_event(i))
        assert c.close(30) is True
    assert count(store) == 29 and c.totals["accepted"] == 29
    assert c.undelivered() == {"dropped": 0, "refused": 1, "queued": 0}


def test_a_full_queue_drops_new_events_and_counts_them(keys, caplog):
    c = Client(f"http://127.0.0.1:{free_port()}", keys["ingest"], max_queue=100, **FAST)
    with caplog.at_level(logging.WARNING, logger="nlpmon.client"):
        start = time.perf_counter()
        for i in range(1000):
            c.log_request(request_event(i))
        assert time.perf_counter() - start < 0.5
    assert c.dropped == 900
    assert c.undelivered() == {"dropped": 900, "refused": 0, "queued": 100}
    assert [r.getMessage()[:36] for r in caplog.records] == ["nlpmon client: queue full (100 event"]
    assert c.close(0) is False
    c.log_request(request_event("late"))  # after close: dropped and counted, never raised
    assert c.dropped == 901


def test_refusals_are_set_aside_and_a_wrong_key_stops_sending(caplog):
    with Recorder() as rec:
        rec.statuses = [500, 400]
        c = Client(rec.url, "k", batch_size=2, compress=False, **FAST)
        for i in range(6):
            c.log_request(request_event(i))
        assert c.flush(timeout=10) is True
        assert [(f["event"]["request_id"], f["status"]) for f in c.failed] == [
            ("req-0", 500), ("req-1", 500), ("req-2", 400), ("req-3", 400)]
        assert [[e["request_id"] for e in batch] for batch in rec.take()] == [["req-4", "req-5"]]
        rec.statuses = [401]
        with caplog.at_level(logging.WARNING, logger="nlpmon.client"):
            for i in range(6, 16):
                c.log_request(request_event(i))
                c.log_feedback(feedback_event(i))
            assert c.close(10) is True
        assert rec.refused == 3 and rec.take() == []  # one 401, then no request reaches the server
    assert c.totals["failed"] == 24 and c.undelivered()["refused"] == 24
    assert {f["status"] for f in c.failed[4:]} == {401}
    assert sum("refused the key" in r.getMessage() for r in caplog.records) == 1


def test_background_retries_use_the_injected_sleep_and_honour_retry_after(app, keys, store):
    store.command("DETACH TABLE requests")
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        if len(waits) == 2:  # the store comes back after two failed attempts
            store.command("ATTACH TABLE requests")

    with LiveServer(app) as srv:
        c = Client(srv.url, keys["ingest"], sleep=sleep, flush_interval=0.05, flush_at_exit=False)
        for i in range(10):
            c.log_request(request_event(i))
        assert c.close(10) is True
    assert len(waits) == 2 and min(waits) >= 5  # Retry-After: 5, waited through the injected sleep
    assert c.totals["retries"] == 2 and count(store) == 10


def test_requests_are_sent_before_feedback():
    with Recorder() as rec:
        rec.statuses = [503]
        c = Client(rec.url, "k", compress=False, sleep=lambda s: None, flush_interval=0.05, flush_at_exit=False)
        c.log_feedback(feedback_event(1))
        c.log_request(request_event(1))
        assert c.close(10) is True
        paths = [r["path"] for r in rec.received]
    assert paths == ["/hook/v1/requests", "/hook/v1/feedback"]


def test_a_non_dict_event_is_a_programming_error(keys):
    c = Client("http://127.0.0.1:9", keys["ingest"], flush_at_exit=False)
    with pytest.raises(TypeError):
        c.log_request([request_event(1)])
    c.close(0)


EXIT_SCRIPT = """
import time
from monitor.client import Client
c = Client({url!r}, {key!r}, exit_timeout={exit_timeout!r}, backoff=0.05, max_backoff=0.2)
for i in range({n}):
    c.log_request({{"request_id": f"exit-{{i}}", "ts": "2026-11-24T09:00:00Z", "service": "s",
                    "feature": "f", "model": "m", "status": "ok", "latency_ms": 10}})
"""


def test_exit_with_the_server_down_is_bounded_and_says_what_was_lost(keys):
    script = EXIT_SCRIPT.format(url=f"http://127.0.0.1:{free_port()}", key=keys["ingest"], exit_timeout=1.0, n=25)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - start
    assert done.returncode == 0 and took < 1.0 + 3, took
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("nlpmon client: 25 events not delivered (0 dropped, 0 refused, "
                               "25 still queued after 1 s): connection failed:"), lines[0]


def test_exit_with_the_server_up_delivers_everything_silently(live_server, keys, store):
    script = EXIT_SCRIPT.format(url=live_server.url, key=keys["ingest"], exit_timeout=5.0, n=600)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "" and time.monotonic() - start < 5.0 + 3
    assert store.scalar("SELECT count() FROM requests WHERE request_id LIKE 'exit-%'") == 600


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_with_an_empty_queue_and_its_own_sender(live_server, keys, store):
    c = Client(live_server.url, keys["ingest"], batch_size=1000, flush_interval=60, flush_at_exit=False)
    for i in range(5):
        c.log_request(request_event(f"parent-{i}"))  # queued in the parent, not sent yet
    pid = os.fork()
    if pid == 0:  # the child: its own events only, through its own sender thread
        ok = False
        try:
            c.log_request(request_event("child-0"))
            ok = c.close(10) and c.totals["accepted"] == 1
        finally:
            os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert c.close(10) is True and c.totals["accepted"] == 5
    assert count(store) == 6
