"""Segments: what the segment rollups cost in rows, bytes and read time, on 10M requests over 30 days.

    .venv/bin/python bench/segments.py [--requests 10000000] [--repeat 20] [--page-repeat 10]

1. Loads ``--requests`` synthetic requests spread evenly over each of two 30-day windows (the
   period the pages show, ending at the current hour, and the one before it that they compare
   against: 2 x ``--requests`` rows in all) into an embedded chDB store in a temporary directory,
   with the loader of bench/sli.py (server-side INSERT ... SELECT FROM numbers() in chunks, so the
   materialized views fill every rollup, the segment rollups included, as a real ingest does).
   Rows carry segment values: 12 languages and ``und`` (skewed, en most), 8 regions, 200 tenants
   (a few large, a long tail; 5% of requests without one), the tag ``plan`` (4 values, promoted by
   ``segments.tags``) in ``segment_tags``, over 4 services and 10 features. One hidden regression is
   planted: German on support-bot/answer fails 4.5% of the time in the period (1.0% before) while
   the feature stays near its 1.0%.
   Then what the segment views add to an insert: the same 250,000 requests into two side databases
   of the store, with every view and without the three segment views, 4 rounds alternating.
2. Rows and on-disk bytes (system.parts, active parts) of the segment rollups beside the request
   rollups in the same store: after the background merges settle (what the timed reads below meet),
   then count() after OPTIMIZE ... FINAL of each rollup at the end of the run (one row per key).
3. Times, ``--repeat`` runs after one warm-up, p50 and nearest-rank p95: the detail page's "by
   segment" read for one feature over the 30-day period and the 30 days before
   (rollups.segment_figures for language alone, and kpis.by_segment for every dimension as the page
   runs it), the same read per feature on requests_by_feature (requests_feature_1d: the baseline),
   and monitor.foundation.hidden_regressions.find over the period against the one before, for the
   feature (the detail page) and for all traffic (the overview).
4. Times kpis.overview(...) for the 30-day period, then the overview page GET /?period=30d and the
   detail page GET /detail?service=..&feature=..&period=30d through the Flask test client (create_app
   on the same store, signed in with a read key via /login as tests/test_dashboards.py does),
   ``--page-repeat`` requests after one warm-up; then both pages again with their segment work
   stubbed out in-process (hidden_regressions.find answering nothing, the detail page without its
   segment tables): the same run's baseline, so the difference is what segments add. No jobs run:
   metric_points is empty, so the detail page's charts are empty (bench/dashboards.py times the
   pages with the jobs' series); the segment tables read the rollups, not metric_points.

Nothing fails on a missed target (by-segment reads p95 < 100 ms, pages p95 < 300 ms): each row is
marked OK or OVER. The temporary store is deleted at the end.
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
CHUNK_ROWS, MODELS, PROMPT_VERSIONS = _sli.CHUNK_ROWS, _sli.MODELS, _sli.PROMPT_VERSIONS
INPUT_TEXTS, OUTPUT_TEXTS = _sli.INPUT_TEXTS, _sli.OUTPUT_TEXTS
_sql_list, _weighted_index, _uniform = _sli._sql_list, _sli._weighted_index, _sli._uniform
load, p95, parts, settle, peak_rss_mib, run_summary = (_sli.load, _sli.p95, _sli.parts, _sli.settle,
                                                       _sli.peak_rss_mib, _sli.run_summary)

from dashboards import kpis, views  # noqa: E402
from monitor.app import create_app  # noqa: E402
from monitor.foundation import hidden_regressions, migrate  # noqa: E402
from monitor.foundation.clock import ManualClock  # noqa: E402
from monitor.foundation.config import Config, load_config  # noqa: E402
from monitor.foundation.rollups import (LATENCY_QUANTILES, SEGMENT_DIMENSIONS, covering, segment_dimensions,  # noqa: E402
                                        covering_source, quantiles_sql)
from monitor.foundation.storage import Store  # noqa: E402
from monitor.foundation.tables import rollups  # noqa: E402

UTC = dt.timezone.utc
DAYS = 30  # the pages' period=30d
TARGET_QUERY_P95_MS = 100
TARGET_PAGE_P95_MS = 300
HEADLINE = ("support-bot", "answer")  # the feature whose detail page and by-segment tables are timed
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

# (service, feature, share of traffic %, median latency ms, lognormal sigma, streams tokens)
FEATURES = (
    ("support-bot", "answer", 25, 1500, 0.55, True),
    ("support-bot", "summarize", 8, 1600, 0.40, False),
    ("support-bot", "classify-intent", 10, 300, 0.30, False),
    ("search", "query-rewrite", 20, 110, 0.30, False),
    ("search", "rerank", 8, 250, 0.35, False),
    ("copilot", "draft-email", 10, 3300, 0.45, True),
    ("copilot", "translate", 6, 2200, 0.45, False),
    ("copilot", "autocomplete", 7, 400, 0.40, True),
    ("docs-qa", "answer", 4, 2500, 0.50, True),
    ("docs-qa", "cite-sources", 2, 1800, 0.45, False),
)
# (language, share %, latency factor): English most; CJK outputs tokenise longer, so a bit slower.
# ``und`` is what ingest stores when detection cannot tell (monitor.ingest.language).
LANGUAGES = (("en", 52, 1.0), ("es", 9, 1.05), ("de", 7, 1.05), ("fr", 6, 1.05), ("pt", 5, 1.05),
             ("ja", 4, 1.25), ("it", 3, 1.05), ("nl", 3, 1.05), ("zh", 3, 1.25), ("ko", 2, 1.25),
             ("ru", 2, 1.1), ("pl", 2, 1.1), ("und", 2, 1.0))
REGIONS = (("us-east-1", 30), ("eu-west-1", 18), ("us-west-2", 15), ("eu-central-1", 10), ("ap-south-1", 8),
           ("ap-northeast-1", 8), ("sa-east-1", 6), ("ca-central-1", 5))
TENANTS = 200
NO_TENANT_PERCENT = 5  # internal traffic without a tenant: in no tenant segment
PLANS = (("free", 40), ("pro", 30), ("team", 20), ("enterprise", 10))
TAG = "plan"
# The planted hidden regression: (service, feature, language, error per mille in the period; 10 otherwise).
REGRESSION = ("support-bot", "answer", "de", 45)


# -- data generation -------------------------------------------------------------
def insert_sql(config: Config, period_start: dt.datetime, parallel_views: bool = False) -> str:
    """INSERT ... SELECT with the parameters of bench/sli.py's (``load`` drives it): ``{count}`` requests
    from row ``{first}`` of ``{total}``, spaced evenly over ``{span_ms}`` ms from ``{lo_ms}``.

    Every draw is a hash of the row number (the same --requests gives the same data on every run);
    latency is lognormal per feature times the language's factor, as in bench/sli.py.
    ``parallel_views`` runs the materialized views of an insert side by side (both cores): the same
    rollup rows, ~1.6x faster to load; the ingest does not set it, so the insert-cost figures go without.
    """
    prices = {p.model: p for p in config.pricing}
    price_in = [prices[m].input_per_mtok for m, _, _ in MODELS]
    price_out = [prices[m].output_per_mtok for m, _, _ in MODELS]
    z = "(" + " + ".join(_uniform(s) for s in (11, 12, 13, 14)) + " - 2) * sqrt(3)"
    features = [(s, f) for s, f, *_ in FEATURES]
    reg_fi = features.index(REGRESSION[:2]) + 1
    reg_li = [lang for lang, _, _ in LANGUAGES].index(REGRESSION[2]) + 1
    # Tenant index skewed to the low numbers (u^2: tenant-000 ~7% of tenanted traffic, the tail ~0.03%).
    tenant = (f"if(cityHash64(number, 31) % 100 < {NO_TENANT_PERCENT}, '', "
              f"concat('tenant-', leftPad(toString(toUInt32(floor({TENANTS} * pow({_uniform(32)}, 2)))), 3, '0')))")
    plan = f"{_sql_list(p for p, _ in PLANS)}[{_weighted_index(33, [w for _, w in PLANS])}]"
    return f"""
