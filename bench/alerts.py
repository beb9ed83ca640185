"""Alerts: page latency through the real scheduler, and the evaluation time of 1,000 rules.

    .venv/bin/python bench/alerts.py [--runs 10] [--windows 5m,1m] [--fast] [--rules 1000] [--repeat 3]
                                     [--history 1] [--skip-latency] [--skip-eval]

1. Page latency. The ``sli`` job and the ``alerts`` engine run as ``nlpmon serve``
   runs them: APScheduler (monitor.scheduler.Scheduler) on a SystemClock in real
   time, alerts.interval 15 s, jobs.sli_interval 1m and jobs.grace 30s (the
   defaults; ``--fast`` sets sli_interval 5s and grace 5s instead). The other
   jobs are left out. The rule is the shipped HighErrorRate (error_rate > 0.05,
   by service and feature, aggregation last) with ``for: 0s`` and
   ``min_requests: 20``, and the route has ``group_wait: 0s``, so the figure
   is the pipeline, not the deliberate waits. A thread ingests one ok request
   per second for every service (background traffic, so min_requests is met).
   Each run bursts 30 errors into its own service (so runs are independent:
   no alert of an earlier run has to resolve first) and measures from the
   moment the ingest call returns to the moment the loopback webhook
   (tests/loopback.py) receives the firing page for that service. The bursts
   are staggered by window/runs, so together they cover every phase of the
   rule's window once; a run's latency is mostly the wait for its window to
   close, so this spreads them as random bursts would. Each page is broken
   down into: the wait for the window to close, the wait for the sli tick
   after the grace, the sli run, the wait for the next alerts tick and the
   alerts run up to the page. ``--windows`` picks the rule windows measured
   (5m is the shipped rule's; 1m shows the pipeline without the 5-minute
   window).
2. Evaluation time. metric_points for 100 label sets (10 services x 10
   features; error_rate, latency_p95_ms, availability, ttft_p95_ms and
   requests; windows 1m and 5m over the last hour) and ``--rules`` threshold
   rules (``alerts.rules``, default_rules and slo_rules off). Times
   ``AlertEngine.evaluator.evaluate(now)`` and the whole ``engine.run(now)``
   on a ManualClock, counts the store queries of one evaluation, splits the
   time into SQL and Python, and times what one shared query per distinct
   (metric, window, range, label keys) would cost instead. ``--history`` keeps
   more hours of older points for the same series (generated server-side): each
   rule query's cost grows with what metric_points holds.

Nothing fails on a missed target: the figures are printed beside the targets.
Every store lives in a temporary directory, deleted at the end.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import yaml  # noqa: E402

from alerts.engine import AlertEngine  # noqa: E402
from alerts.rules import DEFAULTS as DEFAULT_RULES  # noqa: E402
from monitor.scheduler import Scheduler  # noqa: E402
from jobs.sli import SliJob  # noqa: E402
from monitor.foundation import migrate  # noqa: E402
from monitor.app import create_app  # noqa: E402
from monitor.foundation.clock import ManualClock, SystemClock  # noqa: E402
from monitor.foundation.config import load_config  # noqa: E402
from monitor.foundation.storage import Store  # noqa: E402
from tests.loopback import Recorder  # noqa: E402

UTC = dt.timezone.utc
WINDOW_SECONDS = {"1m": 60, "5m": 300}
BURST_ERRORS = 30
BACKGROUND_RPS = 1  # ok requests per second per service
MIN_REQUESTS = 20
PAGE_LATENCY_TARGET = "none set"  # printed beside the figures; the brief names no target


def iso(ts: dt.datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def utc_s(t: float) -> str:
    return dt.datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


class TimedRecorder(Recorder):
    """The loopback receiver of the tests, plus the wall time each payload arrived (taken in the handler)."""

    class _Stamped(list):
        def append(self, item):
            item["t"] = time.time()
            super().append(item)

    def __init__(self):
        super().__init__()
        self.received = self._Stamped()

    def take_timed(self) -> list[tuple[float, dict]]:
        with self.lock:
            out, self.received = self.received, self._Stamped()
        return [(r["t"], r["json"]) for r in out]


def open_store(tmp: str, overrides: dict):
    database = f"bench_{uuid.uuid4().hex[:8]}"
    cfg = load_config(env={}, overrides={"clickhouse": {"url": f"chdb://{tmp}", "database": database}, **overrides})
    store = Store.from_config(cfg)
    migrate.upgrade(store, cfg)
    return cfg, store


def drop_store(store: Store, cfg) -> None:
    try:
        store.command(f"DROP DATABASE IF EXISTS `{cfg.clickhouse.database}`")
    finally:
        store.close()


# -- 1. page latency ---------------------------------------------------------------
def shipped_rule(name: str = "HighErrorRate") -> dict:
    rules = yaml.safe_load(DEFAULT_RULES.read_text())["rules"]
    return dict(next(r for r in rules if r["name"] == name))


def request_event(service: str, status: str, now: dt.datetime, n: int) -> dict:
    return {"request_id": f"{service}-{status}-{n}-{uuid.uuid4().hex[:8]}", "ts": iso(now), "service": service,
            "feature": "answer", "model": "gpt-4o-mini", "prompt_version": "v1", "status": status,
            "latency_ms": 800.0 if status == "ok" else 150.0, "input_tokens": 200,
            "output_tokens": 40 if status == "ok" else 0}


class Background(threading.Thread):
    """BACKGROUND_RPS ok requests per second for every service, ingested once a second."""

    def __init__(self, ingestor, services):
        super().__init__(daemon=True)
        self.ingestor, self.services = ingestor, services
        self.stop = threading.Event()
        self.calls, self.slow, self.errors = 0, 0.0, 0

    def run(self):
        n, next_t = 0, time.time()
        while not self.stop.is_set():
            now = dt.datetime.now(UTC)
            batch = [request_event(s, "ok", now, n * BACKGROUND_RPS + k) for s in self.services
                     for k in range(BACKGROUND_RPS)]
            t0 = time.perf_counter()
            try:
                r = self.ingestor.ingest("requests", batch)
                self.errors += r.rejected
            except Exception as exc:  # noqa: BLE001 - keep going: a missing second only thins the background
                self.errors += 1
                print(f"  background ingest failed: {exc}", flush=True)
            self.slow = max(self.slow, time.perf_counter() - t0)
            self.calls += 1
            n += 1
            next_t += 1.0
            self.stop.wait(max(0.0, next_t - time.time()))


def timed_jobs(jobs: dict) -> dict[str, list]:
    """Wrap each job's run (on the instance) to record (start, end, result) in wall time."""
    records: dict[str, list] = {name: [] for name in jobs}

    def wrap(name, run):
        def timed(*a, **kw):
            t0 = time.time()
            result = run(*a, **kw)
            records[name].append((t0, time.time(), result))
            return result
        return timed
    for name, job in jobs.items():
        job.run = wrap(name, job.run)
    return records


