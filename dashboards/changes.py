"""What changed in a window: GET /v1/explain's answer, and the incident explorer's "What changed" section.

The method is monitor.foundation.explain's (a shift-share split of each metric's change over the
segments of every dimension and of pairs); here the windows get their defaults (the baseline is the
same window a week before, as the incident explorer's) and the answer its JSON and its sentences.
"""
from __future__ import annotations

import datetime as dt

from monitor.foundation import explain
from monitor.foundation.clock import iso_utc

# The incident explorer's headline metrics, each explained for the window.
HEADLINE = ("error_rate", "latency_p95_ms", "cost_per_request_usd", "thumbs_up_rate")
SHOWN = 3  # contributors per metric on the page and in a notification


def _side(s: explain.Side) -> dict:
    return {"value": s.value, "n": s.den}


def as_json(metric: str, current: tuple, baseline: tuple, filters: dict, e: explain.Explanation) -> dict:
    return {
        "metric": metric, "from": iso_utc(current[0]), "to": iso_utc(current[1]),
        "baseline_from": iso_utc(baseline[0]), "baseline_to": iso_utc(baseline[1]), "filters": filters,
        "current": _side(e.current), "baseline": _side(e.baseline), "significant": e.significant,
        "p_value": e.p_value, "explained": e.explained, "reason": e.reason,
        "contributors": [{"dimensions": c.dimensions, "current": _side(c.current), "baseline": _side(c.baseline),
                          "share": round(c.share, 4), "kind": c.kind, "traffic_share": round(c.traffic_share, 4),
                          "baseline_traffic_share": round(c.baseline_traffic_share, 4),
                          "text": explain.sentence(metric, c)}
                         for c in e.contributors],
        "method": "shift-share split over each dimension and pairs; docs/metrics.md#what-changed",
    }


def what_changed(store, config, start: dt.datetime, end: dt.datetime, filters: dict) -> list[dict]:
    """Each headline metric explained for the window against the week before: what the incident explorer
    shows and its export carries."""
    out = []
    base = explain.baseline_of(start, end)
    if end - start > explain.MAX_WINDOW:
        return out  # the page says why: a window this long is not explained
    for metric in HEADLINE:
        e = explain.run(store, config, metric, (start, end), base, filters)
        out.append({"metric": metric, "unit": explain.unit(metric), "explanation": e,
                    "sentences": [explain.sentence(metric, c) for c in e.contributors[:SHOWN]]})
    return out
