"""Releases as GET /v1/releases answers them and the Releases pages show them: the table's rows (written by
the ``releases`` job and POST /v1/releases) in JSON, and each release's metrics in the order a person reads
them (the critical ones first)."""
from __future__ import annotations

from monitor.foundation.clock import iso_utc
from monitor.foundation.config import RELEASE_METRICS, RELEASE_RATES
from monitor.foundation.tables import releases

LABELS = {"error_rate": "Error rate", "latency_p50_ms": "Latency p50", "latency_p95_ms": "Latency p95",
          "latency_p99_ms": "Latency p99", "ttft_p95_ms": "TTFT p95", "thumbs_up_rate": "Thumbs-up rate",
          "task_success_rate": "Task success rate", "hallucination_rate": "Hallucination rate (reviews)",
          "cost_per_request_usd": "Cost per request", "cost_per_successful_outcome_usd": "Cost per successful outcome",
          "output_tokens": "Output tokens per answer", "output_drift": "Output texts' drift"}


def unit(metric: str) -> str:
    if metric in RELEASE_RATES:
        return "pct"
    return "ms" if metric.endswith("_ms") else "usd" if metric.endswith("_usd") else "count"


def _time(t):
    return iso_utc(t) if t is not None else None


def as_json(r: releases.Release, url: str = "") -> dict:
    return {"release_id": r.release_id, "service": r.service, "feature": r.feature, "dimension": r.dimension,
            "value": r.value, "previous_value": r.previous_value, "ts": _time(r.ts), "source": r.source,
            "description": r.description, "link": r.link, "mode": r.mode or None,
            "full_rollout": _time(r.full_rollout), "ended": _time(r.ended), "rollback": bool(r.rollback_of),
            "rollback_of": r.rollback_of or None, "verdict": r.verdict, "reason": r.reason,
            "judged_from": _time(r.judged_from), "judged_to": _time(r.judged_to), "updated_at": _time(r.updated_at),
            "metrics": r.metrics, "url": url}


def metric_rows(r: releases.Release) -> list[dict]:
    """The release's metrics, critical first, each with its label and unit."""
    rows = [{"metric": m, "label": LABELS.get(m, m), "unit": unit(m), **r.metrics[m]}
            for m in RELEASE_METRICS if m in r.metrics]
    return sorted(rows, key=lambda x: not x.get("critical"))