def bench_page_latency(tmp: str, window: str, runs: int, fast: bool) -> dict:
    ws = WINDOW_SECONDS[window]
    rule = {**shipped_rule(), "window": window, "for": "0s", "min_requests": MIN_REQUESTS}
    jobs_cfg = {"sli_interval": "5s", "grace": "5s"} if fast else {}
    hook = TimedRecorder().__enter__()
    cfg, store = open_store(tmp, {
        "drift": {"enabled": False}, "grounding": {"enabled": False}, "jobs": jobs_cfg,
        "alerts": {"default_rules": False, "slo_rules": False, "rules": [rule],
                   "receivers": [{"name": "hook", "webhook": {"url": hook.url, "send_resolved": False}}],
                   "route": {"receiver": "hook", "group_by": ["alertname", "service"], "group_wait": "0s",
                             "group_interval": "5m", "repeat_interval": "4h"}}})
    label = f"window {window}, {'FAST: sli_interval 5s, grace 5s' if fast else 'defaults'}"
    print(f"\n== page latency: rule {rule['name']} ({label}) ==")
    print(f"  rule: the shipped {rule['name']} (metric {rule['metric']}, window {window}, by "
          f"{', '.join(rule['by'])}, aggregation {rule['aggregation']}, {rule['op']} {rule['threshold']}) "
          f"with for: 0s (shipped {shipped_rule()['for']}), min_requests: {MIN_REQUESTS} "
          f"(shipped {shipped_rule()['min_requests']}); route group_wait: 0s")
    print(f"  schedule: alerts.interval {cfg.alerts.interval.total_seconds():g} s, jobs.sli_interval "
          f"{cfg.jobs.sli_interval.total_seconds():g} s, jobs.grace {cfg.jobs.grace.total_seconds():g} s "
          f"(recompute {cfg.jobs.recompute.total_seconds() / 60:g} min); APScheduler with the sli and alerts "
          "jobs only, SystemClock, real time")
    tag = uuid.uuid4().hex[:4]
    services = [f"bench-{window}-{tag}-{i:02d}" for i in range(runs)]
    print(f"  traffic: {BACKGROUND_RPS} ok request/s per service ({runs} services, one per run), burst "
          f"{BURST_ERRORS} errors; bursts {ws / runs:g} s apart (window/runs), each into its own service")
    clock = SystemClock()
    ingestor = create_app(cfg, store, clock).extensions["nlpmon"].ingestor
    jobs = {"sli": SliJob(store, cfg, clock, cfg.jobs.sli_interval), "alerts": AlertEngine(store, cfg, clock)}
    records = timed_jobs(jobs)
    sched = Scheduler(jobs)
    bg = Background(ingestor, services)
    results = []
    try:
        bg.start()
        sched.start()
        t_start = time.time()
        while not (records["sli"] and records["alerts"]):  # the first runs (the sli catch-up over the empty day)
            time.sleep(0.1)
        sli_phase = records["sli"][0][0] % cfg.jobs.sli_interval.total_seconds()
        (s0, e0, _), (s1, e1, _) = records["sli"][0], records["alerts"][0]
        print(f"  scheduler started {utc_s(t_start)} UTC; first sli run {1000 * (e0 - s0):.0f} ms, "
              f"first alerts run {1000 * (e1 - s1):.0f} ms")
        spacing = ws / runs
        first = time.time() + 2.0
        bursts = []
        for i, service in enumerate(services):
            wait = first + i * spacing - time.time()
            if wait > 0:
                time.sleep(wait)
            now = dt.datetime.now(UTC)
            events = [request_event(service, "error", now, k) for k in range(BURST_ERRORS)]
            t0 = time.time()
            r = ingestor.ingest("requests", events)
            landed = time.time()
            if r.rejected or r.accepted != BURST_ERRORS:
                print(f"  burst {i}: accepted {r.accepted}, rejected {r.rejected}")
            window_end = (int(now.timestamp()) // ws + 1) * ws
            bursts.append({"run": i, "service": service, "ts": now.timestamp(), "landed": landed,
                           "ingest_ms": (landed - t0) * 1000, "window_end": window_end})
            print(f"  run {i:>2}: burst into {service} landed {utc_s(landed)} UTC "
                  f"(ingest {bursts[-1]['ingest_ms']:.0f} ms), its {window} window closes {utc_s(window_end)}",
                  flush=True)
        deadline = max(b["window_end"] for b in bursts) + cfg.jobs.grace.total_seconds() \
            + cfg.jobs.sli_interval.total_seconds() + cfg.alerts.interval.total_seconds() + 120
        pages: dict[str, float] = {}
        while time.time() < deadline and len(pages) < runs:
            for t, payload in hook.take_timed():
                if payload.get("status") != "firing":
                    continue
                for a in payload.get("alerts", []):
                    s = a.get("labels", {}).get("service")
                    if s in services and s not in pages:
                        pages[s] = t
            time.sleep(0.2)
    finally:
        bg.stop.set()
        sched.shutdown()
        bg.join(timeout=10)
        hook.__exit__(None, None, None)

    fired = {s: ts.replace(tzinfo=UTC).timestamp() if ts.tzinfo is None else ts.timestamp()
             for s, ts in store.query("SELECT labels['service'], min(ts) FROM alert_history WHERE to_state = 'firing' "
                                      "GROUP BY labels['service']")}
    for b in bursts:
        recv = pages.get(b["service"])
        row = {**b, "page": recv}
        if recv is not None:
            row["latency"] = recv - b["landed"]
            sli = next(((s, e) for s, e, r in records["sli"]
                        if r.status == "ok" and r.window_end.timestamp() >= b["window_end"]), None)
            fired_at = fired.get(b["service"])
            paging = next(((s, e) for s, e, r in records["alerts"] if s <= recv <= e + 0.001), None)
            if sli and fired_at is not None:
                row["parts"] = (b["window_end"] - b["landed"], sli[0] - b["window_end"], sli[1] - sli[0],
                                fired_at - sli[1], recv - fired_at)
                row["same_run"] = paging is not None and paging[0] <= fired_at + 0.001
        results.append(row)

    print(f"\n  {'run':>3} {'burst':>9} {'page':>9} {'latency s':>10} | {'to window':>9} {'to sli':>7} "
          f"{'sli run':>7} {'to firing':>9} {'to page':>7}  (s)  paged by")
    for row in results:
        if row["page"] is None:
            print(f"  {row['run']:>3} {utc_s(row['landed']):>9} {'NONE':>9} "
                  f"{'> ' + str(round(deadline - row['landed'])):>10}")
            continue
        parts = row.get("parts")
        tail = " ".join(f"{v:>{w}.1f}" for v, w in zip(parts, (9, 7, 7, 9, 7))) if parts else "(unmatched)"
        by = ("the run that fired" if row["same_run"] else "a later alerts run") if parts else ""
        print(f"  {row['run']:>3} {utc_s(row['landed']):>9} {utc_s(row['page']):>9} {row['latency']:>10.1f} | "
              f"{tail}       {by}")
    print("  columns: to window = burst landed -> its window closes; to sli = window close -> start of the sli run "
          "that\n  computed it (grace + tick phase); sli run = that run; to firing = sli run end -> the alerts "
          "evaluation that\n  fired (its 'now', alert_history.ts); to page = that evaluation -> page received")
    lat = [r["latency"] for r in results if r["page"] is not None]
    missing = runs - len(lat)
    sli_runs = [1000 * (e - s) for s, e, _ in records["sli"][1:]]
    alert_runs = [1000 * (e - s) for s, e, _ in records["alerts"][1:]]
    print(f"  sli ticks at :{sli_phase:04.1f} past each {cfg.jobs.sli_interval.total_seconds():g} s; a window is "
          f"computable {cfg.jobs.grace.total_seconds():g} s after it closes")
    print(f"  sli runs: {len(sli_runs)} (median {statistics.median(sli_runs) if sli_runs else float('nan'):.0f} ms, "
          f"max {max(sli_runs, default=float('nan')):.0f} ms); alerts runs: {len(alert_runs)} (median "
          f"{statistics.median(alert_runs) if alert_runs else float('nan'):.0f} ms, max "
          f"{max(alert_runs, default=float('nan')):.0f} ms); background ingest: {bg.calls} calls, slowest "
          f"{bg.slow * 1000:.0f} ms, {bg.errors} rejected/failed")
    summary = {"label": label, "window": window, "fast": fast, "latencies": lat, "missing": missing}
    if lat:
        with_parts = [r["parts"] for r in results if r.get("parts")]
        med_parts = [statistics.median(p[i] for p in with_parts) for i in range(5)] if with_parts else []
        print(f"  PAGE LATENCY ({label}): median {statistics.median(lat):.1f} s, max {max(lat):.1f} s, "
              f"min {min(lat):.1f} s over {len(lat)} runs" + (f"; {missing} runs got NO page" if missing else "")
              + f" (target: {PAGE_LATENCY_TARGET})")
        if med_parts:
            print("  median parts: " + ", ".join(f"{n} {v:.1f} s" for n, v in zip(
                ("to window close", "grace + tick wait", "sli run", "sli end -> firing evaluation",
                 "firing evaluation -> page"), med_parts)))
        same = [r["same_run"] for r in results if r.get("parts")]
        late = sum(1 for _, _, r in records["alerts"] if r.details.get("enqueued", 0) > r.details.get("delivered", 0))
        print(f"  pages sent by the alerts run that fired them: {sum(same)} of {len(same)}; alerts runs that enqueued "
              f"more than they delivered: {late}")
        if len(same) and sum(same) < len(same):
            print("  (AlertEngine.run passes its start time to outbox.deliver_due(now), but Outbox.enqueue stamps "
                  "next_attempt_at\n  with clock.now(), a little later: on a real clock a new page is never due in "
                  "the run that enqueued it\n  and waits one alerts.interval for the next run)")
        summary["parts"] = med_parts
        if med_parts:
            # Windows become computable at grace past their end; the sli tick lands a fixed time after that,
            # set by the second the scheduler started. Another start second shifts every run alike.
            tick = cfg.jobs.sli_interval.total_seconds()
            tick_wait = med_parts[1] - cfg.jobs.grace.total_seconds()
            summary["phase_avg"] = statistics.median(lat) - tick_wait + tick / 2
            print(f"  this scheduler's sli tick came {tick_wait:.1f} s after windows became computable; a start at "
                  f"another second waits 0-{tick:g} s there (mean {tick / 2:g} s): median at the mean phase "
                  f"~{summary['phase_avg']:.1f} s")
    else:
        print(f"  PAGE LATENCY ({label}): no page arrived in any of {runs} runs")
    drop_store(store, cfg)
    return summary


# -- 2. evaluation time of many rules ----------------------------------------------
EVAL_METRICS = {  # metric: (typical value, value in the hot series, rule op, base threshold)
    "error_rate": (0.01, 0.20, ">", 0.05),
    "latency_p95_ms": (2000.0, 9000.0, ">", 8000.0),
    "availability": (0.99, 0.80, "<", 0.95),
    "ttft_p95_ms": (700.0, 4000.0, ">", 3000.0),
}
SERVICES = [f"svc-{i:02d}" for i in range(10)]
FEATURES = [f"feat-{j:02d}" for j in range(10)]
HOT = {("svc-03", "feat-07"), ("svc-08", "feat-01")}  # label sets whose values cross the thresholds
AGGREGATIONS = ("last", "avg", "max", "min")


def eval_points(now: dt.datetime, history: dt.timedelta) -> list[list]:
    rows = []
    for window, seconds in WINDOW_SECONDS.items():
        steps = int(history.total_seconds() // seconds)
        end = dt.datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, UTC)
        for k in range(steps):
            ts = end - dt.timedelta(seconds=seconds * k)
            computed = min(ts + dt.timedelta(seconds=30), now)
            for si, s in enumerate(SERVICES):
                for fi, f in enumerate(FEATURES):
                    labels = {"service": s, "feature": f}
                    wiggle = 1 + 0.05 * (((si * 7 + fi * 3 + k) % 11) - 5) / 5
                    rows.append([ts, window, "requests", labels, 100.0 * seconds / 60 * wiggle, computed])
                    for metric, (typical, hot, _, _) in EVAL_METRICS.items():
                        v = hot if (s, f) in HOT else typical
                        rows.append([ts, window, metric, labels, v * (wiggle if metric != "availability" else 1),
                                     computed])
    return rows


def pad_history(store: Store, now: dt.datetime, recent: dt.timedelta, history: dt.timedelta) -> int:
    """Older points (typical values) for the same series, from ``recent`` back to ``history``, generated
    server-side: what a store that keeps its metric_points for a while holds. Returns the rows inserted."""
    total = 0
    metrics = list(EVAL_METRICS) + ["requests"]
    values = [EVAL_METRICS[m][0] for m in EVAL_METRICS] + [100.0]
    for window, seconds in WINDOW_SECONDS.items():
        end = int(now.timestamp()) // seconds * seconds
        first, last = int(recent.total_seconds() // seconds), int(history.total_seconds() // seconds)
        n = (last - first) * len(SERVICES) * len(FEATURES)
        if n <= 0:
            continue
        store.command(f"""
INSERT INTO metric_points (ts, `window`, metric, labels, value, computed_at)
SELECT fromUnixTimestamp64Milli(toInt64(({end} - {seconds} * k) * 1000), 'UTC') AS ts, '{window}', m,
       map('service', {list(SERVICES)!r}[intDiv(sf, {len(FEATURES)}) + 1],
           'feature', {list(FEATURES)!r}[sf % {len(FEATURES)} + 1]),
       v * if(m = 'requests', {seconds / 60}, 1), ts + toIntervalSecond(30)
FROM (SELECT {first} + intDiv(number, {len(SERVICES) * len(FEATURES)}) AS k,
             number % {len(SERVICES) * len(FEATURES)} AS sf FROM numbers({n}))
ARRAY JOIN {metrics!r} AS m, {values!r} AS v""")
        total += n * len(metrics)
    return total


def eval_rules(n: int) -> list[dict]:
    """n threshold rules: 8 metric x window combinations; even rules over all label sets, odd ones scoped to
    one service; every other pair with min_requests (one more query each)."""
    rules = []
    metrics = list(EVAL_METRICS)
    for i in range(n):
        metric = metrics[i % len(metrics)]
        window = ("1m", "5m")[(i // len(metrics)) % 2]
        _, _, op, base = EVAL_METRICS[metric]
        step = 1 + (i % 7) / 100  # thresholds differ a little, the hot series still cross them
        threshold = base * step if op == ">" else base / step
        rule = {"name": f"R{i:04d}_{metric}", "metric": metric, "window": window, "by": ["service", "feature"],
                "op": op, "threshold": round(threshold, 6), "aggregation": AGGREGATIONS[i % 4],
                "labels": {"severity": "ticket" if i % 3 else "page"},
                "annotations": {"summary": "{{ $labels.service }}/{{ $labels.feature }}: " + metric + " {{ $value }}"}}
        if i % 2:
            rule["selector"] = {"service": SERVICES[(i // 2) % len(SERVICES)]}
        if (i // 2) % 2:
            rule["min_requests"] = MIN_REQUESTS
        rules.append(rule)
    return rules


class QueryCounter:
    """Counts store reads and the time spent in them (instance attributes only; the Store class is untouched)."""

    def __init__(self, store: Store):
        self.n, self.seconds, self.inserts, self.insert_seconds = 0, 0.0, 0, 0.0
        self.on = False
        for name in ("query", "query_dicts", "insert"):
            setattr(store, name, self._wrap(getattr(store, name), name == "insert"))

    def _wrap(self, fn, is_insert):
        def counted(*a, **kw):
            if not self.on:
                return fn(*a, **kw)
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                if is_insert:
                    self.inserts += 1
                    self.insert_seconds += time.perf_counter() - t0
                else:
                    self.n += 1
                    self.seconds += time.perf_counter() - t0
        return counted

    def __enter__(self):
        self.n, self.seconds, self.inserts, self.insert_seconds, self.on = 0, 0.0, 0, 0.0, True
        return self

    def __exit__(self, *exc):
        self.on = False


def shared_query_cost(store: Store, engine: AlertEngine, now: dt.datetime) -> tuple[int, int, float]:
    """Run the evaluator's own SQL once per distinct (metric, window, over, label keys) and per distinct volumes
    window: what the evaluation would cost if rules sharing a query shared its answer. (queries, volume queries, ms)"""
    ev = engine.evaluator
    distinct, volume = {}, {}
    for rule in ev.rules:
        keys = tuple(sorted(set(rule.selector) | set(rule.by)))
        distinct.setdefault((rule.metric, rule.window, rule.over, keys), rule)
        if rule.min_requests:
            volume.setdefault((rule.window, rule.over), rule)
    orig_volumes = ev._volumes
    t0 = time.perf_counter()
    try:
        ev._volumes = lambda rule, now: {}  # samples() without its volumes query
        for rule in distinct.values():
            ev.samples(rule.model_copy(update={"selector": {}, "min_requests": 0}), now)
    finally:
        ev._volumes = orig_volumes
    for rule in volume.values():
        ev._volumes(rule, now)
    return len(distinct), len(volume), (time.perf_counter() - t0) * 1000


def bench_evaluation(tmp: str, n_rules: int, repeat: int, history: dt.timedelta) -> None:
    print(f"\n== evaluation time: {n_rules:,} threshold rules over {len(SERVICES) * len(FEATURES)} label sets ==")
    now = dt.datetime.now(UTC).replace(second=15, microsecond=0)
    clock = ManualClock(now)
    hook = TimedRecorder().__enter__()
    rules = eval_rules(n_rules)
    t0 = time.perf_counter()
    cfg, store = open_store(tmp, {
        "drift": {"enabled": False}, "grounding": {"enabled": False},
        "alerts": {"default_rules": False, "slo_rules": False, "rules": rules,
                   "receivers": [{"name": "hook", "webhook": {"url": hook.url, "send_resolved": True}}],
                   "route": {"receiver": "hook", "group_by": ["alertname", "service"], "group_wait": "0s"}}})
    try:
        recent = dt.timedelta(hours=1)
        points = eval_points(now, recent)
        for i in range(0, len(points), 50_000):
            store.insert("metric_points", points[i:i + 50_000], ["ts", "window", "metric", "labels", "value",
                                                                  "computed_at"])
        older = pad_history(store, now, recent, history)
        if older:
            store.command("OPTIMIZE TABLE metric_points FINAL")  # merged, as a store that has run a while
        engine = AlertEngine(store, cfg, clock)
        setup_s = time.perf_counter() - t0
        n_sel = sum(1 for r in rules if r.get("selector"))
        n_min = sum(1 for r in rules if r.get("min_requests"))
        print(f"  metric_points: {len(points):,} points = {len(SERVICES)} services x {len(FEATURES)} features x "
              f"{len(EVAL_METRICS) + 1} metrics ({', '.join(EVAL_METRICS)}, requests) x windows 1m/5m over the "
              f"last {recent.total_seconds() / 3600:g} h; {len(HOT)} hot label sets cross every threshold"
              + (f"; plus {older:,} older points back to {history.total_seconds() / 3600:g} h (--history)"
                 if older else ""))
        print(f"  rules: {len(engine.rules):,} ({len(EVAL_METRICS)} metrics x 2 windows; {len(rules) - n_sel} over all "
              f"100 label sets, {n_sel} with a one-service selector; {n_min} with min_requests {MIN_REQUESTS}; "
              f"over 5m, aggregations last/avg/max/min); setup {setup_s:.1f} s")
        counter = QueryCounter(store)
        one = store.query  # warm the client
        one("SELECT 1")
        rt = []
        for _ in range(20):
            t = time.perf_counter()
            store.query("SELECT 1")
            rt.append((time.perf_counter() - t) * 1000)

        # Warm-up: the first run fires the hot series, routes and delivers their pages.
        clock.set(now)
        first = engine.run(now)
        pages = hook.take()
        print(f"  first engine.run: {first.duration_ms:,.0f} ms, status {first.status}"
              + (f" ({first.error})" if first.error else "") + f", details {first.details}, "
              f"{len(pages)} webhook payloads received")

        eval_ms, run_ms = [], []
        stats = None
        for k in range(repeat):
            t_now = now + dt.timedelta(seconds=15 * (2 * k + 1))
            clock.set(t_now)
            with counter:
                t = time.perf_counter()
                transitions = engine.evaluator.evaluate(t_now, silenced=engine.dispatcher.silenced(t_now))
                eval_ms.append((time.perf_counter() - t) * 1000)
            if stats is None:
                stats = (counter.n, counter.seconds * 1000, counter.inserts, counter.insert_seconds * 1000,
                         len(transitions))
            t_now = t_now + dt.timedelta(seconds=15)
            clock.set(t_now)
            r = engine.run(t_now)
            run_ms.append(r.duration_ms)
        n_queries, q_ms, n_ins, ins_ms, n_trans = stats
        per_rule_q = sum(1 + (1 if r.get("min_requests") else 0) for r in rules)
        med_eval = statistics.median(eval_ms)
        interval = cfg.alerts.interval.total_seconds()
        print(f"\n  evaluator.evaluate(now): median {med_eval:,.0f} ms (min {min(eval_ms):,.0f}, max "
              f"{max(eval_ms):,.0f}) over {repeat} runs = {med_eval / len(rules):.2f} ms per rule")
        print(f"  engine.run(now) (evaluate + dispatch + outbox): median {statistics.median(run_ms):,.0f} ms (min "
              f"{min(run_ms):,.0f}, max {max(run_ms):,.0f}) over {repeat} runs; target: well inside alerts.interval "
              f"{interval:g} s ({statistics.median(run_ms) / 1000 / interval:.0%} of it)")
        print(f"  store reads per evaluation: {n_queries:,} = {per_rule_q:,} rule queries ({len(rules):,} series "
              f"queries + {n_min} min_requests volume queries) + {n_queries - per_rule_q} (alert_state load, "
              f"silences); {n_ins} inserts; {n_trans} transitions")
        print(f"  where the time goes (first timed evaluation): {q_ms:,.0f} ms in {n_queries:,} store reads "
              f"({q_ms / max(n_queries, 1):.1f} ms each; a bare SELECT 1 round trip is "
              f"{statistics.median(rt):.1f} ms), {ins_ms:,.0f} ms in {n_ins} inserts, "
              f"{eval_ms[0] - q_ms - ins_ms:,.0f} ms in Python")

        # A short profile of one evaluation: the top functions by own time.
        clock.set(now + dt.timedelta(seconds=15 * (2 * repeat + 1)))
        prof = cProfile.Profile()
        prof.enable()
        engine.evaluator.evaluate(clock.now())
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(8)
        lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
        start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), None)
        print("  profile of one evaluation (top 8 by own time):")
        if start is not None:
            for ln in lines[start:start + 9]:
                print("    " + ln.rstrip()[:150])

        n_shared, n_vol, shared_ms = shared_query_cost(store, engine, clock.now())
        print(f"  cheapest fix, measured: the same SQL once per distinct (metric, window, over, label keys) = "
              f"{n_shared} queries + {n_vol} volume queries take {shared_ms:,.0f} ms together, vs "
              f"{q_ms:,.0f} ms for {n_queries:,} reads now")
    finally:
        hook.__exit__(None, None, None)
        drop_store(store, cfg)


# -- main ------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="bursts (pages) per latency measurement")
    ap.add_argument("--windows", default="5m,1m", help="rule windows to measure page latency for (5m, 1m)")
    ap.add_argument("--fast", action="store_true", help="jobs.sli_interval 5s and jobs.grace 5s instead of the "
                                                        "defaults (1m, 30s)")
    ap.add_argument("--rules", type=int, default=1000, help="threshold rules for the evaluation benchmark")
    ap.add_argument("--repeat", type=int, default=3, help="timed evaluations (and engine runs)")
    ap.add_argument("--history", type=float, default=1, help="hours of metric_points kept (beyond the first hour "
                                                              "generated server-side); the rule queries' cost grows "
                                                              "with it")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()
    windows = [w.strip() for w in args.windows.split(",") if w.strip()]
    for w in windows:
        if w not in WINDOW_SECONDS:
            ap.error(f"--windows: {w!r} is not one of {', '.join(WINDOW_SECONDS)}")
    t_start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="nlpmon-bench-alerts-")
    summaries = []
    try:
        print(f"machine: {os.cpu_count()} CPUs, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
              f"stores in {tmp}")
        if not args.skip_latency:
            for w in windows:
                summaries.append(bench_page_latency(tmp, w, args.runs, args.fast))
        if not args.skip_eval:
            bench_evaluation(tmp, args.rules, args.repeat, dt.timedelta(hours=args.history))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if summaries:
        print("\nsummary, page latency (burst landed -> webhook received):")
        for s in summaries:
            lat = s["latencies"]
            fig = (f"median {statistics.median(lat):6.1f} s, max {max(lat):6.1f} s over {len(lat)} runs"
                   if lat else "no pages")
            print(f"  {s['label']:<42} {fig}" + (f" ({s['missing']} missing)" if s["missing"] else "")
                  + (f"; ~{s['phase_avg']:.0f} s at the mean sli tick phase" if s.get("phase_avg") else ""))
    print(f"\ntotal run time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
