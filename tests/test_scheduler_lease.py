"""One active scheduler: the lease in the store, concurrent claims, takeover within two lease periods
without a second page, and fencing of a leader that was paused past its term. Injected clock, threads,
one embedded store: the same SQL a cluster runs."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from alerts.engine import AlertEngine
from monitor.app import create_app
from monitor.foundation.lease import Lease
from monitor.foundation.storage import Store
from monitor.foundation.tables import leases
from monitor.scheduler import Scheduler, scheduler_lease
from tests.loopback import Recorder

T0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc)
LEASE = dt.timedelta(seconds=30)
TICK = dt.timedelta(seconds=10)  # a third of the lease: how often each scheduler renews or polls


def in_threads(*fns):
    out = [None] * len(fns)
    errors = []

    def run(i, fn):
        try:
            out[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(fns)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert not errors, errors
    return out


def test_concurrent_claims_of_a_term_have_exactly_one_winner(store, clock):
    """Many rounds: four candidates find the term free at once and claim the next one together."""
    for rnd in range(12):
        candidates = [Lease(store, "race", LEASE, clock, holder=f"c{i}") for i in range(4)]
        barrier = threading.Barrier(len(candidates))

        def attempt(lease):
            barrier.wait()
            return lease.acquire()
        won = in_threads(*[lambda lease=lease: attempt(lease) for lease in candidates])
        term = leases.state(store, "race").term
        assert term == rnd + 1
        assert sum(won) == 1, (rnd, won)
        assert leases.claims_of(store, "race", term) == [candidates[won.index(True)].holder]
        assert [lease.held() for lease in candidates] == won
        clock.advance(LEASE + dt.timedelta(seconds=1))  # the winner dies: the next round finds it free


def test_an_exclusive_lease_takes_over_its_dead_predecessor_at_once(store, clock):
    """On the embedded store the holder found at start can only be the store's previous process."""
    killed = Lease(store, "scheduler", LEASE, clock, holder="killed")
    assert killed.acquire()
    clock.advance(dt.timedelta(seconds=1))
    assert not Lease(store, "scheduler", LEASE, clock, holder="server-standby").acquire()
    restarted = Lease(store, "scheduler", LEASE, clock, holder="restarted", exclusive=True)
    assert restarted.acquire() and restarted.held() and restarted.term == 2
    assert not killed.held()
    clock.advance(LEASE / 3)
    assert restarted.acquire() and restarted.term == 2  # renewing, not claiming again


def test_the_lease_runs_with_the_clusters_agreed_settings(config, store, clock):
    """The same protocol through a Store configured for a cluster (select_sequential_consistency and
    quorum inserts sent with each lease statement; chDB accepts and ignores them on local tables)."""
    clustered = Store(config.clickhouse.url, config.clickhouse.database, cluster="c1")
    assert clustered.agreed_read and clustered.agreed_write
    a, b = Lease(clustered, "s", LEASE, clock, "a"), Lease(clustered, "s", LEASE, clock, "b")
    assert a.acquire() and not b.acquire() and a.acquire()
    a.release()
    assert b.acquire() and not a.held()


@pytest.fixture
def hook():
    with Recorder() as r:
        yield r


def test_a_standby_takes_over_without_a_second_page_and_delivers_what_was_decided(make_config, make_store, clock,
                                                                                   hook):
    cfg = make_config(jobs={"lease": "30s"}, alerts={
        "default_rules": True, "receivers": [{"name": "hook", "webhook": {"url": hook.url}}],
        "route": {"receiver": "hook", "group_by": ["alertname", "service"], "group_wait": "0s",
                  "group_interval": "1m", "repeat_interval": "4h"},
        "system": {"enabled": False}})
    store = make_store(cfg)
    clock.set(T0)
    ingest = create_app(cfg, store, clock).extensions["nlpmon"].ingestor

    def fail(service: str, n: int = 20):
        now = clock.now()
        events = [{"request_id": f"{service}-{now.timestamp()}-{i}", "ts": (now - dt.timedelta(seconds=i)).isoformat(),
                   "service": service, "feature": "chat", "model": "m", "status": "error", "latency_ms": 300.0}
                  for i in range(n)]
        assert ingest.ingest("requests", events).rejected == 0

    def scheduler():
        engine = AlertEngine(store, cfg, clock)
        engine.rules = [r for r in engine.rules if r.name == "HighErrorRate"]
        # Two processes over one store, as on a server (an embedded store would let the newest take over at once).
        return Scheduler({"alerts": engine}, scheduler_lease(store, cfg, clock, exclusive=False), store)
    a, b = scheduler(), scheduler()

    def tick(*schedulers, run=True):
        """Each live scheduler renews or polls, then runs its due job (skipped unless it holds the lease)."""
        def step(s):
            s.keep_lease()
            return s.run_job("alerts") if run else None
        return in_threads(*[lambda s=s: step(s) for s in schedulers])

    # A active, B standby (A asks first; two at once: test_concurrent_claims_of_a_term_have_exactly_one_winner); A pages for svc-a.
    assert a.keep_lease() and not b.keep_lease()
    fail("svc-a")
    for _ in range(7):  # the shipped rule fires after its for: 1m
        results = tick(a, b)
        assert results[1] is None  # the standby runs nothing
        clock.advance(TICK)
    pages = [p for p in hook.take() if p["status"] == "firing"]
    assert [p["groupLabels"]["service"] for p in pages] == ["svc-a"]

    # svc-b fails; A evaluates and decides to page (the outbox row is written) and dies before sending it.
    fail("svc-b")
    for _ in range(7):
        a.keep_lease()
        now = clock.now()
        a.jobs["alerts"].evaluator.evaluate(now, silenced=a.jobs["alerts"].dispatcher.silenced(now))
        decided = a.jobs["alerts"].dispatcher.run(now)
        if decided:
            break
        clock.advance(TICK)
    assert decided and hook.take() == []
    died_at = clock.now()

    # B polls; within two lease periods of A's last renewal it is active, and sends only svc-b's page, once.
    while not b.keep_lease():
        b.run_job("alerts")
        clock.advance(TICK)
        assert clock.now() - died_at <= 2 * LEASE
    assert hook.take() == []  # nothing was sent while B was standby
    for _ in range(12):  # two minutes of B's ticks: svc-a's page is not repeated, svc-b's is sent once
        tick(b)
        clock.advance(TICK)
    pages = [(p["status"], p["groupLabels"]["service"]) for p in hook.take()]
    assert [pg for pg in pages if pg[0] == "firing"] == [("firing", "svc-b")], pages

    # A wakes (it had been paused, not killed): it holds nothing, so it runs nothing and sends nothing.
    assert a.run_job("alerts") is None and not a.keep_lease() and not a.active
    assert hook.take() == []
