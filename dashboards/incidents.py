"""The incident explorer's data and its exports (JSON, CSV, a markdown postmortem skeleton).

One function gathers a window: the SLIs against the same window a week
before (the overview's computation with a week-old baseline), the error
breakdown, the slowest and failing requests, alert transitions, drift reports,
cost and feedback. The page, ``GET /v1/incidents`` and ``nlpmon incident``
all call it, so the three never disagree.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field, fields, is_dataclass

from dashboards import changes, charts, kpis
from dashboards import releases as release_views
from dashboards.compare import row_change
from dashboards.formatting import fmt
from dashboards.scope import SCOPE_LABELS, in_scope
from monitor.foundation import explain
from monitor.foundation.clock import iso_utc
from monitor.foundation.config import parse_duration
from monitor.foundation.filters import where_equal
from monitor.foundation.rollups import STATUS_COLUMNS, segment_where
from monitor.foundation.tables import alert_history, drift_reports, feedback, releases, requests, rollups
from monitor.foundation.tables.alert_history import AlertTransition, IncidentSpan
from monitor.foundation.tables.drift_reports import DriftReport
from monitor.foundation.tables.feedback import NegativeFeedback
from monitor.foundation.tables.requests import RequestBrief
from monitor.foundation.tables.rollups import PromptChange

BASELINE_SHIFT = explain.BASELINE_SHIFT
# Releases that ended in a window may have started this long before it.
RELEASES_BEFORE = dt.timedelta(days=30)
MAX_WINDOW = dt.timedelta(days=31)
LIST_LIMIT = 20
SNIPPET = 160
# The KPIs a postmortem compares, in table order: (key, label, unit).
SLI_TABLE = (
    ("requests", "Requests", "count"),
    ("error_rate", "Error rate", "pct"),
    ("availability", "Availability", "pct"),
    ("latency_p95_ms", "Latency p95", "ms"),
    ("latency_p99_ms", "Latency p99", "ms"),
    ("ttft_p95_ms", "TTFT p95", "ms"),
    ("thumbs_up_rate", "Thumbs-up rate", "pct"),
    ("task_success_rate", "Task success rate", "pct"),
    ("cost_usd", "Cost", "usd"),
    ("cost_per_request_usd", "Cost per request", "usd"),
    ("cost_per_successful_outcome_usd", "Cost per successful outcome", "usd"),
)


class IncidentError(ValueError):
    """A bad window or filter; the message names the parameter."""


def window(start: dt.datetime | None, end: dt.datetime | None) -> kpis.Period:
    if start is None or end is None:
        raise IncidentError("from: give both from and to (ISO 8601 or epoch seconds)")
    try:
        period = kpis.make_period("custom", end, start, end)
    except kpis.PeriodError as exc:
        raise IncidentError(str(exc)) from None
    if period.span > MAX_WINDOW:
        raise IncidentError(f"to: an incident window may span at most {MAX_WINDOW.days} days")
    return period


def _shifted(p: kpis.Period) -> kpis.Period:
    return kpis.Period("baseline", p.start - BASELINE_SHIFT, p.end - BASELINE_SHIFT)


def _breakdown(store, period: kpis.Period, where: str, params: dict, segment: bool,
               scope: dict[str, str] | None) -> dict[str, list[dict]]:
    """Failed requests (status other than ok) by model, prompt_version, status and error_type.

    The first three come from the request rollups, which count requests per model,
    prompt_version and status (from the raw rows for a ``segment``, which those rollups do not
    break down); error_type from the segment rollups, which count it for the traffic of a service and
    feature (``scope``; None: other filters, read from the raw failed rows). For status and error_type
    the rate is the share of all requests in the window. ``where`` applies to raw rows.
    """
    rows = (requests if segment else rollups).failures_by_model_and_prompt(store, period.start, period.end,
                                                                          where, params)
    out = {}
    for dim, bit in (("model", 1), ("prompt_version", 2)):
        items = [{"value": r[dim], "failed": r["failed"], "requests": r["requests"],
                  "failure_rate": r["failed"] / r["requests"]} for r in rows if r["g"] == bit and r["failed"]]
        out[dim] = sorted(items, key=lambda e: -e["failed"])[:15]
    total = next((r for r in rows if r["g"] == 3 and r["requests"]), None)
    if total is None:
        return {"error_type": [], **out, "status": []}
    n = total["requests"]
    out["status"] = sorted(({"value": s, "failed": total[c], "requests": n, "failure_rate": total[c] / n}
                            for s, c in STATUS_COLUMNS.items() if s != "ok" and total[c]), key=lambda e: -e["failed"])
    by_type = (rollups.failures_by_value(store, period.start, period.end, "error_type", scope, 15) if scope is not None
               else requests.failures_by_error_type(store, period.start, period.end, where, params))
    out["error_type"] = [{"value": v, "failed": k, "requests": n, "failure_rate": k / n} for v, k in by_type]
    return {"error_type": out["error_type"], "model": out["model"], "prompt_version": out["prompt_version"],
            "status": out["status"]}


def _failing(store, period: kpis.Period, where: str, params: dict, rollup_where: str,
             family: str) -> list[RequestBrief]:
    """The newest failed (error, timeout) requests: the hour rollup of ``family`` (read with ``rollup_where``)
    says how far back the newest LIST_LIMIT lie."""
    since, seen = period.start, 0
    for hour, n in rollups.failed_per_hour(store, period.start, period.end, rollup_where, params, family):
        seen += n
        if seen >= LIST_LIMIT:
            since = max(period.start, hour)
            break
    rows = requests.failing(store, since, period.end, where, params, LIST_LIMIT)
    if len(rows) < LIST_LIMIT and since > period.start:  # the hour counts included rows past the window's end
        rows = requests.failing(store, period.start, period.end, where, params, LIST_LIMIT)
    return rows


@dataclass(frozen=True)
class IncidentReport:
    """Everything the explorer shows for a window: what the page, ``GET /v1/incidents`` and ``nlpmon
    incident`` render, and the three exports are made of (datetimes are UTC)."""

    period: kpis.Period
    baseline: kpis.Period                     # the same window a week before
    filters: dict[str, str]
    slis: list[kpis.Row]                      # all traffic first, then each service/feature
    errors: dict[str, list[dict]]             # dimension -> {value, failed, requests, failure_rate}
    slowest: list[RequestBrief]
    failing: list[RequestBrief]
    negative_feedback: list[NegativeFeedback]
    alerts: list[AlertTransition]
    incidents: list[IncidentSpan]
    drift: list[DriftReport]
    prompt_changes: list[PromptChange]
    changes: list[dict]                       # what changed: each headline metric explained (dashboards.changes)
    releases: list = field(default_factory=list)  # releases.Release started or ended in the window


def report(store, config, period: kpis.Period, filters: dict) -> IncidentReport:
    """Everything the explorer shows for the window."""
    baseline = _shifted(period)
    rows = kpis.overview(store, config, period, filters, baseline=baseline, trend=False)
    segment = kpis.segment_of(config, filters)
    scope = {k: filters.get(k) for k in SCOPE_LABELS}
    where, params = where_equal(scope, SCOPE_LABELS)
    params["snip"] = SNIPPET
    # The raw rows and the request rollups filter by model, prompt_version and environment too.
    dims_where, dims_params = where_equal({k: filters.get(k) for k in kpis.FILTERS if k not in SCOPE_LABELS},
                                          kpis.FILTERS)
    params.update(dims_params)
    rows_where, rollup_where, family, keys = where + dims_where, where + dims_where, "requests", SCOPE_LABELS
    if segment:  # the raw rows carry the segment columns; the segment rollups count per (dimension, value)
        rows_where += segment_where(*segment, rows=True)[0]
        seg_where, seg_params = segment_where(*segment, rows=False)
        rollup_where += seg_where
        params.update(seg_params)
        family, keys = "segments", SCOPE_LABELS + (segment[0],)
    margin = dt.timedelta(hours=1)
    history = [h for h in alert_history.between(store, period.start - margin, period.end + margin, limit=2000)
               if in_scope(h.labels, filters, keys)]
    spans = [s for s in alert_history.incident_spans(store, period.start - margin, period.end)
             if in_scope(s.labels, filters, keys)]
    drift = [r for r in drift_reports.ending_between(store, period.start, period.end + dt.timedelta(days=1), where,
                                                      params)
             if r.ts - parse_duration(r.window) < period.end]  # the report's window overlaps the incident's
    return IncidentReport(
        period, baseline, {k: v for k, v in filters.items() if v}, rows,
        _breakdown(store, period, rows_where, params, segment is not None, None if segment or dims_where else scope),
        requests.slowest(store, period.start, period.end, rows_where, params, LIST_LIMIT,
                         rollups.latency_floor(store, period.start, period.end, rollup_where, params, family, LIST_LIMIT)),
        _failing(store, period, rows_where, params, rollup_where, family),
        feedback.negative(store, period.start, period.end, rows_where, params, LIST_LIMIT, SNIPPET), history, spans,
        drift, charts.prompt_changes(store, period.start, period.end, filters.get("service", ""),
                                     filters.get("feature", "")),
        changes.what_changed(store, config, period.start, period.end, {k: v for k, v in filters.items() if v}),
        [r for r in releases.search(store, service=filters.get("service", ""), feature=filters.get("feature", ""),
                                    lo=period.start - RELEASES_BEFORE, hi=period.end)
         if r.ts >= period.start or (r.ended is not None and r.ended >= period.start)])


# -- exports -------------------------------------------------------------------------
def _plain(v):
    if isinstance(v, dt.datetime):
        return iso_utc(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, kpis.Row):
        return {"service": v.service or None, "feature": v.feature or None, "window": _plain(v.current),
                "baseline": _plain(v.previous), "drift": _plain(v.drift), "slos": v.slos,
                "first_seen": _plain(v.first_seen),
                "changes": {key: row_change(v, key, unit).text for key, _, unit in SLI_TABLE}}
    if isinstance(v, tuple) and hasattr(v, "_asdict"):
        return _plain(v._asdict())
    if is_dataclass(v):  # a record: the fields it holds (a list read without its summary leaves that out)
        return {f.name: _plain(getattr(v, f.name)) for f in fields(v) if getattr(v, f.name) is not None}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) and v != v:
        return None
    return v


def as_json(rep: IncidentReport) -> dict:
    return _plain({"window": {"from": rep.period.start, "to": rep.period.end},
                   "baseline": {"from": rep.baseline.start, "to": rep.baseline.end}, "filters": rep.filters,
                   "slis": rep.slis, "errors": rep.errors, "slowest": rep.slowest, "failing": rep.failing,
                   "negative_feedback": rep.negative_feedback, "alerts": rep.alerts, "incidents": rep.incidents,
                   "drift": rep.drift, "prompt_changes": rep.prompt_changes,
                   "releases": [release_views.as_json(r, f"/releases/{r.release_id}") for r in rep.releases],
                   "contributing_factors": [changes.as_json(c["metric"], (rep.period.start, rep.period.end),
                                                            (rep.baseline.start, rep.baseline.end), rep.filters,
                                                            c["explanation"]) for c in rep.changes]})


def as_csv(rep: IncidentReport) -> str:
    """One long table: section, service, feature, name, window value, baseline value, detail (for an
    indicator, its change or why there is none, as on the page)."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["section", "service", "feature", "name", "value", "baseline", "detail"])
    for r in rep.slis:
        for key, _, unit in SLI_TABLE:
            w.writerow(["sli", r.service or "all", r.feature or "all", key, _cell(r.current.get(key)),
                        _cell(r.previous.get(key)), row_change(r, key, unit).text])
    for dim, items in rep.errors.items():
        for e in items:
            w.writerow(["errors", rep.filters.get("service", ""), rep.filters.get("feature", ""),
                        f"{dim}={e['value']}", e["failed"], "", f"{e['requests']} requests"])
    for c in rep.changes:
        for text in c["sentences"]:
            w.writerow(["contributor", rep.filters.get("service", ""), rep.filters.get("feature", ""), c["metric"],
                        "", "", text])
    for h in rep.alerts:
        w.writerow(["alert", h.labels.get("service", ""), h.labels.get("feature", ""), h.rule,
                    _cell(h.value), "", f"{iso_utc(h.ts)} {h.from_state} -> {h.to_state}"])
    for d in rep.drift:
        w.writerow(["drift", d.service, d.feature, d.window, int(d.drift_detected), "",
                    f"{iso_utc(d.ts)} {d.status} report {d.report_id}"])
    for r in rep.releases:
        w.writerow(["release", r.service, r.feature, f"{r.dimension}={r.value}", r.verdict, r.previous_value,
                    f"{iso_utc(r.ts)} {r.mode or 'waiting'}{' rollback' if r.rollback_of else ''} "
                    f"/releases/{r.release_id}: {r.reason}"])
    for name, listed in (("slowest", rep.slowest), ("failing", rep.failing)):
        for q in listed:
            w.writerow([name, q.service, q.feature, q.request_id, _cell(q.latency_ms), "",
                        f"{iso_utc(q.ts)} {q.status} {q.error_type}".strip()])
    return out.getvalue()


