"""Reading ``metric_points``: the series API (GET /v1/metrics) and the Prometheus exposition (GET /metrics)."""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from monitor.foundation.auth import require
from monitor.foundation.clock import iso_utc
from monitor.foundation.http import RETRY_AFTER_SECONDS, ApiError, time_arg
from monitor.foundation.metrics import LABELS, METRICS, SEGMENT_SERIES, window_name
from monitor.foundation.rollups import segment_dimensions
from monitor.foundation.storage import StoreQueryError
from monitor.foundation.tables import job_runs, metric_points

bp = Blueprint("series", __name__)
log = logging.getLogger(__name__)
MAX_POINTS = 100_000
RESERVED = {"metric", "from", "to", "step", "by"}


def allowed_windows(metric: str, config) -> list[str]:
    job, windows, _ = METRICS[metric]
    out = [w for w in windows if w != "period"]
    if "period" in windows:
        out += sorted({window_name(int(s.period.total_seconds())) for s in config.slos} - set(out))
    return out


@bp.get("/v1/metrics")
@require("read")
def get_series():
    svc = current_app.extensions["nlpmon"]
    metric = request.args.get("metric")
    if not metric:
        raise ApiError(400, "bad_request", "metric: required (see docs/metrics.md)")
    if metric not in METRICS:
        raise ApiError(400, "bad_request", f"metric: unknown metric {metric!r}")
    segments = segment_dimensions(svc.config)
    labels = LABELS + segments
    filters = {}
    for key, value in request.args.items():
        if key in RESERVED:
            continue
        if key not in labels:
            raise ApiError(400, "bad_request", f"{key}: unknown label; labels are {', '.join(labels)}")
        filters[key] = value
    by = [b.strip() for b in request.args.get("by", "").split(",") if b.strip()]
    for b in by:
        if b not in labels:
            raise ApiError(400, "bad_request", f"by: unknown label {b!r}; labels are {', '.join(labels)}")
    windows = allowed_windows(metric, svc.config)
    if set(segments) & (set(by) | set(filters)):  # segment series: fewer metrics and windows
        windows = [w for w in windows if w in SEGMENT_SERIES.get(metric, ())]
        if not windows:
            raise ApiError(400, "bad_request", f"by: {metric} is not kept per segment; these are: "
                                              f"{', '.join(SEGMENT_SERIES)}")
    step = request.args.get("step", windows[0])
    if step not in windows:
        raise ApiError(400, "bad_request", f"step: {metric} is kept for windows {', '.join(windows)}, not {step!r}")
    now = svc.clock.now()
    to = time_arg("to", now)
    frm = time_arg("from", to - dt.timedelta(days=1))
    if frm > to:
        raise ApiError(400, "bad_request", "from: must not be after to")
    # A series is chosen by its exact label set: the filters plus `by`, so service=x
    # gives the service-level series, and by=model its per-model breakdown.
    keys = sorted(set(filters) | set(by))
    if METRICS[metric][0] == "slo":
        keys = None  # SLO series carry fixed labels; filters narrow them
    rows = metric_points.series(svc.store, metric, step, frm, to, filters, keys, MAX_POINTS + 1)
    if keys is None:  # an SLO's series, or its per-segment ones: the segments asked for, and only those
        asked = set(by) | set(filters)
        rows = [r for r in rows if set(by) <= set(r[0]) and not (set(r[0]) & set(segments)) - asked]
    series: dict[tuple, dict] = {}
    for labels, ts, value in rows[:MAX_POINTS]:
        key = tuple(sorted(labels.items()))
        s = series.setdefault(key, {"labels": dict(key), "points": []})
        s["points"].append([iso_utc(ts), value])
    body = {"metric": metric, "window": step, "from": iso_utc(frm), "to": iso_utc(to), "help": METRICS[metric][2],
            "series": list(series.values())}
    if len(rows) > MAX_POINTS:
        body["truncated"] = True
    return jsonify(body)


