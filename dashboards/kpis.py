"""The overview's numbers: per service and feature, each KPI over a period, the period before it and its trend.

Request figures come from the rollups (the tables the ``sli`` and ``cost`` jobs
read, with the same SELECTs; per (service, feature) only unless a filter needs
another dimension), so a period's p95 is merged from t-digest states rather than
averaged from hourly p95s, and the ``environment`` filter works although no
metric series carries it. A period's feedback comes from the feedback rows (they
carry their request's time, dimensions and status) with the rollups' conditions,
its trend from the feedback rollups. Hallucination rates come from the review
queue, drift from the drift reports, SLO budgets from the ``slo`` job's series,
incidents from the alert history.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from dashboards.scope import SCOPE_LABELS, in_scope
from monitor.foundation.filters import where_equal
from monitor.foundation.rollups import (
    DIMENSIONS,
    FEATURE_DIMENSIONS,
    FEEDBACK_SELECT,
    REQUEST_SELECT,
    REQUEST_SUMS,
    feedback_metrics,
    request_metrics,
    rollup_for,
    success_status_sql,
    successful_outcomes,
    segment_dimensions,
    segment_where,
    negative_when,
    unhappy_sql,
)
from monitor.foundation.stats import ratio, wilson
from monitor.foundation.tables import alert_history, drift_reports, feedback, metric_points, review, rollups
from monitor.foundation.tables.alert_history import IncidentSpan

PERIODS = {"24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7), "30d": dt.timedelta(days=30),
           "90d": dt.timedelta(days=90)}
FILTERS = ("service", "feature", "model", "prompt_version", "environment")
# The overview's KPI columns: (figure, label, unit, higher is better or None, the detail chart it links to).
KPI_COLUMNS = (
    ("requests", "Requests", "count", None, "requests"),
    ("task_success_rate", "Task success", "pct", True, "task_success_rate"),
    ("thumbs_up_rate", "Thumbs up", "pct", True, "thumbs_up_rate"),
    ("cost_per_successful_outcome_usd", "Cost / success", "usd", False, "cost_per_successful_outcome_usd"),
    ("cost_per_request_usd", "Cost / request", "usd", False, "cost_per_request_usd"),
    ("latency_p95_ms", "p95 latency", "ms", False, "latency_p95_ms"),
    ("ttft_p95_ms", "TTFT p95", "ms", False, "ttft_p95_ms"),
    ("error_rate", "Error rate", "pct", False, "error_rate"),
)
# Trend buckets, finest first; a period gets the finest that gives at most MAX_BUCKETS points
# (a sparkline shows no more; 30 days of day buckets also read 30x fewer rollup rows than hours).
BUCKETS = (300, 3600, 6 * 3600, 86400)
MAX_BUCKETS = 60
TOTAL = ("", "")  # the (service, feature) key of the all-traffic row


class PeriodError(ValueError):
    """A period or filter the user gave that cannot be used; the message names the parameter."""


@dataclass(frozen=True)
class Period:
    name: str
    start: dt.datetime
    end: dt.datetime

    @property
    def span(self) -> dt.timedelta:
        return self.end - self.start

    @property
    def previous(self) -> "Period":
        return Period("previous", self.start - self.span, self.start)

    @property
    def bucket_seconds(self) -> int:
        for b in BUCKETS:
            if self.span.total_seconds() / b <= MAX_BUCKETS:
                return b
        return BUCKETS[-1]


def _minute(ts: dt.datetime) -> dt.datetime:
    return ts.replace(second=0, microsecond=0)


def make_period(name: str, now: dt.datetime, start: dt.datetime | None = None,
                end: dt.datetime | None = None) -> Period:
    """``name`` one of PERIODS ending now, or ``custom`` with start and end (rounded to whole minutes)."""
    if name in PERIODS:
        stop = _minute(now) + dt.timedelta(minutes=1)  # the running minute counts: "now" includes it
        return Period(name, stop - PERIODS[name], stop)
    if name != "custom":
        raise PeriodError(f"period: must be one of {', '.join(PERIODS)} or custom, not {name!r}")
    if start is None or end is None:
        raise PeriodError("from: a custom period needs from and to")
    start, end = _minute(start), _minute(end)
    if end <= start:
        raise PeriodError("from: must be before to (at least one minute apart)")
    if end - start > dt.timedelta(days=400):
        raise PeriodError("from: a period may span at most 400 days")
    return Period("custom", start, end)


def filter_names(config) -> tuple[str, ...]:
    """Every filter the pages take: FILTERS and each segment dimension of this deployment."""
    return FILTERS + segment_dimensions(config)


def segment_of(config, filters: dict[str, str]) -> tuple[str, str] | None:
    """The (dimension, value) of the one segment ``filters`` select, or None; a PeriodError naming the
    parameter for a second segment or a filter a segment cannot combine with."""
    chosen = [d for d in segment_dimensions(config) if filters.get(d)]
    if not chosen:
        return None
    if len(chosen) > 1:
        raise PeriodError(f"{chosen[1]}: filter by one segment at a time (also given: {chosen[0]})")
    # The segment rollups count per (service, feature) and one segment dimension: a segment combines with those.
    other = [k for k in FILTERS if filters.get(k) and k not in FEATURE_DIMENSIONS]
    if other:
        raise PeriodError(f"{other[0]}: cannot be combined with the segment filter {chosen[0]} (segments are "
                          f"counted per service and feature, not per {other[0]})")
    return chosen[0], filters[chosen[0]]


@dataclass
class Row:
    service: str
    feature: str
    current: dict = field(default_factory=dict)
    previous: dict = field(default_factory=dict)
    trend: dict = field(default_factory=lambda: defaultdict(list))  # metric -> [(bucket start, value)]
    drift: dict | None = None
    slos: list = field(default_factory=list)
    incidents: list[IncidentSpan] = field(default_factory=list)           # started in the period
    previous_incidents: list[IncidentSpan] = field(default_factory=list)  # started in the previous one
    first_seen: dt.datetime | None = None  # the start of the first hour with requests (dashboards.compare)
    baseline_start: dt.datetime | None = None  # where "previous" starts

    @property
    def is_total(self) -> bool:
        return (self.service, self.feature) == TOTAL


def _key(r: dict) -> tuple[str, str]:
    return TOTAL if r["g"] else (r["service"], r["feature"])


def overview(store, config, period: Period, filters: dict[str, str], baseline: Period | None = None,
             trend: bool = True) -> list[Row]:
    """The overview's rows: all traffic first, then each (service, feature) with requests in either period.

    ``baseline`` is what "previous" means: by default the period just before, for an
    incident the same window a week earlier. ``trend`` False leaves the sparklines out.
    """
    rows: dict[tuple, Row] = {}

    def row(key) -> Row:
        if key not in rows:
            rows[key] = Row(*key)
        return rows[key]

    segment = segment_of(config, filters)
    where, params = where_equal({k: filters.get(k) for k in FILTERS}, FILTERS)
    prev = baseline or period.previous
    feedback_where = where
    if segment:
        family = "segments"
        seg_where, seg_params = segment_where(*segment, rows=False)
        feedback_where += segment_where(*segment, rows=True)[0]
        where += seg_where
        params.update(seg_params)
    else:
        # Without a filter on another dimension, the per-(service, feature) rollups answer with far fewer states.
        family = ("requests" if any(filters.get(k) for k in FILTERS if k not in FEATURE_DIMENSIONS)
                  else "requests_by_feature")
    _requests(store, config, period, prev, family, trend, where, params, row)
    if trend and not segment:  # the feedback rollups have no segments: a segment's sparklines are its requests'
        _trend_feedback(store, period, where, params, row)
    _feedback(store, config, period, prev, feedback_where, params, row, rollup=not segment)
    for r in rows.values():
        for side in (r.current, r.previous):
            if "success_status" in side:
                outcomes = successful_outcomes(side.pop("success_status"), side.pop("unhappy", 0))
                side["successful_outcomes"] = outcomes
                side["cost_per_successful_outcome_usd"] = ratio(side["cost_usd"], outcomes)
    if segment:
        _segment_hallucination(store, period, prev, feedback_where, params, row)
    else:  # a segment's rows leave out what only the whole feature has: its drift and its SLOs
        _hallucination(store, period, prev, filters, row)
        _drift(store, period, filters, rows)
        _slos(store, config, period, filters, rows)
    _incidents(store, period, prev, filters, row, SCOPE_LABELS + ((segment[0],) if segment else ()))
    firsts = rollups.first_hours(store, family, where, params)
    for key, r in rows.items():
        r.baseline_start = prev.start
        r.first_seen = min(firsts.values(), default=None) if key == TOTAL else firsts.get(key)
        for points in r.trend.values():
            points.sort()
    ordered = sorted(rows.values(), key=lambda r: (not r.is_total, r.service, r.feature))
    return [r for r in ordered if r.is_total or r.current.get("requests") or r.previous.get("requests")]


def _requests(store, config, period: Period, prev: Period, family: str, trend: bool, where: str, params: dict,
              row) -> None:
    """Request figures of both periods, then the current period's trend, from the ``family`` rollups."""
    columns = "service, feature, " + ", ".join(REQUEST_SUMS + ("latency_q", "ttft_q"))
    ok_expr = success_status_sql(config.outcomes.success.statuses)
    for r in rollups.per_feature(store, [(period.start, period.end), (prev.start, prev.end)], family, columns,
                                 f"{REQUEST_SELECT}, sum(cost_usd) AS cost, {ok_expr} AS success_status", where, params):
        target = row(_key(r)).current if r["cur"] else row(_key(r)).previous
        target.update(request_metrics(r))
        target["cost_usd"] = r["cost"]
        target["success_status"] = r["success_status"]
        target["cost_per_request_usd"] = ratio(r["cost"], r["requests"])
        target["ttft_requests"] = r["ttft_count"]
    if not trend:
        return
    for r in rollups.trend(store, rollup_for(period.bucket_seconds, family), f"{REQUEST_SELECT}, sum(cost_usd) AS cost",
                           period.start, period.end, period.bucket_seconds, where, params):
        m = request_metrics(r)
        points = row(_key(r)).trend
        for name in ("requests", "error_rate", "latency_p95_ms", "ttft_p95_ms"):
            points[name].append((r["t"], m[name]))
        points["cost_per_request_usd"].append((r["t"], ratio(r["cost"], r["requests"])))


