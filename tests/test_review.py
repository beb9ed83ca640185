"""Hallucination sampling, the review API and the rate job with Wilson intervals."""
from __future__ import annotations

import datetime as dt

import pytest

from jobs.hallucination import HallucinationRateJob
from monitor.review.sampling import HallucinationSampleJob
from monitor.app import create_app
from monitor.foundation.stats import wilson
from tests.helpers import auth
from tests.test_jobs import T0, iso

INTERVAL = dt.timedelta(minutes=10)


def answered(n, service="svc", feature="chat", prefix="r", with_answer=True):
    return [{"request_id": f"{prefix}-{i}", "ts": iso(T0 + dt.timedelta(seconds=3600 * i / n)), "service": service,
             "feature": feature, "model": "m", "status": "ok", "latency_ms": 100.0,
             "input_text": f"question {i}", "context_text": f"context {i}",
             "output_text": f"answer {i}" if with_answer else ""} for i in range(n)]


@pytest.fixture
def env(make_config, make_store, clock):
    cfg = make_config(review={"sample_rate": 0.05, "min_per_day": 8,
                              "rates": [{"service": "svc", "feature": "rare", "rate": 0.0}]})
    store = make_store(cfg)
    clock.set(T0 + dt.timedelta(hours=1, minutes=5))
    app = create_app(cfg, store, clock)
    svc = app.extensions["nlpmon"]
    for batch in (answered(4000), answered(50, feature="rare", prefix="x"),
                  answered(300, feature="silent", prefix="s", with_answer=False)):
        assert svc.ingestor.ingest("requests", batch).rejected == 0
    keys = {name: svc.keys.create(name, [scope])[1]
            for name, scope in (("ana", "review"), ("ben", "review"), ("reader", "read"))}
    return cfg, store, clock, app, keys


def queue(store):
    return store.query("SELECT request_id, feature, reason FROM review_queue FINAL ORDER BY request_id")


def test_sampling_is_deterministic_and_stratified(env):
    cfg, store, clock, app, keys = env
    job = HallucinationSampleJob(store, cfg, clock, INTERVAL)
    assert job.run().status == "ok"
    first = queue(store)
    chat = [r for r in first if r[1] == "chat"]
    assert 120 < len(chat) < 280  # ~5% of 4000
    assert all(r[2] == "rate" for r in chat)
    # A stratum with rate 0 still gets its daily minimum, the lowest hashes; one with no answers gets none.
    rare = [r for r in first if r[1] == "rare"]
    assert len(rare) == 8 and {r[2] for r in rare} == {"minimum"}
    assert not [r for r in first if r[1] == "silent"]
    clock.advance(600)
    job.run(since=T0 - dt.timedelta(hours=1))
    assert queue(store) == first
    assert store.scalar("SELECT count() FROM review_queue") == len(first) * 2  # replaced on merge, FINAL shows one


def test_review_flow_leases_labels_and_agreement(env):
    cfg, store, clock, app, keys = env
    HallucinationSampleJob(store, cfg, clock, INTERVAL).run()
    c = app.test_client()
    a = c.get("/v1/review/next?service=svc&feature=rare", headers=auth(keys["ana"])).json["item"]
    b = c.get("/v1/review/next?service=svc&feature=rare", headers=auth(keys["ben"])).json["item"]
    assert a["id"] != b["id"]  # the lease keeps ana's item from ben
    assert a["question"].startswith("question") and a["context"].startswith("context")
    assert a["answer"].startswith("answer") and a["reviewer"] == "ana"
    # Asking again returns the item still leased to the same reviewer.
    assert c.get("/v1/review/next?service=svc&feature=rare", headers=auth(keys["ana"])).json["item"]["id"] == a["id"]
    r = c.post(f"/v1/review/{a['id']}", json={"label": "hallucinated", "comment": "made up a refund policy"},
               headers=auth(keys["ana"]))
    assert r.status_code == 201 and r.json["reviewer"] == "ana"
    assert c.post(f"/v1/review/{a['id']}", json={"label": "grounded"}, headers=auth(keys["ana"])).status_code == 409
    # Another reviewer's label on the same item is kept, for agreement.
    assert c.post(f"/v1/review/{a['id']}", json={"label": "grounded"}, headers=auth(keys["ben"])).status_code == 201
    labels = store.query("SELECT reviewer, label, source FROM feedback FINAL WHERE request_id = {id:String} "
                         "ORDER BY reviewer", {"id": a["id"]})
    assert labels == [("ana", "hallucinated", "reviewer"), ("ben", "grounded", "reviewer")]
    # A labeled item is not offered again; after the lease expires, ben's item goes to ana.
    clock.advance(dt.timedelta(minutes=11))
    nxt = c.get("/v1/review/next?service=svc&feature=rare", headers=auth(keys["ana"])).json["item"]
    assert nxt["id"] not in (a["id"],)
    assert nxt["id"] == b["id"]


