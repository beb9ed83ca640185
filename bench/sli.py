"""SLI queries: per-minute rollups against the raw requests table, and the SLI job's run time.

    .venv/bin/python bench/sli.py [--rows 10000000] [--repeat 15]

Loads ``--rows`` synthetic requests spread evenly over the 30 days before the
current hour into an embedded chDB store in a temporary directory. Rows are
generated server-side (INSERT ... SELECT FROM numbers()) in chunks, so the
materialized views fill the rollups (requests per minute, hour and day) exactly
as a real ingest does. Then it times the p95-latency and error-rate query for a
30-day and a 1-hour window, from the coarsest rollups that tile the window
(monitor.foundation.rollups.covering) and over the raw rows, in the same run, and prints medians,
p95s and the raw/rollup ratio. Last, it inserts one minute of traffic at
1,000 requests/s after the loaded window and times the ``sli`` job on it.

Nothing fails on a missed target: the figures are printed beside the targets.
The temporary store is deleted at the end.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.common import peak_rss_mib, run_summary  # noqa: E402

from jobs.sli import SliJob  # noqa: E402
from monitor.foundation import migrate  # noqa: E402
from monitor.foundation.clock import ManualClock  # noqa: E402
from monitor.foundation.config import Config, load_config  # noqa: E402
from monitor.foundation.rollups import LATENCY_QUANTILES, covering, covering_source, quantiles_sql  # noqa: E402
from monitor.foundation.storage import Store  # noqa: E402

UTC = dt.timezone.utc
DAYS = 30
CHUNK_ROWS = 1_000_000
SLI_RPS = 1_000
HEADLINE = ("support-bot", "answer")  # the (service, feature) an SLO dashboard would ask about

# (service, feature, share of traffic %, median latency ms, lognormal sigma, streams tokens)
FEATURES = (
    ("support-bot", "answer", 35, 1500, 0.55, True),
    ("support-bot", "summarize", 10, 1600, 0.40, False),
    ("search", "query-rewrite", 30, 110, 0.30, False),
    ("copilot", "draft-email", 15, 3300, 0.45, True),
    ("copilot", "translate", 10, 2200, 0.45, False),
)
# (model, provider, share %): one primary model, one fallback, one under evaluation.
MODELS = (("gpt-4o-mini", "openai", 60), ("claude-3-5-haiku", "anthropic", 30), ("llama-3.1-8b", "self-hosted", 10))
PROMPT_VERSIONS = (("v1", 90), ("v2", 10))  # v2 is a canary
REGIONS = (("us-east-1", 50), ("eu-west-1", 35), ("ap-south-1", 15))
INPUT_TEXTS = ("How do I reset my password?", "Summarize this support thread for the on-call engineer.",
               "Rewrite the query: cheap running shoes size 44", "Draft a polite reply about the delayed shipment.")
OUTPUT_TEXTS = ("Open Settings > Security and choose Reset password.", "The customer was charged twice; refund issued.",
                "running shoes size 44 price:low", "Thanks for your patience; your order ships on Monday.")


# -- data generation -------------------------------------------------------------
def _sql_list(values) -> str:
    return "[" + ", ".join(repr(v) for v in values) + "]"


def _weighted_index(salt: int, weights) -> str:
    """SQL for a 1-based index drawn with the given integer weights, from a hash of the row number.

    Hash-based, not rand(): the same --rows gives the same data on every run.
    """
    slots = [i for i, w in enumerate(weights, 1) for _ in range(w)]
    return f"{_sql_list(slots)}[cityHash64(number, {salt}) % {len(slots)} + 1]"


def _uniform(salt: int) -> str:
    """A deterministic uniform in [0, 1) from a hash of the row number."""
    return f"(cityHash64(number, {salt}) % 1000000) / 1e6"


def insert_sql(config: Config) -> str:
    """INSERT ... SELECT generating ``{count}`` requests from row ``{first}``, spaced evenly over
    ``{span_ms}`` ms from ``{lo_ms}`` out of ``{total}`` rows, so chunks continue one another.

    Latency is lognormal per feature: z is an approximate standard normal from
    the sum of four uniforms (Irwin-Hall, mean 2, variance 1/3).
    """
    prices = {p.model: p for p in config.pricing}
    price_in = [prices[m].input_per_mtok for m, _, _ in MODELS]
    price_out = [prices[m].output_per_mtok for m, _, _ in MODELS]
    z = "(" + " + ".join(_uniform(s) for s in (11, 12, 13, 14)) + " - 2) * sqrt(3)"
    return f"""
INSERT INTO requests (request_id, ts, service, feature, model, provider, prompt_version, region, status, error_type,
                      http_status, latency_ms, ttft_ms, input_tokens, output_tokens, cost_usd, cost_source,
                      input_text, output_text, ingested_at)