INSERT INTO requests (request_id, ts, service, feature, model, provider, prompt_version, environment, region,
                      language, language_source, tenant, status, error_type, http_status, latency_ms, ttft_ms,
                      input_tokens, output_tokens, cost_usd, cost_source, input_text, output_text, tags,
                      segment_tags, ingested_at)
{"SETTINGS parallel_view_processing = 1" if parallel_views else ""}
SELECT
    concat({{prefix:String}}, toString(number)) AS request_id,
    fromUnixTimestamp64Milli(ts_ms, 'UTC') AS ts,
    {_sql_list(f[0] for f in FEATURES)}[fi] AS service,
    {_sql_list(f[1] for f in FEATURES)}[fi] AS feature,
    {_sql_list(m[0] for m in MODELS)}[mi] AS model,
    {_sql_list(m[1] for m in MODELS)}[mi] AS provider,
    {_sql_list(p[0] for p in PROMPT_VERSIONS)}[{_weighted_index(4, [p[1] for p in PROMPT_VERSIONS])}]
        AS prompt_version,
    'production' AS environment,
    {_sql_list(r[0] for r in REGIONS)}[{_weighted_index(5, [r[1] for r in REGIONS])}] AS region,
    {_sql_list(lang for lang, _, _ in LANGUAGES)}[li] AS language,
    if(language = 'und', 'undetermined', 'detected') AS language_source,
    {tenant} AS tenant,
    multiIf(r_status < err_cut, 'error', r_status < err_cut + 3, 'timeout', 'ok') AS status,
    multiIf(r_status < 4, 'rate_limit', r_status < err_cut, 'upstream_5xx', r_status < err_cut + 3, 'timeout', '')
        AS error_type,
    toUInt16(multiIf(r_status < 4, 429, r_status < err_cut, 502, r_status < err_cut + 3, 504, 200)) AS http_status,
    -- errors fail fast, timeouts hit the 30 s client limit
    multiIf(r_status < err_cut, 0.2 * model_ms, r_status < err_cut + 3, 30000 + 50 * z, model_ms) AS latency_ms,
    if(r_status >= err_cut + 3 AND {_sql_list(f[5] for f in FEATURES)}[fi],
       latency_ms * (0.10 + 0.10 * {_uniform(15)}), NULL) AS ttft_ms,
    toUInt32(200 + cityHash64(number, 6) % 3000) AS input_tokens,
    toUInt32(if(r_status >= err_cut + 3, 20 + cityHash64(number, 7) % 400, 0)) AS output_tokens,
    (input_tokens * {_sql_list(price_in)}[mi] + output_tokens * {_sql_list(price_out)}[mi]) / 1e6 AS cost_usd,
    'price_table' AS cost_source,
    {_sql_list(INPUT_TEXTS)}[cityHash64(number, 8) % {len(INPUT_TEXTS)} + 1] AS input_text,
    {_sql_list(OUTPUT_TEXTS)}[cityHash64(number, 9) % {len(OUTPUT_TEXTS)} + 1] AS output_text,
    -- the raw tags keep what was sent; segment_tags what segments.tags promotes (here all of it)
    map('{TAG}', plan) AS tags,
    map('{TAG}', plan) AS segment_tags,
    ts AS ingested_at
