"""Alerts: page latency through the real scheduler, the evaluation time of 1,000 live rules, storm delivery.

    .venv/bin/python bench/alerts.py [--runs 10] [--rules 1000] [--repeat 3] [--history 1]
                                     [--skip-latency] [--skip-eval] [--storm-groups 1000] [--skip-storm]

1. Page latency, as ``nlpmon serve`` runs the alerts: APScheduler
   (monitor.scheduler.Scheduler) with the ``alerts`` engine and the ``sli`` job
   on a SystemClock in real time, jobs.schedule.alerts 15 s (the default). Request
   rules are live (they read the rollups at each evaluation), so the sli job is
   only load here, not on the paging path; the other jobs are left out. The
   rules are the shipped ones (default, SLO and system rules) plus
   HighErrorRate_for0s, the shipped HighErrorRate with ``for: 0s`` on the
   services of (a) only; the route is the shipped one (group_by alertname,
   service; group_wait 30s) with group_wait 0s for HighErrorRate_for0s and
   SLOBurnRate. One thread ingests 2 requests a second for every service
   through the real ingestor, one call a second; from its start on, a run's
   service fails every request (100% errors, 2 a second). A page's latency runs
   from the return of the ingest call carrying the service's first failing
   request to the loopback webhook (tests/loopback.py) receiving its page.
   (a) HighErrorRate_for0s (for 0s, group_wait 0s: the pipeline) and (b) the
   shipped HighErrorRate (for 1m, group_wait 30s), ``--runs`` runs each, one
   service per run (no alert of an earlier run has to resolve first), each
   with 10 healthy minutes backfilled before the scheduler starts. The runs of
   (a) and (b) go together, in pairs: the pairs start a multiple of
   15 s/runs apart, so their starts fall on every phase of the alerts tick
   once. (c) One SLO (99.9% availability of its own service and feature) with
   6 healthy hours backfilled, then a total outage: the SLOBurnRate page.
2. Evaluation time. ``--rules`` live threshold rules (error_rate,
   latency_p95_ms, availability, ttft_p95_ms; windows 5m and 15m; half with a
   one-service selector, half with min_requests) over 100 label sets (10
   services x 10 features) whose rollups hold the last 65 minutes of requests
   (12 a minute each, ingested through the real ingestor); two hot label sets
   cross every threshold. Times ``AlertEngine.evaluator.evaluate(now)`` and
   ``engine.run(now)`` on a ManualClock, counts the store reads of one
   evaluation, and profiles one. Beside it, the baseline: the same rules with
   ``source: points`` over metric_points of the same label sets (the 5m points
   over the rule's window: metric_points keeps no 15m window); ``--history``
   keeps more hours of older points (the points rules' cost grows with them).
   The first engine run of each is a storm (every hot series fires at once, a
   new group each); its outbox delivery is printed apart.
3. Storm delivery. ``--storm-groups`` notifications (one per group, all due)
   delivered by one ``Outbox.deliver_due`` to a loopback webhook, with
   ``alerts.delivery.concurrency`` 16 (the default) and 1 (sequential), to a
   receiver that answers at once and to one that answers after 50 ms (a hosted
   webhook's round trip). ``jobs.schedule.alerts`` is 1h here so that one run sends
   them all (a run starts no send after jobs.schedule.alerts: with the default
   15 s, a sequential storm would go out over several runs). The rows are
   inserted as the dispatcher leaves them (the dispatcher's own cost is in the
   first run of 2.); the store's inserts are counted (outcomes that complete
   together share one insert: one insert per outcome bounded a fast storm).

Nothing fails on a missed target: the figures are printed beside the targets.
Every store lives in a temporary directory, deleted at the end.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import itertools
import json
import math
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import yaml  # noqa: E402

from alerts.delivery import Outbox  # noqa: E402
from alerts.engine import AlertEngine  # noqa: E402
from alerts.rules import DEFAULTS as DEFAULT_RULES, BurnRateRule  # noqa: E402
from jobs.sli import SliJob  # noqa: E402
from monitor.app import create_app  # noqa: E402
from monitor.foundation import migrate  # noqa: E402
from monitor.foundation.clock import ManualClock, SystemClock  # noqa: E402
from monitor.foundation.config import load_config  # noqa: E402
from monitor.foundation.storage import Store  # noqa: E402
from monitor.foundation.tables.notification_outbox import COLUMNS as OUTBOX_COLUMNS  # noqa: E402
from monitor.scheduler import Scheduler  # noqa: E402
from tests.helpers import ServerThread  # noqa: E402
from tests.loopback import Recorder  # noqa: E402

UTC = dt.timezone.utc
MIN_REQUESTS = 20


def iso(ts: dt.datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def utc_s(t: float) -> str:
    return dt.datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def epoch(ts: dt.datetime) -> float:
    """A store timestamp (naive ones are UTC) in epoch seconds."""
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


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


def ingest_all(ingestor, events, batch: int = 5000) -> int:
    """Ingest ``events`` (an iterable) in batches; returns the accepted count."""
    accepted, chunk = 0, []
    for e in itertools.chain(events, [None]):
        if e is not None:
            chunk.append(e)
        if chunk and (e is None or len(chunk) == batch):
            r = ingestor.ingest("requests", chunk)
            if r.rejected:
                raise RuntimeError(f"ingest rejected {r.rejected} of {len(chunk)} events")
            accepted += r.accepted
            chunk = []
    return accepted


# -- 1. page latency ---------------------------------------------------------------
RPS = 2  # requests a second per service: the background's ok ones, and a failing service's errors
HEALTHY = dt.timedelta(minutes=10)  # backfilled for every run's service before the scheduler starts
SLO_HEALTHY = dt.timedelta(hours=6)  # with less, the 6x/6h tier would page before 1h/5m's 14.4x could
PAGE_WAIT = 180.0  # seconds after the last run's start before a missing page counts as never sent
FAST_RULE = "HighErrorRate_for0s"
FAST_FEATURE, SHIPPED_FEATURE = "fast", "answer"
SLO = {"name": "bench-availability", "service": "bench-slo", "feature": "chat", "objective": 99.9,
       "sli": "availability"}
SLO_PAGE = f"SLOBurnRate:{SLO['name']}:page"  # its rule id in alert_history (alerts/evaluator.py rule_id)
BEFORE = ("before live rules (sli job path), the same setup measured median 132 s (1m rule) and 223 s "
          "(5m rule), max 358 s; 124 s on a running nlpmon serve")


def shipped_rule(name: str = "HighErrorRate") -> dict:
    rules = yaml.safe_load(DEFAULT_RULES.read_text())["rules"]
    return dict(next(r for r in rules if r["name"] == name))


def latency_overrides(hook_url: str) -> dict:
    # The fast copy selects its own services' feature, so that the shipped rule is the only other
    # threshold rule on them and the (b) services see exactly the shipped rule set.
    fast = {**shipped_rule(), "name": FAST_RULE, "for": "0s", "selector": {"feature": FAST_FEATURE}}
    return {"drift": {"enabled": False}, "grounding": {"enabled": False}, "slos": [SLO],
            "alerts": {"rules": [fast],  # default_rules, slo_rules and the system rules stay as shipped
                       "receivers": [{"name": "hook", "webhook": {"url": hook_url, "send_resolved": False}}],
                       "route": {"receiver": "hook", "group_by": ["alertname", "service"],
                                 "routes": [{"matchers": [f"alertname={FAST_RULE}"], "group_wait": "0s"},
                                            {"matchers": ["alertname=SLOBurnRate"], "group_wait": "0s"}]}}}


def request_event(rid: str, service: str, feature: str, status: str, ts: dt.datetime) -> dict:
    return {"request_id": rid, "ts": iso(ts), "service": service, "feature": feature, "model": "gpt-4o-mini",
            "prompt_version": "v1", "status": status, "latency_ms": 800.0 if status == "ok" else 150.0,
            "input_tokens": 200, "output_tokens": 40 if status == "ok" else 0}


def healthy_history(services: dict[str, tuple[str, dt.timedelta]], end: dt.datetime):
    """RPS ok requests a second for each service over its span before ``end``."""
    for service, (feature, span) in services.items():
        for k in range(int(span.total_seconds() * RPS)):
            yield request_event(f"{service}-h{k}", service, feature, "ok", end - dt.timedelta(seconds=(k + 1) / RPS))


class Traffic(threading.Thread):
    """RPS requests a second for every service, one ingest call a second for all of them (as the clients'
    requests would arrive). A service fails every request from its ``fail_at`` wall time on; ``landed``
    is when the ingest call carrying its first failing request returned."""

    def __init__(self, ingestor, services: dict[str, str]):
        super().__init__(daemon=True)
        self.ingestor, self.services = ingestor, services
        self.fail_at: dict[str, float] = {}
        self.landed: dict[str, float] = {}
        self.stop = threading.Event()
        self.calls, self.slow, self.errors = 0, 0.0, 0

    def run(self):
        n, next_t = 0, time.time()
        while not self.stop.is_set():
            t, now = time.time(), dt.datetime.now(UTC)
            failing = {s for s, at in list(self.fail_at.items()) if at <= t}
            batch = [request_event(f"{s}-{n}-{k}", s, f, "error" if s in failing else "ok",
                                   now - dt.timedelta(seconds=(RPS - 1 - k) / RPS))
                     for s, f in self.services.items() for k in range(RPS)]
            t0 = time.perf_counter()
            try:
                r = self.ingestor.ingest("requests", batch)
                self.errors += r.rejected
            except Exception as exc:  # noqa: BLE001 - keep going: a missing second only thins the traffic
                self.errors += 1
                print(f"  traffic ingest failed: {exc}", flush=True)
            else:
                done = time.time()
                for s in failing - self.landed.keys():
                    self.landed[s] = done
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


def serve_jobs(store, cfg, clock) -> dict:
    """The sli job and the alerts engine, built as monitor.scheduler.build_jobs builds them."""
    sli = SliJob(store, cfg, clock, cfg.jobs.schedule.sli)
    return {"sli": sli, "alerts": AlertEngine(store, cfg, clock, job_intervals={"sli": sli.interval})}


def stagger(runs: int, tick: float) -> float:
    """Seconds between run starts: m x tick/runs with m coprime to runs (so the starts fall on each of
    ``runs`` evenly spread phases of the tick once) and the runs at least 3 s apart (less load at once)."""
    m = next(m for m in itertools.count(max(1, math.ceil(3 * runs / tick))) if math.gcd(m, runs) == 1)
    return tick / runs * m


def wait_for_pages(hook: TimedRecorder, wanted: set[tuple[str, str]], deadline: float) -> dict:
    """(alertname, service) -> wall time its first firing page arrived, for the pairs in ``wanted``."""
    pages: dict[tuple[str, str], float] = {}
    while time.time() < deadline and len(pages) < len(wanted):
        for t, payload in hook.take_timed():
            for a in payload.get("alerts", []):
                labels = a.get("labels", {})
                key = (labels.get("alertname"), labels.get("service"))
                if a.get("status", payload.get("status")) != "firing" or key not in wanted or key in pages:
                    continue
                if key[0] == "SLOBurnRate" and labels.get("severity") != "page":
                    continue
                pages[key] = t
        time.sleep(0.1)
    return pages


def transitions(store) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(rule, service, to_state) -> (evaluation time, value) of the first such transition."""
    rows = store.query("SELECT rule, labels['service'] AS svc, to_state, min(ts), argMin(value, ts) "
                       "FROM alert_history WHERE to_state IN ('pending', 'firing') GROUP BY rule, svc, to_state")
    return {(rule, svc, state): (epoch(ts), value) for rule, svc, state, ts, value in rows}


