"""The metric contract: what the jobs write to ``metric_points`` and everyone else reads.

A point is a value for one metric and one label set over a window that ENDS at
``ts`` (the value covers [ts - window, ts)). Jobs write points, alerts and
pages read them: the metric names, their windows and help texts, the label
names and the window arithmetic live here so the writers and the readers
cannot disagree. The read API validates names against ``METRICS``, /metrics
takes its HELP text from it, and a test keeps docs/metrics.md in step with it.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction

UTC = dt.timezone.utc
# Every window a metric may be kept for, in seconds (also the order windows sort in).
WINDOWS = {"1m": 60, "5m": 300, "30m": 1800, "1h": 3600, "2h": 7200, "6h": 21600, "1d": 86400, "3d": 259200,
           "7d": 604800, "30d": 2592000}

# The windows each job writes.
SLI_WINDOWS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
COST_WINDOWS = {"1h": 3600, "1d": 86400}
# What the sli job writes per segment (language, region, tenant, promoted tags): hours and days of the headline
# request SLIs. Finer windows of every segment of every feature would be most of metric_points (100 features x
# 50 segments x 288 five-minute windows a day) for little; the pages and the live alert rules read the segment
# rollups themselves, at any window.
SEGMENT_WINDOWS = {"1h": 3600, "1d": 86400}
SEGMENT_METRICS = ("requests", "error_rate", "availability", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                   "ttft_p95_ms")
# What the cost job writes per segment, at its own windows (COST_WINDOWS): spend and tokens. Cost per successful
# outcome needs the unhappy requests of each segment, which the feedback rollups do not break down.
SEGMENT_COST_METRICS = ("cost_usd", "cost_per_request_usd", "input_tokens", "output_tokens")
# Every series kept per segment: metric -> its windows.
SEGMENT_SERIES = {**{m: SEGMENT_WINDOWS for m in SEGMENT_METRICS}, **{m: COST_WINDOWS for m in SEGMENT_COST_METRICS},
                  # the slo job's, per segment of an SLO's traffic: whole hours and days (an SLO's own are trailing)
                  "slo_sli": SEGMENT_WINDOWS, "slo_burn_rate": SEGMENT_WINDOWS}
# Trailing windows of the SLO burn rates (the SRE workbook's long and short windows).
BURN_WINDOWS = {"5m": 300, "30m": 1800, "1h": 3600, "2h": 7200, "6h": 21600, "1d": 86400, "3d": 259200}
RATE_WINDOWS = {"1d": 86400, "7d": 604800}
DRIFT_WINDOWS = ("1h", "6h", "1d", "7d")
PROXY_WINDOWS = {"1h": 3600, "1d": 86400}
KPI_WINDOWS = {"7d": 604800}

# The label levels the sli and cost jobs write each window at (GROUPING SETS): per service and
# feature, broken down by model and by prompt_version, per service, and the total. The order of
# GROUPING_DIMS defines the bits of ClickHouse's grouping().
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


@dataclass
class Point:
    ts: dt.datetime  # end of the window: the value covers [ts - window, ts)
    window: str
    metric: str
    labels: dict[str, str]
    value: float


def floor_to(ts: dt.datetime, seconds: int) -> dt.datetime:
    epoch = int(ts.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def window_name(seconds: int) -> str:
    for name, s in WINDOWS.items():
        if s == seconds:
            return name
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


def window_ends(start: dt.datetime, end: dt.datetime, seconds: int) -> tuple[dt.datetime, dt.datetime] | None:
    """First and last end of the ``seconds``-long aligned windows ending in (start, end]."""
    last = floor_to(end, seconds)
    first = floor_to(start, seconds) + dt.timedelta(seconds=seconds)
    return (first, last) if first <= last else None


def error_budget(slo) -> Fraction:
    """1 - objective, exactly (the objective is a Decimal: 99.9 stays 99.9)."""
    return (100 - Fraction(slo.objective)) / 100


def slo_labels(slo) -> dict[str, str]:
    """The labels of an SLO's series (slo_sli, slo_burn_rate, slo_error_budget_remaining)."""
    labels = {"slo": slo.name, "service": slo.service, "sli": slo.sli}
    if slo.feature:
        labels["feature"] = slo.feature
    return labels


_SLI = tuple(SLI_WINDOWS)
_COST = tuple(COST_WINDOWS)
_SLO = tuple(BURN_WINDOWS)
_HALLU = tuple(RATE_WINDOWS)
_DRIFT = DRIFT_WINDOWS
_PROXY = tuple(PROXY_WINDOWS)
_KPI = tuple(KPI_WINDOWS)