FROM (
    SELECT number, fi, mi, li, r_status, ts_ms, {plan} AS plan, {z} AS z,
           if(fi = {reg_fi} AND li = {reg_li} AND ts_ms >= {int(period_start.timestamp() * 1000)},
              {REGRESSION[3]}, 10) AS err_cut,  -- 1.0% errors (4.5% in the regression), 0.3% timeouts
           {_sql_list(f[3] for f in FEATURES)}[fi] * {_sql_list(lang[2] for lang in LANGUAGES)}[li]
               * exp({_sql_list(f[4] for f in FEATURES)}[fi] * z) AS model_ms
    FROM (
        SELECT number,
               toInt64({{lo_ms:Int64}} + intDiv(number * {{span_ms:UInt64}}, {{total:UInt64}})) AS ts_ms,
               {_weighted_index(2, [f[2] for f in FEATURES])} AS fi,
               {_weighted_index(3, [m[2] for m in MODELS])} AS mi,
               {_weighted_index(34, [lang[1] for lang in LANGUAGES])} AS li,
               cityHash64(number, 1) % 1000 AS r_status
        FROM numbers({{first:UInt64}}, {{count:UInt64}})
    )
)
"""


def make_config(tmp: str, database: str = "bench") -> Config:
    return load_config(env={}, overrides={
        "clickhouse": {"url": f"chdb://{tmp}", "database": database, "max_memory": "8GiB"},  # bulk loads
        "segments": {"tags": [TAG]},
        # No embeddings: the drift and grounding jobs are not built; the pages show what they have.
        "drift": {"enabled": False},
        "grounding": {"enabled": False},
    })


# -- store -----------------------------------------------------------------------
REQUEST_ROLLUP_TABLES = ("requests_1m", "requests_1h", "requests_1d", "requests_feature_1h", "requests_feature_1d")
SEGMENT_TABLES = ("segments_1m", "segments_1h", "segments_1d")


def disk(store: Store, table: str) -> tuple[int, int, int]:
    """(bytes on disk, compressed, uncompressed) of a table's active parts."""
    row = store.query("SELECT sum(bytes_on_disk), sum(data_compressed_bytes), sum(data_uncompressed_bytes) "
                      "FROM system.parts WHERE database = currentDatabase() AND table = {t:String} AND active",
                      {"t": table})[0]
    return tuple(int(v or 0) for v in row)


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def print_tables(store: Store, tables, period_start: dt.datetime, exact: bool) -> dict[str, int]:
    """Rows and bytes per table; ``exact`` counts rows with count() (after OPTIMIZE FINAL: one row per key),
    else the active parts' rows (what a read meets before merges combine equal keys)."""
    counts = {}
    print(f"  {'table':<20} {'parts':>6} {'rows':>13} {'rows in period':>15} {'on disk MiB':>12} "
          f"{'compressed':>11} {'uncompressed':>13} {'B/row':>7}")
    for table in tables:
        n_parts, n_rows = parts(store, table)
        if exact and table != "requests":
            n_rows = int(store.scalar(f"SELECT count() FROM {table}"))
        time_col = "ts" if table == "requests" else "minute"
        in_period = int(store.scalar(f"SELECT count() FROM {table} WHERE {time_col} >= toDateTime({{lo:UInt32}}, 'UTC')",
                                     {"lo": int(period_start.timestamp())}))
        on_disk, comp, uncomp = disk(store, table)
        counts[table] = n_rows
        print(f"  {table:<20} {n_parts:>6} {n_rows:>13,} {in_period:>15,} {mib(on_disk):>12} {mib(comp):>11} "
              f"{mib(uncomp):>13} {on_disk / max(n_rows, 1):>7.0f}")
    return counts


