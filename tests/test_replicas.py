"""Several API instances (their own process-local state: locks aside, caches, budgets) over one store,
receiving the same events at the same moment, as replicas behind a load balancer do: the raw tables
and every rollup count each id once; review items go to one reviewer at a time; silences created twice
are one. Real HTTP test clients, threads, one embedded store."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from monitor.app import create_app
from monitor.foundation.clock import ManualClock
from monitor.foundation.tables import _raw
from tests.helpers import auth, feedback_event, request_event

ROLLUPS = {"requests_1m": "requests", "requests_1h": "requests", "requests_1d": "requests",
           "requests_feature_1h": "requests", "requests_feature_1d": "requests",
           "feedback_1m": "feedback", "feedback_1h": "feedback", "feedback_1d": "feedback"}


class _NoLock:
    """Each app instance stands for another process: the in-process lock that orders ingest in one
    process must not order them here, or the test would show only what one process already did."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def apps(config, store, clock, monkeypatch):
    monkeypatch.setattr("monitor.ingest.pipeline.RAW_WRITES", _NoLock())
    # Each process has its own clock: the server-filled ingested_at differs between them, as it would.
    instances = [create_app(config, store, ManualClock(clock.now() + dt.timedelta(milliseconds=i))) for i in range(4)]
    key = instances[0].extensions["nlpmon"].keys.create("sender", ["ingest", "read", "review", "admin"])[1]
    return instances, key


def send_at_once(apps, key, path, bodies, rounds=1):
    """Every instance posts each body at the same moment (a barrier per round), in its own thread."""
    clients = [a.test_client() for a in apps]
    statuses = []
    for body in bodies:
        barrier = threading.Barrier(len(clients))

        def post(c):
            barrier.wait()
            r = c.post(path, json=body, headers=auth(key))
            statuses.append(r.status_code)
        threads = [threading.Thread(target=post, args=(c,)) for c in clients]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
    return statuses


def hold_the_id_check_open(monkeypatch, instances) -> None:
    """Every instance has checked the ids before any of them inserts: the window a load balancer's
    retry can hit, held open on purpose so the race happens on every run, not now and then."""
    from monitor.foundation.tables import feedback, requests
    for module in (requests, feedback):
        checked = threading.Barrier(len(instances), timeout=30)
        original = module.existing_ids

        def existing_then_wait(store_, ids, original=original, checked=checked):
            found = original(store_, ids)
            checked.wait()
            return found
        monkeypatch.setattr(module, "existing_ids", existing_then_wait)


def rollup_counts(store):
    out = {}
    for table, family in ROLLUPS.items():
        col = "requests" if family == "requests" else "feedback"
        out[table] = store.scalar(f"SELECT sum({col}) FROM {table}")
    return out


def test_the_same_batch_at_four_replicas_at_once_counts_once_everywhere(apps, store, monkeypatch):
    instances, key = apps
    hold_the_id_check_open(monkeypatch, instances)
    # Each batch spans two UTC days (two partitions: two blocks, each with its own token).
    batches = [[request_event(f"{b}-{i}", ts=ts) for i, ts in enumerate(("2026-11-23T23:59:30Z", "2026-11-24T00:00:30Z",
                                                                        "2026-11-24T09:00:00Z"))]
               for b in range(8)]
    statuses = send_at_once(instances, key, "/v1/requests", batches)
    assert set(statuses) == {200}
    assert store.scalar("SELECT count() FROM requests") == 24
    assert store.scalar("SELECT uniqExact(request_id) FROM requests") == 24
    counts = rollup_counts(store)
    assert {t: n for t, n in counts.items() if ROLLUPS[t] == "requests"} == {
        t: 24 for t in ROLLUPS if ROLLUPS[t] == "requests"}
    # feedback too, for requests that exist
    fb = [[feedback_event(f"{b}-{i}", feedback_id=f"fb-{b}-{i}", ts="2026-11-24T09:31:00Z") for i in range(3)]
          for b in range(8)]
    assert set(send_at_once(instances, key, "/v1/feedback", fb)) == {200}
    assert store.scalar("SELECT count() FROM feedback") == 24
    counts = rollup_counts(store)
    assert {t: n for t, n in counts.items() if ROLLUPS[t] == "feedback"} == {
        t: 24 for t in ROLLUPS if ROLLUPS[t] == "feedback"}


def test_without_the_token_the_same_race_doubles(apps, store, monkeypatch):
    """The race is real: the same concurrent sends without the token land several times (the id check
    alone cannot see another process's insert in flight)."""
    instances, key = apps
    monkeypatch.setattr(_raw, "deduplicated", lambda token: None)
    monkeypatch.setattr("monitor.foundation.tables.requests.deduplicated", lambda token: None)
    hold_the_id_check_open(monkeypatch, instances)
    batches = [[request_event(f"x{b}-{i}") for i in range(3)] for b in range(2)]
    send_at_once(instances, key, "/v1/requests", batches)
    # (Some copies may still be dropped as byte-identical blocks; the id check alone let several land.)
    assert store.scalar("SELECT count() FROM requests") > store.scalar("SELECT uniqExact(request_id) FROM requests") == 6


