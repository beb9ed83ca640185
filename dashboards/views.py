"""The pages: overview, service/feature detail, drift, alerts, review, incident explorer, one request.

Views gather data and hand it to Jinja templates (autoescaped, so logged texts
render as text); charts travel as JSON in ``<script type="application/json">``
blocks that ``static/app.js`` draws with plotly, so no page runs inline code.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from urllib.parse import urlencode

import plotly
from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)

from alerts import silence as silences
from dashboards import changes, charts, compare, incidents, kpis
from dashboards import digest
from dashboards import evaluators as evaluator_views
from dashboards import releases as release_views
from dashboards.formatting import LANGUAGE_NAMES, exact, fmt
from dashboards.access import page
from dashboards.scope import in_scope
from monitor.foundation import explain, hidden_regressions
from monitor.foundation.auth import require
from monitor.foundation.clock import iso_utc, parse_time
from monitor.foundation.config import parse_duration
from monitor.foundation.events import HALLUCINATION_LABELS
from monitor.foundation.http import ApiError, time_arg
from monitor.foundation.incident_window import incident_window
from monitor.foundation.metrics import (METRICS, SEGMENT_METRICS, SEGMENT_SERIES, SEGMENT_WINDOWS, WINDOWS,
                                        slo_labels, window_name)
from monitor.foundation.tables import alert_history, alert_state, drift_reports, feedback, releases, requests
from monitor.review import queue as review_queue

bp = Blueprint("pages", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")
PLOTLY_DIR = os.path.join(os.path.dirname(plotly.__file__), "package_data")
# The incident page's charts show this much before and after the window, for context.
CHART_MARGIN = dt.timedelta(minutes=30)

# The detail page's charts: (chart id, title, unit, [(metric, trace name)], minimum window).
DETAIL_CHARTS = (
    ("requests", "Requests", "count", [("requests", "requests")], None),
    ("error_rate", "Error rate", "pct", [("error_rate", "error rate")], None),
    ("availability", "Availability", "pct", [("availability", "availability")], None),
    ("latency_p95_ms", "Latency", "ms", [("latency_p50_ms", "p50"), ("latency_p95_ms", "p95"),
                                          ("latency_p99_ms", "p99")], None),
    ("ttft_p95_ms", "Time to first token", "ms", [("ttft_p50_ms", "p50"), ("ttft_p95_ms", "p95")], None),
    ("thumbs_up_rate", "Thumbs-up rate", "pct", [("thumbs_up_rate", "thumbs up")], None),
    ("task_success_rate", "Task success rate", "pct", [("task_success_rate", "task success")], None),
    ("cost_usd", "Cost", "usd", [("cost_usd", "cost")], "1h"),
    ("cost_per_request_usd", "Cost per request", "usd", [("cost_per_request_usd", "per request")], "1h"),
    ("cost_per_successful_outcome_usd", "Cost per successful outcome", "usd",
     [("cost_per_successful_outcome_usd", "per successful outcome")], "1h"),
    ("hallucination_rate", "Hallucination rate (reviewed samples, 95% interval)", "pct",
     [("hallucination_rate", "rate"), ("hallucination_rate_low", "low"), ("hallucination_rate_high", "high")], "1d"),
    ("ungrounded_proxy_rate", "Ungrounded-answer proxy (not a label)", "pct",
     [("ungrounded_proxy_rate", "proxy")], "1h"),
)


def _svc():
    return current_app.extensions["nlpmon"]


@bp.app_template_filter("num")
def _num(v, unit: str = "count", short: bool = False) -> str:
    return fmt(v, unit, short)


@bp.app_template_filter("exact")
def _exact(v, unit: str = "count") -> str:
    return exact(v, unit)


@bp.app_template_filter("iso")
def _iso(v) -> str:
    return iso_utc(v) if isinstance(v, dt.datetime) else ("" if v is None else str(v))


@bp.app_template_filter("when")
def _when(v) -> str:
    return v.strftime("%Y-%m-%d %H:%M UTC") if isinstance(v, dt.datetime) else "–"


@bp.app_template_filter("duration")
def _duration(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@bp.app_context_processor
def _globals():
    progress = current_app.extensions["nlpmon"].progress
    snapshot = progress.snapshot()
    return {"signed_in": getattr(g, "api_key", None),
            # Background work still filling these pages (serve --demo): the banner, and the figures it
            # has not computed yet, which the pages mark instead of showing half done.
            "background": snapshot if snapshot["active"] or snapshot["failed"] else None,
            "computing": progress.pending, "nav": (
        ("pages.overview", "Overview"), ("pages.drift", "Drift"), ("pages.alerts", "Alerts"),
        ("pages.review", "Review"), ("pages.releases_page", "Releases"), ("pages.evaluators_page", "Evaluators"),
        ("pages.incident", "Incidents"))}


@bp.get("/static/vendor/plotly.min.js")
def plotly_js():
    # Plotly's own bundle from the installed package: served by us, never from a CDN.
    return send_from_directory(PLOTLY_DIR, "plotly.min.js", mimetype="text/javascript", max_age=86400)


# -- helpers -------------------------------------------------------------------------
def _period() -> kpis.Period:
    name = request.args.get("period") or ("custom" if request.args.get("from") else "7d")
    try:
        start = time_arg("from")
        end = time_arg("to") or (_svc().clock.now() if name == "custom" else None)
        return kpis.make_period(name, _svc().clock.now(), start, end)
    except kpis.PeriodError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


def _filters() -> dict[str, str]:
    """The page's filters: FILTERS and the segment dimensions, at most one segment (a 400 naming the
    parameter otherwise)."""
    filters = {k: request.args[k] for k in kpis.filter_names(_svc().config) if request.args.get(k)}
    _segment(filters)
    return filters


def _segment(filters: dict[str, str]) -> tuple[str, str] | None:
    try:
        return kpis.segment_of(_svc().config, filters)
    except kpis.PeriodError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


def _period_args(period: kpis.Period) -> dict:
    if period.name == "custom":
        return {"from": iso_utc(period.start), "to": iso_utc(period.end)}
    return {"period": period.name}


def link(endpoint: str, **args) -> str:
    return url_for(endpoint, **{k: v for k, v in args.items() if v not in (None, "")})


def worst(values: list, better: bool | None):
    """The index of the worst of ``values`` (None for rows that take no part) given the better direction,
    or None when there is no direction, fewer than two values or nothing to tell apart."""
    known = [(v, i) for i, v in enumerate(values) if v is not None]
    if better is None or len(known) < 2 or len({v for v, _ in known}) < 2:
        return None
    return (min(known) if better else max(known))[1]


def _mark_worst(table: list[dict]) -> None:
    """Set ``worst`` on the cell with the worst value of each column among the rows other than all traffic,
    counting only values with enough data behind them (a rate needs the rule's minimum denominator)."""
    rows = [t for t in table if not t["row"].is_total]

    def candidate(t, key, value):
        return value if value is not None and compare.enough(key, t["row"].current)[0] else None

    for j, (key, _, _, better, _) in enumerate(kpis.KPI_COLUMNS):
        w = worst([candidate(t, key, t["cells"][j]["raw"]) for t in rows], better)
        if w is not None:
            rows[w]["cells"][j]["worst"] = True
    for name, key, better in (("hallucination", "hallucination_rate", False),):
        w = worst([candidate(t, key, t[name]["rate"]) for t in rows], better)
        if w is not None:
            rows[w][name]["worst"] = True
    w = worst([t["slo"]["budget_remaining"] if t["slo"] else None for t in rows], True)
    if w is not None:
        rows[w]["slo_worst"] = True
    w = worst([t["incidents"]["count"] for t in rows], False)  # all at 0: nobody's worst
    if w is not None:
        rows[w]["incidents_worst"] = True


def _chart_json(data) -> str:
    # Inside a <script> element: labels carry logged values (a prompt version), so no "</script>" may close it.
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# -- overview ------------------------------------------------------------------------
@bp.get("/")
@page("read")
def overview():
    svc = _svc()
    period = _period()
    filters = _filters()
    rows = kpis.overview(svc.store, svc.config, period, filters)  # _filters checked the segment
    pargs = _period_args(period)
    table, sparks = [], {}
    carried = {k: v for k, v in filters.items() if k not in ("service", "feature")}
    # A judge's corrected rate, shown where the reviewed sample is thin (not for a segment: it has none).
    judged = {} if carried else evaluator_views.estimates(svc.store, svc.config, svc.clock.now())
    for i, r in enumerate(rows):
        target = {"service": r.service, "feature": r.feature} if not r.is_total else {}
        detail = link("pages.detail", **target, **pargs, **carried)
        cells = []
        for key, label, unit, better, metric in kpis.KPI_COLUMNS:
            v = r.current.get(key)
            cells.append({"key": key, "raw": v, "value": fmt(v, unit, short=True), "exact": exact(v, unit),
                          "delta": compare.row_change(r, key, unit, better), "worst": False,
                          "href": f"{detail}#chart-{metric}", "spark": f"s{i}-{key}" if key in r.trend else None})
            if key in r.trend:
                sparks[f"s{i}-{key}"] = {"x": [iso_utc(dt.datetime.fromtimestamp(t, dt.timezone.utc))
                                                for t, _ in r.trend[key]], "y": [v for _, v in r.trend[key]],
                                          "unit": unit}
        cur = r.current
        hallu = {"rate": cur.get("hallucination_rate"), "low": cur.get("hallucination_rate_low"),
                 "high": cur.get("hallucination_rate_high"), "coverage": cur.get("review_coverage"),
                 "reviews": cur.get("hallucination_reviews"), "samples": cur.get("review_samples"),
                 "delta": compare.row_change(r, "hallucination_rate", "pct", False), "worst": False,
                 "href": f"{detail}#chart-hallucination_rate"}
        estimate = judged.get((r.service, r.feature)) if not r.is_total else None
        if estimate and (hallu["reviews"] or 0) < compare.MIN_REVIEWS:
            hallu["estimate"] = {**estimate, "why": f"{hallu['reviews'] or 0} reviewed answers in the period, under "
                                                    f"{compare.MIN_REVIEWS}: the rate estimated from judge "
                                                    f"{estimate['evaluator']}'s labels, corrected with its agreement "
                                                    f"with reviewers on {estimate['overlap']} answers (30 days)"}
        budgets = [s for s in r.slos if s["budget_remaining"] is not None]
        inc_cur = kpis.incident_figures(r.incidents)
        table.append({
            "row": r, "cells": cells, "hallucination": hallu, "detail": detail,
            "drift": r.drift, "drift_href": link("pages.drift", service=r.service, feature=r.feature, **pargs),
            "slo": min(budgets, key=lambda s: s["budget_remaining"]) if budgets else None,
            "slo_href": f"{detail}#chart-slo",
            "incidents": inc_cur, "incidents_prev": compare.incidents_change(r),
            "incidents_href": link("pages.alerts", service=r.service, feature=r.feature),
            "slo_worst": False, "incidents_worst": False,
        })
    _mark_worst(table)
    scope = {k: v for k, v in filters.items() if k in ("service", "feature")}
    regressions = hidden_regressions.find(svc.store, svc.config, (period.start, period.end),
                                          (period.previous.start, period.previous.end), scope)
    segment = _segment(filters)
    segments = _segment_tables(svc, period, scope, regressions.regressions,
                               lambda d, v: link("pages.overview", **pargs, **scope, **{d: v})) if not segment else []
    return render_template("overview.html", period=period, filters=filters, table=table, columns=kpis.KPI_COLUMNS,
                           regressions=regressions, language_names=LANGUAGE_NAMES, segment=segment,
                           segments=segments, segment_columns=segment_columns(scope),
                           overflow=kpis.overflow(svc.store, svc.config, period),
                           overflow_value=svc.config.cardinality.overflow_value,
                           choices=kpis.choices(svc.store, svc.config, period), periods=list(kpis.PERIODS),
                           sparks=_chart_json(sparks),
                           minimums={"requests": compare.MIN_REQUESTS, "feedback": compare.MIN_FEEDBACK,
                                     "reviews": compare.MIN_REVIEWS})


# -- service / feature detail -----------------------------------------------------------
def _window_at_least(step: str, minimum: str | None) -> str:
    if minimum and WINDOWS[minimum] > WINDOWS[step]:
        return minimum
    return step


@bp.get("/detail")
@page("read")
def detail():
    svc = _svc()
    period = _period()
    service, feature = request.args.get("service", ""), request.args.get("feature", "")
    if feature and not service:
        raise ApiError(400, "bad_request", "service: give the service of the feature")
    labels = {k: v for k, v in (("service", service), ("feature", feature)) if v}
    segment = _segment(_filters())
    # metric_points hold breakdowns by model or by prompt_version (one at a time), not by environment.
    note = None
    for dim in ("model", "prompt_version"):
        if request.args.get(dim):
            if feature and not any(request.args.get(d) for d in ("model", "prompt_version") if d != dim):
                labels[dim] = request.args[dim]
            else:
                note = f"{dim}: the charts break down one of model or prompt_version per feature; filter not applied"
    if request.args.get("environment"):
        note = "environment: the charts cover all environments (the overview's figures honour the filter)"
    step = charts.step_for(period.span)
    shown = DETAIL_CHARTS
    if segment:
        if not feature:
            raise ApiError(400, "bad_request", f"{segment[0]}: a segment's charts are per feature; give service and feature")
        # The segment series: the sli and cost jobs write them per hour and day (metrics.SEGMENT_WINDOWS).
        labels[segment[0]] = segment[1]
        step = _window_at_least(step, min(SEGMENT_WINDOWS, key=SEGMENT_WINDOWS.get))
        shown = tuple(c for c in DETAIL_CHARTS if c[3][0][0] in SEGMENT_SERIES)
        note = (f"{segment[0]}={segment[1]}: charts of this segment's series, per hour or day; feedback, "
                "hallucination and SLO charts are the whole feature's (the By segment tables below break them down)")
    wanted = {}
    for _, _, _, metrics, minimum in shown:
        for metric, _ in metrics:
            wanted[metric] = _window_at_least(step, minimum)
    data = charts.fetch(svc.store, wanted, [labels], period.start, period.end)
    slos = [s for s in svc.config.slos if s.service == service and (not feature or s.feature in (None, feature))]
    slos = [] if segment else slos
    lines: dict[str, list] = {}
    for s in slos:
        if s.sli == "availability":
            lines.setdefault("availability", []).append({"y": float(s.objective) / 100,
                                                         "label": f"SLO {s.name}: {s.objective}%"})
        else:
            lines.setdefault("latency_p95_ms", []).append(
                {"y": s.threshold_ms, "label": f"SLO {s.name}: {s.objective}% ≤ {s.threshold_ms:,.0f} ms"})
    out = []
    for chart_id, title, unit, metrics, minimum in shown:
        traces = [charts.trace(name, data.get((metric, 0), []), band=metric.endswith(("_low", "_high")))
                  for metric, name in metrics]
        out.append(charts.chart(chart_id, title, unit, traces, lines.get(chart_id),
                                METRICS[metrics[0][0]][2] + f" Window {wanted[metrics[0][0]]}.",
                                window=wanted[metrics[0][0]]))
    # SLO burn and budget, from the slo job's series (labelled by SLO).
    if slos:
        every = {"5m": 300, "1h": 3600, "1d": 86400}[step]
        budget, burn = [], []
        for s in slos:
            # Written every minute over trailing windows: one point per chart step is plenty.
            period_window = window_name(int(s.period.total_seconds()))
            d = charts.fetch(svc.store, {"slo_error_budget_remaining": period_window}, [slo_labels(s)],
                             period.start, period.end, every=every)
            budget.append(charts.trace(s.name, d.get(("slo_error_budget_remaining", 0), [])))
            d = charts.fetch(svc.store, {"slo_burn_rate": "1h"}, [slo_labels(s)], period.start, period.end,
                             every=every)
            burn.append(charts.trace(s.name, d.get(("slo_burn_rate", 0), [])))
        out.append(charts.chart("slo", "SLO error budget remaining", "pct", budget,
                                [{"y": 0, "label": "budget spent"}], METRICS["slo_error_budget_remaining"][2],
                                window=step))
        out.append(charts.chart("slo_burn", "SLO burn rate (1h)", "x", burn,
                                [{"y": 1, "label": "burning exactly the budget"}], METRICS["slo_burn_rate"][2],
                                window=step))
    markers = charts.alert_markers(svc.store, period.start, period.end, labels)
    if service and feature:
        markers += charts.prompt_markers(charts.prompt_changes(svc.store, period.start, period.end, service, feature),
                                         releases.search(svc.store, service=service, feature=feature,
                                                         lo=period.start - dt.timedelta(hours=1), hi=period.end))
    pargs = _period_args(period)
    scope = {"service": service, "feature": feature}
    segments = []
    if service and feature:
        flagged = hidden_regressions.find(svc.store, svc.config, (period.start, period.end),
                                          (period.previous.start, period.previous.end), scope).regressions
        segments = _segment_tables(svc, period, scope, flagged,
                                   lambda d, v: link("pages.detail", **pargs, **scope, **{d: v}))
    choices = (kpis.segment_choices(svc.store, svc.config, period, scope) if service and feature else {})
    return render_template("detail.html", period=period, service=service, feature=feature, labels=labels,
                           segments=segments, segment_columns=segment_columns(scope), language_names=LANGUAGE_NAMES,
                           choices=choices, filters=labels,
                           note=note, step=step, charts=out, markers=markers, periods=list(kpis.PERIODS),
                           payload=_chart_json({"charts": out, "markers": markers}),
                           incident_href=link("pages.incident", service=service, feature=feature,
                                              **({segment[0]: segment[1]} if segment else {}),
                                              **{"from": iso_utc(period.start), "to": iso_utc(period.end)}),
                           drift_href=link("pages.drift", service=service, feature=feature, **pargs),
                           back=link("pages.overview", **pargs))


# The "by segment" tables' columns: (key, label, unit, higher is better).
SEGMENT_TABLE_COLUMNS = (("requests", "Requests", "count", None), ("error_rate", "Error rate", "pct", False),
                         ("latency_p95_ms", "p95 latency", "ms", False),
                         ("cost_per_request_usd", "Cost / request", "usd", False),
                         ("thumbs_up_rate", "Thumbs up", "pct", True), ("task_success_rate", "Task success", "pct", True),
                         ("hallucination_rate", "Hallucination rate", "pct", False))


def segment_columns(scope: dict) -> tuple:
    """The by-segment table's columns: p95 latency for one feature's segments only (kpis.by_segment)."""
    return SEGMENT_TABLE_COLUMNS if scope.get("feature") else tuple(
        c for c in SEGMENT_TABLE_COLUMNS if c[0] != "latency_p95_ms")


def _segment_tables(svc, period: kpis.Period, scope: dict, flagged: list, href,
                    baseline: kpis.Period | None = None) -> list[dict]:
    """The "by segment" tables of the traffic ``scope`` (service, feature, or neither) selects: one per segment
    dimension, each value's figures with their change under the overview's honest-comparison rule, the
    ``flagged`` hidden regressions marked (those of this scope), each value linked to ``href(dimension, value)``."""
    marks = {(r.dimension, r.value): r for r in flagged
             if all(not scope.get(k) or getattr(r, k) == scope[k] for k in ("service", "feature"))}
    tables = []
    columns = segment_columns(scope)
    shown = kpis.by_segment(svc.store, svc.config, period, scope, baseline)
    counts = kpis.segment_value_counts(svc.store, period, scope, tuple(shown))
    for dimension, rows in shown.items():
        out = []
        for r in rows:
            cells = []
            for key, _, unit, better in columns:
                v = r.current.get(key)
                cell = {"key": key, "value": fmt(v, unit, short=True), "exact": exact(v, unit),
                        "delta": compare.row_change(r, key, unit, better)}
                if key == "hallucination_rate" and v is not None:
                    cell.update(interval=f"{fmt(r.current['hallucination_rate_low'], unit)} – "
                                         f"{fmt(r.current['hallucination_rate_high'], unit)}",
                                reviews=r.current["hallucination_reviews"])
                cells.append(cell)
            out.append({"row": r, "cells": cells, "regression": marks.get((dimension, r.value)),
                        "href": href(dimension, r.value)})
        tables.append({"dimension": dimension, "rows": out, "more": max(counts.get(dimension, 0) - len(out), 0)})
    return tables


# -- drift -----------------------------------------------------------------------------
DRIFT_METHODS = ("combined", "domain_classifier", "mmd", "centroid_cosine")


@bp.get("/drift")
@page("read")
def drift():
    svc = _svc()
    period = _period()
    service, feature = request.args.get("service", ""), request.args.get("feature", "")
    window = request.args.get("window", "1d")
    runs = drift_reports.runs(svc.store, period.start, period.end,
                              {k: v for k, v in (("service", service), ("feature", feature)) if v})
    targets = sorted({(r.service, r.feature) for r in runs})
    if service and feature:
        targets = [(service, feature)]
    chart_list = []
    label_sets = []
    for svc_name, feat in targets[:8]:
        for side in ("input", "output"):
            for method in DRIFT_METHODS:
                label_sets.append({"service": svc_name, "feature": feat, "text": side, "method": method})
    data = charts.fetch(svc.store, {"embedding_drift_score": window}, label_sets, period.start, period.end)
    for method in DRIFT_METHODS:
        traces = []
        for i, ls in enumerate(label_sets):
            if ls["method"] == method and data.get(("embedding_drift_score", i)):
                traces.append(charts.trace(f"{ls['service']}/{ls['feature']} {ls['text']}",
                                           data[("embedding_drift_score", i)]))
        chart_list.append(charts.chart(f"drift-{method}", f"{method.replace('_', ' ')} ({window} windows)",
                                       "x", traces, help_text=_METHOD_HELP[method], window=window))
    selected = request.args.get("report")
    shown = next((r for r in runs if r.report_id == selected), None) or next(
        (r for r in runs if r.drift_detected), None) or next((r for r in runs if r.has_snapshot), None)
    return render_template("drift.html", period=period, service=service, feature=feature, window=window,
                           runs=runs, shown=shown, charts=chart_list, periods=list(kpis.PERIODS),
                           windows=("1h", "6h", "1d", "7d"), payload=_chart_json({"charts": chart_list, "markers": []}),
                           pargs=_period_args(period))


_METHOD_HELP = {
    "combined": "Share of the methods that ran that detect drift; drift is declared when 2 agree.",
    "domain_classifier": "ROC AUC of a classifier telling current from reference embeddings (0.5: alike).",
    "mmd": "Maximum mean discrepancy between the two embedding samples.",
    "centroid_cosine": "Cosine distance between the mean embeddings.",
}


# -- alerts ----------------------------------------------------------------------------
def incident_link(start: dt.datetime | None, end: dt.datetime | None, fingerprint: str = "",
                  labels: dict | None = None) -> str:
    """The incident explorer for an alert's window (the window the notifications link to)."""
    start, end = incident_window(start, end, _svc().clock.now())
    labels = labels or {}
    return url_for("pages.incident", **{"from": iso_utc(start), "to": iso_utc(end)},
                   **{k: v for k, v in (("fingerprint", fingerprint), ("service", labels.get("service")),
                                        ("feature", labels.get("feature"))) if v})


@bp.get("/alerts")
@page("read")
def alerts():
    svc = _svc()
    now = svc.clock.now()
    filt = {k: request.args[k] for k in ("service", "feature") if request.args.get(k)}
    active, heartbeats = [], []
    for a in alert_state.active(svc.store):
        if a.labels.get("severity") == "none":
            heartbeats.append(a)  # the Watchdog fires for ever, by design: a heartbeat, not an incident
            continue
        if not in_scope(a.labels, filt):
            continue
        runbook = a.annotations.get("runbook_url", "")
        active.append({**a.__dict__, "since": a.since, "runbook": runbook,
                       "explore": incident_link(a.active_at, None, a.fingerprint, a.labels),
                       "runbook_is_url": runbook.startswith(("http://", "https://", "/"))})
    days = int(request.args.get("days", "7")) if request.args.get("days", "7").isdigit() else 7
    lo = now - dt.timedelta(days=max(1, min(days, 90)))
    spans = [{**vars(s), "explore": incident_link(s.start, s.end, s.fingerprint, s.labels),
              "duration": ((s.end or now) - s.start).total_seconds()}
             for s in alert_history.incident_spans(svc.store, lo, now) if in_scope(s.labels, filt)]
    history = [h for h in alert_history.newest_since(svc.store, lo, 300) if in_scope(h.labels, filt)]
    timeline = [{"name": s["rule"] + " " + " ".join(f"{k}={v}" for k, v in sorted(s["labels"].items())
                                                     if k in ("service", "feature")),
                 "start": iso_utc(s["start"]), "end": iso_utc(s["end"] or now), "open": s["end"] is None,
                 "severity": s["severity"], "href": s["explore"]} for s in spans]
    return render_template("alerts.html", active=active, heartbeats=heartbeats, spans=list(reversed(spans)),
                           history=history,
                           silences=silences.list_all(svc.store, svc.clock), days=days, filters=filt,
                           can_admin=g.api_key.allows("admin"), now=now,
                           payload=_chart_json({"timeline": timeline, "from": iso_utc(lo), "to": iso_utc(now)}))


@bp.post("/alerts/silences")
@page("admin")
def create_silence():
    svc = _svc()
    matchers = [m.strip() for m in request.form.get("matchers", "").replace(",", "\n").splitlines() if m.strip()]
    try:
        now = svc.clock.now()
        try:
            duration = parse_duration(request.form.get("duration", "").strip() or "-")
        except (ValueError, OverflowError) as exc:
            raise silences.SilenceError(f"duration: {exc}") from None
        silences.create(svc.store, svc.clock, matchers, silences.ends_after(now, duration), g.api_key.name,
                        request.form.get("comment", ""), now)
    except silences.SilenceError as exc:
        flash(str(exc), "error")
        return redirect(url_for("pages.alerts") + "#silences")
    flash(f"silence created for {', '.join(matchers)}", "ok")
    return redirect(url_for("pages.alerts") + "#silences")


@bp.post("/alerts/silences/<sid>/expire")
@page("admin")
def expire_silence(sid: str):
    svc = _svc()
    if silences.expire(svc.store, svc.clock, sid) is None:
        flash(f"no silence {sid}", "error")
    else:
        flash("silence expired", "ok")
    return redirect(url_for("pages.alerts") + "#silences")


# -- review ----------------------------------------------------------------------------
@bp.get("/review")
@page("review")
def review():
    svc = _svc()
    service, feature = request.args.get("service") or None, request.args.get("feature") or None
    item = review_queue.next_item(svc, g.api_key.name, service, feature)
    today = svc.clock.now().date()
    return render_template("review.html", item=item, labels=HALLUCINATION_LABELS, service=service or "",
                           feature=feature or "", progress=review_queue.progress(svc, today, service, feature),
                           today=today)


@bp.post("/review/<request_id>")
@page("review")
def review_label(request_id: str):
    svc = _svc()
    label = request.form.get("label", "")
    try:
        review_queue.store_label(svc, request_id, label, g.api_key.name, request.form.get("comment", "")[:2000],
                               g.api_key.key_id)
        flash(f"labelled {request_id} as {label}", "ok")
    except ApiError as exc:
        flash(exc.message, "error")
    return redirect(link("pages.review", service=request.form.get("service"), feature=request.form.get("feature")))


# -- incidents -------------------------------------------------------------------------
def _incident_args():
    svc = _svc()
    filters = {k: request.args[k] for k in kpis.filter_names(svc.config) if request.args.get(k)}
    _segment(filters)
    fp = request.args.get("fingerprint")
    if fp and not filters:
        labels = alert_history.labels_of(svc.store, fp)
        if labels:
            filters = {k: labels[k] for k in ("service", "feature") if labels.get(k)}
    start, end = time_arg("from"), time_arg("to")
    if start is None and end is None:
        now = svc.clock.now()
        start, end = now - dt.timedelta(hours=2), now
    try:
        period = incidents.window(start, end)
    except incidents.IncidentError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    return period, filters, fp


@bp.get("/incidents")
@page("read")
def incident():
    svc = _svc()
    period, filters, fp = _incident_args()
    rep = incidents.report(svc.store, svc.config, period, filters)
    charts_out, markers = [], []
    labels = dict(filters)
    step = charts.step_for(period.span + 2 * CHART_MARGIN)
    if period.span <= dt.timedelta(hours=6):
        step = "1m"
    wanted = {"requests": step, "error_rate": step, "latency_p95_ms": step, "ttft_p95_ms": step,
              "thumbs_up_rate": step if step != "1m" else "5m"}
    if _segment(filters):  # a segment's series: per hour and day, request figures only (metrics.SEGMENT_METRICS)
        step = _window_at_least(step, min(SEGMENT_WINDOWS, key=SEGMENT_WINDOWS.get))
        wanted = {m: step for m in wanted if m in SEGMENT_METRICS}
    lo, hi = period.start - CHART_MARGIN, period.end + CHART_MARGIN
    shift = incidents.BASELINE_SHIFT
    cur, base = charts.fetch_ranges(svc.store, wanted, [labels], [(lo, hi), (lo - shift, hi - shift)])
    for metric, title, unit in (("error_rate", "Error rate", "pct"), ("latency_p95_ms", "Latency p95", "ms"),
                                ("requests", "Requests", "count"), ("ttft_p95_ms", "TTFT p95", "ms"),
                                ("thumbs_up_rate", "Thumbs-up rate", "pct")):
        if metric not in wanted:
            continue
        moved = [(iso_utc(parse_time(x) + shift), y)
                 for x, y in base.get((metric, 0), [])]
        charts_out.append(charts.chart(f"inc-{metric}", title, unit, [
            charts.trace("window", cur.get((metric, 0), [])),
            charts.trace("a week before", moved, dash=True)], help_text=f"Window {wanted[metric]}.",
            window=wanted[metric]))
    for h in rep.alerts:
        if h.to_state == "firing":
            markers.append({"x": iso_utc(h.ts), "label": h.rule, "kind": "alert"})
    markers += charts.prompt_markers(rep.prompt_changes, rep.releases)
    markers.append({"x": iso_utc(period.start), "label": "window start", "kind": "window"})
    markers.append({"x": iso_utc(period.end), "label": "window end", "kind": "window"})
    timeline = [{"name": s.rule, "start": iso_utc(s.start), "end": iso_utc(s.end or svc.clock.now()),
                 "open": s.end is None, "severity": s.severity, "href": ""} for s in rep.incidents]
    q = {"from": iso_utc(period.start), "to": iso_utc(period.end), **filters}
    what_changed = []
    for c in rep.changes:
        items = []
        for contributor, text in zip(c["explanation"].contributors, c["sentences"]):
            items.append({"text": text, "kind": contributor.kind, "share": contributor.share,
                          "href": _explorer_link(q, contributor.dimensions)})
        what_changed.append({**c, "items": items})
    segment = _segment(filters)
    scope = {k: v for k, v in filters.items() if k in ("service", "feature")}
    segments = [] if segment else _segment_tables(
        svc, period, scope, [], lambda d, v: link("pages.incident", **q, **{d: v}), baseline=rep.baseline)
    return render_template("incident.html", rep=rep, period=period, filters=filters, fingerprint=fp,
                           what_changed=what_changed,
                           segments=segments, segment_columns=segment_columns(scope), language_names=LANGUAGE_NAMES,
                           seg_baseline="the same window a week before",
                           segment_choices=kpis.segment_choices(svc.store, svc.config, period, scope),
                           sli_table=incidents.SLI_TABLE, change=compare.row_change,
                           payload=_chart_json({"charts": charts_out, "markers": markers, "timeline": timeline,
                                                "from": iso_utc(lo), "to": iso_utc(hi)}),
                           charts=charts_out, exports={f: f"/v1/incidents?{urlencode({**q, 'format': f})}"
                                                       for f in ("md", "csv", "json")})


def _explorer_link(q: dict, dimensions: dict[str, str]) -> str | None:
    """The explorer filtered to a contributor's segment, when its filters can show one (a model, prompt
    version, environment or one segment, with service and feature); None otherwise (an error type, a pair
    of segment dimensions)."""
    wanted = {**q, **dimensions}
    if not set(dimensions) <= set(kpis.filter_names(_svc().config)):
        return None
    try:
        kpis.segment_of(_svc().config, wanted)
    except kpis.PeriodError:
        return None
    return url_for("pages.incident", **wanted)


@bp.get("/v1/incidents")
@require("read")
def incident_export():
    svc = _svc()
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv", "md"):
        raise ApiError(400, "bad_request", "format: must be json, csv or md")
    if not request.args.get("from") or not request.args.get("to"):
        raise ApiError(400, "bad_request", "from: give from and to (ISO 8601 or epoch seconds)")
    period, filters, _ = _incident_args()
    rep = incidents.report(svc.store, svc.config, period, filters)
    stamp = f"{period.start:%Y%m%dT%H%M}-{period.end:%Y%m%dT%H%M}"
    if fmt == "json":
        return jsonify(incidents.as_json(rep))
    if fmt == "csv":
        return Response(incidents.as_csv(rep), mimetype="text/csv", headers={
            "Content-Disposition": f"attachment; filename=incident-{stamp}.csv"})
    return Response(incidents.as_markdown(rep), mimetype="text/markdown", headers={
        "Content-Disposition": f"inline; filename=incident-{stamp}.md"})


@bp.get("/v1/explain")
@require("read")
def explain_api():
    """What changed: the metric's change from the baseline to the window, split over the dimensions."""
    svc = _svc()
    metric = request.args.get("metric", "")
    start, end = time_arg("from"), time_arg("to")
    if start is None or end is None:
        raise ApiError(400, "bad_request", "from: give from and to (ISO 8601 or epoch seconds)")
    if end <= start:
        raise ApiError(400, "bad_request", "from: must be before to")
    b_start, b_end = time_arg("baseline_from"), time_arg("baseline_to")
    if (b_start is None) != (b_end is None):
        raise ApiError(400, "bad_request", "baseline_from: give both baseline_from and baseline_to, or neither")
    baseline = (b_start, b_end) if b_start is not None else explain.baseline_of(start, end)
    if baseline[1] <= baseline[0]:
        raise ApiError(400, "bad_request", "baseline_from: must be before baseline_to")
    filters = {k: v for k, v in request.args.items()
               if k not in ("metric", "from", "to", "baseline_from", "baseline_to") and v}
    try:
        e = explain.run(svc.store, svc.config, metric, (start, end), baseline, filters)
    except explain.ExplainError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    return jsonify(changes.as_json(metric, (start, end), baseline, filters, e))


# -- digests -------------------------------------------------------------------------
@bp.get("/digest/<name>")
@page("read")
def digest_page(name: str):
    """A digest as a page that prints cleanly (save as PDF: the monthly report); ``at`` picks the period."""
    from dashboards.digest_task import latest_fire
    svc = _svc()
    cfg = next((d for d in svc.config.digests if d.name == name), None)
    if cfg is None:
        return render_template("error.html", status=404, title="Not found", message=f"No digest {name}."), 404
    at = time_arg("at") or svc.clock.now()
    fired = latest_fire(cfg, at)
    if fired is None:
        return render_template("error.html", status=400, title="Bad request",
                               message=f"at: the digest's schedule did not fire in the {cfg.period} before it"), 400
    d = digest.build(svc.store, svc.config, cfg, *digest.period_of(cfg, fired), fired)
    return Response(digest.as_html(d, page=True), mimetype="text/html")


# -- evaluators ----------------------------------------------------------------------
@bp.get("/v1/evaluators")
@require("read")
def evaluators_api():
    """Each evaluator (configured judges, then external ones seen through OTLP) with its counts and agreement."""
    svc = _svc()
    return jsonify({"evaluators": evaluator_views.report(svc.store, svc.config, svc.clock.now())})


@bp.get("/v1/evaluators/<name>")
@require("read")
def evaluator_api(name: str):
    svc = _svc()
    found = evaluator_views.report(svc.store, svc.config, svc.clock.now(), name)
    if not found:
        raise ApiError(404, "not_found", f"evaluator: no evaluator {name}")
    return jsonify(found[0])


@bp.get("/evaluators")
@page("read")
def evaluators_page():
    svc = _svc()
    return render_template("evaluators.html", rows=evaluator_views.report(svc.store, svc.config, svc.clock.now()))


@bp.get("/evaluators/<name>")
@page("read")
def evaluator_page(name: str):
    svc = _svc()
    found = evaluator_views.report(svc.store, svc.config, svc.clock.now(), name)
    if not found:
        return render_template("error.html", status=404, title="Not found", message=f"No evaluator {name}."), 404
    return render_template("evaluator.html", e=found[0])


# -- releases ------------------------------------------------------------------------
def _release_search() -> list:
    start, end = time_arg("from"), time_arg("to")
    if start is not None and end is not None and end <= start:
        raise ApiError(400, "bad_request", "from: must be before to")
    return releases.search(_svc().store, service=request.args.get("service", ""),
                           feature=request.args.get("feature", ""), lo=start, hi=end)


@bp.get("/v1/releases")
@require("read")
def releases_api():
    """Releases started in [from, to) (either open), oldest first, each with every metric's statistics."""
    rows = _release_search()
    return jsonify({"releases": [release_views.as_json(r, url_for("pages.release_page", rid=r.release_id))
                                 for r in rows]})


@bp.get("/v1/releases/<rid>")
@require("read")
def release_api(rid: str):
    r = releases.get(_svc().store, rid)
    if r is None:
        raise ApiError(404, "not_found", f"release: no release {rid}")
    return jsonify(release_views.as_json(r, url_for("pages.release_page", rid=rid)))


@bp.get("/releases")
@page("read")
def releases_page():
    try:
        rows = _release_search()
    except ApiError as exc:
        return render_template("error.html", status=400, title="Bad request", message=exc.message), 400
    return render_template("releases.html", rows=list(reversed(rows)), filters={
        k: v for k, v in request.args.items() if k in ("service", "feature") and v})


@bp.get("/releases/<rid>")
@page("read")
def release_page(rid: str):
    svc = _svc()
    r = releases.get(svc.store, rid)
    if r is None:
        return render_template("error.html", status=404, title="Not found", message=f"No release {rid}."), 404
    reverted = releases.get(svc.store, r.rollback_of) if r.rollback_of else None
    later = [x for x in releases.search(svc.store, service=r.service, feature=r.feature, dimension=r.dimension,
                                        lo=r.ts) if x.rollback_of == r.release_id]
    charts_out = []
    lo = r.ts - dt.timedelta(days=1)
    hi = (r.judged_to or r.ended or svc.clock.now()) + dt.timedelta(hours=6)
    if r.dimension in ("model", "prompt_version"):  # the label levels the sli job writes
        step = charts.step_for(hi - lo)
        shown = (("latency_p95_ms", "Latency p95", "ms"), ("error_rate", "Error rate", "pct"),
                 ("thumbs_up_rate", "Thumbs-up rate", "pct"))
        wanted = {m: step if m != "thumbs_up_rate" or step != "1m" else "5m" for m, _, _ in shown}
        labels = [{"service": r.service, "feature": r.feature, r.dimension: v} for v in (r.previous_value, r.value)]
        cur, = charts.fetch_ranges(svc.store, wanted, labels, [(lo, hi)])
        for metric, title, unit in shown:
            charts_out.append(charts.chart(f"rel-{metric}", title, unit, [
                charts.trace(f"{r.dimension} {r.previous_value} (before)", cur.get((metric, 0), [])),
                charts.trace(f"{r.dimension} {r.value} (new)", cur.get((metric, 1), []))],
                help_text=f"Window {wanted[metric]}, each value's own traffic.", window=wanted[metric]))
    markers = [{"x": iso_utc(r.ts), "label": f"{r.value} starts", "kind": "prompt"}]
    if r.full_rollout:
        markers.append({"x": iso_utc(r.full_rollout), "label": "full rollout", "kind": "window"})
    if r.ended:
        markers.append({"x": iso_utc(r.ended), "label": f"{r.value} ends", "kind": "window"})
    payload = _chart_json({"charts": charts_out, "markers": markers, "timeline": [],
                           "from": iso_utc(lo), "to": iso_utc(hi)})
    return render_template("release.html", r=r, rows=release_views.metric_rows(r), reverted=reverted,
                           rolled_back_by=later, charts=charts_out, payload=payload)


# -- one request ----------------------------------------------------------------------
@bp.get("/requests/<request_id>")
@page("read")
def request_detail(request_id: str):
    svc = _svc()
    r = requests.get(svc.store, request_id)
    if r is None:
        return render_template("error.html", status=404, title="Not found",
                               message=f"No request {request_id} (or it is past retention)."), 404
    return render_template("request.html", r=r, feedback=feedback.for_request(svc.store, request_id),
                           explore=incident_link(r.ts, r.ts + dt.timedelta(minutes=1),
                                                 labels={"service": r.service, "feature": r.feature}))
