"""Hallucination rates from human review of sampled responses (the queue itself: monitor/review).

``hallucination`` turns reviewers' labels (feedback kind ``hallucination``,
source ``reviewer``) into rates with Wilson 95% intervals over trailing 1-day
and 7-day windows, recomputed for a week because reviews trail sampling.
An item's label is the majority of its reviewers' hallucinated/grounded votes;
a tie or only "unsure" leaves it reviewed but unrated.
"""
from __future__ import annotations

import bisect
import datetime as dt
from collections import defaultdict
from typing import Iterable

from monitor.foundation.job import Job
from monitor.foundation.metrics import RATE_WINDOWS, Point, window_ends
from monitor.foundation.stats import wilson
from monitor.foundation.tables import review


class HallucinationRateJob(Job):
    name = "hallucination"
    description = "hallucination rate with Wilson 95% bounds and review coverage, from reviewed samples"

    def minimum_recompute(self) -> dt.timedelta:
        # Reviews trail sampling by days: a week of windows is recomputed on every run.
        return dt.timedelta(days=7)

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        span = window_ends(start, end, 3600)
        if span is None:
            return
        first, last = span
        lo = first - dt.timedelta(seconds=max(RATE_WINDOWS.values()))
        rows = review.counts(self.store, lo, last)
        series: dict[tuple, list] = defaultdict(list)
        for svc, feat, h, *counts in rows:
            for key in ((("service", svc), ("feature", feat)), (("service", svc),)):
                series[key].append((h, counts))
        for key, buckets in series.items():
            yield from self._windows(dict(key), buckets, first, last)

    def _windows(self, labels, buckets, first, last) -> Iterable[Point]:
        merged: dict[int, list[int]] = {}
        for h, counts in buckets:
            acc = merged.setdefault(h, [0, 0, 0, 0])
            for i, c in enumerate(counts):
                acc[i] += c
        hours = sorted(merged)
        prefix = [[0, 0, 0, 0]]
        for h in hours:
            prefix.append([a + b for a, b in zip(prefix[-1], merged[h])])
        t = first
        while t <= last:
            e = int(t.timestamp())
            for name, seconds in RATE_WINDOWS.items():
                i, j = bisect.bisect_left(hours, e - seconds), bisect.bisect_left(hours, e)
                sampled, reviewed, halluc, grounded = (prefix[j][k] - prefix[i][k] for k in range(4))
                if sampled == 0:
                    continue
                yield Point(t, name, "review_coverage", labels, reviewed / sampled)
                n = halluc + grounded
                yield Point(t, name, "hallucination_reviews", labels, float(n))
                if n:
                    # Always with its interval: a rate from few reviews is never shown as a bare point.
                    low, high = wilson(halluc, n)
                    yield Point(t, name, "hallucination_rate", labels, halluc / n)
                    yield Point(t, name, "hallucination_rate_low", labels, low)
                    yield Point(t, name, "hallucination_rate_high", labels, high)
            t += dt.timedelta(hours=1)

