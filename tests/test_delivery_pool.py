"""The outbox sends on a bounded pool: storms, slow and hanging receivers (alerts.delivery).

Real loopback receivers and the real store; time in the rows is a ManualClock. The only
real waiting is the receivers' own: a hanging receiver's timeout, a slow one's delay.
Timing is asserted only between timestamps the loopback servers record, never as a limit
on a run.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alerts.delivery import Outbox
from monitor.foundation.tables.notification_outbox import COLUMNS
from tests.helpers import ServerThread

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
HANG_TIMEOUT = 2.0  # seconds a send to the hanging receiver waits for an answer


# -- loopback receivers ---------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # 16 sends connect at once; the default backlog of 5 would drop SYNs (1 s retries)
    daemon_threads = True


class Receiver(ServerThread):
    """A loopback HTTP receiver that answers 200 (after ``delay`` seconds) and stamps each request it gets.

    With ``hold_after`` n, requests after the first n wait for ``gate`` before answering.
    """

    def __init__(self, port: int = 0, delay: float = 0.0, hold_after: int | None = None):
        self.got: list[tuple[float, dict]] = []  # (time.monotonic() on arrival, JSON body)
        self.lock = threading.Lock()
        self.gate = threading.Event()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with rec.lock:
                    rec.got.append((time.monotonic(), body))
                    held = hold_after is not None and len(rec.got) > hold_after
                if held:
                    rec.gate.wait(30)
                if delay:
                    time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    @property
    def keys(self) -> list[str]:
        return [body["groupKey"] for _, body in self.got]

    def __exit__(self, *exc):
        self.gate.set()
        super().__exit__(*exc)


class Hanging:
    """Accepts connections and never answers; records when each was accepted (time.monotonic())."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.accepted: list[float] = []
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # the accept timeout (a TimeoutError) included
                continue
            self.accepted.append(time.monotonic())
            self._conns.append(conn)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        for conn in self._conns:
            conn.close()
        self.sock.close()


# -- the outbox -------------------------------------------------------------------------------
@pytest.fixture
def outbox_for(make_config, make_store, clock):
    def make(receivers, interval="5m", **delivery):
        config = make_config(alerts={"interval": interval, "receivers": receivers,
                                     "route": {"receiver": receivers[0]["name"]},
                                     "delivery": {"backoff_initial": "2s", "backoff_max": "10s", **delivery}})
        return Outbox(make_store(config), config, clock)
    return make


def hook(name: str, url: str, timeout: float = HANG_TIMEOUT) -> dict:
    return {"name": name, "webhook": {"url": url, "timeout": f"{timeout}s"}}


def put_due(ob: Outbox, receiver: str, groups: list[str], created_at: dt.datetime = NOW) -> None:
    """Pending rows due now, one per group, in one insert (enqueue checks and writes one row at a time)."""
    ob.store.insert("notification_outbox", [[{
        "id": f"{receiver}-{g}", "group_key": g, "receiver": receiver, "kind": "webhook", "status": "pending",
        "alert_status": "firing", "payload": json.dumps({"version": "4", "groupKey": g, "receiver": receiver}),
        "created_at": created_at, "attempts": 0, "next_attempt_at": created_at, "last_error": "", "sent_at": None,
        "updated_at": created_at}[c] for c in COLUMNS] for g in groups], COLUMNS)


def test_a_storm_of_1000_groups_is_delivered_in_one_run_each_once(outbox_for, clock):
    with Receiver() as fast:
        ob = outbox_for([hook("fast", fast.url)])
        groups = [f"storm-{i:04d}" for i in range(1000)]
        put_due(ob, "fast", groups)
        t = time.perf_counter()
        out = ob.deliver_due()
        elapsed = time.perf_counter() - t
        print(f"\n1,000 groups delivered in {elapsed:.2f} s with {ob.config.alerts.delivery.concurrency} workers")
        assert len(out) == 1000 and {r.status for r in out} == {"sent"}
        assert [r.id for r in out] == [f"fast-{g}" for g in groups]  # oldest first, as due
        assert sorted(fast.keys) == groups  # each group exactly once
        assert len(ob.rows("sent")) == 1000 and ob.rows("pending") == []
        clock.advance(60)
        assert ob.deliver_due() == [] and len(fast.got) == 1000


def test_a_hanging_receiver_delays_no_other_and_its_row_is_retried(outbox_for, clock, caplog):
    with Hanging() as hang, Receiver() as fast:
        ob = outbox_for([hook("hang", hang.url), hook("fast", fast.url)])
        put_due(ob, "hang", ["h0"], NOW - dt.timedelta(seconds=1))  # the oldest row: started first
        put_due(ob, "fast", [f"f{i:02d}" for i in range(20)])
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="alerts.delivery"):
            out = {r.id: r for r in ob.deliver_due()}
        assert len(hang.accepted) == 1 and hang.accepted[0] >= start
        # All 20 arrived while the hanging send was still waiting for its answer.
        assert len(fast.got) == 20 and max(t for t, _ in fast.got) < start + HANG_TIMEOUT
        assert sorted(fast.keys) == [f"f{i:02d}" for i in range(20)]
        assert [out[f"fast-f{i:02d}"].status for i in range(20)] == ["sent"] * 20
        # The hanging one is retried later, not lost.
        row = ob.get("hang-h0")
        assert (row.status, row.attempts) == ("pending", 1) and "timed out" in row.last_error
        assert row.next_attempt_at == NOW + dt.timedelta(seconds=2) > clock.now()
        assert out["hang-h0"] == row  # the version it wrote is the one stored
        assert "left for the next run" not in caplog.text  # it had no other row to leave
    port = hang.port
    clock.advance(1)
    assert ob.deliver_due() == []  # not before its backoff
    clock.advance(1)
    with Receiver(port=port) as back:  # the receiver answers again, at the same address
        [r] = ob.deliver_due()
    assert (r.id, r.status, r.attempts) == ("hang-h0", "sent", 2) and back.keys == ["h0"]
    assert len(fast.got) == 20