def _feedback(store, config, period: Period, prev: Period, where: str, params: dict, row, rollup: bool) -> None:
    """Feedback rates and the unhappy requests behind cost per successful outcome, for both periods.

    The counts come from the feedback rollups (``rollup``; they hold no segment) or the feedback rows, which
    carry their request's time, dimensions and status (copied at ingest), with the rollups' own conditions;
    the unhappy requests, a distinct count, from the rows of negative feedback with the one unhappy rule
    (monitor.foundation.rollups.unhappy_sql, which the cost job reads over the rollups' bitmaps).
    """
    success = config.outcomes.success
    counts = ("thumbs_up", "thumbs_down", "task_success", "task_failure")
    spans = [(period.start, period.end), (prev.start, prev.end)]
    unhappy = unhappy_sql(success.negative_feedback, rows=True)
    args = {**params, "statuses": list(success.statuses)}
    if rollup:
        found = (rollups.feedback_counts(store, spans, counts, where, params)
                 + feedback.period_counts(store, spans, (), unhappy,
                                          f"{where} AND ({negative_when(success.negative_feedback)})", args))
    else:
        found = feedback.period_counts(store, spans, counts, unhappy, where, args)
    totals: dict[tuple, dict] = defaultdict(lambda: defaultdict(int))
    for r in found:
        for key in ((r["service"], r["feature"]), TOTAL):  # a request has one service and feature: sums are exact
            acc = totals[(key, r["cur"])]
            for c in counts + ("unhappy",):
                acc[c] += r.get(c, 0)
    for (key, cur), acc in totals.items():
        target = row(key).current if cur else row(key).previous
        target.update(feedback_metrics(acc))
        target["unhappy"] = acc["unhappy"]
        target["feedback"] = sum(acc[c] for c in counts)
        target["thumbs"] = acc["thumbs_up"] + acc["thumbs_down"]
        target["task_labels"] = acc["task_success"] + acc["task_failure"]


