"""The ``releases`` job at 10M requests: finding and judging releases over the 30-day store of bench/segments.py.

Over bench/explain.py's store (``--store``, the 10M requests of the period and 10M before, loaded there once),
two releases are added as copies of stored rows under new prompt versions: a canary (``bench-canary``, a
copy of a fifth of support-bot/answer's last 12 hours, so both versions serve those hours) and a
before/after change of search/query-rewrite (``bench-next``, its last day moved to the new version: the
copies added and the originals of that day dropped). Then the job runs as the scheduler runs it (the judging
horizon: 3 days and the 7 days of baselines before), timed over ``--repeat`` runs after a warm-up, beside a
baseline in the same run: the hourly scan that finds releases alone. Output drift is off (its embedding time
is the drift job's, measured in bench/drift.py).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import segments  # noqa: E402
from jobs.releases import ReleasesJob  # noqa: E402
from monitor.foundation import migrate  # noqa: E402
from monitor.foundation.clock import ManualClock  # noqa: E402
from monitor.foundation.storage import Store  # noqa: E402
from monitor.foundation.tables import releases  # noqa: E402

UTC = dt.timezone.utc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="bench/explain.py's --store directory (loaded by it)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs after one warm-up")
    args = ap.parse_args()
    config = segments.make_config(args.store)
    config = config.model_copy(update={"drift": config.drift.model_copy(update={"enabled": False})})
    store = Store.from_config(config)
    migrate.upgrade(store, config)
    held = store.scalar("SELECT count() FROM requests")
    end = store.scalar("SELECT max(ts) FROM requests").replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    print(f"machine: {os.cpu_count()} CPUs; store {args.store}: {held:,} requests up to {end:%Y-%m-%d %H:%M} UTC")
    if not store.scalar("SELECT count() FROM requests WHERE prompt_version IN ('bench-canary', 'bench-next')"):
        t = time.perf_counter()
        cols = [r[0] for r in store.query("SELECT name FROM system.columns WHERE database = currentDatabase() "
                                          "AND table = 'requests' ORDER BY position")]
        copy = ", ".join("concat(request_id, '-rel') AS request_id" if c == "request_id" else
                         "{v:String} AS prompt_version" if c == "prompt_version" else c for c in cols)
        store.command(f"INSERT INTO requests ({', '.join(cols)}) SELECT {copy} FROM requests WHERE service = 'support-bot' "
                      "AND feature = 'answer' AND ts >= {lo:DateTime64(3, 'UTC')} AND cityHash64(request_id) % 5 = 0",
                      {"v": "bench-canary", "lo": end - dt.timedelta(hours=12)})
        store.command(f"INSERT INTO requests ({', '.join(cols)}) SELECT {copy} FROM requests WHERE service = 'search' "
                      "AND feature = 'query-rewrite' AND ts >= {lo:DateTime64(3, 'UTC')}",
                      {"v": "bench-next", "lo": end - dt.timedelta(days=1)})
        store.command("ALTER TABLE requests DELETE WHERE service = 'search' AND feature = 'query-rewrite' "
                      "AND ts >= {lo:DateTime64(3, 'UTC')} AND prompt_version != 'bench-next' "
                      "SETTINGS mutations_sync = 2", {"lo": end - dt.timedelta(days=1)})
        print(f"added the two releases' rows in {time.perf_counter() - t:.1f} s (the rollups' old rows of the moved "
              "day stay: the hourly scan sees both versions in it, as in a rollout hour)")
    clock = ManualClock(end + dt.timedelta(minutes=1))
    job = ReleasesJob(store, config, clock, dt.timedelta(minutes=15))
    since = end - config.releases.judge_for - dt.timedelta(days=1)

    def timed(fn) -> list[float]:
        fn()
        out = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
        return out

    scan = timed(lambda: [releases.hourly_values(store, d, since - dt.timedelta(days=9), end)
                          for d in config.releases.dimensions])
    run = timed(lambda: job.run(now=end + dt.timedelta(minutes=1), since=since))
    found = [r for r in releases.search(store, lo=since - dt.timedelta(days=2)) if r.value.startswith("bench-")]

    def row(name, xs):
        print(f"  {name:<52} p50 {statistics.median(xs):8.0f} ms   max {max(xs):8.0f} ms")
    print(f"\n{args.repeat} runs each, after a warm-up:")
    row("baseline: the hourly scan that finds releases", scan)
    row("the releases job (find, judge, write, KPIs)", run)
    for r in found:
        sides = r.metrics.get("error_rate", {})
        print(f"  found {r.service}/{r.feature} {r.previous_value} -> {r.value}: {r.mode}, {r.verdict} "
              f"({sides.get('baseline', {}).get('n')} vs {sides.get('candidate', {}).get('n')} requests)")
    store.close()


if __name__ == "__main__":
    main()