def optimize(store: Store, tables) -> float:
    t0 = time.perf_counter()
    for table in tables:
        t1 = time.perf_counter()
        store.command(f"OPTIMIZE TABLE {table} FINAL")
        print(f"  OPTIMIZE TABLE {table} FINAL: {time.perf_counter() - t1:.1f} s", flush=True)
    return time.perf_counter() - t0


# -- insert cost -----------------------------------------------------------------
INSERT_ROWS = 250_000
INSERT_ROUNDS = 4


def bench_insert_cost(tmp: str, end: dt.datetime, per_day: float) -> None:
    """What the segment views add to an insert: the same rows into two side databases of this store, one
    with every view and one without segments_1m/1h/1d_mv, views run one after another as the ingest runs
    them, at the main load's density, rounds alternating which side goes first."""
    sides = {}
    for name in ("with", "without"):
        cfg = make_config(tmp, f"bench_insert_{name}")
        sides[name] = (Store.from_config(cfg), cfg)
        migrate.upgrade(*sides[name])
    for table in SEGMENT_TABLES:
        sides["without"][0].command(f"DROP VIEW {table}_mv")
    span = dt.timedelta(days=INSERT_ROWS / per_day)
    lo = end - span
    sql = insert_sql(sides["with"][1], lo)
    times: dict[str, list[float]] = {"with": [], "without": []}
    try:
        for r in range(INSERT_ROUNDS):
            for name in (("with", "without") if r % 2 == 0 else ("without", "with")):
                # The same generated rows each round under new ids: a fresh batch's cost, not a duplicate's.
                times[name].append(load(sides[name][0], sql, lo, span, INSERT_ROWS, f"r{r}-", progress=False))
    finally:
        for store, cfg in sides.values():
            store.command(f"DROP DATABASE IF EXISTS {cfg.clickhouse.database}")
            store.close()
    w, wo = statistics.median(times["with"]), statistics.median(times["without"])
    print(f"\ninsert cost: {INSERT_ROWS:,} requests over {span.total_seconds() / 3600:.1f} h (the load's density), "
          f"{INSERT_ROUNDS} rounds alternating, views serial as at ingest; median of the rounds:")
    print(f"  every view (request, feature, feedback and segment rollups) {w:.2f} s = {INSERT_ROWS / w:,.0f} rows/s "
          f"(rounds {', '.join(f'{t:.2f}' for t in times['with'])} s)")
    print(f"  without segments_1m/1h/1d_mv                                {wo:.2f} s = {INSERT_ROWS / wo:,.0f} rows/s "
          f"(rounds {', '.join(f'{t:.2f}' for t in times['without'])} s)")
    print(f"  the segment views take {(w - wo) / w:.0%} of the insert's time in the store ({w / wo:.2f}x)")


