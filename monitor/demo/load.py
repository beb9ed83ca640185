"""What ``nlpmon demo`` and ``nlpmon serve --demo`` do once their arguments are checked: store the traffic,
then make it worth looking at.

Storing events alone would leave empty charts: the scheduler only catches up
``jobs.catchup_max`` and never raises alerts for the past. So, when the demo
writes to the store itself (not through a server's API), it also computes the
metrics for the whole window, lets simulated reviewers label most of the
sampled answers, computes drift for every day, replays the alerts the
incidents would have raised and creates an API key to try the service with.

The steps are reported to a :class:`~monitor.foundation.progress.Progress`,
which the pages show as a banner while ``serve --demo`` computes in the
background. Two lanes run side by side once the traffic is stored: the
metrics, reviews and alert history (what the overview and the alerts page
show first), and the daily drift comparisons (the longest step, mostly
matrix work that leaves the other core free).

Messages go to ``echo`` and progress bars to stderr, so a caller's stdout
carries nothing but the key it prints.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import sys
import threading
from typing import Callable

from tqdm import tqdm

from jobs.drift import DriftJob
from monitor.demo.timeline import incidents
from monitor.demo.traffic import expected_requests, generate
from monitor.foundation.auth import KeyStore
from monitor.foundation.clock import SystemClock, iso_utc
from monitor.foundation.config import Config, DriftReference
from monitor.foundation.metrics import SLI_WINDOWS, floor_to
from monitor.foundation.progress import AREAS, Progress
from monitor.foundation.storage import Store
from monitor.foundation.tables import review
from monitor.ingest.pipeline import IngestResult
from monitor.scheduler import build_jobs

log = logging.getLogger(__name__)
Sink = Callable[[str, list], IngestResult]  # (kind, events) -> result, as the CLI's ingest sink
_BATCH = 5000
_KEY_NAME = "demo"

# (name, label, page areas it feeds), in the order they start.
STEPS = [
    ("traffic", "demo traffic", AREAS),
    ("metrics", "SLIs, SLOs and cost per outcome", ("overview", "metrics", "alerts")),
    ("reviews", "review samples labelled by simulated reviewers, releases judged", ("hallucination",)),
    ("alerts", "alert history of the four incidents", ("alerts",)),
    ("drift", "daily drift of every feature", ("drift",)),
    ("grounding", "grounding proxy", ("metrics",)),
]
# Share of the sampled answers the simulated reviewers have labelled, by the answer's age in days:
# a review team works through the queue in a day or two, so the newest days are partly done.
_REVIEWED_BY_AGE = ((1, 0.3), (2, 0.65), (None, 0.85))
_HALLUCINATED = {"answer": 0.025, "summarize": 0.02}  # otherwise 0.01
_HALLUCINATED_IN_SHIFT = 0.24  # answers about what the knowledge base does not cover
_UNSURE = 0.03
_REVIEWERS = ("ana", "kofi", "mei")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def load(sink: Sink, config: Config, days: float, rps: float, seed: int, end: dt.datetime, *,
         store: Store | None, clock=None, echo: Callable[[str], None] = _stderr,
         progress: Progress | None = None, key: bool = True) -> str | None:
    """Send ``days`` of demo traffic ending at ``end`` through ``sink`` and report the incidents.

    With ``store`` (events go to the store, not a remote API): also compute the
    metrics for the demo window, label reviews, compute drift, replay the alerts and (``key``)
    create the demo key. Returns that key in plain text the first time it is created, else None.
    """
    progress = progress if progress is not None else Progress("demo data")
    progress.plan(STEPS if store is not None else STEPS[:1])
    progress.start("traffic", expected_requests(days, rps))
    total = send(sink, generate(days, rps, end, seed), expected_requests(days, rps),
                  lambda n: progress.advance("traffic", n))
    progress.finish("traffic")
    echo(f"demo: {total.accepted} events stored ({total.duplicates} already there), {total.rejected} rejected")
    for inc in incidents(days, end):
        echo(f"  incident {inc['name']}: {inc['service']}/{inc['feature']} "
             f"{inc['start']:%Y-%m-%d %H:%M} to {inc['end']:%Y-%m-%d %H:%M} UTC: {inc['what']}")
    if store is None:
        return None  # a remote server computes its own metrics, and its keys are not ours to create
    clock = clock or SystemClock()
    compute(store, config, clock, days, end, sink, echo, progress)
    return demo_key(store, clock, echo) if key else None


def send(sink: Sink, events, expected: int, on_requests: Callable[[int], None] | None = None) -> IngestResult:
    total = IngestResult()
    buffers: dict[str, list] = {"requests": [], "feedback": []}
    bar = tqdm(total=expected, unit="req", desc="demo traffic", file=sys.stderr, mininterval=0.5,
               disable=expected < _BATCH)

    def flush(kind: str) -> None:
        buf = buffers[kind]
        if buf:
            total.add(sink(kind, buf))
            if kind == "requests":
                bar.update(len(buf))
                if on_requests:
                    on_requests(len(buf))
            buffers[kind] = []

    for kind, event in events:
        buffers[kind].append(event)
        if len(buffers[kind]) >= _BATCH:
            if kind == "feedback":
                flush("requests")  # requests first, so feedback never reaches the sink before its request
            flush(kind)
    flush("requests")
    flush("feedback")
    bar.close()
    return total


def compute(store: Store, config: Config, clock, days: float, end: dt.datetime, sink: Sink,
            echo: Callable[[str], None], progress: Progress) -> None:
    """Everything the pages show for the demo window, in two lanes (see the module docstring)."""
    jobs = build_jobs(store, config, clock)
    since = end - dt.timedelta(days=days)
    errors: list[BaseException] = []

    def lane(steps: list[tuple[str, Callable[[], None]]]) -> None:
        for name, work in steps:
            try:
                work()
                progress.finish(name)
            except BaseException as exc:  # reported by compute(); the other lane goes on
                progress.fail(name, f"{type(exc).__name__}: {exc}")
                log.exception("demo step %s failed", name)
                errors.append(exc)
                return

    def run_jobs(step: str, names: list[str]) -> None:
        names = [n for n in names if n in jobs]
        progress.start(step, len(names))
        for name in names:
            _run_job(jobs[name], since, echo)
            progress.advance(step)

    def reviews() -> None:
        progress.start("reviews", 3)
        if "hallucination_sample" in jobs:
            _run_job(jobs["hallucination_sample"], since, echo)
        progress.advance("reviews")
        n = label_reviews(store, sink, days, end)
        echo(f"  reviews: {n} sampled answers labelled by simulated reviewers")
        progress.advance("reviews")
        if "hallucination" in jobs:
            _run_job(jobs["hallucination"], since, echo)
        if "releases" in jobs:  # with the reviewers' labels: releases are judged on hallucinations too
            _run_job(jobs["releases"], since, echo)

    def alert_history() -> None:
        if config.drift.enabled:
            shift_drift(store, config, clock, days, end, echo)
        if "alerts" in jobs:
            times = replay_times(days, end)
            progress.start("alerts", len(times))
            n = jobs["alerts"].replay(times, on_step=lambda: progress.advance("alerts"))
            echo(f"  alerts: {n} transitions over the demo incidents (no notifications sent)")
        if "incident_kpis" in jobs:
            _run_job(jobs["incident_kpis"], since, echo)

    def drift() -> None:
        if config.drift.enabled:
            daily_drift(store, config, clock, days, end, echo, progress)

    def metrics() -> None:
        spans = fine_spans(days, end)
        progress.start("metrics", 5 + len(spans))
        sli = jobs["sli"]
        sli.windows = {k: v for k, v in SLI_WINDOWS.items() if v >= 3600}
        _run_job(sli, since, echo)
        progress.advance("metrics")
        sli.windows = {k: v for k, v in SLI_WINDOWS.items() if v < 3600}
        for lo, hi in spans:
            _run_job(sli, lo, echo, now=hi + config.jobs.grace)
            progress.advance("metrics")
        jobs["slo"].step = 300
        for name in ("slo", "cost", "reconcile", "segment_regression"):
            _run_job(jobs[name], since, echo)
            progress.advance("metrics")

    first = [("metrics", metrics),
             ("reviews", reviews), ("alerts", alert_history)]
    second = [("drift", drift), ("grounding", lambda: run_jobs("grounding", ["grounding_proxy"]))]
    other = threading.Thread(target=lane, args=(second,), name="demo-drift", daemon=True)
    other.start()
    lane(first)
    other.join()
    if errors:
        raise errors[0]


def fine_spans(days: float, end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """Where the demo's history gets minute windows (1m, 5m): the last day and a half, which the 24h
    period charts, and each incident with two hours either side, which the incident explorer charts.
    Elsewhere the history has hourly and daily windows; the scheduler writes every window from then on."""
    start, margin = end - dt.timedelta(days=days), dt.timedelta(hours=2)
    spans = sorted([(max(start, i["start"] - margin), min(end, i["end"] + margin)) for i in incidents(days, end)
                    if not i["daily"]]
                   + [(max(start, end - dt.timedelta(hours=36)), end)])
    merged: list[list[dt.datetime]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def _run_job(job, since: dt.datetime, echo: Callable[[str], None], now: dt.datetime | None = None) -> None:
    result = job.run(now=now, since=since)
    echo(f"  {job.name}: {result.status}, {result.rows} points in {result.duration_ms / 1000:.1f} s"
         + (f": {result.error}" if result.error else ""))


def replay_times(days: float, end: dt.datetime) -> list[dt.datetime]:
    """When to evaluate the alert rules: around each incident (overlapping spans merged), then at ``end``.

    Past an incident's end for as long as its alerts may hold: the slow SLO ticket's 6h short window,
    then its keep_firing_for, then a margin."""
    step, lead, near = dt.timedelta(minutes=2), dt.timedelta(minutes=15), dt.timedelta(minutes=60)
    tail = dt.timedelta(hours=8)
    spans: list[list[dt.datetime]] = []
    for inc in [i for i in incidents(days, end) if not i["daily"]]:  # a daily verdict is evaluated at the end
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


BACKFILL_SAMPLE = 500  # requests a side in the demo's daily drift of its history (drift.sample_size from then on)


def daily_drift(store: Store, config: Config, clock, days: float, end: dt.datetime, echo: Callable[[str], None],
                progress: Progress) -> None:
    """Drift of every feature over every whole UTC day of the window (the 1d window only, each against
    the days before it as the job's reference says), newest day first, so the drift charts show the
    topic shift rising on its day against the days before it. The scheduler computes the days after.

    Samples of at most BACKFILL_SAMPLE a side (each report says its sizes): the 70 comparisons of a 14-day
    demo were half of what a new user waited for, most of it encoding texts and the picture of each."""
    # Targets keep their reference and whether they are enabled; their own windows give way to the day.
    targets = [t.model_copy(update={"windows": None, "every": None}) for t in config.drift.targets]
    daily = config.model_copy(update={"drift": config.drift.model_copy(update={
        "windows": ["1d"], "every": None, "targets": targets,
        "sample_size": min(config.drift.sample_size, BACKFILL_SAMPLE)})})
    job = DriftJob(store, daily, clock, config.jobs.schedule.drift)
    first, last = floor_to(end - dt.timedelta(days=days), 86400), floor_to(end, 86400)
    plan = sorted(job.plan(first, last), key=lambda p: (-p[4].timestamp(), p[0], p[1]))
    progress.start("drift", len(plan))
    rows = 0
    for service, feature, window, _, t in plan:
        rows += job.compare_one(service, feature, window, t)
        progress.advance("drift")
    echo(f"  drift (1d): {rows} points over {len(plan)} comparisons")


def label_reviews(store: Store, sink: Sink, days: float, end: dt.datetime) -> int:
    """Label most of the sampled answers as simulated reviewers would, through the ingest path.

    Coverage falls with recency (``_REVIEWED_BY_AGE``); answers of the topic-shifted feature during the
    shift are hallucinated far more often (the knowledge base has nothing on the new topics). Each
    decision is a hash of the request id, so a rerun labels the same items the same way and the ingest
    drops the repeats. Returns how many labels were sent."""
    shift = next((i for i in incidents(days, end) if i["name"] == "topic shift"), None)
    events = []
    for request_id, ts, service, feature in review.queued(store, end - dt.timedelta(days=days), end):
        age = (end - ts) / dt.timedelta(days=1)
        share = next(s for limit, s in _REVIEWED_BY_AGE if limit is None or age < limit)
        draw = _draws(request_id)
        if draw[0] >= share:
            continue
        in_shift = (shift is not None and (service, feature) == (shift["service"], shift["feature"])
                    and shift["start"] <= ts < shift["end"])
        p = _HALLUCINATED_IN_SHIFT if in_shift else _HALLUCINATED.get(feature, 0.01)
        label = "unsure" if draw[1] < _UNSURE else ("hallucinated" if draw[2] < p else "grounded")
        reviewer = _REVIEWERS[int(draw[3] * len(_REVIEWERS))]
        at = min(end - dt.timedelta(minutes=1), ts + dt.timedelta(hours=2 + 30 * draw[4]))
        events.append({"feedback_id": hashlib.sha256(f"review|{request_id}|{reviewer}".encode()).hexdigest()[:32],
                       "request_id": request_id, "ts": iso_utc(at), "kind": "hallucination", "label": label,
                       "source": "reviewer", "reviewer": reviewer})
    for k in range(0, len(events), _BATCH):
        sink("feedback", events[k:k + _BATCH])
    return len(events)


def _draws(request_id: str) -> list[float]:
    """Five uniform numbers in [0, 1) from the request id."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=20).digest()
    return [int.from_bytes(digest[k:k + 4], "big") / 2 ** 32 for k in range(0, 20, 4)]


def shift_drift(store: Store, config: Config, clock, days: float, end: dt.datetime,
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
    job = DriftJob(store, pinned, clock, config.jobs.schedule.drift)
    echo(f"computing drift of {shift['service']}/{shift['feature']} around the topic shift ({len(hours)} hours) ...")
    rows = 0
    for h in tqdm(hours, unit="cmp", desc="drift comparisons", file=sys.stderr, mininterval=0.5):
        rows += job.compare_one(shift["service"], shift["feature"], "1h", h)
    echo(f"  drift (1h, topic shift): {rows} points")


def demo_key(store: Store, clock, echo: Callable[[str], None]) -> str | None:
    keys = KeyStore(store, clock, 0)
    if any(k.name == _KEY_NAME for k in keys.list()):
        return None  # created by an earlier run; its secret was shown then and is not stored
    _, plain = keys.create(_KEY_NAME, ["ingest", "read"])
    echo("API key for the demo (scopes ingest, read); shown once:")
    return plain