def needed_failures(ok_requests: float, threshold: float) -> int:
    """Failures, replacing ok requests one for one, before failures/requests exceeds ``threshold``."""
    return math.floor(threshold * ok_requests) + 1


def report(label: str, title: str, rule: str, alertname: str, services: list[str], traffic: Traffic, pages: dict,
           history: dict, tick0: float, tick: float, target: str, met) -> dict:
    """Print one figure's runs, the median of its steps and its summary; returns the summary."""
    print(f"\n  {label} {title}")
    print(f"  {'run':>3} {'service':<16} {'tick phase':>10} {'landed':>9} {'true at (+s, value)':>22} "
          f"{'fired at (+s)':>15} {'page at':>9} {'latency s':>9}")
    lat, steps, missing = [], [], 0
    for i, s in enumerate(services):
        landed = traffic.landed.get(s)
        if landed is None:
            print(f"  {i:>3} {s:<16} burst never landed")
            missing += 1
            continue
        page = pages.get((alertname, s))
        true = history.get((rule, s, "pending")) or history.get((rule, s, "firing"))
        fired = history.get((rule, s, "firing"))
        true_s = f"{utc_s(true[0])} {true[0] - landed:+5.1f} {true[1]:.3f}" if true else "-"
        fired_s = f"{utc_s(fired[0])} {fired[0] - landed:+5.1f}" if fired else "-"
        if page is not None:
            lat.append(page - landed)
            if true and fired:
                steps.append((true[0] - landed, fired[0] - true[0], page - fired[0]))
        else:
            missing += 1
        print(f"  {i:>3} {s:<16} {(landed - tick0) % tick:>10.1f} {utc_s(landed):>9} {true_s:>22} {fired_s:>15} "
              f"{utc_s(page) if page else 'NONE':>9} {f'{page - landed:.1f}' if page else '-':>9}")
    if steps:
        def seen(i):  # the distinct values of a step: whole ticks show as multiples of the interval
            return "/".join(f"{v:.1f}" for v in sorted({round(st[i], 1) for st in steps}))
        print(f"  steps (median): landed -> condition true {statistics.median(st[0] for st in steps):.1f} s, "
              f"true -> fired {statistics.median(st[1] for st in steps):.1f} s ({seen(1)}), fired -> page "
              f"{statistics.median(st[2] for st in steps):.1f} s ({seen(2)})")
    if lat:
        verdict = "" if met is None else ("; target met" if met(lat) and not missing else "; TARGET MISSED")
        figure = (f"median {statistics.median(lat):.1f} s, max {max(lat):.1f} s, min {min(lat):.1f} s over "
                  f"{len(lat)} run{'s' if len(lat) > 1 else ''}" + (f", {missing} without a page" if missing else ""))
    else:
        figure, verdict = f"no page in any of {len(services)} runs", ""
    print(f"  PAGE LATENCY {label}: {figure} (target: {target}{verdict})")
    return {"label": f"{label} {title.split(' (')[0]}:", "figure": figure, "target": target + verdict,
            "latencies": lat, "missing": missing}


