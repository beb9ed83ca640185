"""What the per-minute rollups hold, shared by the migration that creates them and the jobs that read them.

The latency histogram boundaries live here because a latency SLO can only use
a threshold that is one of them: the rollup counts requests at or under each
boundary when they are inserted, exactly, so "good = latency_ms <= threshold"
needs no scan of raw rows (Prometheus histograms work the same way).
"""
from __future__ import annotations

LATENCY_BUCKETS_MS: tuple[float, ...] = (
    50, 100, 200, 250, 300, 400, 500, 750, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 7500, 10000, 15000,
    20000, 30000, 60000,
)
LATENCY_QUANTILES = (0.5, 0.9, 0.95, 0.99)
TTFT_QUANTILES = (0.5, 0.95)
DIMENSIONS = ("service", "feature", "model", "prompt_version", "environment", "region")

# Kinds of negative feedback, each a bitmap of request-id hashes in feedback_1m.
NEGATIVE_FEEDBACK = {
    "thumbs_down": "neg_thumbs",
    "task_failed": "neg_task",
    "hallucinated": "neg_hallucination",
}


def bucket_index(threshold_ms: float) -> int | None:
    """1-based index of a histogram boundary (ClickHouse arrays count from 1)."""
    for i, b in enumerate(LATENCY_BUCKETS_MS, 1):
        if float(b) == float(threshold_ms):
            return i
    return None


def quantiles_sql(qs: tuple[float, ...]) -> str:
    return ", ".join(repr(q) for q in qs)