# -- timing ----------------------------------------------------------------------
def time_call(fn, repeat: int) -> tuple[list[float], object]:
    """Wall times in ms of ``repeat`` calls after one warm-up (which also gives the answer)."""
    answer = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times, answer


def line(name: str, times: list[float], target: float | None, width: int, extra: str = "") -> tuple[float, float]:
    med, tail = statistics.median(times), p95(times)
    verdict = "" if target is None else ("OK" if tail < target else "OVER")
    print(f"  {name:<{width}} {med:>9.1f} {tail:>9.1f} {min(times):>8.1f} {max(times):>8.1f}  {verdict:<4} {extra}",
          flush=True)
    return med, tail


def header(width: int) -> None:
    print(f"  {'':<{width}} {'p50 ms':>9} {'p95 ms':>9} {'min':>8} {'max':>8}")


def feature_read(store: Store, spans, service: str, feature: str) -> list[dict]:
    """The baseline: segment_figures' figures for the feature as a whole, from the per-feature rollups
    (requests_feature_1d/1h and requests_1m tiling each span): what the read costs without segments."""
    src, p = covering_source(spans, " AND service = {s:String} AND feature = {f:String}",
                             "requests, status_error, status_timeout, cost_usd, latency_q",
                             family="requests_by_feature")
    return store.query_dicts(
        f"SELECT span, sum(requests) AS requests, sum(status_error) + sum(status_timeout) AS failures, "
        f"sum(cost_usd) AS cost_usd, quantilesTDigestMerge({quantiles_sql(LATENCY_QUANTILES)})(latency_q)"
        f"[{LATENCY_QUANTILES.index(0.95) + 1}] AS latency_p95_ms FROM {src} GROUP BY span ORDER BY span",
        {**p, "s": service, "f": feature})