def tick_jitter(records: list, tick: float) -> tuple[float, float]:
    """How far (ms) the alerts evaluations' 'now' strayed from the first one's grid: (min, max)."""
    nows = [r.window_start.timestamp() for _, _, r in records]
    off = [(t - nows[0] - tick * round((t - nows[0]) / tick)) * 1000 for t in nows]
    return min(off), max(off)


def bench_page_latency(tmp: str, runs: int) -> list[dict]:
    hook = TimedRecorder().__enter__()
    cfg, store = open_store(tmp, latency_overrides(hook.url))
    tag = uuid.uuid4().hex[:4]
    fast = [f"a-{tag}-{i:02d}" for i in range(runs)]
    shipped = [f"b-{tag}-{i:02d}" for i in range(runs)]
    services = {**dict.fromkeys(fast, FAST_FEATURE), **dict.fromkeys(shipped, SHIPPED_FEATURE),
                SLO["service"]: SLO["feature"]}
    tick = cfg.jobs.schedule.alerts.total_seconds()
    clock = SystemClock()
    ingestor = create_app(cfg, store, clock).extensions["nlpmon"].ingestor
    jobs = serve_jobs(store, cfg, clock)
    rule = next(r for r in jobs["alerts"].rules if r.name == "HighErrorRate")
    page_rule = next(r for r in jobs["alerts"].rules if isinstance(r, BurnRateRule) and r.severity == "page")
    burn = float(page_rule.tiers[0].threshold)
    budget = 1 - SLO["objective"] / 100
    print("\n== page latency: the scheduler as nlpmon serve runs it, real time ==")
    print(f"  schedule: alerts every {tick:g} s and sli every {cfg.jobs.schedule.sli.total_seconds():g} s "
          f"(APScheduler, SystemClock); {len(jobs['alerts'].rules)} rules (shipped default, SLO and system "
          f"rules, plus {FAST_RULE})")
    print(f"  shipped HighErrorRate: {rule.metric} {rule.op} {rule.threshold:g} over a live {rule.window} window "
          f"by {', '.join(rule.by)}, min_failures {rule.min_failures}, for {rule.for_.total_seconds():g} s, "
          f"keep_firing_for {rule.keep_firing_for.total_seconds():g} s; route group_wait "
          f"{jobs['alerts'].dispatcher.routes.group_wait.total_seconds():g} s (shipped), 0 s for {FAST_RULE} and "
          "SLOBurnRate")
    # A 5m live window holds 5 to 6 minutes (the running minute); failures replace ok requests one for one.
    lo, hi = (needed_failures(RPS * m * 60, rule.threshold) for m in (5, 6))
    print(f"  traffic: {RPS} requests/s per service ({len(services)} services), ingested once a second; a run's "
          f"service then fails all of them. The 5% threshold needs {lo}-{hi} failures in the window "
          f"({lo / RPS:.0f}-{hi / RPS:.0f} s of the burst): min_failures {rule.min_failures} "
          f"({rule.min_failures / RPS:g} s at {RPS}/s) is met long before")
    t = time.perf_counter()
    history = {s: (f, SLO_HEALTHY if s == SLO["service"] else HEALTHY) for s, f in services.items()}
    n = ingest_all(ingestor, healthy_history(history, dt.datetime.now(UTC)))
    print(f"  backfill: {n:,} healthy requests ({HEALTHY.total_seconds() / 60:g} min per run's service, "
          f"{SLO_HEALTHY.total_seconds() / 3600:g} h for the SLO's) in {time.perf_counter() - t:.1f} s")
    records = timed_jobs(jobs)
    sched = Scheduler(jobs)
    traffic = Traffic(ingestor, services)
    try:
        traffic.start()
        sched.start()
        started = time.time()
        while not (records["sli"] and records["alerts"]):  # the first runs (the sli catch-up)
            if time.time() - started > 120:
                raise RuntimeError("the first sli and alerts runs did not complete within 2 minutes (see the log)")
            time.sleep(0.1)
        (s0, e0, _), (s1, e1, _) = records["sli"][0], records["alerts"][0]
        print(f"  scheduler started; first sli run {e0 - s0:.1f} s, first alerts run {1000 * (e1 - s1):.0f} ms")
        spacing = stagger(runs, tick)
        first = time.time() + 2.0
        for i in range(runs):
            traffic.fail_at[fast[i]] = traffic.fail_at[shipped[i]] = first + i * spacing
        traffic.fail_at[SLO["service"]] = first
        print(f"  runs start {spacing:g} s apart from {utc_s(first)} UTC (an (a) and a (b) run together); the "
              f"SLO outage starts with the first; waiting for the pages ...", flush=True)
        wanted = ({(FAST_RULE, s) for s in fast} | {("HighErrorRate", s) for s in shipped}
                  | {("SLOBurnRate", SLO["service"])})
        pages = wait_for_pages(hook, wanted, first + (runs - 1) * spacing + PAGE_WAIT)
    finally:
        traffic.stop.set()
        sched.shutdown()
        traffic.join(timeout=10)
        hook.__exit__(None, None, None)

    seen = transitions(store)
    tick0 = records["alerts"][0][0]
    print("\n  columns: tick phase = seconds from the start of the alerts run before the burst landed; landed = "
          "the ingest call\n  carrying its first failing request returned; true at = the evaluation (its 'now') "
          "that first saw the condition,\n  and the rule's value there; fired at = the evaluation that fired; "
          "page at = the webhook received it")
    figures = [
        report("(a)", f"the shipped HighErrorRate with for: 0s, group_wait 0s ({FAST_RULE})", FAST_RULE, FAST_RULE,
               fast, traffic, pages, seen, tick0, tick, "median <= 30 s, max <= 60 s",
               lambda lat: statistics.median(lat) <= 30 and max(lat) <= 60),
        report("(b)", "the shipped defaults (HighErrorRate for: 1m, group_wait 30s)", "HighErrorRate",
               "HighErrorRate", shipped, traffic, pages, seen, tick0, tick, "none; expected ~60-120 s", None),
        report("(c)", f"the SLO page (SLOBurnRate, {SLO['objective']}% availability; a total outage at {RPS} "
               f"req/s after {SLO_HEALTHY.total_seconds() / 3600:g} healthy hours)", SLO_PAGE, "SLOBurnRate",
               [SLO["service"]], traffic, pages, seen, tick0, tick, "<= 82 s", lambda lat: max(lat) <= 82),
    ]
    figures[0]["anchor"] = BEFORE
    # 14.4x over 1h: the failures must reach burn x budget of the hour's requests (a live 1h window holds
    # 60 to 61 minutes), failures replacing ok requests one for one.
    lo, hi = (needed_failures(RPS * m * 60, burn * budget) for m in (60, 61))
    print(f"  (c) needs {burn:g}x the {budget:.1%} budget over 1h: {lo}-{hi} failures ({lo / RPS:.0f}-{hi / RPS:.0f} "
          "s at a steady rate), then the next alerts tick")
    sli_runs = [e - s for s, e, _ in records["sli"][1:]]
    alert_runs = [1000 * (e - s) for s, e, _ in records["alerts"][1:]]
    print(f"\n  sli runs: {len(records['sli'])} (after the first: median {statistics.median(sli_runs or [0]):.1f} s, "
          f"max {max(sli_runs, default=0):.1f} s); alerts runs: {len(records['alerts'])} (after the first: median "
          f"{statistics.median(alert_runs or [0]):.0f} ms, max {max(alert_runs, default=0):.0f} ms; "
          f"{sum(1 for _, _, r in records['alerts'] if r.status != 'ok')} not ok); traffic: {traffic.calls} ingest "
          f"calls, slowest {traffic.slow * 1000:.0f} ms, {traffic.errors} rejected/failed")
    lo, hi = tick_jitter(records["alerts"], tick)
    # 'for' and group_wait are whole ticks here (1m = 4, 30s = 2): a page meets them on the tick they end on
    # only if that evaluation's 'now' (the wall clock when the run starts) is no earlier in its tick than the
    # one they count from; otherwise they take one more tick.
    print(f"  alerts evaluations' now strayed {lo:+.1f} to {hi:+.1f} ms from a {tick:g} s grid (the scheduler's "
          "wake-up): a for or group_wait of whole ticks ends on a tick only when its now is not earlier there")
    drop_store(store, cfg)
    return figures


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
WINDOW_SECONDS = {"1m": 60, "5m": 300}  # the metric_points windows generated for the baseline
# A live rule's window -> the points rule closest to it: metric_points keeps 1m/5m/1h/1d windows, no 15m,
# so the baseline reads the 5m points over the live window's length.
POINTS_EQUIVALENT = {"5m": ("5m", "5m"), "15m": ("5m", "15m")}
EVAL_PER_MINUTE = 12  # requests a minute per label set: 60 in a 5m window, well over min_requests
EVAL_SPAN = dt.timedelta(minutes=65)  # of requests in the rollups: the longest live window and more


