"""`serve --demo` around the load itself: what it decides on a store, where live traffic goes on, and that
live traffic is normal traffic sent once per stretch (the load is tested in test_demo_stories)."""
from __future__ import annotations

import datetime as dt
import threading

from monitor.app import create_app
from monitor.demo import background
from monitor.foundation.progress import Progress
from monitor.foundation.tables import requests
from tests.helpers import request_event

T = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc)


def test_live_stretches_send_whole_minutes_once_and_resume_after_the_newest_request(config, store, clock):
    ingest = create_app(config, store, clock).extensions["nlpmon"].ingestor.ingest
    cursor = background.live_stretch(ingest, T, T + dt.timedelta(minutes=10, seconds=40), 0.5, 7)
    assert cursor == T + dt.timedelta(minutes=10)
    n = requests.count(store)
    assert 150 <= n <= 450  # 0.5 a second for 10 minutes, shaped by the time of day
    lo, hi = requests.time_span(store)
    assert T <= lo and hi < T + dt.timedelta(minutes=10)
    # The same stretch again (a retry after the store was down) stores nothing twice.
    assert background.live_stretch(ingest, T, T + dt.timedelta(minutes=10), 0.5, 7) == cursor
    assert requests.count(store) == n
    # After a restart, live traffic goes on after the newest request.
    assert background.resume_point(store, T - dt.timedelta(days=1)) == hi
    assert background.resume_point(store, T + dt.timedelta(hours=1)) == T + dt.timedelta(hours=1)


def test_a_store_with_someone_elses_requests_gets_no_demo(config, store, clock):
    ingest = create_app(config, store, clock).extensions["nlpmon"].ingestor.ingest
    ingest("requests", [request_event("theirs-1")])
    started, said = threading.Event(), []
    thread = background.start(store, config, clock, ingest, Progress(), days=1, rps=0.1, seed=7,
                              on_loaded=started.set, stop=threading.Event(), echo=said.append)
    assert thread is None and started.is_set() and background.state(store) is None
    assert said == ["the store already holds requests; no demo data loaded"]


def test_a_loaded_demo_is_not_loaded_again_and_its_live_traffic_goes_on(config, store, clock):
    ingest = create_app(config, store, clock).extensions["nlpmon"].ingestor.ingest
    clock.set(T)
    background._save(store, {"days": 1, "rps": 0.5, "seed": 7, "end": "2026-11-24T09:00:00Z", "loaded": True}, clock)
    stop, started, progress = threading.Event(), threading.Event(), Progress()
    thread = background.start(store, config, clock, ingest, progress, days=14, rps=0.2, seed=7,
                              on_loaded=started.set, stop=stop, echo=lambda m: None)
    assert started.wait(30)
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    while requests.count(store) == 0 and dt.datetime.now() < deadline:
        stop.wait(0.2)
    stop.set()
    thread.join(30)
    assert not thread.is_alive() and not progress.active
    # Only the hour between the loaded history's end and now was sent: live, not another 14 days.
    lo, hi = requests.time_span(store)
    assert lo >= dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.timezone.utc)
    assert hi < dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc)