@pytest.mark.parametrize("body, status, message", [
    ({"label": "maybe"}, 400, "label: must be one of hallucinated, grounded, unsure"),
    ({"label": "grounded", "reviewer": ""}, 400, "reviewer: must be a non-empty string"),
    ({"label": "grounded", "comment": 5}, 400, "comment: must be a string"),
    ({"label": "grounded", "mood": "x"}, 400, "mood: unknown field"),
    ([1], 400, "body: must be a JSON object"),
])
def test_labels_are_validated(env, body, status, message):
    cfg, store, clock, app, keys = env
    HallucinationSampleJob(store, cfg, clock, INTERVAL).run()
    rid = store.scalar("SELECT min(request_id) FROM review_queue")
    r = app.test_client().post(f"/v1/review/{rid}", json=body, headers=auth(keys["ana"]))
    assert r.status_code == status and message in r.json["message"]


def test_review_needs_the_review_scope_and_a_queued_item(env):
    cfg, store, clock, app, keys = env
    c = app.test_client()
    assert c.get("/v1/review/next").status_code == 401
    assert c.get("/v1/review/next", headers=auth(keys["reader"])).status_code == 403
    assert c.post("/v1/review/r-1", json={"label": "grounded"}, headers=auth(keys["reader"])).status_code == 403
    assert c.post("/v1/review/nope", json={"label": "grounded"}, headers=auth(keys["ana"])).status_code == 404
    assert c.get("/v1/review/next", headers=auth(keys["ana"])).json == {
        "item": None, "message": "nothing left to review for this filter"}


def test_rate_with_wilson_bounds_and_coverage(env):
    cfg, store, clock, app, keys = env
    HallucinationSampleJob(store, cfg, clock, INTERVAL).run()
    c = app.test_client()
    ids = [r[0] for r in store.query("SELECT request_id FROM review_queue FINAL WHERE feature = 'chat' "
                                     "ORDER BY request_id LIMIT 40")]
    sampled = store.scalar("SELECT count() FROM review_queue FINAL WHERE feature = 'chat'")
    # 40 reviewed: 6 hallucinated, 30 grounded, 2 unsure, and 2 ties between reviewers (unrated).
    plan = ["hallucinated"] * 6 + ["grounded"] * 30 + ["unsure"] * 2
    for rid, label in zip(ids, plan):
        assert c.post(f"/v1/review/{rid}", json={"label": label}, headers=auth(keys["ana"])).status_code == 201
    for rid in ids[38:]:
        c.post(f"/v1/review/{rid}", json={"label": "hallucinated"}, headers=auth(keys["ana"]))
        c.post(f"/v1/review/{rid}", json={"label": "grounded"}, headers=auth(keys["ben"]))
    clock.set(T0 + dt.timedelta(days=1, minutes=5))
    job = HallucinationRateJob(store, cfg, clock, dt.timedelta(hours=1))
    assert job.run().status == "ok"
    end = T0 + dt.timedelta(days=1)
    lab = {"service": "svc", "feature": "chat"}
    values = {m: v for m, labels, v in store.query(
        "SELECT metric, labels, value FROM metric_points FINAL WHERE `window` = '1d' "
        "AND ts = {ts:DateTime64(3, 'UTC')}", {"ts": end}) if labels == lab}
    low, high = wilson(6, 36)
    assert values["hallucination_rate"] == 6 / 36
    assert (values["hallucination_rate_low"], values["hallucination_rate_high"]) == (low, high)
    assert values["hallucination_reviews"] == 36
    assert values["review_coverage"] == 40 / sampled