# How /metrics exposes metric_points series. The catalogue names (METRICS) stay as they are: they
# are the contract of GET /v1/metrics and of the alert rules. Prometheus has conventions of its own,
# which `promtool check metrics` enforces (tests/test_promtool.py runs it on the real output) and
# which the alerts and dashboards of other tools assume, so the exposition renames, here only:
# - base units: milliseconds are exposed as seconds (value / 1000);
# - quantiles are a `quantile` label of one family per quantity (nlpmon_latency_seconds{quantile=
#   "0.95"}), not one name per quantile. The family is typed summary because promtool rejects a
#   `quantile` label on any other type; it has no _sum or _count (both optional in the format:
#   the requests of a window are nlpmon_requests_in_window), and like every series here each
#   quantile covers the window in its `window` label;
# - a count of things in the window ends in _in_window: a bare plural (nlpmon_requests) reads as a
#   counter missing its _total, and rate() of a windowed count means nothing. (_total belongs to
#   counters, _count/_sum/_bucket to summaries and histograms; promtool checks both.)
# Every other metric is a gauge named nlpmon_<catalogue name>: ratios, scores, _usd and _seconds
# pass promtool as they are. docs/metrics.md lists the exposed names.


@dataclass(frozen=True)
class Exposed:
    family: str  # the exposed metric family
    type: str = "gauge"
    labels: tuple[tuple[str, str], ...] = ()  # added to the series' own labels
    divisor: float = 1  # exposed value = value / divisor
    help: str = ""  # for a family several catalogue metrics share; else the catalogue's help


_LATENCY = "Latency of the requests in the window (label window), seconds: t-digest quantiles (label quantile)."
_TTFT = ("Time to first token of the streaming requests in the window (label window), seconds: t-digest quantiles "
         "(label quantile).")
_COUNTS = ("requests", "cardinality_overflow_requests", "input_tokens", "output_tokens", "cached_input_tokens",
           "unpriced_requests", "successful_outcomes", "review_samples", "hallucination_reviews",
           "embedding_drift_reference_samples", "embedding_drift_current_samples", "ungrounded_proxy_answers",
           "feedback_attributed", "rollup_buckets_repaired", "rollup_rows_repaired", "incidents")

# catalogue name -> how /metrics exposes it (names not listed: a gauge nlpmon_<name>, as it is).
EXPOSED: dict[str, Exposed] = {
    "latency_p50_ms": Exposed("nlpmon_latency_seconds", "summary", (("quantile", "0.5"),), 1000, _LATENCY),
    "latency_p90_ms": Exposed("nlpmon_latency_seconds", "summary", (("quantile", "0.9"),), 1000, _LATENCY),
    "latency_p95_ms": Exposed("nlpmon_latency_seconds", "summary", (("quantile", "0.95"),), 1000, _LATENCY),
    "latency_p99_ms": Exposed("nlpmon_latency_seconds", "summary", (("quantile", "0.99"),), 1000, _LATENCY),
    "ttft_p50_ms": Exposed("nlpmon_time_to_first_token_seconds", "summary", (("quantile", "0.5"),), 1000, _TTFT),
    "ttft_p95_ms": Exposed("nlpmon_time_to_first_token_seconds", "summary", (("quantile", "0.95"),), 1000, _TTFT),
    **{name: Exposed(f"nlpmon_{name}_in_window") for name in _COUNTS},
}


def exposed(metric: str) -> Exposed:
    """How catalogue metric ``metric`` appears on /metrics."""
    e = EXPOSED.get(metric) or Exposed(f"nlpmon_{metric}")
    return e if e.help else Exposed(e.family, e.type, e.labels, e.divisor, METRICS[metric][2])


def metric_families(rows) -> list[Metric]:
    """The /metrics families of (metric, window, labels, value) rows, as EXPOSED says; sorted, so scrapes diff."""
    families: dict[str, Metric] = {}
    for metric, window, labels, value in rows:
        if metric not in METRICS:
            continue
        e = exposed(metric)
        fam = families.get(e.family)
        if fam is None:
            fam = families[e.family] = Metric(e.family, e.help, e.type)
        fam.add_sample(e.family, {**labels, "window": window, **dict(e.labels)}, value / e.divisor)
    for fam in families.values():
        fam.samples.sort(key=lambda s: sorted(s.labels.items()))
    return [families[name] for name in sorted(families)]