def _cell(v):
    return "" if v is None else (round(v, 6) if isinstance(v, float) else v)


def _md(text) -> str:
    """A table cell or list item from logged text: no table breaks, no markup, no HTML."""
    s = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
    for ch in "`*_[]<>#!":
        s = s.replace(ch, "\\" + ch)
    return s


def _alert_event(h: AlertTransition) -> str:
    value = "" if h.value is None else f" (value {h.value:.4g})"
    return (f"alert **{_md(h.rule)}** {_md(h.from_state)} → {_md(h.to_state)}{value}"
            f"{' (silenced)' if h.silenced else ''}")


def _before(row, key: str, unit: str) -> str:
    """The week before's figure, or the comparison rule's reason when there is nothing to compare with."""
    ch = row_change(row, key, unit)
    return fmt(row.previous.get(key), unit) if ch.shown else ch.text


def as_markdown(rep: IncidentReport) -> str:
    w, b = rep.period, rep.baseline
    scope = "/".join(_md(rep.filters[k]) for k in ("service", "feature") if rep.filters.get(k)) or "all traffic"
    lines = [f"# Incident: {scope}, {iso_utc(w.start)} to {iso_utc(w.end)}", "",
             "_Postmortem skeleton generated by nlpmon; replace the italic prompts._", "",
             "## Summary", "", "_What happened, who was affected, how it was resolved._", "",
             f"Window {iso_utc(w.start)} to {iso_utc(w.end)}; baseline the same window a week before "
             f"({iso_utc(b.start)} to {iso_utc(b.end)}). A change is shown only against enough data: "
             "otherwise it says `new` (no requests a week before), `partial previous period` (data starts "
             "after the baseline's start) or `too few …` (a rate's denominator under its minimum).", "",
             "| Scope | Indicator | Window | Week before | Change |", "|---|---|---|---|---|"]
    for r in rep.slis:
        name = "all traffic" if r.is_total else f"{_md(r.service)}/{_md(r.feature)}"
        for key, label, unit in SLI_TABLE:
            cur, base = r.current.get(key), r.previous.get(key)
            if cur is None and base is None:
                continue
            lines.append(f"| {name} | {label} | {fmt(cur, unit)} | {fmt(base, unit)} | "
                         f"{row_change(r, key, unit).text} |")
    lines += ["", "## Timeline (UTC)", ""]
    events = [(h.ts, _alert_event(h)) for h in rep.alerts]
    events += [(p.first_seen, f"prompt_version **{_md(p.prompt_version)}** first seen on "
                              f"{_md(p.service)}/{_md(p.feature)}") for p in rep.prompt_changes]
    events += [(r.ts, f"release of {_md(r.dimension)} **{_md(r.value)}** on {_md(r.service)}/{_md(r.feature)} "
                      f"({_md(r.verdict)})") for r in rep.releases]
    events += [(d.ts, f"drift report {_md(d.window)} window on {_md(d.service)}/{_md(d.feature)}: "
                      f"{'**drift detected**' if d.drift_detected else _md(d.status)}") for d in rep.drift]
    events.sort(key=lambda e: e[0])
    lines += [f"- {ts:%Y-%m-%d %H:%M:%S} {text}" for ts, text in events] or ["- _no alerts, drift reports or "
                                                                                   "prompt changes in the window_"]
    lines += ["", "## Impact", ""]
    total = next((r for r in rep.slis if r.is_total), None)
    if total and total.current.get("requests"):
        c = total.current
        failed = round((c.get("error_rate") or 0) * c["requests"])
        lines.append(f"- {c['requests']:,.0f} requests in the window, {failed:,} of them failed "
                     f"({fmt(c.get('error_rate'), 'pct')}; a week before {_before(total, 'error_rate', 'pct')}).")
        lines.append(f"- Cost {fmt(c.get('cost_usd'), 'usd')} (a week before {_before(total, 'cost_usd', 'usd')}); "
                     f"per successful outcome {fmt(c.get('cost_per_successful_outcome_usd'), 'usd')}.")
        lines.append(f"- Negative feedback on requests in the window: {len(rep.negative_feedback)} shown "
                     f"(thumbs-up rate {fmt(c.get('thumbs_up_rate'), 'pct')}).")
    else:
        lines.append("- No requests in the window.")
    lines += ["", "## Contributing factors", "",
              "_What changed against the week before, per metric: the segments that hold most of the change "
              "(nlpmon's explanation; docs/metrics.md, \"What changed\")._", ""]
    for c in rep.changes:
        e, label = c["explanation"], c["metric"].replace("_", " ")
        if c["sentences"]:
            lines.append(f"- {_md(label)} {fmt(e.baseline.value, c['unit'])} → {fmt(e.current.value, c['unit'])}: "
                         + "; ".join(_md(t) for t in c["sentences"]))
        elif e.significant:
            lines.append(f"- {_md(label)}: {_md(e.reason)}")
    lines += ["", "## Contributing signals", ""]
    for dim in ("error_type", "model", "prompt_version"):
        items = rep.errors.get(dim) or []
        if items:
            top = ", ".join(f"{_md(e['value'] or '(none)')} {e['failed']:,}/{e['requests']:,}" for e in items[:5])
            lines.append(f"- Failures by {dim}: {top}")
    for s in rep.incidents:
        end = iso_utc(s.end) if s.end else "still firing"
        lines.append(f"- Alert {_md(s.rule)} fired {iso_utc(s.start)} until {end}")
    for d in rep.drift:
        if d.drift_detected:
            lines.append(f"- Embedding drift on {_md(d.service)}/{_md(d.feature)} ({_md(d.window)} window "
                         f"ending {iso_utc(d.ts)}), report /reports/{_md(d.report_id)}")
    for p in rep.prompt_changes:
        lines.append(f"- New prompt_version {_md(p.prompt_version)} on {_md(p.service)}/{_md(p.feature)} "
                     f"from {iso_utc(p.first_seen)}")
    for r in rep.releases:
        lines.append(f"- Release {_md(r.dimension)} {_md(r.previous_value)} → {_md(r.value)} on "
                     f"{_md(r.service)}/{_md(r.feature)} from {iso_utc(r.ts)} ({_md(r.mode or 'waiting')}"
                     f"{', a rollback' if r.rollback_of else ''}): **{_md(r.verdict)}**, {_md(r.reason)}; "
                     f"/releases/{_md(r.release_id)}")
    if rep.slowest:
        q = rep.slowest[0]
        lines.append(f"- Slowest request {_md(q.request_id)}: {q.latency_ms:,.0f} ms ({_md(q.model)})")
    lines += ["", "## Root cause", "", "_Why it happened._", "", "## Action items", "", "- [ ] _owner: action_", ""]
    return "\n".join(lines)
