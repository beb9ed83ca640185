"""Dashboards: server-side time of every page and the incident export, on 30 days of data.

    .venv/bin/python bench/dashboards.py [--requests 10000000] [--days 30] [--repeat 20] [--job-budget 600]

1. Loads ``--requests`` synthetic requests spread evenly over the ``--days``
   days before the current hour into an embedded chDB store in a temporary
   directory, with the generator and loader of bench/sli.py (server-side
   INSERT ... SELECT, so the materialized views fill the rollups as a real
   ingest does). Then thumbs feedback for ~3% of the requests (a fifth of it
   thumbs down), generated server-side from the stored requests, with the
   request's dimensions, time and status copied on as the ingest does.
2. Computes the metric series the pages read: the ``sli``, ``cost`` and
   ``slo`` jobs from monitor.scheduler.build_jobs, on a ManualClock at the end
   of the window, with one availability and one latency SLO on
   support-bot/answer. Each job runs one day at a time, newest day first
   (``job.run(now=day_end + grace, since=day_start)``; the windows a job
   computes are the same as in one run over the whole range), so progress
   shows. A job whose projected time for all days exceeds ``--job-budget``
   seconds stops once it has covered the last 7 days; the output says so.
3. Creates the Flask app (monitor.app.create_app) on the same store and
   clock, creates an admin key, signs in through the test client (GET /login,
   POST /login with the CSRF token) and times ``client.get(url)`` for each
   page: ``--repeat`` requests after one warm-up, median and nearest-rank p95
   in ms. The test client runs the view in this process, so the figure is the
   server's time (routing, queries, template rendering), without a network.
   /v1/incidents is called with ``Authorization: Bearer <key>``.

Nothing fails on a missed target: each row is marked OK or OVER against
300 ms p95. A page that answers non-200 prints the first 2,000 characters of
its body and is left out of the table. The temporary store is deleted at the end.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


from bench.common import load_bench  # noqa: E402

_sli = load_bench("sli")
CHUNK_ROWS, HEADLINE, insert_sql, load = _sli.CHUNK_ROWS, _sli.HEADLINE, _sli.insert_sql, _sli.load
p95, parts, peak_rss_mib, settle = _sli.p95, _sli.parts, _sli.peak_rss_mib, _sli.settle
run_summary = _sli.run_summary

from monitor.scheduler import build_jobs  # noqa: E402
from monitor.foundation import migrate  # noqa: E402
from monitor.app import create_app  # noqa: E402
from monitor.foundation.clock import ManualClock  # noqa: E402
from monitor.foundation.config import load_config  # noqa: E402
from monitor.foundation.storage import Store  # noqa: E402

UTC = dt.timezone.utc
TARGET_P95_MS = 300
JOBS = ("sli", "cost", "slo")
MIN_JOB_DAYS = 7
FEEDBACK_PERCENT = 3  # of requests get a thumbs rating
THUMBS_DOWN_PERCENT = 20  # of those ratings are thumbs down
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

FEEDBACK_SQL = f"""
INSERT INTO feedback (feedback_id, request_id, ts, kind, value, label, source, reviewer, comment, ingested_at,
                      request_ts, service, feature, model, prompt_version, environment, region, request_status)
SELECT concat('fb-', request_id), request_id, fb_ts, 'thumbs',
       if(cityHash64(request_id, 22) % 100 < {THUMBS_DOWN_PERCENT}, 0, 1), '', 'user', '', '', fb_ts,
       ts, service, feature, model, prompt_version, environment, region, status
