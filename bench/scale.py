"""Scale: 100M requests on one machine, pages and jobs at 10M, 50M and 100M against the 10M figures.

    nice -n 10 .venv/bin/python bench/scale.py [--requests 100M] [--checkpoints 10M,50M,100M] [--days 30]
                                               [--repeat 10] [--job-repeat 3] [--store DIR]

The data grows in density, not in time: every checkpoint adds requests into the same ``--days`` days
before the current hour (10M, then 40M more, then 50M more: 10x the requests per minute from the first
checkpoint to the last). A page over a fixed window (24h, 30d) then reads 10x the raw rows it read at
10M, which is what "rollups keep reads flat" has to survive; growing by time instead (more days at a
constant rate) would leave a 24h or 30d page reading the same rows at every checkpoint and prove nothing.

Per checkpoint:

1. Loads the increment with bench/sli.py's generator and loader (server-side INSERT ... SELECT FROM
   numbers() in chunks of 1M through the real schema, so the materialized views fill every rollup as a
   real ingest does), spread evenly over the window, each increment under its own request_id prefix;
   then thumbs feedback for ~3% of the increment's requests (bench/dashboards.py's FEEDBACK_SQL, limited
   to the increment's prefix). Prints rows/s per chunk and for the increment. Waits for merges to settle.
2. Disk: every table of the database from system.parts (active parts): rows, parts, compressed bytes and
   bytes on disk, grouped as raw (requests, feedback), rollups (the LINEAGE tables and segments_*) and the
   rest, as totals and bytes per million requests held; plus ``du`` of the store directory.
3. Jobs ``sli``, ``slo``, ``cost`` and ``reconcile`` from monitor.scheduler.build_jobs on a ManualClock
   (bench/dashboards.py's config: two SLOs on support-bot/answer): the last day
   (``job.run(now=end + grace, since=end - 1 day)``, as bench/dashboards.py's run_job runs a day), and the
   scheduler's steady-state run (``job.run(now=end + grace + interval)``: from the last successful end
   minus the job's recompute horizon), ``--job-repeat`` runs each, median. Only the last day gets job
   points (at every checkpoint, replacing the points of the one before), so metric_points, and with it
   /metrics and the pages' charts, hold as much at 100M as at 10M: what grows is the raw rows and the
   rollups' states.
4. Pages through the Flask test client (in-process, signed in with an admin key; bench/dashboards.py's
   sign_in and time_page): ``/?period=24h``, ``/?period=30d``, the detail page of support-bot/answer for
   24h and 30d, the incident explorer for the last 1h and 1d, ``GET /v1/explain`` (error_rate of
   support-bot/answer, the default baseline a week before) for the last 1h and 1d, and ``/metrics``;
   ``--repeat`` requests after one warm-up, median and nearest-rank p95 in ms.

Each checkpoint prints its table beside the first checkpoint's figures (the baseline); the end prints one
table with a column per checkpoint and the ratio last/first, marked OK or OVER against 1.3x (median) and,
for pages, p95 < 500 ms. Nothing fails on a missed target. Without ``--store`` the store is a temporary
directory deleted at the end; with it the store is kept (it must be new or empty). If the disk would
hold less than 8 GB free at the last checkpoint (projected from the first), the run stops after the first.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.common import load_bench  # noqa: E402

_sli = load_bench("sli")
_d = load_bench("dashboards")
HEADLINE, insert_sql, load, p95, settle = _sli.HEADLINE, _sli.insert_sql, _sli.load, _sli.p95, _sli.settle
peak_rss_mib, run_summary = _sli.peak_rss_mib, _sli.run_summary
make_config, sign_in, time_page, iso = _d.make_config, _d.sign_in, _d.time_page, _d.iso

from monitor.app import create_app  # noqa: E402
from monitor.foundation import migrate  # noqa: E402
from monitor.foundation.clock import ManualClock  # noqa: E402
from monitor.foundation.rollups import LINEAGE  # noqa: E402
from monitor.foundation.storage import Store  # noqa: E402
from monitor.scheduler import build_jobs  # noqa: E402

UTC = dt.timezone.utc
JOBS = ("sli", "slo", "cost", "reconcile")
MAX_RATIO = 1.3
PAGE_P95_MS = 500
MIN_FREE_BYTES = 8 * 10**9
RAW_TABLES = ("requests", "feedback")
ROLLUP_TABLES = tuple(t for t, *_ in LINEAGE)

# The increment's feedback: FEEDBACK_SQL over the rows of one prefix (the increment just loaded) only.
_MARK = "WHERE cityHash64(request_id, 21)"
assert _MARK in _d.FEEDBACK_SQL, "bench/dashboards.py's FEEDBACK_SQL changed: update bench/scale.py"
FEEDBACK_SQL = _d.FEEDBACK_SQL.replace(_MARK, "WHERE startsWith(request_id, {prefix:String}) AND cityHash64(request_id, 21)")


# -- arguments -------------------------------------------------------------------
def count(text: str) -> int:
    """100M, 2.5M, 500k, 10000000 -> an integer."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGbB]?)\s*", text.replace("_", "").replace(",", ""))
    if not m:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 100M, 500k, 2000000)")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}[m.group(2).lower()]
    return int(round(float(m.group(1)) * scale))