SELECT
    concat({{prefix:String}}, toString(number)) AS request_id,
    fromUnixTimestamp64Milli(toInt64({{lo_ms:Int64}} + intDiv(number * {{span_ms:UInt64}}, {{total:UInt64}})), 'UTC')
        AS ts,
    {_sql_list(f[0] for f in FEATURES)}[fi] AS service,
    {_sql_list(f[1] for f in FEATURES)}[fi] AS feature,
    {_sql_list(m[0] for m in MODELS)}[mi] AS model,
    {_sql_list(m[1] for m in MODELS)}[mi] AS provider,
    {_sql_list(p[0] for p in PROMPT_VERSIONS)}[{_weighted_index(4, [p[1] for p in PROMPT_VERSIONS])}]
        AS prompt_version,
    {_sql_list(r[0] for r in REGIONS)}[{_weighted_index(5, [r[1] for r in REGIONS])}] AS region,
    multiIf(r_status < 10, 'error', r_status < 13, 'timeout', 'ok') AS status,
    multiIf(r_status < 4, 'rate_limit', r_status < 10, 'upstream_5xx', r_status < 13, 'timeout', '') AS error_type,
    toUInt16(multiIf(r_status < 4, 429, r_status < 10, 502, r_status < 13, 504, 200)) AS http_status,
    -- errors fail fast, timeouts hit the 30 s client limit
    multiIf(r_status < 10, 0.2 * model_ms, r_status < 13, 30000 + 50 * z, model_ms) AS latency_ms,
    if(r_status >= 13 AND {_sql_list(f[5] for f in FEATURES)}[fi],
       latency_ms * (0.10 + 0.10 * {_uniform(15)}), NULL) AS ttft_ms,
    toUInt32(200 + cityHash64(number, 6) % 3000) AS input_tokens,
    toUInt32(if(r_status >= 13, 20 + cityHash64(number, 7) % 400, 0)) AS output_tokens,
    (input_tokens * {_sql_list(price_in)}[mi] + output_tokens * {_sql_list(price_out)}[mi]) / 1e6 AS cost_usd,
    'price_table' AS cost_source,
    {_sql_list(INPUT_TEXTS)}[cityHash64(number, 8) % {len(INPUT_TEXTS)} + 1] AS input_text,
    {_sql_list(OUTPUT_TEXTS)}[cityHash64(number, 9) % {len(OUTPUT_TEXTS)} + 1] AS output_text,
    ts AS ingested_at
FROM (
    SELECT number, fi, mi, r_status, {z} AS z,
           {_sql_list(f[3] for f in FEATURES)}[fi] * exp({_sql_list(f[4] for f in FEATURES)}[fi] * z) AS model_ms
    FROM (
        SELECT number,
               {_weighted_index(2, [f[2] for f in FEATURES])} AS fi,
               {_weighted_index(3, [m[2] for m in MODELS])} AS mi,
               cityHash64(number, 1) % 1000 AS r_status  -- 1.0% error, 0.3% timeout
        FROM numbers({{first:UInt64}}, {{count:UInt64}})
    )
)
"""


def load(store: Store, sql: str, lo: dt.datetime, span: dt.timedelta, total: int, prefix: str,
         chunk: int = CHUNK_ROWS, progress: bool = True) -> float:
    """Insert ``total`` generated rows in chunks; returns the elapsed seconds."""
    t0 = time.perf_counter()
    for first in range(0, total, chunk):
        count = min(chunk, total - first)
        store.command(sql, {"prefix": prefix, "lo_ms": int(lo.timestamp() * 1000),
                            "span_ms": int(span.total_seconds() * 1000), "total": total,
                            "first": first, "count": count})
        if progress:
            elapsed = time.perf_counter() - t0
            print(f"  {first + count:>12,} / {total:,} rows  {elapsed:7.1f} s  "
                  f"{(first + count) / elapsed:>10,.0f} rows/s", flush=True)
    return time.perf_counter() - t0


def parts(store: Store, table: str) -> tuple[int, int]:
    """(active parts, rows) of a table: unmerged parts are what a query has to combine."""
    n, rows = store.query("SELECT count(), sum(rows) FROM system.parts WHERE database = currentDatabase() "
                          "AND table = {t:String} AND active", {"t": table})[0]
    return int(n), int(rows or 0)


def settle(store: Store, timeout_s: float = 300) -> float:
    """Wait for background merges to finish, so they do not take the 2nd core from the timed queries."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if not store.scalar("SELECT count() FROM system.merges WHERE database = currentDatabase()"):
            break
        time.sleep(0.5)
    return time.perf_counter() - t0