def bench_reads(store: Store, config: Config, period: kpis.Period, repeat: int) -> None:
    service, feature = HEADLINE
    spans = [(period.start, period.end), (period.previous.start, period.previous.end)]
    dims = segment_dimensions(config)
    print(f"\nreads for {service}/{feature}: period {period.start:%Y-%m-%d %H:%M} .. {period.end:%Y-%m-%d %H:%M} "
          f"UTC against the 30 days before; {repeat} runs each after 1 warm-up")
    print("  the period tiled as: " + ", ".join(f"{t} {a:%m-%d %H:%M}..{b:%m-%d %H:%M}"
                                               for t, a, b in covering(period.start, period.end, "segments")))
    reads = [
        ("baseline: feature read, requests_feature_1d/1h/requests_1m", lambda: feature_read(store, spans, service, feature),
         None),
        ("segment_figures, language", lambda: rollups.segment_figures(store, spans, ("language",), {"service": service, "feature": feature}, 1000),
         TARGET_QUERY_P95_MS),
        (f"kpis.by_segment, {'+'.join(dims)} (the detail page's)",
         lambda: kpis.by_segment(store, config, period, {"service": service, "feature": feature}), TARGET_QUERY_P95_MS),
        ("hidden_regressions.find, this feature (detail page)",
         lambda: hidden_regressions.find(store, config, spans[0], spans[1], {"service": service, "feature": feature}),
         TARGET_QUERY_P95_MS),
        ("hidden_regressions.find, all traffic (overview)",
         lambda: hidden_regressions.find(store, config, spans[0], spans[1], {}), TARGET_QUERY_P95_MS),
        # The rest of find is Python: a Fisher's exact test per segment with the volume to judge.
        ("  its two rollup reads (segment_failures, feature_failures)",
         lambda: (rollups.segment_failures(store, spans, dims, {}), rollups.feature_failures(store, spans, {})),
         None),
    ]
    width = max(len(n) for n, _, _ in reads)
    print(f"  target: by-segment reads p95 < {TARGET_QUERY_P95_MS} ms")
    header(width)
    answers = {}
    for name, fn, target in reads:
        times, answers[name] = time_call(fn, repeat)
        line(name, times, target, width)

    # What the reads answered: the data is what the brief says, and segments add up to their feature.
    base = {r["span"]: r for r in answers[reads[0][0]]}
    langs = answers[reads[1][0]]
    print(f"\n  {service}/{feature} by language (period | before):")
    for r in sorted((r for r in langs if r["span"] == 0), key=lambda r: -r["requests"]):
        before = next((b for b in langs if b["span"] == 1 and b["value"] == r["value"]), None)
        b_text = (f"{before['requests']:>9,} {before['failures'] / before['requests']:>6.2%} "
                  f"{before['latency_p95_ms']:>7.0f} ms") if before else "-"
        print(f"    {r['value']:<4} {r['requests']:>9,} {r['failures'] / r['requests']:>6.2%} "
              f"{r['latency_p95_ms']:>7.0f} ms | {b_text}")
    for span in (0, 1):
        total = sum(r["requests"] for r in langs if r["span"] == span)
        want = base.get(span, {}).get("requests", 0)
        print(f"  check: languages sum to {total:,} requests in span {span}, the feature read {want:,} "
              f"({'equal' if total == want else 'DIFFERENT'})")
    segs = answers[reads[2][0]]
    print("  kpis.by_segment rows: " + ", ".join(f"{d} {len(v)}" for d, v in segs.items()))
    for name in (reads[3][0], reads[4][0]):
        v = answers[name]
        print(f"  {name}: {len(v.tested)} segments tested, {v.too_thin} too thin, {len(v.regressions)} found"
              + "".join(f"\n    {r.service}/{r.feature} {r.sentence()} (q={r.q_value:.1e})" for r in v.regressions))


# -- pages -----------------------------------------------------------------------
def sign_in(app, client) -> None:
    """As tests/test_dashboards.py::sign_in: a read key through the login form and its CSRF token."""
    _, plaintext = app.extensions["nlpmon"].keys.create("bench-read", ["read"])
    page = client.get("/login")
    assert page.status_code == 200, f"GET /login answered {page.status_code}"
    m = CSRF.search(page.get_data(as_text=True))
    assert m, "no csrf_token in the login form"
    resp = client.post("/login", data={"csrf_token": m.group(1), "api_key": plaintext})
    assert resp.status_code == 302, f"POST /login answered {resp.status_code}: {resp.get_data(as_text=True)[:500]}"


def get_page(client, url: str) -> int:
    resp = client.get(url)
    if resp.status_code != 200:
        raise RuntimeError(f"{url} answered {resp.status_code}: {resp.get_data(as_text=True)[:2000]}")
    return len(resp.data)