def label(n: int) -> str:
    for unit, div in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def checkpoints_of(requests: int, spec: str) -> list[int]:
    points = sorted({c for c in (count(s) for s in spec.split(",") if s.strip()) if 0 < c < requests})
    return points + [requests]


# -- disk ------------------------------------------------------------------------
def tables_on_disk(store: Store) -> dict[str, tuple[int, int, int, int]]:
    """table -> (rows, active parts, compressed bytes, bytes on disk), every table of the database."""
    rows = store.query("SELECT table, sum(rows), count(), sum(data_compressed_bytes), sum(bytes_on_disk) "
                       "FROM system.parts WHERE database = currentDatabase() AND active GROUP BY table ORDER BY table")
    return {t: (int(r or 0), int(p), int(c or 0), int(b or 0)) for t, r, p, c, b in rows}


def group_of(table: str) -> str:
    if table in RAW_TABLES:
        return "raw"
    if table in ROLLUP_TABLES or table.startswith(("segments_", "requests_", "feedback_")):
        return "rollups"
    return "other"


def du_bytes(path: str) -> int:
    out = subprocess.run(["du", "-sb", path], capture_output=True, text=True)
    try:
        return int(out.stdout.split()[0])
    except (IndexError, ValueError):
        return 0


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def report_disk(store: Store, held: int, path: str) -> dict[str, float]:
    tables = tables_on_disk(store)
    per_m = held / 1e6
    print(f"\ndisk (system.parts, active parts) with {held:,} requests held; per M = per million requests held")
    print(f"  {'table':<24} {'group':<8} {'rows':>14} {'parts':>6} {'compressed MiB':>15} {'on disk MiB':>12} "
          f"{'on disk MiB/M':>14}")
    groups: dict[str, list[int]] = {}
    for t, (rows, n_parts, comp, on_disk) in tables.items():
        g = group_of(t)
        acc = groups.setdefault(g, [0, 0, 0, 0])
        for i, v in enumerate((rows, n_parts, comp, on_disk)):
            acc[i] += v
        print(f"  {t:<24} {g:<8} {rows:>14,} {n_parts:>6} {mib(comp):>15} {mib(on_disk):>12} {mib(on_disk / per_m):>14}")
    total = [sum(v[i] for v in groups.values()) for i in range(4)]
    for g in ("raw", "rollups", "other"):
        rows, n_parts, comp, on_disk = groups.get(g, [0, 0, 0, 0])
        print(f"  {'= ' + g:<24} {'':<8} {rows:>14,} {n_parts:>6} {mib(comp):>15} {mib(on_disk):>12} "
              f"{mib(on_disk / per_m):>14}")
    print(f"  {'= all tables':<24} {'':<8} {total[0]:>14,} {total[1]:>6} {mib(total[2]):>15} {mib(total[3]):>12} "
          f"{mib(total[3] / per_m):>14}")
    du = du_bytes(path)
    print(f"  store directory (du -sb {path}): {mib(du)} MiB = {mib(du / per_m)} MiB per M requests")
    req = tables.get("requests", (0, 0, 0, 0))
    return {"requests MiB/M": req[3] / per_m / 2**20,
            "raw (requests+feedback) MiB/M": groups.get("raw", [0] * 4)[3] / per_m / 2**20,
            "rollups MiB/M": groups.get("rollups", [0] * 4)[3] / per_m / 2**20,
            "all tables MiB/M": total[3] / per_m / 2**20,
            "_du": du}