def _trend_feedback(store, period: Period, where: str, params: dict, row) -> None:
    for r in rollups.trend(store, rollup_for(period.bucket_seconds, "feedback"), FEEDBACK_SELECT, period.start,
                           period.end, period.bucket_seconds, where + " AND service != ''", params):
        m = feedback_metrics(r)
        trend = row(_key(r)).trend
        trend["thumbs_up_rate"].append((r["t"], m["thumbs_up_rate"]))
        trend["task_success_rate"].append((r["t"], m["task_success_rate"]))


def _hallucination(store, period: Period, prev: Period, filters: dict, row) -> None:
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for svc, feat, h, *counts in review.counts(store, prev.start, period.end):
        if (filters.get("service") and svc != filters["service"]) or (
                filters.get("feature") and feat != filters["feature"]):
            continue
        at = dt.datetime.fromtimestamp(h, dt.timezone.utc)
        # An hour may be in neither (between a baseline a week back and its window) or in both (overlapping).
        for cur in [c for c, p in ((True, period), (False, prev)) if p.start <= at < p.end]:
            for key in ((svc, feat), TOTAL):
                acc = sums[(key, cur)]
                for i, c in enumerate(counts):
                    acc[i] += c
    for (key, cur), (sampled, reviewed, halluc, grounded) in sums.items():
        target = row(key).current if cur else row(key).previous
        target["review_samples"] = sampled
        target["review_coverage"] = ratio(reviewed, sampled)
        _hallucination_figures(target, halluc, grounded)