FROM (
    SELECT *, least(ts + toIntervalSecond(30 + cityHash64(request_id, 23) % 600),
                    toDateTime64({{end:UInt32}}, 3, 'UTC') - toIntervalMillisecond(1)) AS fb_ts
    FROM requests
    WHERE cityHash64(request_id, 21) % 100 < {FEEDBACK_PERCENT}
)
"""


def make_config(tmp: str, slo_days: int):
    service, feature = HEADLINE
    return load_config(env={}, overrides={
        # The synthetic load inserts a million rows a statement through every rollup view, far more than an
        # ingest batch: the engine's memory limit is raised for it (jobs and pages read well under the default).
        "clickhouse": {"url": f"chdb://{tmp}", "database": "bench", "max_memory": "8GiB"},
        "jobs": {"catchup_max": "31d"},
        "slos": [
            {"name": "answer-availability", "service": service, "feature": feature, "objective": 99.0,
             "period": f"{slo_days}d", "sli": "availability"},
            {"name": "answer-latency", "service": service, "feature": feature, "objective": 95.0,
             "period": f"{slo_days}d", "sli": "latency", "threshold_ms": 5000},
        ],
        # No embeddings: the drift and grounding jobs are not built; the drift page shows what it has.
        "drift": {"enabled": False},
        "grounding": {"enabled": False},
    })


# -- jobs ------------------------------------------------------------------------
def run_job(job, end: dt.datetime, days: int, budget_s: float, grace: dt.timedelta) -> dict:
    """Run ``job`` one day at a time, newest first; stop after MIN_JOB_DAYS if the projection exceeds the budget."""
    t0 = time.perf_counter()
    rows, statuses, errors, done = 0, set(), [], 0
    restricted = False
    for d in range(days):
        hi = end - dt.timedelta(days=d)
        lo = hi - dt.timedelta(days=1)
        r = job.run(now=hi + grace, since=lo)
        done += 1
        rows += r.rows
        statuses.add(r.status)
        if r.error:
            errors.append(f"{lo:%m-%d}: {r.error}")
        elapsed = time.perf_counter() - t0
        projected = elapsed / done * days
        print(f"  {job.name:<5} day {done:>2}/{days} {lo:%Y-%m-%d} {r.status:<5} {r.rows:>9,} points "
              f"{r.duration_ms / 1000:7.1f} s  (elapsed {elapsed:6.1f} s, projected {projected:6.1f} s)", flush=True)
        if done >= MIN_JOB_DAYS and done < days and projected > budget_s:
            restricted = True
            print(f"  {job.name}: projected {projected:.0f} s for {days} days is over the {budget_s:.0f} s budget: "
                  f"RESTRICTED to the last {done} days", flush=True)
            break
    return {"seconds": time.perf_counter() - t0, "days": done, "rows": rows, "status": ",".join(sorted(statuses)),
            "errors": errors, "restricted": restricted}


# -- pages -----------------------------------------------------------------------
def sign_in(app, client) -> str:
    _, plaintext = app.extensions["nlpmon"].keys.create("bench", ["admin"])
    page = client.get("/login")
    assert page.status_code == 200, f"GET /login answered {page.status_code}"
    m = CSRF.search(page.get_data(as_text=True))
    assert m, "no csrf_token in the login form"
    resp = client.post("/login", data={"csrf_token": m.group(1), "api_key": plaintext})
    assert resp.status_code in (302, 303), f"POST /login answered {resp.status_code}: {resp.get_data(as_text=True)[:500]}"
    return plaintext


def time_page(client, url: str, repeat: int, headers: dict | None = None) -> tuple[list[float] | None, int, int]:
    """Times in ms of ``repeat`` GETs after one warm-up; None (and the body printed) on a non-200."""
    warm = client.get(url, headers=headers)
    if warm.status_code != 200:
        print(f"\n  ERROR {url} answered {warm.status_code}; first 2000 chars of the body:\n"
              f"{warm.get_data(as_text=True)[:2000]}\n", flush=True)
        return None, warm.status_code, len(warm.data)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        resp = client.get(url, headers=headers)
        times.append((time.perf_counter() - t0) * 1000)
        if resp.status_code != 200:
            print(f"\n  ERROR {url} answered {resp.status_code} on a timed run; first 2000 chars of the body:\n"
                  f"{resp.get_data(as_text=True)[:2000]}\n", flush=True)
            return None, resp.status_code, len(resp.data)
    return times, 200, len(warm.data)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def bench_pages(app, end: dt.datetime, days: int, repeat: int) -> list[str]:
    client = app.test_client()
    key = sign_in(app, client)
    bearer = {"Authorization": f"Bearer {key}"}
    service, feature = HEADLINE
    h1 = f"from={iso(end - dt.timedelta(hours=1))}&to={iso(end)}"
    d30 = f"from={iso(end - dt.timedelta(days=days))}&to={iso(end)}"
    pages = [
        ("/?period=24h", None),
        ("/?period=30d", None),
        (f"/?period=30d&service={service}", None),
        (f"/detail?service={service}&feature={feature}&period=24h", None),
        (f"/detail?service={service}&feature={feature}&period=30d", None),
        ("/drift?period=30d", None),
        ("/alerts", None),
        ("/review", None),
        (f"/incidents?{h1}", None),
        (f"/incidents?{d30}", None),
        (f"/v1/incidents?{h1}&format=md", bearer),
        (f"/v1/incidents?{d30}&format=md", bearer),
        (f"/v1/incidents?{h1}&format=json", bearer),
        (f"/v1/incidents?{d30}&format=json", bearer),
    ]
    print(f"\npages: {repeat} requests each after 1 warm-up, time around client.get (server-side, in-process); "
          f"1h = {iso(end - dt.timedelta(hours=1))}..{iso(end)}, 30d = {iso(end - dt.timedelta(days=days))}..{iso(end)}")
    results, failed = [], []
    for url, headers in pages:
        t0 = time.perf_counter()
        times, status, size = time_page(client, url, repeat, headers)
        if times is None:
            failed.append(f"{url} -> {status}")
            results.append((url, None, None, status, size))
        else:
            results.append((url, statistics.median(times), p95(times), status, size))
        print(f"  done {url} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"\ntarget: every page under {TARGET_P95_MS} ms p95")
    width = max(len(u) for u, *_ in results)
    print(f"  {'page':<{width}} {'median ms':>10} {'p95 ms':>9} {'KiB':>7}  verdict")
    for url, med, tail, status, size in results:
        if med is None:
            print(f"  {url:<{width}} {'-':>10} {'-':>9} {size / 1024:>7.1f}  ERROR {status}")
        else:
            verdict = "OK" if tail < TARGET_P95_MS else "OVER"
            print(f"  {url:<{width}} {med:>10.1f} {tail:>9.1f} {size / 1024:>7.1f}  {verdict}")
    return failed


# -- main ------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000_000, help="requests to load")
    ap.add_argument("--days", type=int, default=30, help="days the requests are spread over")
    ap.add_argument("--repeat", type=int, default=20, help="timed requests per page, after one warm-up")
    ap.add_argument("--job-budget", type=float, default=600,
                    help="seconds a job may be projected to take over all days before it stops at 7 days")
    ap.add_argument("--store", metavar="DIR",
                    help="keep the loaded store in DIR, and time the pages on it again on a later run "
                         "(skips loading and jobs; migrations still run)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    phases: dict[str, float] = {}

    tmp = args.store or tempfile.mkdtemp(prefix="nlpmon-bench-dashboards-")
    os.makedirs(tmp, exist_ok=True)
    marker = os.path.join(tmp, "bench-end")
    reuse = os.path.exists(marker)
    config = make_config(tmp, args.days)
    store = Store.from_config(config)  # chDB allows one data directory per process: one store for everything
    try:
        t0 = time.perf_counter()
        migrate.upgrade(store, config)
        phases["migrate"] = time.perf_counter() - t0
        print(f"machine: {os.cpu_count()} CPUs, chDB (ClickHouse {store.scalar('SELECT version()')}), "
              f"store in {tmp}")

        if reuse:
            end = dt.datetime.fromtimestamp(int(open(marker).read()), UTC)
            print(f"reusing the store in {tmp}, loaded up to {end:%Y-%m-%d %H:%M} UTC")
            app = create_app(config, store, ManualClock(end))
            failed = bench_pages(app, end, args.days, args.repeat)
            return
        end = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        lo = end - dt.timedelta(days=args.days)
        print(f"\nloading {args.requests:,} requests over {lo:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC "
              f"in chunks of {CHUNK_ROWS:,}")
        phases["load requests"] = load(store, insert_sql(config), lo, end - lo, args.requests, "b-")
        print(f"load: {args.requests:,} requests in {phases['load requests']:.1f} s = "
              f"{args.requests / phases['load requests']:,.0f} rows/s")
        t0 = time.perf_counter()
        store.command(FEEDBACK_SQL, {"end": int(end.timestamp())})
        phases["load feedback"] = time.perf_counter() - t0
        n_fb = store.scalar("SELECT count() FROM feedback")
        n_down = store.scalar("SELECT count() FROM feedback WHERE kind = 'thumbs' AND value = 0")
        print(f"feedback: {n_fb:,} thumbs ratings ({n_down:,} down) for ~{FEEDBACK_PERCENT}% of requests "
              f"in {phases['load feedback']:.1f} s")
        phases["settle merges"] = settle(store)
        print(f"waited {phases['settle merges']:.1f} s for background merges; peak RSS {peak_rss_mib():,.0f} MiB")

        clock = ManualClock(end)
        jobs = build_jobs(store, config, clock)
        print(f"\njobs ({', '.join(JOBS)}) one day at a time, newest first, budget {args.job_budget:.0f} s each; "
              f"SLOs: " + "; ".join(f"{s.name} {s.sli} {s.objective}%"
                                    + (f" <= {s.threshold_ms:g} ms" if s.threshold_ms else "")
                                    + f" on {s.service}/{s.feature} over {s.period.days}d" for s in config.slos))
        job_results = {}
        for name in JOBS:
            job_results[name] = run_job(jobs[name], end, args.days, args.job_budget, config.jobs.grace)
            r = job_results[name]
            phases[f"job {name}"] = r["seconds"]
            print(f"  {name}: {r['days']} days in {r['seconds']:.1f} s, {r['rows']:,} points, status {r['status']}"
                  + (" (RESTRICTED to the last %d days)" % r["days"] if r["restricted"] else ""), flush=True)
            for e in r["errors"]:
                print(f"    error {e}")
        phases["settle merges (after jobs)"] = settle(store)

        print("\nrow counts:")
        for table in ("requests", "feedback", "requests_1m", "requests_1h", "requests_1d", "requests_feature_1h",
                      "requests_feature_1d", "feedback_1m", "feedback_1h", "feedback_1d", "metric_points"):
            n_parts, n_rows = parts(store, table)
            print(f"  {table:<20} {n_rows:>12,} rows in {n_parts:>4} parts")
        by_window = store.query("SELECT `window`, count() FROM metric_points GROUP BY `window` ORDER BY `window`")
        print("  metric_points by window: " + ", ".join(f"{w} {c:,}" for w, c in by_window))

        if args.store:
            with open(marker, "w") as f:
                f.write(str(int(end.timestamp())))
        t0 = time.perf_counter()
        app = create_app(config, store, clock)
        failed = bench_pages(app, end, args.days, args.repeat)
        phases["pages"] = time.perf_counter() - t0
        if failed:
            print("\npages that did not answer 200: " + "; ".join(failed))
        else:
            print("\nevery page answered 200")

        print("\nphases:")
        for name, seconds in phases.items():
            print(f"  {name:<28} {seconds:>8.1f} s")
        for name, r in job_results.items():
            if r["restricted"]:
                print(f"  note: job {name} covered only the last {r['days']} of {args.days} days")
    finally:
        store.close()
        if not args.store:
            shutil.rmtree(tmp, ignore_errors=True)
    print(run_summary(t_start))


if __name__ == "__main__":
    main()