def test_a_hanging_receiver_with_many_rows_costs_one_worker_and_one_timeout(outbox_for, clock, caplog):
    with Hanging() as hang, Receiver() as fast:
        ob = outbox_for([hook("hang", hang.url), hook("fast", fast.url)], concurrency=4)
        put_due(ob, "hang", [f"h{i}" for i in range(10)], NOW - dt.timedelta(seconds=1))  # older: first in line
        put_due(ob, "fast", [f"f{i:02d}" for i in range(20)])
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="alerts.delivery"):
            out = {r.id: r for r in ob.deliver_due()}
        assert len(fast.got) == 20 and max(t for t, _ in fast.got) < start + HANG_TIMEOUT
        assert all(out[f"fast-f{i:02d}"].status == "sent" for i in range(20))
        # Its first send went alone and never came back: its other rows were not started, and wait, still due.
        assert len(hang.accepted) == 1
        rows = {r.id: r for r in ob.rows() if r.receiver == "hang"}
        assert len(rows) == 10 and {r.status for r in rows.values()} == {"pending"}
        assert rows["hang-h0"].attempts == 1 and rows["hang-h0"].next_attempt_at == NOW + dt.timedelta(seconds=2)
        assert {i for i, r in rows.items() if r.attempts == 0} == {f"hang-h{i}" for i in range(1, 10)}
        assert all(r.next_attempt_at < clock.now() for i, r in rows.items() if i != "hang-h0")
        assert [i for i in out if i.startswith("hang-")] == ["hang-h0"]  # rows left are not returned
        assert f"receiver hang did not answer (timed out after {HANG_TIMEOUT:g}s" in caplog.text
        assert "9 notifications to it left for the next run" in caplog.text
    port = hang.port
    clock.advance(2)
    with Receiver(port=port) as back:
        again = ob.deliver_due()
    assert [r.status for r in again] == ["sent"] * 10 and sorted(back.keys) == [f"h{i}" for i in range(10)]


def test_a_slow_receiver_with_many_rows_leaves_half_the_pool(outbox_for, clock):
    # slow: answers its first request, then holds every other; other: holds every request (its first, too).
    with Receiver(hold_after=1) as slow, Receiver(hold_after=0) as other:
        ob = outbox_for([hook("slow", slow.url, 30), hook("other", other.url, 30)], concurrency=4)  # 2 a receiver
        put_due(ob, "slow", [f"s{i:02d}" for i in range(10)], NOW - dt.timedelta(seconds=1))
        put_due(ob, "other", [f"o{i:02d}" for i in range(10)])
        result = []
        run = threading.Thread(target=lambda: result.extend(ob.deliver_due()))
        run.start()
        deadline = time.monotonic() + 10
        while (len(slow.got) < 3 or len(other.got) < 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # time for a fourth send to start, if the pool gave it to slow
        # other's first send is still out, so its rows wait; slow has its share (2) in flight, not 3 of the 4.
        assert (len(slow.got), len(other.got)) == (3, 1)
        slow.gate.set()
        other.gate.set()
        run.join(30)
    assert len(result) == 20 and {r.status for r in result} == {"sent"}
    assert sorted(slow.keys) == [f"s{i:02d}" for i in range(10)] and sorted(other.keys) == [f"o{i:02d}" for i in range(10)]


def test_a_run_starts_no_send_after_alerts_interval(outbox_for, clock, caplog):
    with Receiver(delay=0.25) as slow:
        ob = outbox_for([hook("slow", slow.url)], interval="1s", concurrency=2)
        groups = [f"s{i:02d}" for i in range(12)]  # 12 x 0.25 s on 2 workers: 1.5 s of sending
        put_due(ob, "slow", groups)
        with caplog.at_level(logging.WARNING, logger="alerts.delivery"):
            first = ob.deliver_due()
        assert 0 < len(first) < 12 and {r.status for r in first} == {"sent"}
        assert f"{12 - len(first)} due notifications left for the next run" in caplog.text
        left = ob.rows("pending")
        assert len(left) == 12 - len(first) and {(r.attempts, r.next_attempt_at) for r in left} == {(0, NOW)}
        rest = ob.deliver_due()
        assert len(first) + len(rest) == 12 and {r.status for r in rest} == {"sent"}
    assert sorted(slow.keys) == groups


def test_only_the_newest_due_row_of_a_group_is_sent(outbox_for, clock):
    with Receiver() as fast:
        ob = outbox_for([hook("fast", fast.url)])
        for id, status in (("a", "firing"), ("b", "resolved")):  # decided at the same instant: b is later by id
            ob.store.insert("notification_outbox", [[{
                "id": id, "group_key": "g", "receiver": "fast", "kind": "webhook", "status": "pending",
                "alert_status": status, "payload": json.dumps({"groupKey": "g", "status": status}),
                "created_at": NOW, "attempts": 0, "next_attempt_at": NOW, "last_error": "", "sent_at": None,
                "updated_at": NOW}[c] for c in COLUMNS]], COLUMNS)
        put_due(ob, "fast", ["other"])
        out = {r.id: r.status for r in ob.deliver_due()}
    assert out == {"a": "superseded", "b": "sent", "fast-other": "sent"}
    assert sorted((b["groupKey"], b.get("status")) for _, b in fast.got) == [("g", "resolved"), ("other", None)]
