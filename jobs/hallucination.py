"""Hallucination rates from human review of sampled responses.

``hallucination_sample`` puts answered requests into ``review_queue`` the way
Langfuse samples traces: a request is chosen when a hash of its id falls under
the stratum's rate, so the choice is deterministic (a rerun selects the same
requests) and needs no state. Each (service, feature) also gets at least
``review.min_per_day`` samples a day: the lowest hashes, again deterministic.

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

from jobs.base import Job
from jobs.grounding import proxy_scores
from monitor.foundation.metrics import RATE_WINDOWS, Point, floor_to, window_ends
from monitor.foundation.stats import wilson
from monitor.foundation.tables import requests, review

HASH_SPACE = 1_000_000


class HallucinationSampleJob(Job):
    name = "hallucination_sample"
    description = "deterministic sampling of answered requests into the review queue"

    def minimum_recompute(self) -> dt.timedelta:
        # The running day is sampled again on every run: later requests may have lower hashes.
        return dt.timedelta(days=1)

    def _rates(self) -> tuple[dict[str, int], int]:
        cfg = self.config.review
        rates = {}
        for r in cfg.rates:
            rates[f"{r.service}/{r.feature}" if r.feature else r.service] = int(r.rate * HASH_SPACE)
        return rates, int(cfg.sample_rate * HASH_SPACE)

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        rates, default = self._rates()
        day = floor_to(start, 86400)
        while day < end:
            day_end = day + dt.timedelta(days=1)
            yield from self._sample_day(day, min(day_end, end), day_end, rates, default)
            day = day_end

    def _sample_day(self, day, upto, day_end, rates, default) -> Iterable[Point]:
        rows = requests.review_sample(self.store, day, upto, HASH_SPACE, rates, default, self.config.review.min_per_day)
        if not rows:
            return
        now = self.clock.now()
        proxy = self._proxy([(r[5], r[6]) for r in rows])
        review.enqueue(self.store, [[rid, ts, svc, feat, day.date(), "rate" if by_rate else "minimum", now, p]
                                    for (svc, feat, rid, ts, by_rate, *_), p in zip(rows, proxy)])
        counts: dict[tuple, int] = defaultdict(int)
        for svc, feat, *_ in rows:
            counts[(svc, feat)] += 1
        for (svc, feat), n in counts.items():
            yield Point(day_end, "1d", "review_samples", {"service": svc, "feature": feat}, float(n))

    def _proxy(self, pairs: list[tuple[str, str]]) -> list[float | None]:
        """The grounding proxy of each queued answer (None without context), for review.prioritize."""
        if not self.config.grounding.enabled or not any(c for _, c in pairs):
            return [None] * len(pairs)
        scores = proxy_scores(pairs, self.embeddings().embed, self.config.grounding.threshold)
        return [bad / n if n else None for bad, n in scores]


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

