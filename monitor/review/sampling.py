"""``hallucination_sample``: answered requests into the review queue, the way Langfuse samples traces.

A request is chosen when a hash of its id falls under its stratum's rate, so the
choice is deterministic (a rerun selects the same requests) and needs no state.
Each (service, feature) also gets at least ``review.min_per_day`` samples a day:
the lowest hashes, again deterministic.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Callable, Iterable

from monitor.foundation.job import Job
from monitor.foundation.metrics import Point, floor_to
from monitor.foundation.tables import requests, review

HASH_SPACE = requests.SAMPLE_HASH_SPACE


class HallucinationSampleJob(Job):
    name = "hallucination_sample"
    description = "deterministic sampling of answered requests into the review queue"

    def __init__(self, store, config, clock, interval: dt.timedelta,
                 proxy: Callable[[list[tuple[str, str]]], list[float | None]] | None = None):
        super().__init__(store, config, clock, interval)
        # The grounding proxy of (answer, context) pairs, to order the queue by (jobs.grounding.AnswerProxy,
        # handed in by the composition root); None: not computed.
        self.proxy = proxy

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
        return self.proxy(pairs) if self.proxy is not None else [None] * len(pairs)
