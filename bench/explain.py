"""What changed: GET /v1/explain's computation over 10M requests in 30 days, and what it adds to a page.

    .venv/bin/python bench/explain.py [--requests 10000000] [--repeat 20]

1. Loads the data of bench/segments.py (its loader and its rows: 10 features of 4 services, 3 models,
   prompt versions, 8 regions, 13 languages, 200 tenants, the tag ``plan``, error types and HTTP
   statuses; ``--requests`` in the 30-day period and as many in the 30 days before, where German on
   support-bot/answer fails at 1.0% instead of 4.5%) into an embedded chDB store in a temporary directory.
2. Times monitor.foundation.explain.run, ``--repeat`` runs after one warm-up, p50 and nearest-rank p95,
   for a 1-hour and a 1-day window at the end of the period against the same window 30 days before (in
   the period before, so support-bot/answer's German regression is a change to explain): error_rate for
   support-bot/answer (a significant change: each dimension, then pairs) and for all traffic;
   latency_p95_ms and cost_per_request_usd for support-bot/answer (the baseline's percentile first, for
   the p95). Beside them, the same windows' plain read of the feature's request count from the raw rows
   (the baseline: what one scan of those rows costs). Targets: 1 h p95 <= 300 ms, 1 day p95 <= 1 s.
3. The time a group's first notification waits for it: alerts.contributors.annotate for one firing
   HighErrorRate alert of support-bot/answer (the window from 15 minutes before it became active, an
   hour ago), against the same call for an alert of a rule it does not explain (the baseline: the
   dispatcher's path without an explanation). Capped at alerts.contributors.BUDGET (2 s) by design.

Nothing fails on a missed target: each row is marked OK or OVER. The temporary store is deleted.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.common import load_bench, run_summary  # noqa: E402
from monitor.foundation import explain, migrate  # noqa: E402
from monitor.foundation.storage import Store  # noqa: E402
from monitor.foundation.tables.alert_state import AlertInstance  # noqa: E402

segments = load_bench("segments")
UTC = dt.timezone.utc
TARGETS = {"1h": 300, "1d": 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000_000, help="requests in the period (as many before)")
    ap.add_argument("--repeat", type=int, default=20, help="timed runs per read, after one warm-up")
    ap.add_argument("--store", help="a directory to keep the store in (loaded once, reused by the next run "
                                    "with the same --requests) instead of a temporary one")
    args = ap.parse_args()
    t_start = time.perf_counter()
    tmp = args.store or tempfile.mkdtemp(prefix="nlpmon-bench-explain-")
    config = segments.make_config(tmp)
    store = Store.from_config(config)
    try:
        migrate.upgrade(store, config)
        print(f"machine: {os.cpu_count()} CPUs, chDB (ClickHouse {store.scalar('SELECT version()')}), store in {tmp}")
        end = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        span = dt.timedelta(days=segments.DAYS)
        lo, period_start = end - 2 * span, end - span
        total = 2 * args.requests
        print(f"\nloading {total:,} requests over {lo:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC (bench/segments.py's rows)")
        held = store.scalar("SELECT count() FROM requests")
        if held == total and args.store:
            end = store.scalar("SELECT max(ts) FROM requests").replace(minute=0, second=0, microsecond=0) \
                + dt.timedelta(hours=1)
            lo, period_start = end - 2 * span, end - span
            print(f"reusing the {held:,} requests in {tmp}, up to {end:%Y-%m-%d %H:%M} UTC")
        else:
            took = segments.load(store, segments.insert_sql(config, period_start, parallel_views=True), lo, 2 * span,
                                 total, "e-")
            print(f"load: {total:,} requests in {took:.1f} s")
            segments.settle(store)

        service, feature = segments.HEADLINE
        scope = {"service": service, "feature": feature}
        width = 58
        print(f"\nexplain.run: {args.repeat} runs each after 1 warm-up; window at the end of the period against the "
              f"same window {segments.DAYS} days before; targets 1h p95 <= {TARGETS['1h']} ms, 1d <= {TARGETS['1d']} ms")
        segments.header(width)
        for name, length in (("1h", dt.timedelta(hours=1)), ("1d", dt.timedelta(days=1))):
            window = (end - length, end)
            base = (window[0] - span, window[1] - span)
            rows = [
                (f"{name}: error_rate, {service}/{feature}", "error_rate", scope),
                (f"{name}: error_rate, all traffic", "error_rate", {}),
                (f"{name}: latency_p95_ms, {service}/{feature}", "latency_p95_ms", scope),
                (f"{name}: cost_per_request_usd, {service}/{feature}", "cost_per_request_usd", scope),
            ]
            for label, metric, filters in rows:
                times, e = segments.time_call(
                    lambda m=metric, f=filters: explain.run(store, config, m, window, base, f), args.repeat)
                top = (explain.sentence(metric, e.contributors[0]) if e.contributors else e.reason or "-")
                segments.line(label, times, TARGETS[name], width, f"{len(e.contributors)} contributors; {top[:90]}")
            times, _ = segments.time_call(lambda: store.scalar(
                "SELECT count() FROM requests WHERE ts >= {lo:DateTime64(3, 'UTC')} AND ts < {hi:DateTime64(3, 'UTC')} "
                "AND service = {s:String} AND feature = {f:String}",
                {"lo": window[0], "hi": window[1], "s": service, "f": feature}), args.repeat)
            segments.line(f"{name}: baseline, count() of the feature's raw rows", times, None, width)

        from alerts import contributors
        from alerts.rules import load_rules
        rules = {r.name: r for r in load_rules(config)}
        now = end

        def alert(rule: str) -> AlertInstance:
            return AlertInstance("fp", rule, {"alertname": rule, **scope}, state="firing",
                                 active_at=now - dt.timedelta(hours=1), fired_at=now - dt.timedelta(hours=1))
        print(f"\nadded to a group's first notification (alerts.contributors.annotate, budget {contributors.BUDGET} s):")
        segments.header(width)
        times, found = segments.time_call(
            lambda: contributors.annotate(store, config, rules, [alert("HighErrorRate")], now), args.repeat)
        segments.line("HighErrorRate on the feature: explained", times, contributors.BUDGET * 1000, width,
                      (found.get("fp") or "no contributors")[:90])
        times, _ = segments.time_call(
            lambda: contributors.annotate(store, config, rules, [alert("TrafficStopped")], now), args.repeat)
        segments.line("TrafficStopped: nothing to explain (baseline)", times, None, width)
    finally:
        store.close()
        if not args.store:
            shutil.rmtree(tmp, ignore_errors=True)
    print(run_summary(t_start))


if __name__ == "__main__":
    main()
