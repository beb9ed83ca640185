"""``grounding_proxy``: the share of answer sentences with no close context sentence, per window.

A proxy, not a label (monitor/grounding.py says why). For every closed hour
and day and every (service, feature) with answers that came with context, it
takes up to ``grounding.sample_size`` requests (lowest cityHash64 of the id,
so reruns agree) and writes ``ungrounded_proxy_rate`` = ungrounded sentences /
answer sentences, with the sample size beside it.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable

from monitor.grounding import proxy_scores

from .base import Job, Point, window_ends

PROXY_WINDOWS = {"1h": 3600, "1d": 86400}


class GroundingProxyJob(Job):
    name = "grounding_proxy"
    description = "automatic grounding proxy: answer sentences far from every context sentence (not a label)"

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        for window, seconds in PROXY_WINDOWS.items():
            span = window_ends(start, end, seconds)
            if span is None:
                continue
            t, last = span
            while t <= last:
                yield from self._window(window, t - dt.timedelta(seconds=seconds), t)
                t += dt.timedelta(seconds=seconds)

    def _window(self, window: str, lo: dt.datetime, hi: dt.datetime) -> Iterable[Point]:
        rows = self.store.query("""
SELECT service, feature, output_text, context_text FROM (
    SELECT service, feature, output_text, context_text,
           row_number() OVER (PARTITION BY service, feature ORDER BY cityHash64(request_id), request_id) AS rank
    FROM requests FINAL
    WHERE ts >= toDateTime({lo:UInt32}, 'UTC') AND ts < toDateTime({hi:UInt32}, 'UTC')
      AND output_text != '' AND context_text != '')
WHERE rank <= {n:UInt32}""", {"lo": int(lo.timestamp()), "hi": int(hi.timestamp()),
                              "n": self.config.grounding.sample_size})
        if not rows:
            return
        scores = proxy_scores([(r[2], r[3]) for r in rows], self.embeddings().embed, self.config.grounding.threshold)
        totals: dict[tuple, list[int]] = {}
        for (service, feature, *_), (bad, n) in zip(rows, scores):
            for key in ((("service", service), ("feature", feature)), (("service", service),)):
                acc = totals.setdefault(key, [0, 0, 0])
                acc[0] += bad
                acc[1] += n
                acc[2] += 1
        for key, (bad, n, answers) in totals.items():
            labels = dict(key)
            yield Point(hi, window, "ungrounded_proxy_answers", labels, float(answers))
            if n:
                yield Point(hi, window, "ungrounded_proxy_rate", labels, bad / n)
