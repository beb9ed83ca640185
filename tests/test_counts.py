"""Nothing lost, nothing doubled: replays by id, feedback that arrives first, and rollups that converge
to the raw rows after lost or doubled view writes (the crash itself: tests/test_crash.py)."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from jobs.reconcile import ReconcileJob
from monitor.app import create_app
from monitor.foundation.rollups import LINEAGE
from tests.helpers import LiveServer
from tests.test_jobs import T0, iso, traffic

ROLLUPS = [t for t, *_ in LINEAGE]


@pytest.fixture
def env(make_config, clock, make_store):
    cfg = make_config(jobs={"reconcile_horizon": "2d"})
    store = make_store(cfg)
    clock.set(T0 + dt.timedelta(hours=1, minutes=5))
    app = create_app(cfg, store, clock)
    return cfg, store, clock, app


def totals(store) -> dict[str, int]:
    """Rows each rollup counts, and the raw rows under FINAL."""
    out = {t: int(store.scalar(f"SELECT sum({'requests' if t.startswith('requests') else 'feedback'}) FROM {t}") or 0)
           for t in ROLLUPS}
    out["requests FINAL"] = int(store.scalar("SELECT count() FROM requests FINAL"))
    out["feedback FINAL"] = int(store.scalar("SELECT count() FROM feedback FINAL"))
    return out


def converged(store) -> bool:
    t = totals(store)
    return all(t[k] == t["requests FINAL"] for k in ROLLUPS if k.startswith("requests")) and \
        all(t[k] == t["feedback FINAL"] for k in ROLLUPS if k.startswith("feedback"))


def test_a_replay_lands_once_whatever_its_time_and_the_first_wins(env):
    cfg, store, clock, app = env
    ing = app.extensions["nlpmon"].ingestor
    first = traffic(n=1, start=T0)[0][0]
    assert ing.ingest("requests", [first]).duplicates == 0
    for shift in (dt.timedelta(milliseconds=1), dt.timedelta(hours=1), dt.timedelta(days=-1)):
        replay = {**first, "ts": iso(T0 + shift), "latency_ms": 99999.0, "feature": "elsewhere"}
        assert ing.ingest("requests", [replay]).duplicates == 1
    assert store.scalar("SELECT count() FROM requests") == 1  # not even a second raw row
    assert store.query("SELECT feature, latency_ms FROM requests") == [("chat", first["latency_ms"])]
    assert all(n == 1 for n in totals(store).values() if n) and totals(store)["requests_1d"] == 1


def test_concurrent_senders_replaying_with_their_own_timestamps_count_once(env):
    cfg, store, clock, app = env
    events = traffic(n=1500, start=T0)[0]

    def sender(k: int):
        import json
        import urllib.request
        shifted = [{**e, "ts": iso(T0 + dt.timedelta(seconds=2.4 * i, milliseconds=k))} for i, e in enumerate(events)]
        for i in range(0, len(shifted), 250):
            req = urllib.request.Request(f"{srv.url}/v1/requests", data=json.dumps(shifted[i:i + 250]).encode(),
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {key}"})
            urllib.request.urlopen(req).read()

    key = app.extensions["nlpmon"].keys.create("senders", ["ingest"])[1]
    with LiveServer(app) as srv:
        threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert store.scalar("SELECT count() FROM requests") == 1500
    assert {k: v for k, v in totals(store).items() if k.startswith("requests")} == \
        {t: 1500 for t in ROLLUPS if t.startswith("requests")} | {"requests FINAL": 1500}


def test_feedback_that_arrives_first_is_attributed_once_its_request_arrives(env):
    cfg, store, clock, app = env
    ing = app.extensions["nlpmon"].ingestor
    request = traffic(n=1, errors=0, timeouts=0, start=T0 + dt.timedelta(minutes=10))[0][0]
    ing.ingest("feedback", [{"request_id": request["request_id"], "ts": iso(T0 + dt.timedelta(minutes=40)),
                             "kind": "thumbs", "value": 0}])
    assert store.scalar("SELECT sum(orphaned) FROM feedback_1m") == 1
    ing.ingest("requests", [request])
    job = ReconcileJob(store, cfg, clock, dt.timedelta(minutes=1))
    clock.advance(60)
    assert job.run().status == "ok"  # the first run after the request arrived attributes the feedback
    row = store.query_dicts("SELECT service, feature, request_ts, request_status FROM feedback FINAL")
    assert row == [{"service": "svc", "feature": "chat", "request_ts": T0 + dt.timedelta(minutes=10),
                    "request_status": "ok"}]
    assert store.scalar("SELECT value FROM metric_points FINAL WHERE metric = 'feedback_attributed'") == 1
    for _ in range(2):  # the orphan bucket differs from the raw rows now; repaired when two runs see it
        clock.advance(60)
        assert job.run().status == "ok"
    assert converged(store)
    for table in ("feedback_1m", "feedback_1h", "feedback_1d"):
        assert store.query(f"SELECT sum(orphaned), sumIf(thumbs_down, service = 'svc') FROM {table}") == [(0, 1)]
    assert store.query("SELECT minute FROM feedback_1m WHERE thumbs_down > 0") == [(T0 + dt.timedelta(minutes=10),)]


def test_reconciliation_repairs_lost_and_doubled_view_writes(env):
    cfg, store, clock, app = env
    ing = app.extensions["nlpmon"].ingestor
    ing.ingest("requests", traffic(n=600, start=T0)[0])
    ing.ingest("feedback", [{"request_id": f"r-{i}", "ts": iso(T0 + dt.timedelta(minutes=59)), "kind": "thumbs",
                             "value": i % 2} for i in range(0, 600, 7)])
    # A view's write lost: the raw rows land, requests_1m and feedback_1h never count them.
    store.command("DETACH TABLE requests_1m_mv")
    store.command("DETACH TABLE feedback_1h_mv")
    ing.ingest("requests", traffic(n=50, start=T0, prefix="late", seed=2)[0])
    ing.ingest("feedback", [{"request_id": "late-3", "ts": iso(T0 + dt.timedelta(minutes=61)), "kind": "thumbs",
                             "value": 0}])
    store.command("ATTACH TABLE requests_1m_mv")
    store.command("ATTACH TABLE feedback_1h_mv")
    # A view's write doubled: an hour counted twice.
    store.command("INSERT INTO requests_1h SELECT * FROM requests_1h WHERE minute = {h:DateTime('UTC')}",
                  {"h": T0.replace(tzinfo=None)})
    assert not converged(store)
    job = ReconcileJob(store, cfg, clock, dt.timedelta(minutes=1))
    clock.advance(60)
    assert job.run().status == "ok" and not converged(store)  # seen once: maybe an insert in flight, wait
    clock.advance(60)
    result = job.run()
    assert result.status == "ok" and converged(store), totals(store)
    repaired = dict(store.query("SELECT labels['table'], value FROM metric_points FINAL "
                                "WHERE metric = 'rollup_buckets_repaired'"))
    assert repaired["requests_1m"] >= 1 and repaired["requests_1h"] >= 1 and repaired["feedback_1h"] == 1
    assert store.scalar("SELECT sum(value) FROM metric_points FINAL WHERE metric = 'rollup_rows_repaired' "
                        "AND labels['table'] = 'requests_1m'") == 50
    # Repaired rows are what the views would have written: compare with a full rebuild from the raw rows.
    from monitor.foundation.tables.rollups import rebuild
    repaired_state = {t: contents(store, t) for t in ROLLUPS}
    rebuild(store, T0, T0 + dt.timedelta(days=1))
    for t in ROLLUPS:
        assert repaired_state[t] == contents(store, t), t
    clock.advance(60)
    assert job.run().rows == 0  # nothing left to repair


def contents(store, table: str) -> list[tuple]:
    """A rollup's rows merged per key: every count, sums rounded, the latency histogram and the
    negative-feedback bitmaps' sizes (t-digest states depend on merge order, so they are left out)."""
    dims = next(entry[4] for entry in LINEAGE if entry[0] == table)
    key = ", ".join(("minute",) + dims)
    if table.startswith("requests"):
        values = ("sum(requests), sum(status_ok), sum(status_error), sum(ttft_count), sum(input_tokens), "
                  "round(sum(cost_usd), 6), round(sum(latency_sum_ms), 3), sumForEachMerge(latency_le)")
    else:
        values = ("sum(feedback), sum(thumbs_up), sum(thumbs_down), sum(orphaned), "
                  "bitmapCardinality(groupBitmapMergeState(neg_thumbs))")
    return store.query(f"SELECT {key}, {values} FROM {table} GROUP BY {key} ORDER BY {key}")
