"""What ``nlpmon demo`` does once its arguments are checked: store the traffic, then make it worth looking at.

Storing events alone would leave empty charts: the scheduler only catches up
``jobs.catchup_max`` and never raises alerts for the past. So, when the demo
writes to the store itself (not through a server's API), it also computes the
metrics for the whole window, replays the alerts the incidents would have
raised and creates an API key to try the service with.

Messages go to ``echo`` and progress bars to stderr, so a caller's stdout
carries nothing but the key it prints.
"""
from __future__ import annotations

import datetime as dt
import sys
from typing import Callable

from tqdm import tqdm

from jobs.drift import DriftJob
from monitor.demo.timeline import incidents
from monitor.demo.traffic import expected_requests, generate
from monitor.foundation.auth import KeyStore
from monitor.foundation.clock import SystemClock
from monitor.foundation.config import Config, DriftReference
from monitor.foundation.metrics import floor_to
from monitor.foundation.storage import Store
from monitor.ingest.pipeline import IngestResult
from monitor.scheduler import build_jobs

Sink = Callable[[str, list], IngestResult]  # (kind, events) -> result, as the CLI's ingest sink
_BATCH = 5000
_KEY_NAME = "demo"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def load(sink: Sink, config: Config, days: float, rps: float, seed: int, end: dt.datetime, *,
         store: Store | None, clock=None, echo: Callable[[str], None] = _stderr) -> str | None:
    """Send ``days`` of demo traffic ending at ``end`` through ``sink`` and report the incidents.

    With ``store`` (events go to the store, not a remote API): also compute the
    metrics for the demo window, replay the alerts and create the demo key.
    Returns that key in plain text the first time it is created, else None.
    """
    total = _send(sink, days, rps, seed, end)
    echo(f"demo: {total.accepted} events stored ({total.duplicates} already there), {total.rejected} rejected")
    for inc in incidents(days, end):
        echo(f"  incident {inc['name']}: {inc['service']}/{inc['feature']} "
             f"{inc['start']:%Y-%m-%d %H:%M} to {inc['end']:%Y-%m-%d %H:%M} UTC: {inc['what']}")
    if store is None:
        return None  # a remote server computes its own metrics, and its keys are not ours to create
    clock = clock or SystemClock()
    _compute(store, config, clock, days, end, echo)
    return _demo_key(store, clock, echo)


def _send(sink: Sink, days: float, rps: float, seed: int, end: dt.datetime) -> IngestResult:
    total = IngestResult()
    buffers: dict[str, list] = {"requests": [], "feedback": []}
    bar = tqdm(total=expected_requests(days, rps), unit="req", desc="demo traffic", file=sys.stderr, mininterval=0.5)
    for kind, event in generate(days, rps, end, seed):
        buf = buffers[kind]
        buf.append(event)
        if len(buf) >= _BATCH:
            if kind == "feedback":
                # Requests first, so feedback never reaches the sink before the request it refers to.
                total.add(sink("requests", buffers["requests"]))
                bar.update(len(buffers["requests"]))
                buffers["requests"] = []
            total.add(sink(kind, buf))
            if kind == "requests":
                bar.update(len(buf))
            buffers[kind] = []
    for kind in ("requests", "feedback"):
        if buffers[kind]:
            total.add(sink(kind, buffers[kind]))
            if kind == "requests":
                bar.update(len(buffers[kind]))
    bar.close()
    return total


def _compute(store: Store, config: Config, clock, days: float, end: dt.datetime, echo: Callable[[str], None]) -> None:
    """Metrics for the whole demo window now, so charts have history from the start."""
    for name, job in build_jobs(store, config, clock).items():
        since = end - dt.timedelta(days=days)
        if name == "alerts":
            _replay_alerts(job, days, end, echo)
            continue
        if name == "otlp_join":
            continue  # nothing is parked: the demo sends events
        if name == "drift":
            # One Evidently run per feature and window, so not the whole week: the last full day
            # (night hours alone hold too few requests), then the last hour; the scheduler catches
            # up drift.catchup_max in the background once the service runs.
            _daily_drift(store, config, clock, end, echo)
            _shift_drift(store, config, clock, days, end, echo)
            since = end - dt.timedelta(hours=1)
        echo(f"computing {name} metrics for the demo window ...")
        job.show_progress = True
        result = job.run(since=since)
        echo(f"  {name}: {result.status}, {result.rows} points in {result.duration_ms / 1000:.1f} s"
             + (f": {result.error}" if result.error else ""))


