"""What changed, for a page: the top contributors of the metric an alert is about, as an annotation.

A group's first notification carries, on each firing alert whose rule watches a metric nlpmon can explain,
the annotation ``contributors`` ("region=eu-west-1: 83% of the change (rate 1.1% → 24.6%); ..."), the
top CONTRIBUTORS_SHOWN of monitor.foundation.explain over the alert's window (from a little before it
became active until now, on whole minutes so that it reads rollups) against the same window a week
before. It runs beside the dispatcher with a budget (BUDGET, 2 s for the whole group); what is not done by
then is left out, so a page is never held back by more than that.
"""
from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import time

from monitor.foundation import explain

log = logging.getLogger(__name__)
BUDGET = 2.0
CONTRIBUTORS_SHOWN = 3
LEAD = dt.timedelta(minutes=15)      # the window starts this long before the alert became active
SHORTEST = dt.timedelta(minutes=30)  # and spans at least this long
LONGEST = dt.timedelta(hours=6)
SLI_METRICS = {"availability": "availability", "latency": "latency_p95_ms"}  # an SLO's burn: its SLI
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="contributors")


def metric_of(rule) -> str | None:
    """The explainable metric a rule watches, or None."""
    slo = getattr(rule, "slo_config", None)
    metric = SLI_METRICS.get(slo.sli) if slo is not None else getattr(rule, "metric", None)
    return metric if metric in explain.METRICS else None


def annotate(store, config, rules: dict, alerts: list, now: dt.datetime, budget: float | None = None) -> dict[str, str]:
    """fingerprint -> its ``contributors`` annotation, for the firing alerts explained within ``budget``
    seconds (all of them started at once; an alert of a rule without an explainable metric has none)."""
    jobs = {}
    for a in alerts:
        metric = metric_of(rules.get(a.rule))
        if metric is None:
            continue
        # On whole minutes, the running one included (as the pages' periods): the explanation reads rollups.
        stop = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        start = min((a.active_at or now) - LEAD, now - SHORTEST)
        window = (max(start, now - LONGEST).replace(second=0, microsecond=0), stop)
        base = explain.baseline_of(*window)
        filters = {k: v for k, v in a.labels.items() if k in explain.FILTERS + tuple(config.segments.tags)}
        jobs[a.fingerprint] = (metric, _POOL.submit(explain.run, store, config, metric, window, base, filters))
    budget = BUDGET if budget is None else budget
    out, deadline = {}, time.monotonic() + budget
    for fingerprint, (metric, future) in jobs.items():
        try:
            e = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            log.warning("contributors of alert %s not ready within %.1f s: notified without them", fingerprint, budget)
            continue
        except Exception as exc:  # an explanation never stops a page
            log.warning("contributors of alert %s failed: %s", fingerprint, exc)
            continue
        if e.contributors:
            out[fingerprint] = "; ".join(explain.sentence(metric, c) for c in e.contributors[:CONTRIBUTORS_SHOWN])
    return out