def _segment_hallucination(store, period: Period, prev: Period, where: str, params: dict, row) -> None:
    """A segment's hallucination rate: its reviewed requests' verdicts (each its reviewers' majority), from
    the labels, which carry their request's segments (the review queue does not)."""
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for r in feedback.hallucination_verdicts(store, [(period.start, period.end), (prev.start, prev.end)],
                                             where, params):
        for key in ((r["service"], r["feature"]), TOTAL):
            sums[(key, r["cur"])][0] += r["hallucinated"]
            sums[(key, r["cur"])][1] += r["grounded"]
    for (key, cur), (hallucinated, grounded) in sums.items():
        _hallucination_figures(row(key).current if cur else row(key).previous, hallucinated, grounded)


def _hallucination_figures(target: dict, hallucinated: int, grounded: int) -> None:
    n = hallucinated + grounded
    target["hallucination_reviews"] = n
    if n:
        low, high = wilson(hallucinated, n)
        target.update(hallucination_rate=hallucinated / n, hallucination_rate_low=low,
                      hallucination_rate_high=high)


def _drift(store, period: Period, filters: dict, rows: dict) -> None:
    """The newest drift report per (service, feature) in the period, preferring full-day windows."""
    for r in drift_reports.latest_per_stratum(store, period.start, period.end):
        key = (r.service, r.feature)
        if key in rows:
            rows[key].drift = {"report_id": r.report_id, "status": r.status, "detected": r.detected,
                               "ts": r.last_ts, "window": r.last_window}


def _slos(store, config, period: Period, filters: dict, rows: dict) -> None:
    if not config.slos:
        return
    # The slo job writes every minute: the newest value is in the last hour unless the job stopped.
    latest = metric_points.latest_by_label(store, "slo_error_budget_remaining", "slo",
                                           max(period.start, period.end - dt.timedelta(hours=1)), period.end)
    if any(slo.name not in latest for slo in config.slos):
        latest = metric_points.latest_by_label(store, "slo_error_budget_remaining", "slo", period.start, period.end)
    for slo in config.slos:
        entry = {"name": slo.name, "objective": float(slo.objective), "sli": slo.sli,
                 "budget_remaining": latest.get(slo.name)}
        for key, r in rows.items():
            if r.is_total or r.service != slo.service or (slo.feature and r.feature != slo.feature):
                continue
            r.slos.append(entry)


def _incidents(store, period: Period, prev: Period, filters: dict, row, keys: tuple[str, ...]) -> None:
    for span in alert_history.incident_spans(store, prev.start, period.end):
        if prev.end <= span.start < period.start or not in_scope(span.labels, filters, keys):
            continue
        keys = [TOTAL]
        if span.labels.get("service") and span.labels.get("feature"):
            keys.append((span.labels["service"], span.labels["feature"]))
        for key in keys:
            (row(key).incidents if span.start >= period.start else row(key).previous_incidents).append(span)


def incident_figures(spans: list[IncidentSpan]) -> dict:
    """Count and mean time to resolve of these incidents, and how many still fire."""
    resolved = [(s.end - s.start).total_seconds() for s in spans if s.end is not None]
    return {"count": len(spans), "mttr_seconds": sum(resolved) / len(resolved) if resolved else None,
            "open": sum(1 for s in spans if s.end is None)}


def choices(store, config, period: Period) -> dict[str, list[str]]:
    """Values each filter can take in the days of the period and the one before, for the filter menus."""
    return {**rollups.dimension_values(store, FILTERS, period.previous.start, period.end),
            **rollups.segment_values(store, segment_dimensions(config), period.previous.start, period.end)}


