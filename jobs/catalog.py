"""Every metric the jobs write to ``metric_points``: name -> (job, windows, help).

The read API validates names against this, /metrics takes its HELP text from
it, and a test keeps docs/metrics.md in step with it.
"""
from __future__ import annotations

from .cost import COST_WINDOWS
from .drift import DRIFT_WINDOWS
from .grounding import PROXY_WINDOWS
from .hallucination import RATE_WINDOWS
from .sli import SLI_WINDOWS
from .slo import BURN_WINDOWS

_SLI = tuple(SLI_WINDOWS)
_COST = tuple(COST_WINDOWS)
_SLO = tuple(BURN_WINDOWS)
_HALLU = tuple(RATE_WINDOWS)
_DRIFT = DRIFT_WINDOWS
_PROXY = tuple(PROXY_WINDOWS)

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
                              "combined = share of the three methods that detect drift."),
    "embedding_drift_detected": ("drift", _DRIFT, "1 when the method (or the combined vote) detects drift, else 0."),
    "embedding_drift_reference_samples": ("drift", _DRIFT, "Requests in the reference sample of a drift comparison."),
    "embedding_drift_current_samples": ("drift", _DRIFT, "Requests in the current sample of a drift comparison."),
    "ungrounded_proxy_rate": ("grounding_proxy", _PROXY,
                              "PROXY, not a label: share of answer sentences whose best embedding similarity to any "
                              "context sentence is below grounding.threshold."),
    "ungrounded_proxy_answers": ("grounding_proxy", _PROXY, "Answers with context in the grounding proxy's sample."),
    "incidents": ("incident_kpis", ("7d",), "Alert instances that started firing in the window (label severity)."),
    "incident_mttr_seconds": ("incident_kpis", ("7d",), "Mean time from firing to resolved, seconds."),
    "alert_notifications_per_incident": ("incident_kpis", ("7d",), "Notifications delivered / incidents."),
}

# Label names a series may carry.
LABELS = ("service", "feature", "model", "prompt_version", "slo", "sli", "text", "method", "severity")