def eval_requests(now: dt.datetime):
    """EVAL_SPAN of requests before ``now`` for every label set: the typical ones fail 1% of the time and
    answer in 0.8-2.3 s (first token 0.3-0.8 s); the hot ones fail 20% and take 9-10 s (first token 4-5 s)."""
    step = dt.timedelta(seconds=60 / EVAL_PER_MINUTE)
    n = int(EVAL_SPAN / step)
    for si, s in enumerate(SERVICES):
        for fi, f in enumerate(FEATURES):
            hot = (s, f) in HOT
            for k in range(n):
                j = k + si * 7 + fi * 3  # the label sets' values differ a little
                failed = k % 5 == 0 if hot else j % 100 == 37
                yield {"request_id": f"{s}-{f}-{k}", "ts": iso(now - step * (n - k)), "service": s, "feature": f,
                       "model": "gpt-4o-mini", "prompt_version": "v1", "status": "error" if failed else "ok",
                       "latency_ms": float(9000 + j * 37 % 1000 if hot else 800 + j * 37 % 1500),
                       "ttft_ms": float(4000 + j * 53 % 1000 if hot else 300 + j * 53 % 500),
                       "input_tokens": 200, "output_tokens": 40}


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


def eval_rules(n: int, source: str = "live") -> list[dict]:
    """n threshold rules: 4 metrics x windows 5m/15m; even rules over all label sets, odd ones scoped to
    one service; every other pair with min_requests. ``source: points`` gives the same rules over
    metric_points (POINTS_EQUIVALENT), with the aggregations mixed (live rules have none)."""
    rules = []
    metrics = list(EVAL_METRICS)
    for i in range(n):
        metric = metrics[i % len(metrics)]
        window = tuple(POINTS_EQUIVALENT)[(i // len(metrics)) % 2]
        _, _, op, base = EVAL_METRICS[metric]
        step = 1 + (i % 7) / 100  # thresholds differ a little, the hot series still cross them
        threshold = base * step if op == ">" else base / step
        rule = {"name": f"R{i:04d}_{metric}", "metric": metric, "window": window, "by": ["service", "feature"],
                "op": op, "threshold": round(threshold, 6),
                "labels": {"severity": "ticket" if i % 3 else "page"},
                "annotations": {"summary": "{{ $labels.service }}/{{ $labels.feature }}: " + metric + " {{ $value }}"}}
        if source == "points":
            points_window, over = POINTS_EQUIVALENT[window]
            rule.update(source="points", window=points_window, over=over, aggregation=AGGREGATIONS[i % 4])
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



ALERT_TABLES = ("alert_state", "alert_history", "notification_log", "notification_outbox")


def storm_run(engine: AlertEngine, now: dt.datetime, hook: TimedRecorder, counter: QueryCounter) -> str:
    """The first engine run (every hot series fires, a new group each): its time, split into its three steps,
    and its store reads and inserts."""
    steps = {"evaluate": (engine.evaluator, "evaluate"), "dispatch": (engine.dispatcher, "run"),
             "outbox delivery": (engine.outbox, "deliver_due")}
    spent = dict.fromkeys(steps, 0.0)

    def timed(step, fn):
        def run(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[step] += time.perf_counter() - t
        return run
    for step, (obj, name) in steps.items():  # on the instances: the classes stay untouched
        setattr(obj, name, timed(step, getattr(obj, name)))
    try:
        with counter:
            first = engine.run(now)
    finally:
        for obj, name in steps.values():
            delattr(obj, name)
    pages = hook.take()
    return (f"{first.duration_ms:,.0f} ms, status {first.status}" + (f" ({first.error})" if first.error else "")
            + f", {first.details.get('transitions', 0)} transitions, {len(pages)} webhook payloads; of it "
            + ", ".join(f"{step} {seconds * 1000:,.0f} ms" for step, seconds in spent.items())
            + f"; {counter.n:,} store reads ({counter.seconds * 1000:,.0f} ms), {counter.inserts:,} inserts "
            f"({counter.insert_seconds * 1000:,.0f} ms)")


def top_functions(engine: AlertEngine, now: dt.datetime, n: int = 8) -> list[str]:
    """A profile of one evaluation: the top ``n`` functions by own time."""
    prof = cProfile.Profile()
    prof.enable()
    engine.evaluator.evaluate(now)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(n)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), None)
    return [] if start is None else [ln.rstrip()[:150] for ln in lines[start:start + n + 1]]


def time_evaluations(engine: AlertEngine, clock: ManualClock, counter: QueryCounter, now: dt.datetime,
                     repeat: int, hook: TimedRecorder) -> dict:
    """Storm, then ``repeat`` timed evaluations and engine runs 15 s apart (as the ticks come), the store reads
    of one evaluation, and a profile. Times from ``now``, alert tables as the caller left them (empty)."""
    clock.set(now)
    storm = storm_run(engine, now, hook, counter)
    # The reads every evaluation makes whatever its rules (alert_state, silences): the rest are the rules'.
    rules, engine.rules = engine.rules, []
    with counter:
        engine.evaluator.evaluate(now, silenced=engine.dispatcher.silenced(now))
    engine.rules, fixed_reads = rules, counter.n
    eval_ms, run_ms, first = [], [], None
    for k in range(repeat):
        t_now = now + dt.timedelta(seconds=15 * (2 * k + 1))
        clock.set(t_now)
        with counter:
            t = time.perf_counter()
            moved = engine.evaluator.evaluate(t_now, silenced=engine.dispatcher.silenced(t_now))
            eval_ms.append((time.perf_counter() - t) * 1000)
        if first is None:
            first = {"reads": counter.n, "read_ms": counter.seconds * 1000, "inserts": counter.inserts,
                     "insert_ms": counter.insert_seconds * 1000, "transitions": len(moved)}
        t_now += dt.timedelta(seconds=15)
        clock.set(t_now)
        run_ms.append(engine.run(t_now).duration_ms)
    t_now += dt.timedelta(seconds=15)
    clock.set(t_now)
    hook.take()
    return {"storm": storm, "eval_ms": eval_ms, "run_ms": run_ms, "fixed_reads": fixed_reads, **first,
            "python_ms": eval_ms[0] - first["read_ms"] - first["insert_ms"],
            "profile": top_functions(engine, t_now)}


def print_evaluation(label: str, m: dict, n_rules: int, interval: float) -> None:
    med_eval, med_run = statistics.median(m["eval_ms"]), statistics.median(m["run_ms"])
    print(f"\n  {label}")
    print(f"  first engine.run (a storm: every hot series fires, one new group each): {m['storm']}")
    print(f"  evaluator.evaluate(now): median {med_eval:,.1f} ms (min {min(m['eval_ms']):,.1f}, max "
          f"{max(m['eval_ms']):,.1f}) over {len(m['eval_ms'])} runs = {med_eval / n_rules * 1000:,.0f} us per rule, "
          f"{med_eval / 1000 / interval:.1%} of jobs.schedule.alerts {interval:g} s")
    print(f"  engine.run(now) (evaluate + dispatch + outbox): median {med_run:,.1f} ms (min {min(m['run_ms']):,.1f}, "
          f"max {max(m['run_ms']):,.1f}) = {med_run / 1000 / interval:.1%} of jobs.schedule.alerts")
    print(f"  store reads per evaluation: {m['reads']} = {m['reads'] - m['fixed_reads']} for the {n_rules:,} rules "
          f"(shared: one per distinct read) + {m['fixed_reads']} every evaluation makes (alert_state, silences); "
          f"{m['inserts']} inserts; {m['transitions']} transitions")
    print(f"  where the time goes (first timed evaluation): {m['read_ms']:,.1f} ms in {m['reads']} reads, "
          f"{m['insert_ms']:,.1f} ms in {m['inserts']} inserts, {m['python_ms']:,.1f} ms in Python")
    print("  profile of one evaluation (top 8 by own time):")
    for ln in m["profile"]:
        print("    " + ln)


def fill_eval_store(store: Store, ingestor, now: dt.datetime, history: dt.timedelta) -> str:
    """Rollups (requests through the ingestor) and metric_points for the same label sets; what was put."""
    t = time.perf_counter()
    n_req = ingest_all(ingestor, eval_requests(now))
    req_s = time.perf_counter() - t
    recent = dt.timedelta(hours=1)
    points = eval_points(now, recent)
    for i in range(0, len(points), 50_000):
        store.insert("metric_points", points[i:i + 50_000], ["ts", "window", "metric", "labels", "value",
                                                              "computed_at"])
    older = pad_history(store, now, recent, history)
    if older:
        store.command("OPTIMIZE TABLE metric_points FINAL")  # merged, as a store that has run a while
    return (f"rollups: {n_req:,} requests ({EVAL_PER_MINUTE} a minute per label set over the last "
            f"{EVAL_SPAN.total_seconds() / 60:g} min) ingested in {req_s:.1f} s; metric_points: {len(points):,} "
            f"points ({len(EVAL_METRICS) + 1} metrics x windows {'/'.join(WINDOW_SECONDS)} over the last hour)"
            + (f" plus {older:,} older ones back to {history.total_seconds() / 3600:g} h (--history)" if older else ""))


def bench_evaluation(tmp: str, n_rules: int, repeat: int, history: dt.timedelta) -> dict:
    n_sets = len(SERVICES) * len(FEATURES)
    print(f"\n== evaluation time: {n_rules:,} threshold rules over {n_sets} label sets, live vs points ==")
    now = dt.datetime.now(UTC).replace(second=15, microsecond=0)
    clock = ManualClock(now)
    hook = TimedRecorder().__enter__()
    live, points = eval_rules(n_rules), eval_rules(n_rules, "points")
    cfg, store = open_store(tmp, {
        "drift": {"enabled": False}, "grounding": {"enabled": False},
        "alerts": {"default_rules": False, "slo_rules": False, "system": {"enabled": False}, "rules": live,
                   "receivers": [{"name": "hook", "webhook": {"url": hook.url, "send_resolved": True}}],
                   "route": {"receiver": "hook", "group_by": ["alertname", "service"], "group_wait": "0s"}}})
    try:
        print("  " + fill_eval_store(store, create_app(cfg, store, clock).extensions["nlpmon"].ingestor, now, history))
        n_sel = sum(1 for r in live if r.get("selector"))
        n_min = sum(1 for r in live if r.get("min_requests"))
        print(f"  rules: {len(live):,} ({len(EVAL_METRICS)} metrics x windows {', '.join(POINTS_EQUIVALENT)}; "
              f"{len(live) - n_sel} over all {n_sets} label sets, {n_sel} with a one-service selector; {n_min} with "
              f"min_requests {MIN_REQUESTS}); {len(HOT)} hot label sets cross every threshold")
        print("  baseline: the same rules with source: points (the 5m points over the live window's length, "
              "aggregations last/avg/max/min), reading metric_points")
        counter = QueryCounter(store)
        interval = cfg.jobs.schedule.alerts.total_seconds()
        engine = AlertEngine(store, cfg, clock)
        measured = {"live": time_evaluations(engine, clock, counter, now, repeat, hook)}
        for table in ALERT_TABLES:  # the baseline starts from no alerts too
            store.command(f"TRUNCATE TABLE {table}")
        engine = AlertEngine(store, cfg, clock)
        engine.rules = AlertEngine(store, load_config(env={}, overrides={
            "clickhouse": {"url": cfg.clickhouse.url, "database": cfg.clickhouse.database},
            "alerts": {"default_rules": False, "slo_rules": False, "system": {"enabled": False},
                       "rules": points}}), clock).rules
        measured["points"] = time_evaluations(engine, clock, counter, now, repeat, hook)
    finally:
        hook.__exit__(None, None, None)
        drop_store(store, cfg)
    print_evaluation(f"live rules (source: auto; the rollups over the live window) x {n_rules:,}", measured["live"],
                     n_rules, interval)
    print_evaluation(f"baseline: the same rules with source: points (metric_points) x {n_rules:,}", measured["points"],
                     n_rules, interval)

    def line(m):
        return (f"{statistics.median(m['eval_ms']):,.1f} ms per evaluation "
                f"({statistics.median(m['eval_ms']) / 1000 / interval:.1%} of jobs.schedule.alerts {interval:g} s), "
                f"{m['reads']} reads; engine.run {statistics.median(m['run_ms']):,.1f} ms")
    return {"live": line(measured["live"]), "points": line(measured["points"])}


# -- 3. storm delivery ------------------------------------------------------------
STORM_LATENCIES = (0.0, 0.05)  # the receiver answers at once (loopback), or after 50 ms


class StormReceiver(ServerThread):
    """A loopback webhook that answers 200 after ``delay`` seconds and counts the group keys it got."""

    class _Server(ThreadingHTTPServer):
        request_queue_size = 128  # 16 sends connect at once; the default backlog of 5 drops SYNs (1 s retries)
        daemon_threads = True

    def __init__(self, delay: float):
        self.keys: list[str] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                rec.keys.append(body["groupKey"])
                if delay:
                    time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = self._Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


def bench_storm(tmp: str, groups: int) -> str:
    print(f"\n== storm: {groups:,} new groups due at once, delivered by one outbox.deliver_due ==")
    cfg, store = open_store(tmp, {"drift": {"enabled": False}, "grounding": {"enabled": False}})
    clock = ManualClock(dt.datetime.now(UTC).replace(microsecond=0))
    counter = QueryCounter(store)
    figures = {}
    try:
        for latency in STORM_LATENCIES:
            with StormReceiver(latency) as rcv:
                for workers in (16, 1):
                    run = f"l{int(latency * 1000)}-w{workers}"
                    config = load_config(env={}, overrides={
                        "clickhouse": {"url": cfg.clickhouse.url, "database": cfg.clickhouse.database},
                        "jobs": {"schedule": {"alerts": "1h"}}, "alerts": {
                                   "receivers": [{"name": "hook", "webhook": {"url": rcv.url, "timeout": "10s"}}],
                                   "route": {"receiver": "hook"}, "delivery": {"concurrency": workers}}})
                    outbox = Outbox(store, config, clock)
                    now = clock.now()
                    keys = [f"{run}-g{i:05d}" for i in range(groups)]
                    store.insert("notification_outbox", [[{
                        "id": f"{run}-n{i:05d}", "group_key": k, "receiver": "hook", "kind": "webhook",
                        "status": "pending", "alert_status": "firing",
                        "payload": json.dumps({"version": "4", "groupKey": k, "status": "firing"}),
                        "created_at": now, "attempts": 0, "next_attempt_at": now, "last_error": "", "sent_at": None,
                        "updated_at": now}[c] for c in OUTBOX_COLUMNS] for i, k in enumerate(keys)], OUTBOX_COLUMNS)
                    rcv.keys.clear()
                    with counter:
                        t = time.perf_counter()
                        out = outbox.deliver_due()
                        seconds = time.perf_counter() - t
                    sent = sum(1 for r in out if r["status"] == "sent")
                    once = sorted(rcv.keys) == keys
                    figures[(latency, workers)] = seconds
                    print(f"  receiver answering {'at once' if not latency else f'after {latency * 1000:.0f} ms'}, "
                          f"{workers:>2} worker{'s' if workers > 1 else ' '}: {seconds:6.1f} s "
                          f"({groups / seconds:5.0f} notifications/s); {sent:,} sent, "
                          f"{'each group received once' if once else f'{len(rcv.keys):,} requests received (!)'}; "
                          f"{counter.inserts:,} store inserts took {counter.insert_seconds:.1f} s "
                          f"({counter.insert_seconds / max(counter.inserts, 1) * 1000:.1f} ms each)")
                    clock.advance(60)
    finally:
        drop_store(store, cfg)
    fast, slow = STORM_LATENCIES
    return (f"{groups:,} groups: {figures[(fast, 16)]:.1f} s with 16 workers, {figures[(fast, 1)]:.1f} s with 1 "
            f"(receiver answering at once); {figures[(slow, 16)]:.1f} s vs {figures[(slow, 1)]:.1f} s "
            f"(answering after {slow * 1000:.0f} ms)")


# -- main ------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="runs (pages) for each of the page latencies (a) and (b)")
    ap.add_argument("--rules", type=int, default=1000, help="threshold rules for the evaluation benchmark")
    ap.add_argument("--repeat", type=int, default=3, help="timed evaluations (and engine runs)")
    ap.add_argument("--history", type=float, default=1, help="hours of metric_points kept for the points baseline "
                                                              "(beyond the first hour generated server-side); the "
                                                              "points rules' cost grows with it")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--storm-groups", type=int, default=1000, help="notifications due at once in the storm benchmark")
    ap.add_argument("--skip-storm", action="store_true")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs: at least 1")
    t_start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="nlpmon-bench-alerts-")
    latency, evaluation, storm = [], None, None
    try:
        print(f"machine: {os.cpu_count()} CPUs, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
              f"stores in {tmp}")
        if not args.skip_latency:
            t = time.perf_counter()
            latency = bench_page_latency(tmp, args.runs)
            print(f"  part 1 wall time {time.perf_counter() - t:.0f} s")
        if not args.skip_eval:
            evaluation = bench_evaluation(tmp, args.rules, args.repeat, dt.timedelta(hours=args.history))
        if not args.skip_storm:
            storm = bench_storm(tmp, args.storm_groups)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if latency:
        print("\nsummary, page latency (ingest of the first failing request returned -> webhook received the page):")
        for s in latency:
            print(f"  {s['label']} {s['figure']} (target: {s['target']})")
            if s.get("anchor"):
                print(f"      {s['anchor']}")
    if evaluation:
        print(f"\nsummary, evaluation of {args.rules:,} rules: live {evaluation['live']}")
        print(f"  baseline, the same rules over metric_points: {evaluation['points']}")
    if storm:
        print(f"\nsummary, storm delivery: {storm}")
    print(f"\ntotal run time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