# -- queries ---------------------------------------------------------------------
P95_INDEX = LATENCY_QUANTILES.index(0.95) + 1  # the state type fixes the quantile list; pick p95 out of it


def rollup_sql(scoped: bool, lo: dt.datetime, hi: dt.datetime) -> tuple[str, dict]:
    """The query over the coarsest rollups that tile [lo, hi) (day, hour and minute buckets)."""
    where = " AND service = {service:String} AND feature = {feature:String}" if scoped else ""
    source, params = covering_source([(lo, hi)], where, "latency_q, status_error, status_timeout, requests")
    return (f"SELECT quantilesTDigestMerge({quantiles_sql(LATENCY_QUANTILES)})(latency_q)[{P95_INDEX}] AS p95, "
            f"(sum(status_error) + sum(status_timeout)) / sum(requests) AS error_rate FROM {source}"), params


def raw_sql(scoped: bool) -> str:
    # No FINAL: the baseline is a plain scan of the raw rows (the load has no duplicates to collapse).
    where = " AND service = {service:String} AND feature = {feature:String}" if scoped else ""
    return ("SELECT quantileTDigest(0.95)(latency_ms) AS p95, "
            "countIf(status IN ('error', 'timeout')) / count() AS error_rate "
            f"FROM requests WHERE {where}"
            "ts >= toDateTime({lo:UInt32}, 'UTC') AND ts < toDateTime({hi:UInt32}, 'UTC')")


