"""The ``sli`` job: service-level indicators per window and dimension set, from the per-minute rollups.

Each window (1m, 5m, 1h, 1d) is written at several levels of detail at once
(GROUPING SETS): per service, per service and feature, and per feature broken
down by model and by prompt_version, plus the total. A series' labels say
which level it is.
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Iterable

from monitor.rollups import LATENCY_QUANTILES, TTFT_QUANTILES, quantiles_sql, rollup_for

from .base import UTC, Job, Point, ratio, window_ends

SLI_WINDOWS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
# (labels of the series) for each grouping set; the order of GROUPING_DIMS defines the grouping() bits.
GROUPING_DIMS = ("service", "feature", "model", "prompt_version")
LEVELS = (("service", "feature"), ("service", "feature", "model"), ("service", "feature", "prompt_version"),
          ("service",), ())


def grouping_sets(prefix: str = "w_end") -> str:
    return ", ".join("(" + ", ".join((prefix,) + level) + ")" for level in LEVELS)


def labels_of(row: dict) -> dict[str, str]:
    """The dimensions in this row's grouping set (grouping() sets a bit for each dimension left out)."""
    g = row["g"]
    n = len(GROUPING_DIMS)
    return {d: row[d] for i, d in enumerate(GROUPING_DIMS) if not (g >> (n - 1 - i)) & 1}


def bucketed_query(table: str, select: str, where: str = "") -> str:
    dims = ", ".join(GROUPING_DIMS)
    return f"""
SELECT toStartOfInterval(minute, toIntervalSecond({{w:UInt32}})) + toIntervalSecond({{w:UInt32}}) AS w_end,
       grouping({dims}) AS g, {dims},
       {select}
FROM {table}
WHERE minute >= toDateTime({{lo:UInt32}}, 'UTC') AND minute < toDateTime({{hi:UInt32}}, 'UTC') {where}
GROUP BY GROUPING SETS ({grouping_sets()})
"""


def each_window(store, family: str, select: str, start: dt.datetime, end: dt.datetime, windows: dict[str, int],
                where: str = "", params: dict | None = None):
    """Rows of ``select`` per (window, window end, grouping set) for the windows ending in (start, end].

    ``family`` "requests" or "feedback": each window reads the coarsest of its rollups that tiles it.
    """
    for name, seconds in windows.items():
        source = rollup_for(seconds, family)
        span = window_ends(start, end, seconds)
        if span is None:
            continue
        first_end, last_end = span
        lo = first_end - dt.timedelta(seconds=seconds)
        for row in store.query_dicts(bucketed_query(source, select, where),
                                     {"w": seconds, "lo": int(lo.timestamp()), "hi": int(last_end.timestamp()),
                                      **(params or {})}):
            row["w_end"] = row["w_end"].replace(tzinfo=UTC)
            yield name, row


REQUEST_SELECT = f"""
       sum(requests) AS requests, sum(status_ok) AS ok, sum(status_error) AS errors,
       sum(status_timeout) AS timeouts, sum(ttft_count) AS ttft_count,
       sum(gen_output_tokens) AS gen_tokens, sum(gen_seconds) AS gen_seconds,
       sum(cache_hits) AS cache_hits, sum(retrieval_known) AS retrieval_known,
       sum(retrieval_hits) AS retrieval_hits, sum(grounded_known) AS grounded_known,
       sum(grounded_true) AS grounded_true, sum(safety_flagged) AS safety_flagged,
       sum(pii_detected) AS pii_detected, sum(injection_detected) AS injection_detected,
       quantilesTDigestMerge({quantiles_sql(LATENCY_QUANTILES)})(latency_q) AS lq,
       quantilesTDigestMerge({quantiles_sql(TTFT_QUANTILES)})(ttft_q) AS tq"""

FEEDBACK_SELECT = """
       sum(thumbs_up) AS thumbs_up, sum(thumbs_down) AS thumbs_down,
       sum(task_success) AS task_success, sum(task_failure) AS task_failure"""


def _pct(q: float) -> str:
    return f"p{int(round(q * 100))}"


def request_metrics(r: dict) -> dict[str, float | None]:
    n = r["requests"]
    out = {
        "requests": float(n),
        "error_rate": ratio(r["errors"] + r["timeouts"], n),
        "availability": ratio(r["ok"], n),
        "output_tokens_per_second": ratio(r["gen_tokens"], r["gen_seconds"]),
        "cache_hit_rate": ratio(r["cache_hits"], n),
        "retrieval_hit_rate": ratio(r["retrieval_hits"], r["retrieval_known"]),
        "grounding_rate": ratio(r["grounded_true"], r["grounded_known"]),
        "safety_violation_rate": ratio(r["safety_flagged"], n),
        "pii_rate": ratio(r["pii_detected"], n),
        "injection_rate": ratio(r["injection_detected"], n),
    }
    for q, v in zip(LATENCY_QUANTILES, r["lq"]):
        out[f"latency_{_pct(q)}_ms"] = v if n else None
    for q, v in zip(TTFT_QUANTILES, r["tq"]):
        out[f"ttft_{_pct(q)}_ms"] = v if r["ttft_count"] else None
    return out


def feedback_metrics(r: dict) -> dict[str, float | None]:
    return {
        "thumbs_up_rate": ratio(r["thumbs_up"], r["thumbs_up"] + r["thumbs_down"]),
        "task_success_rate": ratio(r["task_success"], r["task_success"] + r["task_failure"]),
    }


def points(name: str, row: dict, values: dict[str, float | None]) -> Iterable[Point]:
    labels = labels_of(row)
    for metric, v in values.items():
        # No value is written where there is no denominator: "no data" is not 0%.
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            yield Point(row["w_end"], name, metric, labels, v)


class SliJob(Job):
    name = "sli"
    description = "request counts, error rate, availability, latency/TTFT percentiles, quality rates, feedback rates"

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        for name, row in each_window(self.store, "requests", REQUEST_SELECT, start, end, SLI_WINDOWS):
            yield from points(name, row, request_metrics(row))
        for name, row in each_window(self.store, "feedback", FEEDBACK_SELECT, start, end, SLI_WINDOWS,
                                     where="AND service != ''"):
            yield from points(name, row, feedback_metrics(row))