# name -> (the job that writes it, the windows it is kept for, help text).
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "requests": ("sli", _SLI, "Requests in the window."),
    "error_rate": ("sli", _SLI, "Share of requests with status error or timeout."),
    "availability": ("sli", _SLI, "Share of requests with status ok."),
    "latency_p50_ms": ("sli", _SLI, "Median latency (t-digest), milliseconds."),
    "latency_p90_ms": ("sli", _SLI, "90th percentile latency, milliseconds."),
    "latency_p95_ms": ("sli", _SLI, "95th percentile latency, milliseconds."),
    "latency_p99_ms": ("sli", _SLI, "99th percentile latency, milliseconds."),
    "ttft_p50_ms": ("sli", _SLI, "Median time to first token of streaming requests, milliseconds."),
    "ttft_p95_ms": ("sli", _SLI, "95th percentile time to first token, milliseconds."),
    "output_tokens_per_second": ("sli", _SLI,
                                 "Output tokens of ok requests divided by their generation time (latency - TTFT)."),
    "cache_hit_rate": ("sli", _SLI, "Share of requests answered from a cache."),
    "retrieval_hit_rate": ("sli", _SLI, "Share of requests with retrieval whose retrieval found context."),
    "grounding_rate": ("sli", _SLI, "Share of checked answers found grounded in their context."),
    "safety_violation_rate": ("sli", _SLI, "Share of requests flagged by a safety filter."),
    "pii_rate": ("sli", _SLI, "Share of requests that carried PII (reported, or redacted at ingest)."),
    "injection_rate": ("sli", _SLI, "Share of requests where prompt injection was detected."),
    "thumbs_up_rate": ("sli", _SLI, "Thumbs up / (up + down), for requests in the window."),
    "task_success_rate": ("sli", _SLI, "task_success 1 / all task_success feedback, for requests in the window."),
    "cardinality_overflow_requests": ("sli", ("5m", "1h", "1d"),
                                      "Requests counted under cardinality.overflow_value because their service had "
                                      "more distinct values of a dimension (label dimension) that day than "
                                      "cardinality.limits allows."),
    "cost_usd": ("cost", _COST, "Total cost, USD."),
    "cost_per_request_usd": ("cost", _COST, "Cost per request, USD."),
    "cost_per_1k_requests_usd": ("cost", _COST, "Cost per 1,000 requests, USD."),
    "input_tokens": ("cost", _COST, "Input tokens."),
    "output_tokens": ("cost", _COST, "Output tokens."),
    "cached_input_tokens": ("cost", _COST, "Input tokens served from the provider's prompt cache."),
    "unpriced_requests": ("cost", _COST, "Requests whose model has no price (their cost counts as 0)."),
    "successful_outcomes": ("cost", _COST, "Requests with a successful outcome (outcomes.success)."),
    "cost_per_successful_outcome_usd": ("cost", _COST, "Total cost / successful outcomes, USD."),
    "slo_sli": ("slo", _SLO + ("period",), "Good / total events of the SLO over the trailing window."),
    "slo_burn_rate": ("slo", _SLO + ("period",), "Error ratio / error budget over the trailing window."),
    "slo_error_budget_remaining": ("slo", ("period",), "1 - budget spent over the SLO period (negative: overspent)."),
    "review_samples": ("hallucination_sample", ("1d",), "Responses sampled into the review queue that day."),
    "review_coverage": ("hallucination", _HALLU, "Reviewed samples / sampled responses."),
    "hallucination_reviews": ("hallucination", _HALLU, "Reviewed samples with a hallucinated/grounded verdict."),
    "hallucination_rate": ("hallucination", _HALLU, "Hallucinated / (hallucinated + grounded) reviewed samples."),
    "hallucination_rate_low": ("hallucination", _HALLU, "Lower bound of the rate's Wilson 95% interval."),
    "hallucination_rate_high": ("hallucination", _HALLU, "Upper bound of the rate's Wilson 95% interval."),
    "embedding_drift_score": ("drift", _DRIFT,
                              "Drift score of input or output text embeddings (label text) per method (label method): "
                              "domain_classifier ROC AUC, mmd MMD², centroid_cosine cosine distance of the means; "
                              "combined = share of the methods that ran that detect drift."),
    "embedding_drift_detected": ("drift", _DRIFT, "1 when the method (or the combined vote) detects drift, else 0."),
    "embedding_drift_reference_samples": ("drift", _DRIFT, "Requests in the reference sample of a drift comparison."),
    "embedding_drift_current_samples": ("drift", _DRIFT, "Requests in the current sample of a drift comparison."),
    "ungrounded_proxy_rate": ("grounding_proxy", _PROXY,
                              "PROXY, not a label: share of answer sentences whose best embedding similarity to any "
                              "context sentence is below grounding.threshold."),
    "ungrounded_proxy_answers": ("grounding_proxy", _PROXY, "Answers with context in the grounding proxy's sample."),
    "feedback_attributed": ("reconcile", ("1m",),
                            "Feedback rows stored before their request that were attributed to it in this run."),
    "rollup_buckets_repaired": ("reconcile", ("1m",),
                                "Rollup buckets (label table) rebuilt from the raw rows because they differed twice."),
    "rollup_rows_repaired": ("reconcile", ("1m",),
                             "Rows the repaired buckets of a rollup table (label table) had lost or counted twice."),
    "segment_regression": ("segment_regression", ("1d",),
                           "1 when the segment's error rate (labels dimension, segment) rose significantly over the "
                           "day against the 7 days before while its feature's did not (a hidden regression), 0 when "
                           "judged and not; absent when either period is too thin to judge."),
    "release_regression": ("releases", ("1h",),
                           "1 while a release (labels dimension, candidate: its new value, release: its id) whose "
                           "verdict is fail is live, 0 when judged and not; the ReleaseRegression ticket reads it."),
    "releases_per_week": ("releases", ("30d",), "Releases started over the trailing 30 days, per week."),
    "release_rollback_rate": ("releases", ("30d",), "Rollbacks / releases started over the trailing 30 days."),
    "release_verdict_rate": ("releases", ("30d",),
                             "Releases that reached a verdict (pass, marginal or fail) / releases started, over the "
                             "trailing 30 days: the releases shipped with evaluation evidence."),
    "evaluator_calls": ("evaluate", ("1d",), "Answers an automated evaluator (label evaluator) was asked about that "
                        "UTC day (a failed call asked again counts once)."),
    "evaluator_labels": ("evaluate", ("1d",), "Of them, answered with a label."),
    "evaluator_parse_failures": ("evaluate", ("1d",),
                                 "Of them, answered with no JSON object holding a known label: counted, never a label."),
    "evaluator_call_failures": ("evaluate", ("1d",),
                                "Of them, failed after the retries (429, 5xx, timeout, refused): asked again later."),
    "evaluator_retries": ("evaluate", ("1d",), "Retried calls (429, 5xx, timeouts, refused connections) that day."),
    "evaluator_cost_usd": ("evaluate", ("1d",), "The judge's cost that UTC day, from its own token usage, USD."),
    "evaluator_skipped_by_cap": ("evaluate", ("1m",),
                                 "Sampled answers the run left unasked because max_calls_per_hour or "
                                 "max_cost_usd_per_day was reached (asked by a later run)."),
    "evaluator_failed_runs": ("evaluate", ("1m",),
                              "Runs in a row in which every call of the evaluator failed (0 after one that got an "
                              "answer); EvaluatorFailing fires on it."),
    "evaluator_overlap": ("evaluate", ("30d",),
                          "Answers labelled by both the evaluator and reviewers (a majority verdict), trailing 30 "
                          "days, per evaluator and per evaluator and feature."),
    "evaluator_kappa": ("evaluate", ("30d",), "Cohen's kappa of the evaluator against reviewers over the overlap, "
                        "hallucinated vs not; absent below the evaluator's min_overlap."),
    "evaluator_kappa_below_min": ("evaluate", ("30d",),
                                  "1 when the evaluator's kappa is under its min_kappa over at least min_overlap "
                                  "answers (the judge drifted from the reviewers), else 0; EvaluatorDisagrees."),
    "hallucination_rate_estimated": ("evaluate", ("30d",),
                                     "Hallucination rate estimated from every answer the evaluator judged, corrected "
                                     "with its sensitivity and specificity on the overlap (Rogan-Gladen)."),
    "hallucination_rate_estimated_low": ("evaluate", ("30d",), "Lower bound of the estimate's 95% interval."),
    "hallucination_rate_estimated_high": ("evaluate", ("30d",), "Upper bound of the estimate's 95% interval."),
    "incidents": ("incident_kpis", _KPI, "Alert instances that started firing in the window (label severity)."),
    "incident_mttr_seconds": ("incident_kpis", _KPI, "Mean time from firing to resolved, seconds."),
    "alert_notifications_per_incident": ("incident_kpis", _KPI, "Notifications delivered / incidents."),
}

# What an alert rule can compute live, at each evaluation, from the request and feedback rollups over
# a window sliding with it (the sli job's SLIs); every other metric a rule reads from metric_points.
LIVE_REQUEST_METRICS = ("requests", "error_rate", "availability", "latency_p50_ms", "latency_p90_ms",
                        "latency_p95_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p95_ms", "output_tokens_per_second",
                        "cache_hit_rate", "retrieval_hit_rate", "grounding_rate", "safety_violation_rate", "pii_rate",
                        "injection_rate")
LIVE_FEEDBACK_METRICS = ("thumbs_up_rate", "task_success_rate")

# Label names a series may carry.
LABELS = ("service", "feature", "model", "prompt_version", "slo", "sli", "text", "method", "severity", "table", "dimension",
          "segment", "candidate", "release", "evaluator")
