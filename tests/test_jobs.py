"""The sli, slo and cost jobs against known data: percentiles, exact rates, burn rates, outcomes, reruns."""
from __future__ import annotations

import datetime as dt
from fractions import Fraction

import numpy as np
import pytest

from jobs.cost import CostJob
from jobs.sli import SliJob
from jobs.slo import SloJob
from monitor.app import create_app
from monitor.foundation.metrics import floor_to
from monitor.foundation.tables import job_runs
from monitor.foundation.tables.job_runs import RunResult
from monitor.scheduler import Scheduler, build_jobs

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 24, 8, 0, tzinfo=UTC)  # the hour the test traffic falls in
INTERVAL = dt.timedelta(minutes=1)


def iso(ts: dt.datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def traffic(n=4000, errors=37, timeouts=13, seed=1, service="svc", feature="chat", model="m1", start=T0,
            prefix="r", cost=0.25):
    """n requests spread over the hour after ``start``: lognormal latencies, the first ones failing."""
    rng = np.random.default_rng(seed)
    lat = rng.lognormal(mean=6.5, sigma=0.7, size=n)
    ttft = lat * rng.uniform(0.1, 0.4, size=n)
    evs = []
    for i in range(n):
        status = "error" if i < errors else "timeout" if i < errors + timeouts else "ok"
        evs.append({
            "request_id": f"{prefix}-{i}", "ts": iso(start + dt.timedelta(seconds=3600 * i / n)),
            "service": service, "feature": feature, "model": model, "prompt_version": "v1", "status": status,
            "latency_ms": float(lat[i]), "ttft_ms": float(ttft[i]), "input_tokens": 100, "output_tokens": 20,
            "cost_usd": cost,  # a binary fraction: sums are exact in floating point, so equality is fair
        })
    return evs, lat, ttft


@pytest.fixture
def env(make_config, clock, make_store):
    cfg = make_config(
        slos=[{"name": "chat-availability", "service": "svc", "feature": "chat", "objective": 99.5,
               "sli": "availability"},
              {"name": "chat-latency", "service": "svc", "feature": "chat", "objective": 99, "sli": "latency",
               "threshold_ms": 2000}],
        jobs={"catchup_max": "6h", "recompute": "10m", "grace": "30s"})
    store = make_store(cfg)
    clock.set(T0 + dt.timedelta(hours=1, minutes=1))
    app = create_app(cfg, store, clock)
    return cfg, store, clock, app.extensions["nlpmon"].ingestor


def ingest(ingestor, kind, rows):
    for i in range(0, len(rows), 2000):
        r = ingestor.ingest(kind, rows[i:i + 2000])
        assert r.rejected == 0, r.errors[:3]


def point(store, metric, window, ts, **labels):
    rows = store.query("SELECT labels, value FROM metric_points FINAL WHERE metric = {m:String} "
                       "AND `window` = {w:String} AND ts = {ts:DateTime64(3, 'UTC')}", {"m": metric, "w": window,
                                                                                         "ts": ts})
    found = [v for lab, v in rows if lab == labels]
    assert len(found) == 1, (metric, window, ts, labels, rows[:5])
    return found[0]


def snapshot(store):
    return sorted(store.query("SELECT metric, `window`, ts, toString(mapSort(labels)), value FROM metric_points FINAL"))


def test_percentiles_match_numpy_within_one_percent(env):
    cfg, store, clock, ing = env
    # Enough requests that each 5-minute window holds ~2,000: with a few hundred values the
    # t-digest and numpy's interpolation legitimately differ by more than 1% in the tail.
    evs, lat, ttft = traffic(n=24000)
    ingest(ing, "requests", evs)
    assert SliJob(store, cfg, clock, INTERVAL).run().status == "ok"
    end = T0 + dt.timedelta(hours=1)
    for q in (50, 90, 95, 99):
        got = point(store, f"latency_p{q}_ms", "1h", end, service="svc", feature="chat")
        want = np.percentile(lat, q)
        assert abs(got - want) / want < 0.01, (q, got, want)
    for q in (50, 95):
        got = point(store, f"ttft_p{q}_ms", "1h", end, service="svc", feature="chat")
        want = np.percentile(ttft, q)
        assert abs(got - want) / want < 0.01, (q, got, want)
    # A 5-minute window is answered from its own five minutes of rollups.
    first5 = lat[[i for i in range(len(lat)) if 3600 * i / len(lat) < 300]]
    for q in (50, 95, 99):
        got = point(store, f"latency_p{q}_ms", "5m", T0 + dt.timedelta(minutes=5), service="svc", feature="chat")
        want = np.percentile(first5, q)
        assert abs(got - want) / want < 0.01, (q, got, want)


def test_rates_are_exact(env):
    cfg, store, clock, ing = env
    evs, _, _ = traffic(n=4000, errors=37, timeouts=13)
    evs[100]["cache_hit"] = True
    ingest(ing, "requests", evs)
    ingest(ing, "feedback", [
        {"request_id": "r-200", "ts": iso(T0 + dt.timedelta(minutes=50)), "kind": "thumbs", "value": 1},
        {"request_id": "r-201", "ts": iso(T0 + dt.timedelta(minutes=50)), "kind": "thumbs", "value": 1},
        {"request_id": "r-202", "ts": iso(T0 + dt.timedelta(minutes=50)), "kind": "thumbs", "value": 0},
    ])
    SliJob(store, cfg, clock, INTERVAL).run()
    end = T0 + dt.timedelta(hours=1)
    lab = {"service": "svc", "feature": "chat"}
    assert point(store, "requests", "1h", end, **lab) == 4000
    assert point(store, "error_rate", "1h", end, **lab) == 50 / 4000
    assert point(store, "availability", "1h", end, **lab) == 3950 / 4000
    assert point(store, "cache_hit_rate", "1h", end, **lab) == 1 / 4000
    assert point(store, "thumbs_up_rate", "1h", end, **lab) == 2 / 3
    # The same figures at the other levels of detail.
    assert point(store, "error_rate", "1h", end, service="svc") == 50 / 4000
    assert point(store, "error_rate", "1h", end, service="svc", feature="chat", model="m1") == 50 / 4000
    assert point(store, "error_rate", "1h", end) == 50 / 4000
    # Feedback counts in the minute of its request (r-200..202 were sent in minute 3), and a minute
    # without thumbs has no thumbs_up_rate rather than 0.
    minutes = store.query("SELECT DISTINCT ts FROM metric_points WHERE metric = 'thumbs_up_rate' AND `window` = '1m'")
    assert [m[0].replace(tzinfo=UTC) for m in minutes] == [T0 + dt.timedelta(minutes=4)]


def test_burn_rates_and_budget_are_exact(env):
    cfg, store, clock, ing = env
    evs, lat, _ = traffic(n=4000, errors=30, timeouts=10)
    ingest(ing, "requests", evs)
    SloJob(store, cfg, clock, INTERVAL).run()
    at = T0 + dt.timedelta(hours=1)
    labels = {"slo": "chat-availability", "service": "svc", "feature": "chat", "sli": "availability"}
    # 40 bad of 4000 = 1%; the budget of a 99.5% objective is 0.5% exactly: burn rate 2.
    assert point(store, "slo_burn_rate", "1h", at, **labels) == 2.0
    assert point(store, "slo_burn_rate", "30d", at, **labels) == 2.0
    assert point(store, "slo_error_budget_remaining", "30d", at, **labels) == -1.0
    # The last 5 minutes hold no failures.
    assert point(store, "slo_burn_rate", "5m", at, **labels) == 0.0
    # The first 5 minutes (ending at T0+5m) hold all 40 failures among the requests sent then.
    early = sum(1 for i in range(4000) if 3600 * i / 4000 < 300)
    want = float(Fraction(40, early) / Fraction(5, 1000))
    assert point(store, "slo_burn_rate", "5m", T0 + dt.timedelta(minutes=5), **labels) == want
    lat_labels = {"slo": "chat-latency", "service": "svc", "feature": "chat", "sli": "latency"}
    slow = int((lat > 2000).sum())
    assert point(store, "slo_burn_rate", "1h", at, **lat_labels) == float(Fraction(slow, 4000) / Fraction(1, 100))
    assert point(store, "slo_sli", "1h", at, **lat_labels) == float(Fraction(4000 - slow, 4000))


def test_cost_per_successful_outcome_and_late_feedback(env):
    cfg, store, clock, ing = env
    evs, _, _ = traffic(n=400, errors=8, timeouts=2, cost=0.25)
    ingest(ing, "requests", evs)
    job = CostJob(store, cfg, clock, dt.timedelta(minutes=5))
    job.run()
    end, lab = T0 + dt.timedelta(hours=1), {"service": "svc", "feature": "chat"}
    assert point(store, "cost_usd", "1h", end, **lab) == 100.0
    assert point(store, "successful_outcomes", "1h", end, **lab) == 390
    assert point(store, "cost_per_successful_outcome_usd", "1h", end, **lab) == 100.0 / 390
    assert point(store, "cost_per_1k_requests_usd", "1h", end, **lab) == 250.0

    # Feedback arrives hours later: two thumbs-down for one request count it once, a failed task
    # another, a hallucination a third; feedback on a failed request changes nothing.
    late = T0 + dt.timedelta(hours=5)
    clock.set(late + dt.timedelta(minutes=1))
    ingest(ing, "feedback", [
        {"request_id": "r-100", "ts": iso(late), "kind": "thumbs", "value": 0},
        {"request_id": "r-100", "ts": iso(late + dt.timedelta(seconds=1)), "kind": "thumbs", "value": 0},
        {"request_id": "r-101", "ts": iso(late), "kind": "task_success", "value": 0},
        {"request_id": "r-102", "ts": iso(late), "kind": "hallucination", "label": "hallucinated",
         "source": "reviewer"},
        {"request_id": "r-103", "ts": iso(late), "kind": "thumbs", "value": 1},
        {"request_id": "r-0", "ts": iso(late), "kind": "thumbs", "value": 0},
    ])
    job.run()
    assert point(store, "successful_outcomes", "1h", end, **lab) == 387
    assert point(store, "cost_per_successful_outcome_usd", "1h", end, **lab) == 100.0 / 387
    assert point(store, "successful_outcomes", "1h", end, service="svc", feature="chat", model="m1") == 387


def test_success_definition_is_configurable(make_config, clock, make_store):
    cfg = make_config(outcomes={"success": {"statuses": ["ok"], "negative_feedback": ["task_failed"]}})
    store = make_store(cfg)
    clock.set(T0 + dt.timedelta(hours=1, minutes=1))
    ing = create_app(cfg, store, clock).extensions["nlpmon"].ingestor
    ingest(ing, "requests", traffic(n=100, errors=0, timeouts=0)[0])
    ingest(ing, "feedback", [{"request_id": "r-1", "ts": iso(T0 + dt.timedelta(minutes=59)), "kind": "thumbs",
                              "value": 0},
                             {"request_id": "r-2", "ts": iso(T0 + dt.timedelta(minutes=59)), "kind": "task_success",
                              "value": 0}])
    CostJob(store, cfg, clock, INTERVAL).run()
    assert point(store, "successful_outcomes", "1h", T0 + dt.timedelta(hours=1), service="svc", feature="chat") == 99


def test_rerun_leaves_the_same_rows(env):
    cfg, store, clock, ing = env
    ingest(ing, "requests", traffic(n=1000)[0])
    jobs = build_jobs(store, cfg, clock)
    for job in jobs.values():
        assert job.run().status == "ok"
    first = snapshot(store)
    assert first
    clock.advance(60)
    for job in jobs.values():
        job.run(since=T0 - dt.timedelta(hours=1))
    second = snapshot(store)
    # Everything the first run wrote is still there with the same value, once.
    assert set(first) <= set(second)
    keys = [r[:4] for r in second]
    assert len(keys) == len(set(keys))


def test_interrupted_run_then_restart_gives_the_clean_result(env):
    cfg, store, clock, ing = env
    ingest(ing, "requests", traffic(n=2000)[0])
    job = SliJob(store, cfg, clock, INTERVAL)
    job.chunk_size = 500

    def kill(n, calls=[]):  # noqa: B006 - counts calls across the run
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies mid-window, after part of its points are written

    job.after_chunk = kill
    with pytest.raises(KeyboardInterrupt):
        job.run()
    # A killed run leaves no success behind, and says it was interrupted.
    assert store.scalar("SELECT count() FROM job_runs WHERE status = 'ok'") == 0
    assert job_runs.latest(store, clock.now())["sli"].status == "interrupted"
    partial = store.scalar("SELECT count() FROM metric_points")
    assert partial == 1500
    job.after_chunk = None
    clock.advance(90)
    assert job.run().status == "ok"
    restarted = snapshot(store)
    store.command("TRUNCATE TABLE metric_points")
    store.command("TRUNCATE TABLE job_runs")
    job.run()
    assert snapshot(store) == restarted


def test_catch_up_is_bounded_and_resumes_from_the_last_run(env):
    cfg, store, clock, ing = env
    job = SliJob(store, cfg, clock, INTERVAL)
    first = job.run()
    assert first.window_end - first.window_start == dt.timedelta(hours=6)  # jobs.catchup_max
    clock.advance(dt.timedelta(minutes=5))
    second = job.run()
    assert second.window_start == first.window_end - dt.timedelta(minutes=10)  # jobs.recompute
    clock.advance(dt.timedelta(days=3))  # down for three days
    third = job.run()
    assert third.window_end - third.window_start == dt.timedelta(hours=6)
    assert third.window_end == floor_to(clock.now() - dt.timedelta(seconds=30), 60)


def test_one_failing_job_does_not_stop_the_others(env):
    cfg, store, clock, ing = env
    ingest(ing, "requests", traffic(n=200)[0])
    store.command("DETACH TABLE feedback_1h")  # a real failure for the cost job (and the feedback half of sli)
    sched = Scheduler(build_jobs(store, cfg, clock))
    results = {name: sched.run_job(name) for name in ("cost", "slo")}
    assert results["cost"].status == "error" and "feedback_1h" in results["cost"].error
    assert results["slo"].status == "ok" and results["slo"].rows > 0
    recorded = {job: run.status for job, run in job_runs.latest(store, clock.now()).items()}
    assert recorded == {"cost": "error", "slo": "ok"}
    store.command("ATTACH TABLE feedback_1h")
    clock.advance(60)
    # The failed run is not a success: with no success before it, the next run catches up in full.
    again = sched.run_job("cost")
    assert again.status == "ok" and again.window_end - again.window_start == dt.timedelta(hours=6)


def test_replayed_events_do_not_inflate_rollups(env):
    cfg, store, clock, ing = env
    evs = traffic(n=300)[0]
    ingest(ing, "requests", evs)
    ingest(ing, "requests", evs)
    assert store.scalar("SELECT sum(requests) FROM requests_1m") == 300
    fb = [{"request_id": "r-5", "ts": iso(T0 + dt.timedelta(minutes=30)), "kind": "thumbs", "value": 0}]
    ingest(ing, "feedback", fb)
    ingest(ing, "feedback", fb)
    assert store.scalar("SELECT sum(thumbs_down) FROM feedback_1m") == 1


def test_rollups_rebuild_matches_the_raw_tables(env):
    from monitor.foundation.tables.rollups import rebuild
    cfg, store, clock, ing = env
    ingest(ing, "requests", traffic(n=500)[0])
    ingest(ing, "feedback", [{"request_id": "r-7", "ts": iso(T0 + dt.timedelta(minutes=59)), "kind": "thumbs",
                              "value": 0}])
    before = store.query("SELECT sum(requests), sum(status_error), sum(cost_usd) FROM requests_1m")
    for table in ("requests_1m", "feedback_1m", "feedback_1h", "feedback_1d"):
        store.command(f"TRUNCATE TABLE {table}")
    days = []
    # Only the day that holds raw rows is rebuilt, however wide the range asked for.
    assert rebuild(store, T0 - dt.timedelta(days=3), T0 + dt.timedelta(days=30), on_day=days.append) == 1
    assert days == [T0.replace(hour=0)]
    assert store.query("SELECT sum(requests), sum(status_error), sum(cost_usd) FROM requests_1m") == before
    for table in ("feedback_1m", "feedback_1h", "feedback_1d"):
        assert store.scalar(f"SELECT sum(thumbs_down) FROM {table}") == 1, table
    # Rebuilding again replaces rather than adds.
    rebuild(store, T0 - dt.timedelta(hours=8), T0 + dt.timedelta(days=1))
    assert store.query("SELECT sum(requests), sum(status_error), sum(cost_usd) FROM requests_1m") == before


def test_feedback_before_its_request_is_orphaned(env):
    cfg, store, clock, ing = env
    ingest(ing, "feedback", [{"request_id": "ghost", "ts": iso(T0), "kind": "thumbs", "value": 0}])
    row = store.query_dicts("SELECT service, request_ts FROM feedback")[0]
    assert row == {"service": "", "request_ts": None}
    assert store.scalar("SELECT sum(orphaned) FROM feedback_1m") == 1


def test_scheduler_runs_jobs_on_its_own(env):
    import time
    cfg, store, clock, ing = env
    jobs = build_jobs(store, cfg, clock)
    for job in jobs.values():
        job.interval = dt.timedelta(seconds=3600)  # only the immediate first run happens in this test
    sched = Scheduler(jobs)
    sched.start()
    try:
        for _ in range(300):
            if len(sched.last) == len(jobs):
                break
            time.sleep(0.1)
    finally:
        sched.shutdown()
    assert {n: r.status for n, r in sched.last.items()} == {n: "ok" for n in jobs}
    assert set(jobs) == {"sli", "slo", "cost", "hallucination_sample", "hallucination", "drift", "grounding_proxy",
                         "alerts", "incident_kpis", "reconcile", "otlp_join", "segment_regression", "releases"}


def test_covering_uses_the_coarsest_rollups():
    from monitor.foundation.rollups import covering
    lo = dt.datetime(2026, 10, 25, 13, 17, tzinfo=UTC)
    hi = dt.datetime(2026, 11, 24, 9, 42, tzinfo=UTC)
    pieces = covering(lo, hi)
    # Contiguous, in order, tiling exactly [lo, hi).
    assert pieces[0][1] == lo and pieces[-1][2] == hi
    assert all(a[2] == b[1] for a, b in zip(pieces, pieces[1:]))
    assert [p[0] for p in pieces] == ["requests_1m", "requests_1h", "requests_1d", "requests_1h", "requests_1m"]
    assert pieces[2][1:] == (dt.datetime(2026, 10, 26, tzinfo=UTC), dt.datetime(2026, 11, 24, tzinfo=UTC))
    assert covering(T0, T0 + dt.timedelta(minutes=7)) == [("requests_1m", T0, T0 + dt.timedelta(minutes=7))]


def test_all_request_rollups_agree(env):
    cfg, store, clock, ing = env
    ingest(ing, "requests", traffic(n=3000)[0])
    sums = [store.query(f"SELECT sum(requests), sum(status_error), sum(cost_usd), "
                        f"quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(latency_q)[3] FROM {t}")[0]
            for t in ("requests_1m", "requests_1h", "requests_1d", "requests_feature_1h", "requests_feature_1d")]
    for s in sums:
        assert s[:3] == (3000, 37, 750.0)
        assert abs(s[3] - sums[0][3]) / sums[0][3] < 0.01


def test_all_feedback_rollups_agree(env):
    from monitor.foundation.rollups import covering, covering_source
    cfg, store, clock, ing = env
    ingest(ing, "requests", traffic(n=600)[0])
    fb = [{"request_id": f"r-{i}", "ts": iso(T0 + dt.timedelta(minutes=60)), "kind": "thumbs",
           "value": int(i % 3 == 0)} for i in range(0, 600, 5)]
    fb += [{"request_id": f"r-{i}", "ts": iso(T0 + dt.timedelta(minutes=60)), "kind": "task_success", "value": 0}
           for i in range(0, 600, 10)]
    ingest(ing, "feedback", fb)
    sums = [store.query(f"SELECT sum(feedback), sum(thumbs_up), sum(thumbs_down), sum(task_failure), "
                        f"bitmapCardinality(bitmapOr(groupBitmapMergeState(neg_thumbs), "
                        f"groupBitmapMergeState(neg_task))) "
                        f"FROM {t}")[0] for t in ("feedback_1m", "feedback_1h", "feedback_1d")]
    # 120 thumbs (40 up, 80 down) and 60 task failures, 40 of them on thumbed-down requests: 100 unhappy requests.
    assert sums[0] == sums[1] == sums[2] == (180, 40, 80, 60, 100)
    # A 90-minute window from mid-hour: minutes at both ends, whole hours of the hourly table between.
    lo, hi = T0 - dt.timedelta(minutes=30), T0 + dt.timedelta(hours=1)
    assert [p[0] for p in covering(lo, hi, "feedback")] == ["feedback_1m", "feedback_1h"]
    src, params = covering_source([(lo, hi)], columns="thumbs_down", family="feedback")
    assert store.scalar(f"SELECT sum(thumbs_down) FROM {src}", params) == 80


@pytest.mark.parametrize("family", ["requests", "requests_by_feature"])
def test_covering_source_counts_each_span_even_when_spans_overlap(env, family):
    from monitor.foundation.rollups import covering_source
    cfg, store, clock, ing = env
    ingest(ing, "requests", traffic(n=600)[0])  # one every 6 s over [T0, T0 + 1h)
    m = lambda k: T0 + dt.timedelta(minutes=k)  # noqa: E731
    for spans, expected in (([(m(-30), m(40)), (m(10), m(60))], [400, 500]),  # overlapping, like a long incident
                            ([(m(50), m(90)), (m(-60), m(20))], [100, 200])):  # disjoint, in any order
        src, params = covering_source(spans, columns="requests", family=family)
        got = dict(store.query(f"SELECT span, sum(requests) FROM {src} GROUP BY span", params))
        assert [got.get(i, 0) for i in range(len(spans))] == expected


def test_burn_rate_windows_with_ragged_edges_are_exact(env):
    cfg, store, clock, ing = env
    # 4000 requests in [T0, T0+1h) with 40 failures, then 600 in [T0+1h, T0+1h30m) with 9 failures:
    # a 2h window ending at T0+1h30m takes whole hours from the hourly rollup and its ends from minutes.
    ingest(ing, "requests", traffic(n=4000, errors=30, timeouts=10)[0])
    second = traffic(n=600, errors=9, timeouts=0, prefix="s", start=T0 + dt.timedelta(hours=1))[0]
    for i, ev in enumerate(second):
        ev["ts"] = iso(T0 + dt.timedelta(hours=1, seconds=1800 * i / 600))
    clock.set(T0 + dt.timedelta(hours=1, minutes=31))
    ingest(ing, "requests", second)
    SloJob(store, cfg, clock, INTERVAL).run()
    at = T0 + dt.timedelta(hours=1, minutes=30)
    labels = {"slo": "chat-availability", "service": "svc", "feature": "chat", "sli": "availability"}
    budget = Fraction(5, 1000)
    assert point(store, "slo_burn_rate", "2h", at, **labels) == float(Fraction(49, 4600) / budget)
    assert point(store, "slo_burn_rate", "30d", at, **labels) == float(Fraction(49, 4600) / budget)
    assert point(store, "slo_burn_rate", "30m", at, **labels) == float(Fraction(9, 600) / budget)
    # 1h ending at T0+1h30m: the second half of the first hour plus the 600 new requests.
    half = [i for i in range(4000) if 3600 * i / 4000 >= 1800]
    assert point(store, "slo_burn_rate", "1h", at, **labels) == float(Fraction(9, len(half) + 600) / budget)


def test_scheduled_runs_are_timed_at_their_tick_not_their_wake_up():
    import time

    from monitor.foundation.clock import SystemClock

    class Probe:  # records the now each run is given
        name, interval, clock = "probe", dt.timedelta(seconds=15), SystemClock()
        description, start_offset, show_progress = "records its runs", dt.timedelta(0), False

        def __init__(self):
            self.nows = []

        def run(self, now=None, since=None):
            self.nows.append(now)
            return RunResult("probe", now, now)

    probe = Probe()
    sched = Scheduler({"probe": probe})
    sched.start()
    try:
        for _ in range(100):
            if probe.nows:
                break
            time.sleep(0.05)
    finally:
        sched.shutdown()
    first = sched._first["probe"]
    assert probe.nows == [first]  # the tick itself, not the moment the thread woke
    # A run that wakes a few ms either side of a later tick is timed at that tick: `for: 1m` is 4 ticks exactly.
    for jitter_ms in (-3, 0, 2, 900):
        at = first + 4 * probe.interval + dt.timedelta(milliseconds=jitter_ms)
        assert sched.scheduled_time("probe", at) == first + 4 * probe.interval
    # A run that comes late (the one before overran) reads its clock.
    assert sched.scheduled_time("probe", first + 4 * probe.interval + dt.timedelta(seconds=5)) is None