def test_a_retry_of_what_never_landed_lands(apps, store):
    """A batch whose insert never happened leaves no token behind, so its retry is stored (nothing lost);
    a batch that did land and is retried with other content is dropped by the id check."""
    instances, key = apps
    c = instances[0].test_client()
    assert c.post("/v1/requests", json=[request_event("r1")], headers=auth(key)).get_json()["accepted"] == 1
    again = c.post("/v1/requests", json=[request_event("r1"), request_event("r2")], headers=auth(key)).get_json()
    assert again["duplicates"] == 1 and store.scalar("SELECT count() FROM requests") == 2
    assert store.scalar("SELECT sum(requests) FROM requests_1m") == 2


def test_overlapping_batches_differ_in_token_and_are_bounded_by_reconcile(apps, store):
    """Documented limit: batches that overlap but differ ({r1, r2} and {r2, r3}) sent at once to two
    replicas carry different tokens, so r2 may land twice. Such a doubled id shares its sort key, so
    FINAL (and a merge) keeps one row, and the reconcile job rebuilds the buckets that differ from it."""
    instances, key = apps
    bodies = [[request_event("o1"), request_event("o2")], [request_event("o2"), request_event("o3")]]
    clients = [instances[0].test_client(), instances[1].test_client()]
    barrier = threading.Barrier(2)

    def post(c, body):
        barrier.wait()
        c.post("/v1/requests", json=body, headers=auth(key))
    threads = [threading.Thread(target=post, args=(c, b)) for c, b in zip(clients, bodies)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert store.scalar("SELECT count() FROM requests FINAL") == 3
    assert store.scalar("SELECT count() FROM requests") in (3, 4)


def test_reviewers_at_several_instances_never_share_an_item(apps, store, clock, monkeypatch):
    """N reviewers x M instances ask for their next item at the same moment, round after round: each
    item is leased to one reviewer at a time, and what each was told it holds is what the store holds.
    Nobody is ever handed an item someone else holds, and every round hands out items (a reviewer asking
    from four instances at once may win several and another none)."""
    from monitor.foundation.tables import review
    from monitor.review import leases
    monkeypatch.setattr(leases, "_lease_lock", _NoLock())
    instances, key = apps
    day = clock.now().date()
    review.enqueue(store, [[f"q{i}", clock.now(), "svc", "chat", day, "rate", clock.now(), None] for i in range(40)])
    reviewers = [f"rev{i}" for i in range(6)]
    clients = [a.test_client() for a in instances]
    for rnd in range(4):
        barrier = threading.Barrier(len(reviewers) * len(clients))
        got: list[tuple[str, str]] = []

        def ask(c, who):
            barrier.wait()
            item = c.get(f"/v1/review/next?reviewer={who}", headers=auth(key)).get_json()["item"]
            if item is not None:
                got.append((who, item["id"]))
        threads = [threading.Thread(target=ask, args=(c, who)) for c in clients for who in reviewers]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        assert len(got) >= len(reviewers), (rnd, got)  # every round hands out items while any are free
        holders: dict[str, set[str]] = {}
        for who, item in got:
            holders.setdefault(item, set()).add(who)
        assert all(len(who) == 1 for who in holders.values()), holders  # an item is one reviewer's
        assert dict(store.query("SELECT request_id, reviewer FROM review_leases FINAL WHERE expires_at > "
                                "{now:DateTime64(3, 'UTC')}", {"now": clock.now()})) == \
            {item: next(iter(w)) for item, w in holders.items()}
        # each reviewer labels nothing; the leases expire and the next round starts from free items
        for i in instances:
            i.extensions["nlpmon"].clock.advance(dt.timedelta(hours=1))
        clock.advance(dt.timedelta(hours=1))


def test_a_silence_create_retried_at_several_instances_is_one_silence(apps, store):
    """An Idempotency-Key makes the create of a silence safe to retry through any replica."""
    instances, key = apps
    body = {"matchers": ["service=support-bot"], "duration": "2h", "comment": "deploy in progress"}
    clients = [a.test_client() for a in instances]
    barrier, answers = threading.Barrier(len(clients)), []

    def post(c):
        barrier.wait()
        answers.append(c.post("/v1/silences", json=body, headers={**auth(key), "Idempotency-Key": "deploy-42"}))
    threads = [threading.Thread(target=post, args=(c,)) for c in clients]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert {r.status_code for r in answers} == {201}
    assert len({r.get_json()["id"] for r in answers}) == 1
    listed = clients[0].get("/v1/silences", headers=auth(key)).get_json()
    assert len(listed if isinstance(listed, list) else listed["silences"]) == 1
    # Without the key every create is a silence of its own (Alertmanager's behaviour).
    assert clients[0].post("/v1/silences", json=body, headers=auth(key)).get_json()["id"] != answers[0].get_json()["id"]