def time_query(store: Store, sql: str, params: dict, repeat: int) -> tuple[list[float], tuple]:
    """Wall times in ms of ``repeat`` runs after one warm-up (which also gives the answer)."""
    answer = store.query(sql, params)[0]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        store.query(sql, params)
        times.append((time.perf_counter() - t0) * 1000)
    return times, answer


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile (with 15 samples, the slowest run)."""
    s = sorted(values)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def bench_queries(store: Store, end: dt.datetime, repeat: int) -> dict:
    windows = {"30d": end - dt.timedelta(days=DAYS), "1h": end - dt.timedelta(hours=1)}
    scopes = {f"{HEADLINE[0]}/{HEADLINE[1]}": True, "all": False}
    results = {}
    print(f"\nqueries: p95 latency + error rate, {repeat} runs each after 1 warm-up; raw queries without FINAL")
    print(f"  {'':<37}{'query time':-^21} {'':>11} {'answer':-^27}")
    print(f"  {'scope':<22} {'window':<6} {'source':<7} {'median ms':>10} {'p95 ms':>9} {'raw/rollup':>11}"
          f" {'p95 latency ms':>15} {'error rate':>11}")
    for scope, scoped in scopes.items():
        for wname, lo in windows.items():
            params = {"lo": int(lo.timestamp()), "hi": int(end.timestamp()),
                      "service": HEADLINE[0], "feature": HEADLINE[1]}
            row = {}
            rsql, rparams = rollup_sql(scoped, lo, end)
            for source, sql, extra_params in (("rollup", rsql, rparams), ("raw", raw_sql(scoped), {})):
                times, answer = time_query(store, sql, {**params, **extra_params}, repeat)
                row[source] = (statistics.median(times), p95(times), answer)
            ratio = row["raw"][0] / row["rollup"][0]
            for source in ("rollup", "raw"):
                med, tail, (q95, err) = row[source]
                extra = f"{ratio:>10.1f}x" if source == "raw" else ""
                print(f"  {scope:<22} {wname:<6} {source:<7} {med:>10.1f} {tail:>9.1f} {extra:>11}"
                      f" {q95:>15.1f} {err:>11.4%}")
            results[(scope, wname)] = row
    return results


# -- SLI job ---------------------------------------------------------------------
def bench_sli_job(store: Store, config: Config, sql: str, end: dt.datetime, runs: int = 5) -> None:
    # The minute [end+1m, end+2m): after the loaded window, so the job sees only this traffic. Its end
    # (end+2m) is on no 5m/1h/1d boundary, so only the 1m window is due and the figure is one minute's work.
    start = end + dt.timedelta(minutes=1)
    minute_end = start + dt.timedelta(minutes=1)
    n = SLI_RPS * 60
    load_s = load(store, sql, start, dt.timedelta(minutes=1), n, "sli-", chunk=n, progress=False)
    print(f"\nSLI job: {n:,} requests in the minute {start:%Y-%m-%d %H:%M} UTC ({SLI_RPS:,} req/s), "
          f"inserted in {load_s:.2f} s")
    now = minute_end + dt.timedelta(seconds=60)
    results = []
    for _ in range(runs):  # idempotent: each rerun replaces the points of the one before
        job = SliJob(store, config, ManualClock(now), interval=dt.timedelta(minutes=1))
        results.append(job.run(now=now, since=start))
    # Only the job's points are after the loaded window; FINAL counts each once despite the reruns.
    windows = store.query("SELECT `window`, count() FROM metric_points FINAL "
                          "WHERE ts > toDateTime({lo:UInt32}, 'UTC') GROUP BY `window` ORDER BY `window`",
                          {"lo": int(end.timestamp())})
    r = results[-1]
    times = [x.duration_ms for x in results]
    print(f"  range {r.window_start:%H:%M}-{r.window_end:%H:%M}, windows computed: "
          + ", ".join(f"{w} ({c} points)" for w, c in windows))
    print(f"  status {', '.join(sorted({x.status for x in results}))}"
          + (f" ({r.error})" if r.error else "") + f", rows written per run {r.rows:,}")
    print(f"  run time over {runs} runs: median {statistics.median(times):.1f} ms, "
          f"min {min(times):.1f} ms, max {max(times):.1f} ms")


# -- main ------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="requests to load over 30 days")
    ap.add_argument("--repeat", type=int, default=15, help="timed runs per query, after one warm-up")
    args = ap.parse_args()
    t_start = time.perf_counter()

    tmp = tempfile.mkdtemp(prefix="nlpmon-bench-sli-")
    config = load_config(env={}, overrides={"clickhouse": {"url": f"chdb://{tmp}", "database": "bench",
                                                                  "max_memory": "8GiB"}})  # bulk loads
    store = Store.from_config(config)  # chDB allows one data directory per process: one store for everything
    try:
        migrate.upgrade(store, config)
        print(f"machine: {os.cpu_count()} CPUs, chDB (ClickHouse {store.scalar('SELECT version()')}), "
              f"store in {tmp}")

        # A fixed hour boundary, so the 30-day and 1-hour windows line up with whole rollup minutes.
        end = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        lo = end - dt.timedelta(days=DAYS)
        sql = insert_sql(config)
        print(f"\nloading {args.rows:,} requests over {lo:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC "
              f"in chunks of {CHUNK_ROWS:,}")
        load_s = load(store, sql, lo, end - lo, args.rows, "b-")
        print(f"load: {args.rows:,} rows in {load_s:.1f} s = {args.rows / load_s:,.0f} rows/s "
              f"(raw insert + materialized views into requests_1m, requests_1h, requests_1d, in one pass)")
        for table in ("requests_1m", "requests_1h", "requests_1d"):
            rolled = store.scalar(f"SELECT sum(requests) FROM {table}")
            print(f"check: sum(requests) in {table} = {rolled:,} "
                  f"({'equals' if rolled == args.rows else 'DIFFERS FROM'} rows loaded)")
        print(f"waited {settle(store):.1f} s for background merges to finish; "
              f"peak RSS so far {peak_rss_mib():,.0f} MiB")
        raw_parts, raw_rows = parts(store, "requests")
        print(f"requests: {raw_rows:,} rows in {raw_parts} parts")
        for table in ("requests_1m", "requests_1h", "requests_1d"):
            roll_parts, roll_rows = parts(store, table)
            print(f"{table}: {roll_rows:,} rows in {roll_parts} parts ({raw_rows / max(roll_rows, 1):.1f} raw rows "
                  f"per rollup row)")
        lo30 = end - dt.timedelta(days=DAYS)
        print("30d window tiled as: " + ", ".join(f"{t} {a:%m-%d %H:%M}..{b:%m-%d %H:%M}"
                                                  for t, a, b in covering(lo30, end)))

        results = bench_queries(store, end, args.repeat)
        scope = f"{HEADLINE[0]}/{HEADLINE[1]}"
        rollup_30d, raw_30d = results[(scope, "30d")]["rollup"], results[(scope, "30d")]["raw"]
        print(f"\nheadline ({scope}, 30 days):")
        print(f"  30d rollup median {rollup_30d[0]:.1f} ms (target < 200 ms)")
        print(f"  30d raw median {raw_30d[0]:.1f} ms; speed-up {raw_30d[0] / rollup_30d[0]:.1f} x (target >= 20x)")
        print(f"  p95 latency: rollup t-digest {rollup_30d[2][0]:.1f} ms vs raw t-digest {raw_30d[2][0]:.1f} ms "
              f"({(rollup_30d[2][0] / raw_30d[2][0] - 1):+.2%}); error rate {rollup_30d[2][1]:.4%} vs "
              f"{raw_30d[2][1]:.4%}")

        bench_sli_job(store, config, sql, end)
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(run_summary(t_start))


if __name__ == "__main__":
    main()