class _Collector:
    """Latest value of every series, plus nlpmon's own counters, collected at scrape time."""

    def __init__(self, services):
        self.svc = services

    def collect(self):
        store, now = self.svc.store, self.svc.clock.now()
        # Per-segment series stay in GET /v1/metrics: a Prometheus scrape of every language and tenant of every
        # feature would grow with the traffic's variety, and /metrics must stay a bounded page.
        yield from metric_families(metric_points.latest_of_every_series(store, now - dt.timedelta(days=2),
                                                                        segment_dimensions(self.svc.config)))
        yield from self._own()

    def _own(self):
        ingestor = self.svc.ingestor_if_built()
        counters = ingestor.counters if ingestor else {"requests": 0, "feedback": 0, "rejected": 0, "duplicates": 0,
                                                       "otlp_spans_ignored": 0, "otlp_late_content": 0}
        ingested = Metric("nlpmon_ingested_events", "Events stored by this process since it started.", "counter")
        for kind in ("requests", "feedback"):
            ingested.add_sample("nlpmon_ingested_events_total", {"kind": kind}, counters[kind])
        yield ingested
        for name, key, text in (("rejected_events", "rejected", "Rows rejected by validation since start."),
                                ("duplicate_events", "duplicates", "Replayed events ignored since start."),
                ("otlp_spans_ignored", "otlp_spans_ignored",
                 "OpenTelemetry spans that are not model calls (HTTP, DB...), ignored since start."),
                ("otlp_late_content", "otlp_late_content",
                 "OpenTelemetry content log records that came after their span was stored as a request (past "
                 "otlp.logs_wait), so their texts are not in it, since start.")):
            m = Metric(f"nlpmon_{name}", text, "counter")
            m.add_sample(f"nlpmon_{name}_total", {}, counters[key])
            yield m
        overflow = Metric("nlpmon_cardinality_overflow_events",
                          "Requests this process stored under cardinality.overflow_value, per service and dimension.",
                          "counter")
        for (service, dimension), n in sorted((ingestor.budget.overflowed if ingestor else {}).items()):
            overflow.add_sample("nlpmon_cardinality_overflow_events_total", {"service": service, "dimension": dimension},
                                n)
        yield overflow
        # An interrupted run (killed before it finished) is a failed run; while a run is going, the
        # gauge keeps the outcome of the run before it, so an alert on it does not flap with every tick.
        runs = job_runs.latest(self.svc.store, self.svc.clock.now())
        duration = Metric("nlpmon_job_last_duration_seconds", "Duration of the job's last finished run.", "gauge")
        failed = Metric("nlpmon_job_last_run_failed",
                        "1 when the job's last ended run failed or was interrupted.", "gauge")
        failures = Metric("nlpmon_job_failures", "Failed and interrupted runs of the job (within retention).",
                          "counter")
        success = Metric("nlpmon_job_last_success_timestamp_seconds", "When the job last succeeded.", "gauge")
        for job, run in runs.items():
            if run.last_duration_ms is not None:
                duration.add_sample(duration.name, {"job": job}, run.last_duration_ms / 1000)
            failed.add_sample(failed.name, {"job": job}, 1.0 if run.outcome in job_runs.FAILED else 0.0)
            failures.add_sample("nlpmon_job_failures_total", {"job": job}, run.failures)
            if run.last_ok_ms:
                success.add_sample(success.name, {"job": job}, run.last_ok_ms / 1000)
        yield from (duration, failed, failures, success)


def exposition(services) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(services))
    from prometheus_client import ProcessCollector
    ProcessCollector(namespace="nlpmon", registry=registry)
    return generate_latest(registry)


PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@bp.get("/metrics")
@require("read")
def prometheus_metrics():
    return Response(exposition(current_app.extensions["nlpmon"]), mimetype=None, content_type=PROMETHEUS_TYPE)


def metrics_only_app(services):
    """A bare WSGI app for ``metrics.port``: /metrics without a key, nothing else."""
    def app(environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only /metrics is served on this port\n"]
        try:
            body = exposition(services)
        except StoreQueryError as exc:  # a bug: say so, and keep the details in the log
            reference = uuid.uuid4().hex[:12]
            log.error("store rejected a query (reference %s): %s; statement: %s", reference, exc, exc.sql[:2000])
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [f"internal error (reference {reference})\n".encode()]
        except Exception:  # the store is down: say so, as Prometheus expects a non-200
            start_response("503 Service Unavailable",
                           [("Content-Type", "text/plain"), ("Retry-After", str(RETRY_AFTER_SECONDS))])
            return [b"store unavailable\n"]
        start_response("200 OK", [("Content-Type", PROMETHEUS_TYPE)])
        return [body]
    return app