def replay_times(days: float, end: dt.datetime) -> list[dt.datetime]:
    """When to evaluate the alert rules: around each incident (overlapping spans merged), then at ``end``.

    Past an incident's end for as long as its alerts may hold: the slow SLO ticket's 6h short window,
    then its keep_firing_for, then a margin."""
    step, lead, near = dt.timedelta(minutes=2), dt.timedelta(minutes=15), dt.timedelta(minutes=60)
    tail = dt.timedelta(hours=8)
    spans: list[list[dt.datetime]] = []
    for inc in incidents(days, end):
        lo, hi = inc["start"] - lead, min(inc["end"] + tail, end)
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    times = []
    for lo, hi in spans:
        # Coarser steps in the middle of a long incident: the rules' windows are minutes long,
        # the states only change near its start and end.
        t = lo
        while t <= hi:
            times.append(t)
            t += step if t - lo < near or hi - t < near else 5 * step
    times.append(end)
    return times


def _replay_alerts(engine, days: float, end: dt.datetime, echo: Callable[[str], None]) -> None:
    """The alerts the demo's incidents would have raised, evaluated minute by minute around each incident."""
    times = replay_times(days, end)
    bar = tqdm(total=len(times), unit="eval", desc="replaying alerts", file=sys.stderr, mininterval=0.5)
    n = engine.replay(times, on_step=lambda: bar.update(1))
    bar.close()
    echo(f"  alerts: {n} transitions over the demo incidents (no notifications sent)")


def _daily_drift(store: Store, config: Config, clock, end: dt.datetime, echo: Callable[[str], None]) -> None:
    """Drift over the last full UTC day (the 1d window only), so the drift charts have a daily point at once."""
    daily = config.model_copy(update={"drift": config.drift.model_copy(update={"windows": ["1d"], "targets": []})})
    job = DriftJob(store, daily, clock, config.drift.interval)
    job.show_progress = True
    echo("computing drift for the last full day ...")
    midnight = floor_to(end, 86400)
    result = job.run(now=midnight + config.jobs.grace + dt.timedelta(minutes=1),
                     since=midnight - dt.timedelta(minutes=1))
    echo(f"  drift (1d): {result.status}, {result.rows} points in {result.duration_ms / 1000:.1f} s"
         + (f": {result.error}" if result.error else ""))


def _shift_drift(store: Store, config: Config, clock, days: float, end: dt.datetime,
                 echo: Callable[[str], None]) -> None:
    """Hourly drift of the topic-shifted feature in the two hours after the shift starts and in the first
    hour after it ends, so the replayed EmbeddingDrift alert fires and resolves as the scheduler would have
    made it. The reference is the week before the shift, as an operator pins it once a shift is over: a
    trailing week that holds the shift makes the return to normal look like drift too."""
    shift = next((i for i in incidents(days, end) if i["name"] == "topic shift"), None)
    if shift is None:
        return
    # The first two hours of the shift (EmbeddingDrift's for: 1h needs both), and the first hour wholly
    # after it; the scheduler computes the hours since then once the service runs.
    hours = [floor_to(shift["start"], 3600) + dt.timedelta(hours=k) for k in (1, 2)] + \
        [floor_to(shift["end"], 3600) + dt.timedelta(hours=2)]
    hours = [h for h in hours if h <= end]
    week_before = max(shift["start"] - dt.timedelta(days=7), end - dt.timedelta(days=days))
    before = DriftReference.model_validate({"from": week_before, "to": shift["start"]})
    pinned = config.model_copy(update={"drift": config.drift.model_copy(update={"reference": before, "targets": []})})
    job = DriftJob(store, pinned, clock, config.drift.interval)
    echo(f"computing drift of {shift['service']}/{shift['feature']} around the topic shift ({len(hours)} hours) ...")
    rows = 0
    for h in tqdm(hours, unit="cmp", desc="drift comparisons", file=sys.stderr, mininterval=0.5):
        rows += job.compare_one(shift["service"], shift["feature"], "1h", h)
    echo(f"  drift (1h, topic shift): {rows} points")


def _demo_key(store: Store, clock, echo: Callable[[str], None]) -> str | None:
    keys = KeyStore(store, clock, 0)
    if any(k.name == _KEY_NAME for k in keys.list()):
        return None  # created by an earlier run; its secret was shown then and is not stored
    _, plain = keys.create(_KEY_NAME, ["ingest", "read"])
    echo("API key for the demo (scopes ingest, read); shown once:")
    return plain