def segment_choices(store, config, period: Period, scope: dict[str, str]) -> dict[str, list[str]]:
    """Values each segment dimension takes in the traffic ``scope`` (service, feature) selects, for menus."""
    return rollups.segment_values(store, segment_dimensions(config), period.previous.start, period.end, scope)


def overflow(store, config, period: Period) -> list[dict]:
    """Who went over the cardinality budget in the period: service, dimension and the requests
    counted under the overflow value, most first (the overview names them)."""
    return [{"service": s, "dimension": d, "requests": n}
            for s, d, n in rollups.overflow_in(store, period.start, period.end, DIMENSIONS,
                                               config.cardinality.overflow_value)]


# -- by segment --------------------------------------------------------------------------------
@dataclass
class SegmentRow:
    """One segment (a language, region, tenant or promoted tag value) of the traffic a page shows, over a
    period and its baseline: the figures dashboards.compare judges changes of, as for the overview's rows."""
    dimension: str
    value: str
    current: dict = field(default_factory=dict)
    previous: dict = field(default_factory=dict)
    first_seen: dt.datetime | None = None
    baseline_start: dt.datetime | None = None


SEGMENTS_SHOWN = 12  # values per dimension: a tenant table of 200 rows is read by nobody and costs 200 merges
FEEDBACK_KINDS = ("thumbs_up", "thumbs_down", "task_success", "task_failure")


def by_segment(store, config, period: Period, filters: dict[str, str],
               baseline: Period | None = None) -> dict[str, list[SegmentRow]]:
    """dimension -> the segments with the most requests (SEGMENTS_SHOWN) of the traffic ``filters`` (service,
    feature) select, most first: requests, error rate, p95 latency (of one feature only: a percentile over
    features that differ tenfold in latency says more about their mix than about the segment, and its
    merged states are most of the read) and cost per request from the segment rollups; thumbs-up and task
    success rates and the reviewers' hallucination rate (with its 95% interval) from the feedback rows; in
    the period and ``baseline`` (by default the period before)."""
    dims = segment_dimensions(config)
    prev = baseline or period.previous
    spans = [(period.start, period.end), (prev.start, prev.end)]
    scope = {k: filters.get(k) for k in FEATURE_DIMENSIONS}
    rows: dict[tuple[str, str], SegmentRow] = {}
    for r in rollups.segment_figures(store, spans, dims, scope, SEGMENTS_SHOWN, latency=bool(scope.get("feature"))):
        row = rows.setdefault((r["dimension"], r["value"]),
                              SegmentRow(r["dimension"], r["value"], baseline_start=prev.start))
        n = int(r["requests"])
        (row.current if r["span"] == 0 else row.previous).update(
            requests=n, error_rate=ratio(r["failures"], n),
            latency_p95_ms=r["latency_p95_ms"] if n and r["latency_p95_ms"] is not None else None,
            cost_per_request_usd=ratio(r["cost_usd"], n))
        row.first_seen = r["first_day"]  # coverage known to the day for segments (compare.covered)
    where, params = where_equal(scope, FEATURE_DIMENSIONS)
    for r in feedback.segment_counts(store, spans, FEEDBACK_KINDS, dims, where, params):
        row = rows.get((r["dimension"], r["value"]))
        if row is None:  # feedback of a segment outside the ones shown
            continue
        target = row.current if r["cur"] else row.previous
        target.update(feedback_metrics(r))
        target["thumbs"] = r["thumbs_up"] + r["thumbs_down"]
        target["task_labels"] = r["task_success"] + r["task_failure"]
        target["feedback"] = sum(r[c] for c in FEEDBACK_KINDS)
        _hallucination_figures(target, r.get("hallucinated", 0), r.get("grounded", 0))
    out: dict[str, list[SegmentRow]] = {d: [] for d in dims}
    for row in sorted(rows.values(), key=lambda r: (-(r.current.get("requests") or 0), r.value)):
        out[row.dimension].append(row)
    return {d: v for d, v in out.items() if v}


def segment_value_counts(store, period: Period, filters: dict[str, str], dims: tuple[str, ...]) -> dict[str, int]:
    """dimension -> how many of its values had requests in the period (to say how many a table leaves out)."""
    scope = {k: filters.get(k) for k in FEATURE_DIMENSIONS}
    return rollups.segment_value_counts(store, period.start, period.end, scope, dims) if dims else {}