# -- jobs ------------------------------------------------------------------------
def time_jobs(jobs: dict, clock: ManualClock, config, end: dt.datetime, repeat: int) -> dict[str, float]:
    """Median run time (ms) of each job: over the last day, and the scheduler's steady-state run."""
    grace = config.jobs.grace
    out: dict[str, float] = {}
    print(f"\njobs: {repeat} runs each; 'day' = job.run(now=end+grace, since=end-1d), "
          f"'steady' = job.run(now=end+grace+interval) (from the last success minus the recompute horizon)")
    for name in JOBS:
        job = jobs[name]
        for kind in ("day", "steady"):
            now = end + grace + (job.interval if kind == "steady" else dt.timedelta(0))
            clock.set(now)
            results = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                r = job.run(now=now, since=end - dt.timedelta(days=1)) if kind == "day" else job.run(now=now)
                results.append(((time.perf_counter() - t0) * 1000, r))
            times = [t for t, _ in results]
            r = results[-1][1]
            med = statistics.median(times)
            out[f"job {name} ({kind})"] = med
            print(f"  {name:<10} {kind:<7} {r.window_start:%m-%d %H:%M}..{r.window_end:%m-%d %H:%M} "
                  f"status {','.join(sorted({x.status for _, x in results}))} {r.rows:>7,} points  "
                  f"median {med:9.1f} ms  min {min(times):9.1f}  max {max(times):9.1f}"
                  + (f"  error: {r.error}" if r.error else ""), flush=True)
    clock.set(end)
    return out


# -- pages -----------------------------------------------------------------------
def page_list(end: dt.datetime) -> list[tuple[str, str, bool]]:
    """(name, url, bearer) of every timed page."""
    service, feature = HEADLINE
    h1 = f"from={iso(end - dt.timedelta(hours=1))}&to={iso(end)}"
    d1 = f"from={iso(end - dt.timedelta(days=1))}&to={iso(end)}"
    scope = f"service={service}&feature={feature}"
    return [
        ("overview 24h", "/?period=24h", False),
        ("overview 30d", "/?period=30d", False),
        ("detail 24h", f"/detail?{scope}&period=24h", False),
        ("detail 30d", f"/detail?{scope}&period=30d", False),
        ("incidents 1h", f"/incidents?{h1}", False),
        ("incidents 1d", f"/incidents?{d1}", False),
        ("explain 1h", f"/v1/explain?metric=error_rate&{scope}&{h1}", True),
        ("explain 1d", f"/v1/explain?metric=error_rate&{scope}&{d1}", True),
        ("/metrics", "/metrics", True),
    ]


def time_pages(app, end: dt.datetime, repeat: int) -> tuple[dict[str, tuple[float, float]], list[str]]:
    client = app.test_client()
    key = sign_in(app, client)
    bearer = {"Authorization": f"Bearer {key}"}
    out, failed = {}, []
    print(f"\npages: {repeat} requests each after 1 warm-up (Flask test client, in-process); "
          f"end {iso(end)}")
    for name, url, auth in page_list(end):
        t0 = time.perf_counter()
        times, status, size = time_page(client, url, repeat, bearer if auth else None)
        if times is None:
            failed.append(f"{name} {url} -> {status}")
            print(f"  {name:<14} ERROR {status}  {url}", flush=True)
            continue
        out[name] = (statistics.median(times), p95(times))
        print(f"  {name:<14} median {out[name][0]:8.1f} ms  p95 {out[name][1]:8.1f} ms  {size / 1024:7.1f} KiB  "
              f"({time.perf_counter() - t0:5.1f} s)  {url}", flush=True)
    return out, failed


