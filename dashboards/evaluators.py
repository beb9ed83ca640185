"""Automated evaluators as GET /v1/evaluators answers them and the Evaluators pages show them: each configured
judge's calls, parse failures, retries, failures and cost (the ``evaluations`` table), what the caps left
(the ``evaluate`` job's points), and its agreement with reviewers with the estimated rate
(monitor/foundation/agreement.py, the job's own computation). Evaluators that send labels through OTLP appear
beside them as ``external``."""
from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from monitor.foundation.agreement import Agreement, agreements
from monitor.foundation.metrics import floor_to
from monitor.foundation.tables import evaluations, feedback, metric_points

WINDOW = dt.timedelta(days=30)
SKEW = dt.timedelta(hours=1)  # requests stamped a little ahead of this clock (a client's) still count


def _where(url: str) -> str:
    """scheme://host[:port]/path of an endpoint: never its user info or query (a key can hide there)."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc.rpartition('@')[2]}{p.path}"


def report(store, config, now: dt.datetime, name: str | None = None) -> list[dict]:
    lo = now - WINDOW
    configured = {ev.name: ev for ev in config.evaluators}
    agreed = agreements(feedback.judged_counts(store, lo, now + SKEW), {ev.name: ev.min_overlap for ev in config.evaluators})
    by_judge: dict[str, list[Agreement]] = {}
    for a in agreed:
        by_judge.setdefault(a.judge, []).append(a)
    month = evaluations.counts(store, lo, now + dt.timedelta(seconds=1))
    day = floor_to(now, 86400)
    today = evaluations.counts(store, day, day + dt.timedelta(days=1))
    skipped = {v.labels.get("evaluator"): v.value for v in metric_points.newest_per_series(
        store, "evaluator_skipped_by_cap", "1m", now - dt.timedelta(days=1), now + dt.timedelta(seconds=1))}
    names = list(configured) + sorted(set(by_judge) - set(configured))
    out = []
    for n in names:
        if name is not None and n != name:
            continue
        ev = configured.get(n)
        ags = by_judge.get(n, [])
        overall = next((a for a in ags if not a.feature), None)
        row = {"name": n or "(unnamed)", "kind": "llm_judge" if ev else "external",
               "model": ev.model if ev else None, "endpoint": _where(ev.endpoint) if ev else None,
               "prompt_version": ev.prompt_version() if ev else None, "sample_rate": ev.sample_rate if ev else None,
               "min_kappa": ev.min_kappa if ev else None, "min_overlap": ev.min_overlap if ev else None,
               "max_calls_per_hour": ev.max_calls_per_hour if ev else None,
               "max_cost_usd_per_day": ev.max_cost_usd_per_day if ev else None,
               "last_30_days": _counts(month.get(n)), "today": _counts(today.get(n)),
               "skipped_by_cap": int(skipped.get(n, 0)),
               "agreement": overall.as_json() if overall else None,
               "features": [a.as_json() for a in ags if a.feature]}
        row["below_min_kappa"] = [f"{a.service}/{a.feature}" for a in ags if a.feature and ev is not None
                                  and a.kappa is not None and a.kappa < ev.min_kappa]
        out.append(row)
    return out


def _counts(c: evaluations.Counts | None) -> dict:
    if c is None:
        return {"calls": 0, "labelled": 0, "parse_failures": 0, "failed": 0, "retries": 0, "input_tokens": 0,
                "output_tokens": 0, "cost_usd": 0.0, "latency_ms_avg": None, "last": None}
    d = dict(c.__dict__)
    d.pop("evaluator")
    d["last"] = d["last"].isoformat().replace("+00:00", "Z") if d["last"] else None
    return d


def estimates(store, config, now: dt.datetime) -> dict[tuple[str, str], dict]:
    """(service, feature) -> the newest estimated hallucination rate from a judge's labels (the ``evaluate``
    job's points, trailing 30 days), with its interval and the judge; the one with the most overlap when
    several judge a feature. Nothing read without evaluators: the job only runs with one (the overview calls
    this on every load)."""
    if not config.evaluators:
        return {}
    lo, hi = now - dt.timedelta(days=1), now + SKEW
    parts = {m: {tuple(sorted(v.labels.items())): v.value
                 for v in metric_points.newest_per_series(store, m, "30d", lo, hi)}
             for m in ("hallucination_rate_estimated", "hallucination_rate_estimated_low",
                       "hallucination_rate_estimated_high", "evaluator_overlap")}
    out: dict[tuple[str, str], dict] = {}
    for key, rate in parts["hallucination_rate_estimated"].items():
        labels = dict(key)
        overlap = parts["evaluator_overlap"].get(key, 0.0)
        target = (labels.get("service", ""), labels.get("feature", ""))
        if target in out and out[target]["overlap"] >= overlap:
            continue
        out[target] = {"rate": rate, "low": parts["hallucination_rate_estimated_low"].get(key),
                       "high": parts["hallucination_rate_estimated_high"].get(key),
                       "evaluator": labels.get("evaluator", ""), "overlap": int(overlap)}
    return out