def bench_pages(app, store: Store, config: Config, period: kpis.Period, repeat: int) -> None:
    client = app.test_client()
    sign_in(app, client)
    service, feature = HEADLINE
    overview_url = "/?period=30d"
    detail_url = f"/detail?service={service}&feature={feature}&period=30d"
    svc = app.extensions["nlpmon"]

    def segment_tables():
        with app.test_request_context(detail_url):
            scope = {"service": service, "feature": feature}
            return views._segment_tables(svc, period, scope, [], lambda d, v: "")

    def overview_tables():
        with app.test_request_context(overview_url):
            return views._segment_tables(svc, period, {}, [], lambda d, v: "")

    german_url = "/?period=30d&language=de"
    rows = [
        ("kpis.overview, 30d", lambda: kpis.overview(store, config, period, {}), None, ""),
        ("kpis.overview, 30d, language=de", lambda: kpis.overview(store, config, period, {"language": "de"}),
         None, ""),
        ("detail page's segment tables (views._segment_tables)", segment_tables, TARGET_QUERY_P95_MS, ""),
        ("overview's segment tables, all traffic", overview_tables, TARGET_QUERY_P95_MS, ""),
        (f"GET {overview_url}", lambda: get_page(client, overview_url), TARGET_PAGE_P95_MS, "page"),
        (f"GET {german_url}", lambda: get_page(client, german_url), TARGET_PAGE_P95_MS, "page"),
        (f"GET {detail_url}", lambda: get_page(client, detail_url), TARGET_PAGE_P95_MS, "page"),
    ]
    width = max(len(n) for n, *_ in rows) + len(" (segments stubbed)")
    print(f"\npages and their parts: {repeat} runs each after 1 warm-up, time around the call (in-process, "
          f"server-side); target: pages p95 < {TARGET_PAGE_P95_MS} ms")
    header(width)
    results = {}
    for name, fn, target, kind in rows:
        times, answer = time_call(fn, repeat)
        results[name] = line(name, times, target, width, f"{answer / 1024:.1f} KiB" if kind == "page" else "")
        if name.startswith(("detail page's", "overview's segment")):
            print(f"  {'':<{width}} ({sum(len(t['rows']) for t in answer)} rows in {len(answer)} tables, "
                  f"{sum(1 for t in answer for r in t['rows'] if r['regression'])} marked regressed)")

    # The same run's baseline: the pages with their segment work stubbed out (the overview's hidden-regression
    # line answering nothing, the detail page without its tables), so the difference is what segments add.
    real_find, real_tables = hidden_regressions.find, views._segment_tables
    hidden_regressions.find = lambda *a, **k: hidden_regressions.Verdict([], [], 0)
    views._segment_tables = lambda *a, **k: []
    try:
        for url in (overview_url, detail_url):
            name = f"GET {url} (segments stubbed)"
            times, size = time_call(lambda: get_page(client, url), repeat)
            base = line(name, times, None, width, f"{size / 1024:.1f} KiB")
            med, tail = results[f"GET {url}"]
            print(f"  {'':<{width}} segments add {med - base[0]:+.1f} ms p50, {tail - base[1]:+.1f} ms p95")
    finally:
        hidden_regressions.find, views._segment_tables = real_find, real_tables


