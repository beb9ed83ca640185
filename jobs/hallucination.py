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
import math
from collections import defaultdict
from typing import Iterable

from monitor.grounding import proxy_scores

from .base import Job, Point, floor_to, window_ends

HASH_SPACE = 1_000_000
Z95 = 1.959963984540054
RATE_WINDOWS = {"1d": 86400, "7d": 604800}


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


class HallucinationSampleJob(Job):
    name = "hallucination_sample"
    description = "deterministic sampling of answered requests into the review queue"

    def minimum_recompute(self) -> dt.timedelta:
        # The running day is sampled again on every run: later requests may have lower hashes.
        return dt.timedelta(days=1)

    def _rates(self) -> tuple[dict[str, int], int]:
        review = self.config.review
        rates = {}
        for r in review.rates:
            rates[f"{r.service}/{r.feature}" if r.feature else r.service] = int(r.rate * HASH_SPACE)
        return rates, int(review.sample_rate * HASH_SPACE)

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        rates, default = self._rates()
        day = floor_to(start, 86400)
        while day < end:
            day_end = day + dt.timedelta(days=1)
            yield from self._sample_day(day, min(day_end, end), day_end, rates, default)
            day = day_end

    def _sample_day(self, day, upto, day_end, rates, default) -> Iterable[Point]:
        rows = self.store.query("""
SELECT service, feature, request_id, ts, h < rate AS by_rate, output_text, context_text
FROM (
    SELECT service, feature, request_id, ts, output_text, context_text, cityHash64(request_id) % {space:UInt64} AS h,
           indexOf({keys:Array(String)}, concat(service, '/', feature)) AS by_feature,
           indexOf({keys:Array(String)}, toString(service)) AS by_service,
           multiIf(by_feature > 0, {rates:Array(UInt64)}[by_feature],
                   by_service > 0, {rates:Array(UInt64)}[by_service], {default:UInt64}) AS rate,
           row_number() OVER (PARTITION BY service, feature ORDER BY h, request_id) AS rank
    FROM requests FINAL
    WHERE ts >= toDateTime({lo:UInt32}, 'UTC') AND ts < toDateTime({hi:UInt32}, 'UTC') AND output_text != ''
)
WHERE h < rate OR rank <= {minimum:UInt32}""", {
            "space": HASH_SPACE, "keys": list(rates), "rates": list(rates.values()), "default": default, "minimum": self.config.review.min_per_day,
            "lo": int(day.timestamp()), "hi": int(upto.timestamp())})
        if not rows:
            return
        now = self.clock.now()
        proxy = self._proxy([(r[5], r[6]) for r in rows])
        self.store.insert("review_queue",
                          [[rid, ts, svc, feat, day.date(), "rate" if by_rate else "minimum", now, p]
                           for (svc, feat, rid, ts, by_rate, *_), p in zip(rows, proxy)],
                          ["request_id", "request_ts", "service", "feature", "day", "reason", "sampled_at",
                           "ungrounded_proxy"])
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
        rows = review_counts(self.store, lo, last)
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


def review_counts(store, lo: dt.datetime, hi: dt.datetime) -> list[tuple]:
    """(service, feature, hour as epoch seconds, sampled, reviewed, hallucinated, grounded) of the queue
    items whose requests fall in [lo, hi); an item's verdict is the majority of its reviewers' votes."""
    return store.query("""
SELECT q.service, q.feature, toUnixTimestamp(toStartOfHour(q.request_ts)) AS h, count() AS sampled,
       countIf(l.votes > 0) AS reviewed,
       countIf(l.hallucinated > l.grounded) AS hallucinated,
       countIf(l.grounded > l.hallucinated) AS grounded
FROM (SELECT * FROM review_queue FINAL
      WHERE request_ts >= toDateTime({lo:UInt32}, 'UTC') AND request_ts < toDateTime({hi:UInt32}, 'UTC')) AS q
LEFT JOIN (
    SELECT request_id, count() AS votes, countIf(label = 'hallucinated') AS hallucinated,
           countIf(label = 'grounded') AS grounded
    FROM feedback FINAL
    WHERE kind = 'hallucination' AND source = 'reviewer'
      AND request_id IN (SELECT request_id FROM review_queue WHERE request_ts >= toDateTime({lo:UInt32}, 'UTC'))
    GROUP BY request_id) AS l ON q.request_id = l.request_id
GROUP BY q.service, q.feature, h ORDER BY h""", {"lo": int(lo.timestamp()), "hi": int(hi.timestamp())})