@pytest.mark.parametrize("k, n", [(6, 36), (0, 10), (10, 10), (1, 3), (250, 1000)])
@pytest.mark.fast
def test_wilson_matches_scipy(k, n):
    from scipy.stats import binomtest
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))


@pytest.mark.fast
def test_wilson_without_reviews_is_uninformative():
    assert wilson(0, 0) == (0.0, 1.0)


# -- on a real clock --------------------------------------------------------------------------------
@pytest.fixture
def real_clock_queue(make_config, make_store):
    """An app on the system clock, with 450 sampled answers from the last hour waiting for review."""
    from monitor.foundation.clock import SystemClock
    from monitor.foundation.tables import review
    cfg = make_config()
    store = make_store(cfg)
    clock = SystemClock()
    app = create_app(cfg, store, clock)
    svc = app.extensions["nlpmon"]
    start = clock.now() - dt.timedelta(hours=1)
    batch = answered(450)
    for i, ev in enumerate(batch):
        ev["ts"] = iso(start + dt.timedelta(seconds=5 * i))
    assert svc.ingestor.ingest("requests", batch).rejected == 0
    review.enqueue(store, [[ev["request_id"], start + dt.timedelta(seconds=5 * i), "svc", "chat", start.date(),
                            "rate", clock.now(), None] for i, ev in enumerate(batch)])
    keys = {name: svc.keys.create(name, ["review"])[1] for name in ("ana", "ben")}
    return store, app, keys


def test_two_reviewers_on_a_real_clock_get_items_and_never_the_same_one(real_clock_queue):
    """Over real HTTP with the system clock (microseconds): each of two reviewers working in parallel gets
    an item every round for 200 rounds, labels it, and no item is ever given to both."""
    import threading

    import requests as http

    from tests.helpers import LiveServer
    store, app, keys = real_clock_queue
    got: dict[str, list[str]] = {"ana": [], "ben": []}
    errors: list[str] = []
    start = threading.Barrier(2)

    def work(name):
        s = http.Session()
        s.headers.update(auth(keys[name]))
        start.wait()
        for _ in range(200):
            item = s.get(f"{srv.url}/v1/review/next", timeout=30).json()["item"]
            if item is None:
                errors.append(f"{name} was told nothing is left after {len(got[name])} items")
                return
            got[name].append(item["id"])
            r = s.post(f"{srv.url}/v1/review/{item['id']}", json={"label": "grounded"}, timeout=30)
            if r.status_code != 201:
                errors.append(f"{name} could not label {item['id']}: {r.status_code} {r.text}")
                return

    with LiveServer(app) as srv:
        threads = [threading.Thread(target=work, args=(n,)) for n in got]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    assert errors == []
    assert len(got["ana"]) == len(got["ben"]) == 200
    assert not set(got["ana"]) & set(got["ben"])
    assert len(set(got["ana"])) == 200 and len(set(got["ben"])) == 200
    labelled = store.scalar("SELECT count() FROM feedback FINAL WHERE kind = 'hallucination' AND source = 'reviewer'")
    assert labelled == 400


def test_the_review_page_on_a_real_clock_shows_an_item_and_the_next_after_a_label(real_clock_queue):
    import re
    store, app, keys = real_clock_queue
    c = app.test_client()
    page = c.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    c.post("/login", data={"csrf_token": token, "api_key": keys["ana"]})
    html = c.get("/review").get_data(as_text=True)
    first = re.search(r'data-request="([^"]+)"', html).group(1)
    assert "question" in html and "answer" in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    r = c.post(f"/review/{first}", data={"csrf_token": token, "label": "hallucinated"})
    assert r.status_code == 302
    html = c.get("/review").get_data(as_text=True)
    second = re.search(r'data-request="([^"]+)"', html).group(1)
    assert second != first and f"labelled {first} as hallucinated" in html
    assert store.query("SELECT label FROM feedback FINAL WHERE request_id = {id:String}", {"id": first}) == \
        [("hallucinated",)]