# -- main ------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000_000,
                    help="requests in the period (the period before gets as many)")
    ap.add_argument("--repeat", type=int, default=20, help="timed runs per read, after one warm-up")
    ap.add_argument("--page-repeat", type=int, default=10, help="timed requests per page, after one warm-up")
    args = ap.parse_args()
    t_start = time.perf_counter()
    phases: dict[str, float] = {}

    tmp = tempfile.mkdtemp(prefix="nlpmon-bench-segments-")
    config = make_config(tmp)
    store = Store.from_config(config)  # chDB allows one data directory per process: one store for everything
    try:
        migrate.upgrade(store, config)
        print(f"machine: {os.cpu_count()} CPUs, chDB (ClickHouse {store.scalar('SELECT version()')}), "
              f"store in {tmp}")
        # A fixed hour boundary: the period and the one before are whole hours of generated traffic.
        end = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        span = dt.timedelta(days=DAYS)
        lo, period_start = end - 2 * span, end - span
        total = 2 * args.requests
        print(f"\nloading {total:,} requests over {lo:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC "
              f"({args.requests:,} in each {DAYS}-day window) in chunks of {CHUNK_ROWS:,}; "
              f"{len(FEATURES)} features of {len({f[0] for f in FEATURES})} services, {len(LANGUAGES)} languages, "
              f"{len(REGIONS)} regions, {TENANTS} tenants, {TAG} {len(PLANS)} values")
        phases["load"] = load(store, insert_sql(config, period_start, parallel_views=True), lo, 2 * span, total,
                              "s-")
        print(f"load: {total:,} requests in {phases['load']:.1f} s = {total / phases['load']:,.0f} rows/s "
              f"(raw insert + every materialized view, segments_1m/1h/1d included; views in parallel)")
        for table in ("requests_1d", "requests_feature_1d"):
            rolled = store.scalar(f"SELECT sum(requests) FROM {table}")
            print(f"check: sum(requests) in {table} = {rolled:,} ({'equals' if rolled == total else 'DIFFERS FROM'} "
                  f"rows loaded)")
        by_dim = dict(store.query("SELECT dimension, sum(requests) FROM segments_1d GROUP BY dimension"))
        print("check: segments_1d counts " + ", ".join(f"{d} {n:,}" for d, n in sorted(by_dim.items()))
              + f" requests (each request once per dimension it has a value for; {NO_TENANT_PERCENT}% have no tenant)")
        t0 = time.perf_counter()
        bench_insert_cost(tmp, end, args.requests / DAYS)
        phases["insert cost"] = time.perf_counter() - t0
        phases["settle merges"] = settle(store)
        print(f"\nwaited {phases['settle merges']:.1f} s for background merges; peak RSS {peak_rss_mib():,.0f} MiB")

        print(f"\nrollup rows and bytes after the merges settled (rows = active parts' rows; 'in period' = count() "
              f"since {period_start:%Y-%m-%d %H:%M}):")
        settled = print_tables(store, ("requests",) + REQUEST_ROLLUP_TABLES + SEGMENT_TABLES, period_start, False)

        clock = ManualClock(end)
        period = kpis.make_period("30d", clock.now())  # what GET ...?period=30d reads at this clock
        t0 = time.perf_counter()
        bench_reads(store, config, period, args.repeat)
        phases["reads"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        app = create_app(config, store, clock)
        bench_pages(app, store, config, period, args.page_repeat)
        phases["pages"] = time.perf_counter() - t0

        print("\nOPTIMIZE ... FINAL of every rollup, for exact row counts (one row per key):")
        phases["optimize final"] = optimize(store, REQUEST_ROLLUP_TABLES + SEGMENT_TABLES)
        exact = print_tables(store, REQUEST_ROLLUP_TABLES + SEGMENT_TABLES, period_start, True)
        for table in REQUEST_ROLLUP_TABLES + SEGMENT_TABLES:
            if exact[table] != settled[table]:
                print(f"  {table}: {settled[table] - exact[table]:,} rows merged away by FINAL "
                      f"({(settled[table] - exact[table]) / settled[table]:.2%} of the settled rows)")
        print("  segments per dimension, rows (segments_1m / segments_1h / segments_1d):")
        per = {t: dict(store.query(f"SELECT dimension, count() FROM {t} GROUP BY dimension")) for t in SEGMENT_TABLES}
        for d in SEGMENT_DIMENSIONS + (TAG,):
            print(f"    {d:<9} " + " / ".join(f"{per[t].get(d, 0):,}" for t in SEGMENT_TABLES))
        seg_rows = sum(exact[t] for t in SEGMENT_TABLES)
        req_rows = sum(exact[t] for t in REQUEST_ROLLUP_TABLES)
        seg_disk = sum(disk(store, t)[0] for t in SEGMENT_TABLES)
        req_disk = sum(disk(store, t)[0] for t in REQUEST_ROLLUP_TABLES)
        raw_disk = disk(store, "requests")[0]
        print(f"  segment rollups {seg_rows:,} rows, {mib(seg_disk)} MiB; request rollups {req_rows:,} rows, "
              f"{mib(req_disk)} MiB: segments {seg_rows / req_rows:.1f}x the rows, {seg_disk / req_disk:.1f}x the "
              f"bytes; raw requests {mib(raw_disk)} MiB (segments {seg_disk / raw_disk:.1%} of it)")

        print("\nphases:")
        for name, seconds in phases.items():
            print(f"  {name:<16} {seconds:>8.1f} s")
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(run_summary(t_start))


if __name__ == "__main__":
    main()