# -- tables ----------------------------------------------------------------------
def verdict(name: str, first: float | None, last: float | None, last_p95: float | None, kind: str) -> tuple[str, str]:
    """(ratio text, verdict) of a figure: OK/OVER for times, '-' for load and disk (informational)."""
    if first is None or last is None or not first:
        return "-", "n/a"
    ratio = last / first
    if kind != "time":
        return f"{ratio:.2f}x", "-"
    over = ratio > MAX_RATIO or (last_p95 is not None and last_p95 >= PAGE_P95_MS)
    return f"{ratio:.2f}x", "OVER" if over else "OK"


def fmt(kind: str, v) -> str:
    if v is None:
        return "-"
    if kind == "page":
        return f"{v[0]:.1f} / {v[1]:.1f}"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "MiB":
        return f"{v:,.2f}"
    return f"{v:,.1f}"


ORDER = (("load rows/s", "rate"), ("requests MiB/M", "MiB"), ("raw (requests+feedback) MiB/M", "MiB"),
         ("rollups MiB/M", "MiB"), ("all tables MiB/M", "MiB"))


def rows_of(figs: dict) -> list[tuple[str, str]]:
    """(figure, kind) in print order: load and disk, then jobs, then pages."""
    out = [(n, k) for n, k in ORDER if n in figs]
    out += [(n, "job") for n in figs if n.startswith("job ")]
    out += [(n, "page") for n in figs if n.startswith("page ")]
    return out


def figure_cells(kind: str, first, last) -> tuple[str, str]:
    if kind == "page":
        return verdict("", first and first[0], last and last[0], last and last[1], "time")
    return verdict("", first, last, None, "time" if kind == "job" else "info")


def print_checkpoint_table(lbl: str, base_lbl: str, figs: dict, base: dict) -> None:
    print(f"\n== checkpoint {lbl} against the baseline {base_lbl} (pages: median / p95 ms; ratio on the median; "
          f"OVER: ratio > {MAX_RATIO}x, or a page's p95 >= {PAGE_P95_MS} ms)")
    w = 34
    print(f"  {'figure':<{w}} {lbl:>20} {base_lbl + ' (baseline)':>20} {'ratio':>8}  verdict")
    for name, kind in rows_of(figs):
        ratio, v = figure_cells(kind, base.get(name), figs.get(name))
        print(f"  {name:<{w}} {fmt(kind, figs.get(name)):>20} {fmt(kind, base.get(name)):>20} {ratio:>8}  {v}")


def print_final_table(labels: list[str], all_figs: list[dict]) -> list[str]:
    first, last = all_figs[0], all_figs[-1]
    print(f"\n== final: every checkpoint; ratio = {labels[-1]}/{labels[0]} on the median; "
          f"OVER: ratio > {MAX_RATIO}x, or a page's p95 at {labels[-1]} >= {PAGE_P95_MS} ms "
          f"(pages: median / p95 ms; jobs: median ms; disk: on-disk MiB per million requests held)")
    w = 34
    print(f"  {'figure':<{w}} " + " ".join(f"{lb:>18}" for lb in labels)
          + f" {labels[-1] + '/' + labels[0]:>10}  verdict")
    over = []
    for name, kind in rows_of(last):
        ratio, v = figure_cells(kind, first.get(name), last.get(name))
        if v == "OVER":
            over.append(name)
        print(f"  {name:<{w}} " + " ".join(f"{fmt(kind, f.get(name)):>18}" for f in all_figs) + f" {ratio:>10}  {v}")
    return over


# -- main ------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=count, default=count("100M"), help="requests at the last checkpoint (100M, 500k, ...)")
    ap.add_argument("--checkpoints", default="10M,50M,100M",
                    help="comma-separated request counts to measure at (those below --requests; --requests is the last)")
    ap.add_argument("--days", type=int, default=30, help="days the requests are spread over (the same at every checkpoint)")
    ap.add_argument("--repeat", type=int, default=10, help="timed requests per page, after one warm-up")
    ap.add_argument("--job-repeat", type=int, default=3, help="timed runs per job and kind")
    ap.add_argument("--store", metavar="DIR", help="keep the store in DIR (new or empty); default a temporary directory")
    ap.add_argument("--no-disk-guard", action="store_true", help="do not stop when the projection leaves < 8 GB free")
    args = ap.parse_args()
    t_start = time.perf_counter()
    points = checkpoints_of(args.requests, args.checkpoints)
    labels = [label(n) for n in points]

    tmp = args.store or tempfile.mkdtemp(prefix="nlpmon-bench-scale-")
    os.makedirs(tmp, exist_ok=True)
    config = make_config(tmp, args.days)
    store = Store.from_config(config)  # chDB: one data directory per process, one store for everything
    all_figs: list[dict] = []
    try:
        migrate.upgrade(store, config)
        if store.scalar("SELECT count() FROM requests"):
            sys.exit(f"{tmp} already holds requests: give --store a new or empty directory")
        print(f"machine: {os.cpu_count()} CPUs, chDB (ClickHouse {store.scalar('SELECT version()')}), store in {tmp}")
        end = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        lo = end - dt.timedelta(days=args.days)
        span = end - lo
        print(f"window {lo:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC ({args.days} days) at every checkpoint; "
              f"checkpoints {', '.join(labels)} (density grows {points[-1] / points[0]:.0f}x)")
        sql = insert_sql(config)
        clock = ManualClock(end)
        jobs = build_jobs(store, config, clock)
        held = 0
        for k, (target, lbl) in enumerate(zip(points, labels)):
            figs: dict = {}
            increment = target - held
            prefix = f"s{k}-"
            print(f"\n######## checkpoint {lbl}: loading {increment:,} more requests into the same {args.days} days "
                  f"(prefix {prefix!r}, chunks of {_sli.CHUNK_ROWS:,}) ########", flush=True)
            seconds = load(store, sql, lo, span, increment, prefix)
            figs["load rows/s"] = increment / seconds
            print(f"load: {increment:,} requests in {seconds:.1f} s = {increment / seconds:,.0f} rows/s "
                  f"(raw insert + every materialized view)", flush=True)
            t0 = time.perf_counter()
            store.command(FEEDBACK_SQL, {"end": int(end.timestamp()), "prefix": prefix})
            fb = store.scalar("SELECT count() FROM feedback WHERE startsWith(request_id, {p:String})",
                              {"p": prefix})
            print(f"feedback: {fb:,} thumbs ratings for the increment in {time.perf_counter() - t0:.1f} s", flush=True)
            held = target
            t0 = time.perf_counter()
            waited = settle(store, timeout_s=1800)
            print(f"waited {waited:.1f} s for background merges; peak RSS {peak_rss_mib():,.0f} MiB", flush=True)
            disk = report_disk(store, held, tmp)
            du = disk.pop("_du")
            figs.update(disk)
            if k == 0 and len(points) > 1:
                free = shutil.disk_usage(tmp).free
                projected = du / held * points[-1]
                left = free - (projected - du)
                print(f"disk projection: {mib(projected)} MiB at {labels[-1]}; {free / 1e9:.1f} GB free now, "
                      f"{left / 1e9:.1f} GB free then", flush=True)
                if left < MIN_FREE_BYTES and not args.no_disk_guard:
                    print(f"STOP: the {labels[-1]} store would leave less than {MIN_FREE_BYTES / 1e9:.0f} GB free")
                    return
            figs.update(time_jobs(jobs, clock, config, end, args.job_repeat))
            settle(store, timeout_s=300)
            app = create_app(config, store, clock)
            pages, failed = time_pages(app, end, args.repeat)
            figs.update({f"page {n}": v for n, v in pages.items()})
            if failed:
                print("pages that did not answer 200: " + "; ".join(failed))
            else:
                print("every page answered 200")
            all_figs.append(figs)
            print_checkpoint_table(lbl, labels[0], figs, all_figs[0])
            print(f"\n(checkpoint {lbl} done at {time.perf_counter() - t_start:.0f} s; peak RSS {peak_rss_mib():,.0f} MiB)",
                  flush=True)
        if len(all_figs) > 1:
            over = print_final_table(labels, all_figs)
            print("\nOVER: " + (", ".join(over) if over else "nothing"))
    finally:
        store.close()
        if not args.store:
            shutil.rmtree(tmp, ignore_errors=True)
    print(run_summary(t_start))


if __name__ == "__main__":
    main()
